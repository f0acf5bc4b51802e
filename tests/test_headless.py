"""``headunit state/chat/presence/offers`` against a real agent: the demo drive on a real Prosody.

The agent runs in this process (the demo replays onto python-can's virtual bus, which
does not cross processes) with its dashboard off, as on a headless car; ``headunit`` runs
as its own process and talks to it over the control socket, as a person over SSH would.
The operator is a slixmpp client on the same server: it receives the car's messages,
answers, and watches the car's presence.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import re
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, cast

import pytest
from slixmpp import JID

from agent.app import Agent
from agent.control import ControlClient, ControlError
from tests.harness.cli import control_profile, headunit
from agent.profile.model import FleetConfig
from agent.vehicle import paths
from devserver.clients import Watcher
from tests.harness.agentproc import demo_profile, wait_until
from devserver.prosody import AccountFactory, ServerInfo

SPEED = 20.0  # the 353 s drive in about 18 s; driving from about 2 s to 16 s
WAIT = 30.0  # generous: only there so a broken agent cannot hang a test


@contextlib.asynccontextmanager
async def running_agent(server: ServerInfo, car: tuple[str, str], operator: str, speed: float, *,
                        telemetry: bool = True) -> AsyncIterator[tuple[Agent, str]]:
    """The demo car online, ``operator`` its fleet operator, no dashboard; yields it and a CLI profile.

    Without ``telemetry`` the agent stops sooner (it does not wait to flush samples to a node
    that this test server does not have).
    """
    demo = demo_profile(server, *car)
    profile = dataclasses.replace(demo, fleet=FleetConfig((operator,)),
                                  dashboard=dataclasses.replace(demo.dashboard, enabled=False))
    if not telemetry:
        profile = dataclasses.replace(profile, telemetry=dataclasses.replace(profile.telemetry, service=None))
    agent = Agent(profile, speed=speed)
    try:
        await agent.start()
        await agent.xmpp.wait_online(WAIT)
        yield agent, str(control_profile(agent.data_dir, agent.control.path, "Headless CLI"))
    finally:
        await asyncio.wait_for(agent.stop(), 15)
        shutil.rmtree(agent.data_dir, ignore_errors=True)


async def watching(server: ServerInfo, operator: tuple[str, str], car: str) -> tuple[Watcher, list[str]]:
    """The operator's client: subscribed to the car's presence, keeping the bodies of chat messages."""
    watcher = Watcher(*operator, server, car)
    await watcher.start()
    received: list[str] = []
    watcher.client.add_event_handler(
        "message", lambda m: received.append(m["body"]) if m["type"] == "chat" and m["body"] else None)
    return watcher, received


def summary(out: str) -> dict[str, str]:
    """``headunit state``'s lines as {label: text} (the first line is the title)."""
    return dict(line.split(None, 1) for line in out.splitlines()[1:])


async def stored(agent: Agent, peer: str, body: str) -> bool:
    return any(m.body == body for m in await agent.messages.thread(peer, 50))


@pytest.mark.slow
async def test_state_chat_and_presence_follow_the_replayed_drive(
        prosody_server: ServerInfo, xmpp_account: AccountFactory) -> None:
    car, operator = xmpp_account("car"), xmpp_account("operator")
    op = operator[0]
    async with running_agent(prosody_server, car, op, SPEED) as (agent, cli):
        watcher, received = await watching(prosody_server, operator, car[0])
        try:
            await wait_until(lambda: agent.state.value(paths.MODE) == "driving"
                             and cast(float, agent.state.value(paths.SPEED) or 0) > 10, timeout=60)

            rc, out, err = await headunit("state", cli)
            assert rc == 0, err
            shown = summary(out)
            assert shown["mode"] == "driving", out
            assert re.fullmatch(r"\d+ km/h", shown["speed"]), out
            assert re.fullmatch(r"online( \(stream resumable\))? · telemetry queued \d+ · chat outbox 0",
                                shown["connection"]), out
            assert shown["presence"].startswith("dnd") and shown["presence"].endswith("(automatic)"), out
            rc, out, err = await headunit("state", cli, "--json")
            state = json.loads(out)
            assert (state["mode"], state["moving"], state["connection"]["state"]) == ("driving", True, "online")
            speed = state["vehicle"][paths.SPEED]  # may be 0: the drive's red lights stay "driving"
            assert isinstance(speed["value"], float) and speed["stale"] is False and speed["at"] > 1.7e9, speed

            rc, out, err = await headunit("chat", cli, "send", op, "Running", "late,", "sorry")
            assert (rc, out) == (1, ""), err
            assert "typing is disabled while driving" in err
            rc, out, err = await headunit("chat", cli, "send", op, "On", "my", "way")
            assert rc == 0 and re.fullmatch(rf"message \d+ to {re.escape(op)}: (sent|on the server|delivered)\n",
                                            out), (out, err)
            assert agent.cabin.driving.is_moving(), "the drive outran the test: the refusal above proves nothing"
            await wait_until(lambda: "On my way" in received, timeout=WAIT)

            await wait_until(lambda: agent.state.value(paths.MODE) == "off", timeout=60)
            rc, out, err = await headunit("chat", cli, "send", op, "Running", "late,", "sorry")
            assert rc == 0, err
            await wait_until(lambda: "Running late, sorry" in received, timeout=WAIT)
            assert received == ["On my way", "Running late, sorry"], "the refused text was never sent"

            watcher.client.send_message(mto=JID(car[0]), mbody="No problem", mtype="chat")
            async with asyncio.timeout(WAIT):
                while not await stored(agent, op, "No problem"):
                    await asyncio.sleep(0.05)
            rc, out, err = await headunit("chat", cli, "show", op)
            assert rc == 0, err
            lines = out.splitlines()
            assert lines[0].startswith(f"with {op} (latest 3")
            assert [line.split("  ", 1)[1].split("  [")[0] for line in lines[1:]] == [
                "→  On my way", "→  Running late, sorry", "←  No problem"], out
            rc, out, err = await headunit("chat", cli)
            assert rc == 0 and out.splitlines()[1].split()[0] == op and "No problem" in out, (out, err)

            await watcher.wait_for(lambda: bool(watcher.seen) and watcher.seen[-1].show == "xa", timeout=WAIT)
            rc, out, err = await headunit("presence", cli, "dnd", "--status", "Back in 5")
            assert (rc, out) == (0, 'dnd "Back in 5" (set by the driver; automatic would be xa "Ignition off")\n'), err
            await watcher.wait_for(lambda: (watcher.seen[-1].show, watcher.seen[-1].status) == ("dnd", "Back in 5"),
                                   timeout=WAIT)
            rc, out, err = await headunit("presence", cli)
            assert out.startswith('dnd "Back in 5" (set by the driver'), (out, err)
            overridden = len(watcher.seen)
            rc, out, err = await headunit("presence", cli, "auto")
            assert (rc, out) == (0, 'xa "Ignition off" (automatic)\n'), err
            await watcher.wait_for(lambda: [p.show for p in watcher.seen[overridden:]] == ["xa"], timeout=WAIT)
            assert watcher.seen[-1].status == "Ignition off"
        finally:
            await watcher.stop()


async def test_offers_are_listed_and_answered(prosody_server: ServerInfo, xmpp_account: AccountFactory) -> None:
    car, (op, _) = xmpp_account("car"), xmpp_account("operator")
    async with running_agent(prosody_server, car, op, 1.0, telemetry=False) as (agent, cli):
        rc, out, err = await headunit("offers", cli)
        assert (rc, out.strip()) == (0, "no calls or files wait for the driver"), err
        call = agent.offers.offer_call(op, ["audio", "video"])
        file = agent.offers.offer_file(op, "route.gpx", 12_345)
        decided = asyncio.create_task(call.decision(WAIT))

        rc, out, err = await headunit("offers", cli)
        assert rc == 0, err
        rows = [line.split("  ") for line in out.splitlines()[1:3]]
        assert [[cell.strip() for cell in row if cell.strip()][:4] for row in rows] == [
            [call.id, "call", op, "audio+video call"], [file.id, "file", op, "route.gpx (12.3 kB)"]], out
        rc, out, err = await headunit("offers", cli, "--json")
        assert [o["id"] for o in json.loads(out)] == [call.id, file.id], err

        rc, out, err = await headunit("offers", cli, "accept", call.id.upper())
        assert (rc, out) == (0, f"accepted call {call.id} from {op}: audio+video call\n"), err
        assert await asyncio.wait_for(decided, WAIT) == "accepted"
        rc, out, err = await headunit("offers", cli, "decline", file.id)
        assert rc == 0 and out.startswith(f"declined file {file.id}"), err
        assert await file.decision(WAIT) == "declined"

        rc, out, err = await headunit("offers", cli, "accept", call.id)
        assert rc == 1 and f"no offer {call.id!r} is waiting" in err
        assert agent.offers.pending() == []


async def test_bad_arguments_are_refused_with_clear_errors(
        prosody_server: ServerInfo, xmpp_account: AccountFactory, tmp_path: Path) -> None:
    car, (op, _) = xmpp_account("car"), xmpp_account("operator")
    async with running_agent(prosody_server, car, op, 1.0, telemetry=False) as (agent, cli):
        refused = {  # on the command line: nothing reaches the agent
            ("presence", cli, "busy"): "invalid choice: 'busy'",
            ("presence", cli, "auto", "--status", "x"): "--status goes with available, away, xa or dnd",
            ("presence", cli, "dnd", "--status", "x" * 101): "at most 100 characters",
            ("chat", cli, "send", op, " "): "send needs the message",
            ("chat", cli, "send", op, "x" * 100_000): "a message is at most 10000 bytes, this one has 100000",
            ("chat", cli, "send", "not a jid", "hello"): "not a valid JID",
            ("chat", cli, "send", "example.org", "hello"): "expected a person's JID like ann@example.org",
            ("chat", cli, "show"): "show needs a JID",
            ("chat", cli, "-n", "0"): "-n: expected a number from 1 to 200, found 0",
            ("offers", cli, "accept"): "accept needs an ID",
            ("state", str(tmp_path / "missing.toml")): "profile refused",
        }
        for args, error in refused.items():
            rc, out, err = await headunit(*args)
            assert (rc, out) == (2, ""), (args, err)
            assert error in err, (args, err)
        assert await agent.messages.threads() == [], "nothing was sent"

        async with ControlClient(agent.control.path) as client:  # another client, not checking anything
            refused_calls: list[tuple[str, dict[str, object], str]] = [
                ("chat.send", {"to": op, "body": "x" * 20_000}, "body: a message is at most 10000 bytes"),
                ("chat.send", {"to": 42, "body": "hi"}, "to: expected a JID like ann@example.org, found 42"),
                ("chat.send", {"to": op, "body": ["hi"]}, "body: expected a non-empty text"),
                ("chat.show", {"peer": op, "limit": True}, "limit: expected a whole number from 1 to 500"),
                ("chat.show", {"peer": op, "before": -1}, "before: expected a whole number from 0"),
                ("presence.set", {"show": "chat"}, "show: expected one of available, away, xa, dnd"),
                ("presence.set", {"show": "dnd", "status": 7}, "status: expected a text of at most 100"),
                ("offers.answer", {"id": "abc123", "accept": "yes"}, "accept: expected true or false"),
                ("offers.answer", {"id": "abc123", "accept": True}, "no offer 'abc123' is waiting")]
            for cmd, params, error in refused_calls:
                with pytest.raises(ControlError) as caught:
                    await client.call(cmd, **params)
                assert error in str(caught.value), (cmd, str(caught.value))
            state: Any = await client.call("state")
        assert state["presence"]["auto"] is True and state["connection"]["outbox"] == 0, "nothing was changed"
        assert await agent.messages.threads() == []


async def test_without_an_agent_the_exit_status_is_3(tmp_path: Path) -> None:
    cli = str(control_profile(tmp_path, tmp_path / "nobody.sock", "Headless CLI"))
    for args in (("state", cli), ("chat", cli, "send", "ann@example.org", "hi"), ("presence", cli, "auto")):
        rc, out, err = await headunit(*args)
        assert (rc, out) == (3, ""), (args, err)
        assert "no agent is running for this profile" in err
