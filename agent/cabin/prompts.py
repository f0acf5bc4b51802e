"""What the driver is told and asked: notices from operators, and questions that wait for an answer.

:class:`DriverPrompts` is the one model a driver's display uses: the dashboard
(later) and ``headunit driver`` (now, through the control socket) read
:meth:`~DriverPrompts.pending`, answer with :meth:`~DriverPrompts.acknowledge`
and :meth:`~DriverPrompts.answer`, and follow changes with
:meth:`~DriverPrompts.listen`.

- A *notice* is a message (``message-driver``); it may ask for an acknowledgement,
  which is passed on to ``on_acknowledged`` (the agent tells the sender by chat).
  Notices live in SQLite (:mod:`agent.cabin.notices`): one still waiting for an
  acknowledgement is there again after a restart.
- A *question* (a :class:`Confirmation`) is about now: "may the operator unlock
  the doors?". It lives in memory only, and whoever asked waits for the answer;
  no answer in time, or the agent stopping, is a refusal.
"""

from __future__ import annotations

import asyncio
import logging
import math
import secrets
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal, Protocol

from agent.events import Event
from agent.cabin.errors import AlreadyAnswered, PromptNotFound
from agent.cabin.notices import FILE, KEEP, Notice, NoticeStore, clean_sender, clean_text

log = logging.getLogger(__name__)

MAX_QUESTION = 200  # characters of one question
MAX_QUESTIONS = 16  # questions waiting at once; more are refused at once
REMEMBERED = 64  # closed questions remembered, so a late answer gets a clear error
DECLINED = "the driver declined"
STOPPED = "the agent stopped before the driver answered"
QUOTED = 80  # characters of a notice quoted back to its sender

EventKind = Literal["appeared", "answered", "expired"]
# answered: "acknowledged", "accepted", "declined"; expired: "timed out", "withdrawn", "dropped"
Outcome = Literal["", "acknowledged", "accepted", "declined", "timed out", "withdrawn", "dropped"]


@dataclass(frozen=True)
class Confirmation:
    """A question put to the driver on someone's behalf, open until ``expires``."""

    id: str
    question: str
    requester: str  # bare JID of whoever wants the answer
    created: float  # wall clock, epoch seconds
    expires: float  # wall clock, epoch seconds

    def as_json(self) -> dict[str, Any]:
        return {"kind": "question", "id": self.id, "question": self.question, "requester": self.requester,
                "created": self.created, "expires": self.expires}


Prompt = Notice | Confirmation


@dataclass(frozen=True)
class PromptEvent:
    """A change a display follows: a prompt appeared, was answered, or expired unanswered."""

    kind: EventKind
    prompt: Prompt
    outcome: Outcome = ""


@dataclass(frozen=True)
class Pending:
    """What waits for the driver: open questions, and notices to acknowledge (oldest first)."""

    questions: tuple[Confirmation, ...]
    notices: tuple[Notice, ...]

    def __bool__(self) -> bool:
        return bool(self.questions or self.notices)

    def as_json(self) -> dict[str, Any]:
        return {"questions": [q.as_json() for q in self.questions],
                "notices": [n.as_json() for n in self.notices]}


Listener = Callable[[PromptEvent], None]
AckCallback = Callable[[Notice], Awaitable[object]]


class DriverPrompts:
    """Notices and questions for the driver; the dashboard and ``headunit driver`` answer them."""

    def __init__(self, path: Path, *, on_acknowledged: AckCallback | None = None, keep: int = KEEP,
                 max_questions: int = MAX_QUESTIONS) -> None:
        self.on_acknowledged = on_acknowledged
        self.max_questions = max_questions
        self._store = NoticeStore(path, keep)
        self._waiting: dict[int, Notice] = {n.id: n for n in self._store.waiting_at_start()}
        self._questions: dict[str, tuple[Confirmation, asyncio.Future[str | None]]] = {}
        self._closed: OrderedDict[str, str] = OrderedDict()  # question id -> how it ended
        self._events: Event[PromptEvent] = Event("driver prompt")
        if self._waiting:
            log.info("%d message(s) for the driver still wait for an acknowledgement", len(self._waiting))

    @classmethod
    def in_dir(cls, folder: Path, *, on_acknowledged: AckCallback | None = None, keep: int = KEEP,
               max_questions: int = MAX_QUESTIONS) -> DriverPrompts:
        """The prompts of the agent whose data folder is ``folder`` (``cabin.db``)."""
        return cls(folder / FILE, on_acknowledged=on_acknowledged, keep=keep, max_questions=max_questions)

    # -- for a display -----------------------------------------------------------------

    def pending(self) -> Pending:
        """Everything the driver has yet to answer, oldest first."""
        return Pending(tuple(c for c, _ in self._questions.values()),
                       tuple(sorted(self._waiting.values(), key=lambda n: n.id)))

    async def recent(self, limit: int = 20) -> list[Notice]:
        """The latest notices, answered or not, oldest first."""
        return await self._store.recent(limit)

    def listen(self, listener: Listener) -> Callable[[], None]:
        """Call ``listener`` on every :class:`PromptEvent`; returns the unsubscribe."""
        return self._events.listen(listener)

    # -- notices -----------------------------------------------------------------------

    async def notify(self, sender: str, text: str, ack_required: bool = False) -> Notice:
        """Show ``text`` from ``sender`` (cleaned and capped); EmptyPrompt if nothing is left of it."""
        shown, who = clean_text(text), clean_sender(sender)
        notice, dropped = await self._store.add(who, shown, ack_required, time.time())
        self._waiting[notice.id] = notice  # shown until the driver has seen it; ack_required: the sender is told
        log.info("message %d for the driver from %s%s: %s", notice.id, who,
                 " (acknowledgement required)" if ack_required else "", _quote(shown, 200))
        for old in dropped:
            self._waiting.pop(old.id, None)
            log.warning("message %d from %s dropped unacknowledged: only the latest %d are kept",
                        old.id, old.sender, self._store.keep)
            self._emit(PromptEvent("expired", old, "dropped"))
        self._emit(PromptEvent("appeared", notice))
        return notice

    async def acknowledge(self, notice_id: int) -> Notice:
        """The driver read notice ``notice_id``: recorded once; if it asked for it, its sender is told."""
        notice = await self._store.acknowledge(notice_id, time.time())
        self._waiting.pop(notice.id, None)
        log.info("the driver %s message %d from %s", "acknowledged" if notice.ack_required else "dismissed",
                 notice.id, notice.sender)
        self._emit(PromptEvent("answered", notice, "acknowledged"))
        if self.on_acknowledged is not None and notice.ack_required:
            try:
                await self.on_acknowledged(notice)
            except Exception:
                log.exception("could not tell %s that the driver acknowledged message %d",
                              notice.sender, notice.id)
        return notice

    # -- questions ---------------------------------------------------------------------

    async def confirm(self, question: str, requester: str, timeout: float) -> str | None:
        """Ask the driver; None once they accept, else why not (declined, no answer in time, stopping)."""
        if not math.isfinite(timeout) or timeout <= 0:
            raise ValueError(f"timeout must be a positive number of seconds, not {timeout}")
        if len(self._questions) >= self.max_questions:
            log.warning("question from %s not asked: %d questions already wait for the driver",
                        requester, len(self._questions))
            return f"the driver already has {len(self._questions)} questions waiting"
        asked = self._ask(clean_text(question, MAX_QUESTION), clean_sender(requester), timeout)
        future = self._questions[asked.id][1]
        try:
            async with asyncio.timeout(timeout):
                return await future
        except TimeoutError:
            if future.done() and not future.cancelled():  # answered just as the time ran out
                return future.result()
            self._close(asked.id, "expired", "timed out")
            return f"no answer from the driver in {timeout:g} s"
        finally:
            self._close(asked.id, "expired", "withdrawn")  # the asker gave up (cancelled); else a no-op

    def answer(self, confirmation_id: str, accept: bool) -> Confirmation:
        """The driver's answer to an open question; PromptNotFound or AlreadyAnswered otherwise."""
        entry = self._questions.get(confirmation_id)
        if entry is None:
            ended = self._closed.get(confirmation_id)
            if ended is not None:
                raise AlreadyAnswered(f"question {confirmation_id} is closed already ({ended})")
            raise PromptNotFound(f"no question {confirmation_id!r} for the driver")
        confirmation, future = entry
        if future.done():  # its time ran out a moment ago; the asker is about to close it
            raise AlreadyAnswered(f"question {confirmation_id} is closed already (timed out)")
        future.set_result(None if accept else DECLINED)
        log.info("the driver %s question %s from %s: %s", "accepted" if accept else "declined",
                 confirmation.id, confirmation.requester, confirmation.question)
        self._close(confirmation.id, "answered", "accepted" if accept else "declined")
        return confirmation

    def _ask(self, question: str, requester: str, timeout: float) -> Confirmation:
        ident = secrets.token_hex(3)
        while ident in self._questions or ident in self._closed:
            ident = secrets.token_hex(3)
        now = time.time()
        asked = Confirmation(ident, question, requester, now, now + timeout)
        self._questions[ident] = (asked, asyncio.get_running_loop().create_future())
        log.info("asking the driver (question %s, %g s) for %s: %s", ident, timeout, requester, question)
        self._emit(PromptEvent("appeared", asked))
        return asked

    def _close(self, ident: str, kind: EventKind, outcome: Outcome) -> None:
        """End an open question (once: later calls do nothing) and tell the listeners."""
        entry = self._questions.pop(ident, None)
        if entry is None:
            return
        confirmation, future = entry
        if not future.done():  # only when the agent stops: the asker still waits
            future.set_result(STOPPED)
        self._closed[ident] = outcome
        while len(self._closed) > REMEMBERED:
            self._closed.popitem(last=False)
        if outcome in ("timed out", "withdrawn"):
            log.info("question %s for the driver %s unanswered", ident, outcome)
        self._emit(PromptEvent(kind, confirmation, outcome))

    # -- the rest ----------------------------------------------------------------------

    def _emit(self, event: PromptEvent) -> None:
        self._events.emit(event)

    def close(self) -> None:
        """Refuse every open question (the agent is stopping), then close the store; idempotent."""
        for ident in list(self._questions):
            self._close(ident, "expired", "withdrawn")
        self._store.close()


# -- telling the sender -------------------------------------------------------------------


class ChatSender(Protocol):
    """What ``acknowledgement_sender`` needs of the chat service."""

    async def send(self, peer: str, body: str) -> object: ...


def acknowledgement_text(notice: Notice) -> str:
    """The chat message that tells a notice's sender the driver acknowledged it."""
    at = notice.acknowledged_at if notice.acknowledged_at is not None else time.time()
    clock = datetime.fromtimestamp(at, timezone.utc).strftime("%H:%M")
    return f"The driver acknowledged your message: “{_quote(notice.text, QUOTED)}” (at {clock} UTC)"


def acknowledgement_sender(chat: ChatSender) -> AckCallback:
    """An ``on_acknowledged`` that sends :func:`acknowledgement_text` to the notice's sender by chat."""

    async def tell(notice: Notice) -> None:
        await chat.send(notice.sender, acknowledgement_text(notice))

    return tell


def _quote(text: str, limit: int) -> str:
    one_line = " ".join(text.split())
    return one_line if len(one_line) <= limit else one_line[:limit - 1].rstrip() + "…"
