"""DriverPrompts on a real SQLite file and a real control socket: notices, questions, and ``headunit driver``."""

from __future__ import annotations

import asyncio
import json
import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from agent.cabin import (AlreadyAnswered, DriverPrompts, EmptyPrompt, Notice, PromptEvent,
                         PromptNotFound, acknowledgement_text)
from agent.cabin.api import PromptsApi
from agent.control.handlers import driver_handlers
from agent.cabin.prompts import DECLINED, STOPPED
from agent.control import ControlClient, ControlError, ControlServer
from tests.harness.cli import control_profile, headunit

WAIT = 10.0  # only so a bug cannot hang a test


@pytest.fixture
def folder() -> Iterator[Path]:
    """A short private folder: UNIX socket paths must fit in 107 bytes."""
    path = Path(tempfile.mkdtemp(prefix="hu-cab-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


class Told:
    """The ``on_acknowledged`` a test gives: it notes each notice it was called with."""

    def __init__(self) -> None:
        self.notices: list[Notice] = []

    async def __call__(self, notice: Notice) -> None:
        self.notices.append(notice)


class Events:
    """Every PromptEvent, in order, and a way to wait for the next one."""

    def __init__(self, prompts: DriverPrompts) -> None:
        self.seen: list[PromptEvent] = []
        self._queue: asyncio.Queue[PromptEvent] = asyncio.Queue()
        self.unsubscribe = prompts.listen(self._on)

    def _on(self, event: PromptEvent) -> None:
        self.seen.append(event)
        self._queue.put_nowait(event)

    async def next(self) -> PromptEvent:
        async with asyncio.timeout(WAIT):
            return await self._queue.get()

    def kinds(self) -> list[tuple[str, str]]:
        return [(e.kind, e.outcome) for e in self.seen]


@pytest.fixture
async def prompts(folder: Path) -> AsyncIterator[DriverPrompts]:
    opened = DriverPrompts.in_dir(folder, on_acknowledged=Told())
    yield opened
    opened.close()


# -- notices ---------------------------------------------------------------------------------


async def test_a_notice_waiting_for_acknowledgement_survives_a_restart_and_is_acknowledged_once(
        folder: Path) -> None:
    before = DriverPrompts.in_dir(folder)
    plain = await before.notify("ops@example.org/gajim", "Fuel card renewed", ack_required=False)
    waiting = await before.notify("ops@example.org/gajim", "Please call the depot", ack_required=True)
    before.close()

    told = Told()
    after = DriverPrompts.in_dir(folder, on_acknowledged=told)
    try:
        assert [n.id for n in after.pending().notices] == [plain.id, waiting.id], "unseen, both"
        kept = after.pending().notices[1]
        assert (kept.sender, kept.text, kept.is_waiting) == ("ops@example.org", "Please call the depot", True)

        done = await after.acknowledge(waiting.id)
        assert done.acknowledged_at is not None and not done.is_waiting
        assert told.notices == [done]
        assert [n.id for n in after.pending().notices] == [plain.id]

        with pytest.raises(AlreadyAnswered, match=f"message {waiting.id} was acknowledged already"):
            await after.acknowledge(waiting.id)
        with pytest.raises(PromptNotFound, match="no message 999"):
            await after.acknowledge(999)
        seen = await after.acknowledge(plain.id)  # the driver dismissed it: nobody asked to be told
        assert told.notices == [done], "the sender was told once, and only the one who asked"
        assert not after.pending()
        assert [(n.id, n.acknowledged_at) for n in await after.recent()] == [
            (plain.id, seen.acknowledged_at), (waiting.id, done.acknowledged_at)]
    finally:
        after.close()


async def test_hostile_text_is_cleaned_and_capped(prompts: DriverPrompts) -> None:
    hostile = "Stop\x00 at\x1b[31m the\x7f gate\u202e\r\nnow " + "A" * 100_000
    notice = await prompts.notify("evil@example.org/x\x00y", hostile, ack_required=True)
    assert notice.text.startswith("Stop at[31m the gate\nnow AAA")
    assert len(notice.text) == 1000 and notice.text.endswith("…")
    assert notice.sender == "evil@example.org"
    stored = (await prompts.recent(1))[0]
    assert stored.text == notice.text  # what the driver sees is what was kept
    with pytest.raises(EmptyPrompt):
        await prompts.notify("ops@example.org", " \x00\u202e\t ", ack_required=True)
    assert [n.id for n in await prompts.recent()] == [notice.id]  # nothing stored for the empty one


async def test_only_the_latest_notices_are_kept_and_a_dropped_one_expires(folder: Path) -> None:
    prompts = DriverPrompts(folder / "cabin.db", keep=3)
    events = Events(prompts)
    try:
        first = await prompts.notify("ops@example.org", "one", ack_required=True)
        for text in ("two", "three", "four"):
            await prompts.notify("ops@example.org", text)
        assert [n.text for n in await prompts.recent(10)] == ["two", "three", "four"]
        assert [n.text for n in prompts.pending().notices] == ["two", "three", "four"], "not seen yet"
        dropped = [e for e in events.seen if e.kind == "expired"]
        assert [(e.prompt, e.outcome) for e in dropped] == [(first, "dropped")]
        with pytest.raises(PromptNotFound):
            await prompts.acknowledge(first.id)
    finally:
        prompts.close()
    reopened = DriverPrompts(folder / "cabin.db", keep=3)
    try:
        assert (await reopened.notify("ops@example.org", "five")).id == 5  # ids are never reused
    finally:
        reopened.close()


async def test_a_failing_listener_or_sender_does_not_undo_the_acknowledgement(folder: Path) -> None:
    async def chat_down(notice: Notice) -> None:
        raise ConnectionError("chat is down")

    def broken(event: PromptEvent) -> None:
        raise RuntimeError("display bug")

    prompts = DriverPrompts.in_dir(folder, on_acknowledged=chat_down)
    prompts.listen(broken)
    events = Events(prompts)
    try:
        notice = await prompts.notify("ops@example.org", "hello", ack_required=True)
        done = await prompts.acknowledge(notice.id)
        assert done.acknowledged_at is not None and not prompts.pending()
        assert events.kinds() == [("appeared", ""), ("answered", "acknowledged")]
        events.unsubscribe()
        await prompts.notify("ops@example.org", "unheard")
        assert len(events.seen) == 2
    finally:
        prompts.close()


def test_the_acknowledgement_quotes_the_message_with_the_time_in_utc() -> None:
    notice = Notice(7, "ops@example.org", "Please call\nthe depot", True, 0.0, acknowledged_at=3600.0 * 25 + 90)
    assert acknowledgement_text(notice) == (
        "The driver acknowledged your message: “Please call the depot” (at 01:01 UTC)")
    long = Notice(8, "ops@example.org", "word " * 100, True, 0.0, acknowledged_at=0.0)
    quoted = acknowledgement_text(long).split("“")[1].split("”")[0]
    assert len(quoted) <= 80 and quoted.endswith("…")


# -- questions ---------------------------------------------------------------------------------


async def ask(prompts: DriverPrompts, events: Events, timeout: float = WAIT
              ) -> tuple[asyncio.Task[str | None], str]:
    """Start a question as the dispatcher would; returns the waiting task and the question's id."""
    task = asyncio.create_task(prompts.confirm("Unlock the doors?", "ops@example.org/gajim", timeout))
    appeared = await events.next()
    assert appeared.kind == "appeared"
    return task, str(appeared.prompt.id)


async def test_a_question_accepted_lets_it_go_ahead(prompts: DriverPrompts) -> None:
    events = Events(prompts)
    task, ident = await ask(prompts, events)
    question = prompts.pending().questions[0]
    assert (question.id, question.question, question.requester) == (ident, "Unlock the doors?", "ops@example.org")
    assert question.expires > question.created
    assert prompts.answer(ident, True) == question
    assert await asyncio.wait_for(task, WAIT) is None
    assert events.kinds() == [("appeared", ""), ("answered", "accepted")]
    assert not prompts.pending()
    with pytest.raises(AlreadyAnswered, match=f"question {ident} is closed already \\(accepted\\)"):
        prompts.answer(ident, False)


async def test_a_question_declined_says_so(prompts: DriverPrompts) -> None:
    events = Events(prompts)
    task, ident = await ask(prompts, events)
    prompts.answer(ident, False)
    assert await asyncio.wait_for(task, WAIT) == DECLINED == "the driver declined"
    assert events.kinds()[-1] == ("answered", "declined")


async def test_a_question_without_an_answer_in_time_is_a_refusal(prompts: DriverPrompts) -> None:
    events = Events(prompts)
    task, ident = await ask(prompts, events, timeout=0.2)
    assert await asyncio.wait_for(task, WAIT) == "no answer from the driver in 0.2 s"
    assert events.kinds() == [("appeared", ""), ("expired", "timed out")]
    assert not prompts.pending()
    with pytest.raises(AlreadyAnswered, match="timed out"):
        prompts.answer(ident, True)
    with pytest.raises(PromptNotFound):
        prompts.answer("abcdef", True)


async def test_stopping_refuses_open_questions_and_a_restart_forgets_them(folder: Path) -> None:
    prompts = DriverPrompts.in_dir(folder)
    events = Events(prompts)
    task, _ = await ask(prompts, events)
    prompts.close()
    prompts.close()  # idempotent
    assert await asyncio.wait_for(task, WAIT) == STOPPED
    assert events.kinds()[-1] == ("expired", "withdrawn")
    again = DriverPrompts.in_dir(folder)
    try:
        assert again.pending().questions == ()
    finally:
        again.close()


async def test_an_asker_that_gives_up_withdraws_its_question(prompts: DriverPrompts) -> None:
    events = Events(prompts)
    task, ident = await ask(prompts, events)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert events.kinds()[-1] == ("expired", "withdrawn") and not prompts.pending()
    with pytest.raises(AlreadyAnswered, match="withdrawn"):
        prompts.answer(ident, True)


async def test_too_many_open_questions_are_refused_without_asking(folder: Path) -> None:
    prompts = DriverPrompts.in_dir(folder, max_questions=1)
    events = Events(prompts)
    try:
        task, ident = await ask(prompts, events)
        assert await prompts.confirm("Flash the lights?", "ops@example.org", WAIT) == (
            "the driver already has 1 questions waiting")
        assert [q.id for q in prompts.pending().questions] == [ident]
        prompts.answer(ident, True)
        assert await asyncio.wait_for(task, WAIT) is None
    finally:
        prompts.close()
    with pytest.raises(ValueError, match="positive"):
        await prompts.confirm("x?", "ops@example.org", 0)


# -- the control socket and headunit driver ------------------------------------------------------


@pytest.fixture
async def control(folder: Path, prompts: DriverPrompts) -> AsyncIterator[ControlServer]:
    server = ControlServer(folder / "control.sock", driver_handlers(PromptsApi(prompts)))
    await server.start()
    yield server
    await server.stop()


async def test_control_handlers_answer_and_refuse_bad_arguments_clearly(
        prompts: DriverPrompts, control: ControlServer) -> None:
    events = Events(prompts)
    notice = await prompts.notify("ops@example.org", "Call the depot", ack_required=True)
    await events.next()
    task, ident = await ask(prompts, events)
    async with ControlClient(control.path) as client:
        pending = await client.call("driver.pending")
        assert isinstance(pending, dict)
        assert [q["id"] for q in pending["questions"]] == [ident]
        assert [n["id"] for n in pending["notices"]] == [notice.id]
        refused_acks: list[tuple[dict[str, object], str]] = [
            ({"id": "12x"}, "notice: expected a whole number"), ({}, "notice: expected a whole number"),
            ({"id": True}, "notice: expected a whole number"), ({"id": 10**30}, "notice: expected a whole number")]
        for args, error in refused_acks:
            with pytest.raises(ControlError, match=error):
                await client.call("driver.ack", **args)
        with pytest.raises(ControlError, match="accept: expected true or false"):
            await client.call("driver.answer", id=ident, accept="yes")
        with pytest.raises(ControlError, match="question: expected an id like 3fa9c2"):
            await client.call("driver.answer", id="x" * 10_000, accept=True)
        with pytest.raises(ControlError, match="no question 'abcdef'"):
            await client.call("driver.answer", id="abcdef", accept=True)
        assert prompts.pending().questions and not task.done()  # none of that answered anything
        answered = await client.call("driver.answer", id=ident.upper(), accept=False)
        assert isinstance(answered, dict) and answered["accepted"] is False
        acked = await client.call("driver.ack", id=str(notice.id))
        assert isinstance(acked, dict) and acked["acknowledged_at"] is not None
    assert await asyncio.wait_for(task, WAIT) == DECLINED


async def test_headunit_driver_lists_and_answers(folder: Path, prompts: DriverPrompts,
                                                 control: ControlServer) -> None:
    profile = str(control_profile(folder, control.path))
    rc, out, err = await headunit("driver", profile)
    assert (rc, out.strip()) == (0, "nothing waits for the driver"), err

    events = Events(prompts)
    notice = await prompts.notify("ops@example.org", "Please call\nthe depot", ack_required=True)
    await events.next()
    task, ident = await ask(prompts, events)
    rc, out, err = await headunit("driver", profile)
    assert rc == 0, err
    lines = out.splitlines()
    assert lines[0].startswith("Questions") and lines[1].split() == ["ID", "LEFT", "FROM", "QUESTION"]
    assert lines[2].split()[0] == ident and lines[2].endswith("ops@example.org  Unlock the doors?")
    assert lines[4].startswith("Messages to acknowledge") and lines[5].split() == ["ID", "SINCE", "FROM", "MESSAGE"]
    assert lines[6].split()[0] == str(notice.id) and lines[6].endswith("Please call the depot")

    rc, out, err = await headunit("driver", profile, "--json")
    assert rc == 0 and json.loads(out)["questions"][0]["id"] == ident, err

    rc, out, err = await headunit("driver", profile, "accept", ident)
    assert (rc, out.strip()) == (0, f"accepted question {ident} from ops@example.org: Unlock the doors?"), err
    assert await asyncio.wait_for(task, WAIT) is None
    rc, out, err = await headunit("driver", profile, "decline", ident)
    assert rc == 1 and f"question {ident} is closed already (accepted)" in err

    rc, out, err = await headunit("driver", profile, "ack", str(notice.id))
    assert (rc, out.strip()) == (0, f"acknowledged message {notice.id} from ops@example.org: they are told"), err
    rc, out, err = await headunit("driver", profile, "--recent")
    assert rc == 0 and out.splitlines()[1].split()[0] == str(notice.id), err
    assert "waiting" not in out

    rc, out, err = await headunit("driver", profile, "ack")
    assert rc == 2 and "ack needs an ID" in err


async def test_headunit_driver_without_an_agent(folder: Path) -> None:
    profile = str(control_profile(folder, folder / "nobody.sock"))
    rc, out, err = await headunit("driver", profile)
    assert rc == 3 and "no agent is running" in err
