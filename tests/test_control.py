"""The local control socket: JSON lines, permissions, stale and live sockets, junk; and ``headunit contacts``."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import stat
import sys
import tempfile
from collections.abc import AsyncIterator, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from agent.control import AgentNotRunning, ControlClient, ControlError, ControlServer, ControlStartError
from tests.harness.cli import control_profile, headunit
from agent.cabin.api import ContactsApi
from agent.control.handlers import contacts_handlers
from agent.policies.contacts import ContactsError
from agent.xmpp.plugins.contacts import ContactsPlugin
from devserver.prosody import AccountFactory, ServerInfo
from tests.test_contacts import Net, Recorder, Signal, subscribe

REPO = Path(__file__).resolve().parents[1]
TIMEOUT = 15.0


@pytest.fixture
def folder() -> Iterator[Path]:
    """A short private folder: UNIX socket paths must fit in 107 bytes."""
    path = Path(tempfile.mkdtemp(prefix="hu-ctl-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


async def echo(args: Mapping[str, Any]) -> object:
    return dict(args)


async def refuse(args: Mapping[str, Any]) -> object:
    raise ContactsError("no pending subscription request from x@example.org")


async def crash(args: Mapping[str, Any]) -> object:
    raise RuntimeError("bug")


async def not_json(args: Mapping[str, Any]) -> object:
    return object()


HANDLERS = {"echo": echo, "refuse": refuse, "crash": crash, "not_json": not_json}


@pytest.fixture
async def server(folder: Path) -> AsyncIterator[ControlServer]:
    control = ControlServer(folder / "control.sock", HANDLERS)
    await control.start()
    try:
        yield control
    finally:
        await control.stop()


async def test_requests_get_results_and_failures_get_reasons_on_one_connection(server: ControlServer) -> None:
    async with ControlClient(server.path) as client:
        assert await client.call("echo", a=1, b=["x"]) == {"a": 1, "b": ["x"]}
        with pytest.raises(ControlError, match="no pending subscription request from x@example.org"):
            await client.call("refuse")
        with pytest.raises(ControlError, match=r"internal error in crash: RuntimeError\('bug'\)"):
            await client.call("crash")
        with pytest.raises(ControlError, match="result is not JSON"):
            await client.call("not_json")
        with pytest.raises(ControlError, match="unknown command 'nope' \\(known: crash, echo, not_json, refuse\\)"):
            await client.call("nope")
        assert await client.call("echo") == {}  # the same connection still serves


async def test_the_socket_is_for_the_agents_user_only_and_goes_away_at_stop(folder: Path) -> None:
    control = ControlServer(folder / "control.sock", HANDLERS)
    await control.start()
    mode = os.lstat(control.path).st_mode
    assert stat.S_ISSOCK(mode) and stat.S_IMODE(mode) == 0o600
    assert sorted(p.name for p in folder.iterdir()) == ["control.sock"]  # no temporary left behind
    await control.stop()
    await control.stop()
    assert not control.path.exists()


async def test_a_stale_socket_left_by_a_killed_agent_is_replaced(folder: Path) -> None:
    path = folder / "control.sock"
    code = ("import asyncio, sys\nfrom pathlib import Path\nfrom agent.control import ControlServer\n"
            "async def main():\n    await ControlServer(Path(sys.argv[1]), {}).start()\n"
            "    print('listening', flush=True)\n    await asyncio.sleep(60)\nasyncio.run(main())\n")
    process = await asyncio.create_subprocess_exec(sys.executable, "-c", code, str(path), cwd=REPO,
                                                   stdout=asyncio.subprocess.PIPE)
    try:
        async with asyncio.timeout(TIMEOUT):
            assert process.stdout is not None
            assert await process.stdout.readline() == b"listening\n"
    finally:
        process.send_signal(signal.SIGKILL)
        await process.wait()
    assert stat.S_ISSOCK(os.lstat(path).st_mode)  # what kill -9 leaves behind

    control = ControlServer(path, HANDLERS)
    await control.start()
    try:
        async with ControlClient(path) as client:
            assert await client.call("echo", ok=True) == {"ok": True}
    finally:
        await control.stop()


async def test_a_second_agent_on_the_same_socket_is_refused(server: ControlServer) -> None:
    second = ControlServer(server.path, {})
    with pytest.raises(ControlStartError, match="another agent is running"):
        await second.start()
    await second.stop()
    async with ControlClient(server.path) as client:  # the first one is untouched
        assert await client.call("echo", still="here") == {"still": "here"}


async def test_something_else_at_the_path_is_left_alone(folder: Path) -> None:
    path = folder / "control.sock"
    path.write_text("not a socket")
    with pytest.raises(ControlStartError, match="not a socket"):
        await ControlServer(path, {}).start()
    assert path.read_text() == "not a socket"
    long_path = folder / ("x" * 120) / "control.sock"
    with pytest.raises(ControlStartError, match="too long"):
        await ControlServer(long_path, {}).start()


async def test_junk_gets_error_replies_and_the_connection_keeps_serving(server: ControlServer) -> None:
    reader, writer = await asyncio.open_unix_connection(server.path)
    junk = [
        (b"not json\n", "not a JSON line"),
        (b"\xff\xfe\x00\n", "not a JSON line"),
        (b"[1, 2]\n", "expected a JSON object"),
        (b'{"id": 7, "cmd": 5}\n', "unknown command 5"),
        (b'{"id": 8, "cmd": "echo", "args": [1]}\n', "args: expected a JSON object"),
        (b'{"id": {"x": 1}, "cmd": "echo"}\n', "id: expected a number or a string"),
        (b'{"id": 9, "cmd": "echo", "args": {"x": "' + b"a" * 200_000 + b'"}}\n', "longer than 65536 bytes"),
    ]
    try:
        for line, error in junk:
            writer.write(b"\n" + line)  # blank lines are skipped without a reply
            await writer.drain()
            async with asyncio.timeout(TIMEOUT):
                reply = json.loads(await reader.readline())
            assert reply["ok"] is False and error in reply["error"], (line[:40], reply)
        writer.write(b'{"id": "last", "cmd": "echo", "args": {"a": 1}}\n')
        async with asyncio.timeout(TIMEOUT):
            assert json.loads(await reader.readline()) == {"id": "last", "ok": True, "result": {"a": 1}}
    finally:
        writer.close()
        await writer.wait_closed()


async def test_a_client_vanishing_mid_line_does_not_disturb_the_next(server: ControlServer) -> None:
    _, writer = await asyncio.open_unix_connection(server.path)
    writer.write(b'{"id": 1, "cmd": "ec')
    await writer.drain()
    writer.close()
    await writer.wait_closed()
    async with ControlClient(server.path) as client:
        assert await client.call("echo", n=2) == {"n": 2}


async def test_without_an_agent_the_client_says_so(folder: Path) -> None:
    with pytest.raises(AgentNotRunning, match="no agent is running for this profile \\(no socket at"):
        await ControlClient(folder / "control.sock").call("contacts.list")


# -- with a real ContactsPlugin on Prosody ---------------------------------------------------------


@pytest.fixture
async def net(prosody_server: ServerInfo) -> AsyncIterator[Net]:
    network = Net(prosody_server)
    try:
        yield network
    finally:
        await network.close()


@pytest.fixture
async def car_agent(net: Net, xmpp_account: AccountFactory,
                    folder: Path) -> AsyncIterator[tuple[str, ContactsPlugin, ControlServer]]:
    """A small agent stand-in: the car's client, the contacts plugin and the control socket."""
    car_jid, car_pw = xmpp_account("car")
    _, policy = await net.car(car_jid, car_pw)
    control = ControlServer(folder / "control.sock", contacts_handlers(ContactsApi(policy)))
    await control.start()
    try:
        yield car_jid, policy, control
    finally:
        await control.stop()


async def stranger_waiting(net: Net, xmpp_account: AccountFactory, car_jid: str, policy: ContactsPlugin,
                           nick: str = "Ann") -> tuple[str, Recorder]:
    jid, password = xmpp_account("ann")
    pending = Signal()
    policy.request_pending.listen(pending)
    client = await net.connect(jid, password)
    seen = Recorder(client, car_jid)
    subscribe(client, car_jid, nick=nick, status="hello")
    await pending.wait_for(lambda r: r.jid == jid, "the pending request")
    return jid, seen


async def test_contacts_commands_over_the_socket(net: Net, xmpp_account: AccountFactory,
                                                 car_agent: tuple[str, ContactsPlugin, ControlServer]) -> None:
    car_jid, policy, control = car_agent
    ann, seen = await stranger_waiting(net, xmpp_account, car_jid, policy)
    async with ControlClient(control.path) as client:
        pending = await client.call("contacts.pending")
        assert isinstance(pending, list) and len(pending) == 1
        request = pending[0]
        assert (request["jid"], request["nick"], request["status"]) == (ann, "Ann", "hello")
        assert request["since"].endswith("+00:00")
        assert await client.call("contacts.approve", jid=ann) == {"jid": ann, "approved": True}
        await seen.wait_for(lambda s: s.type == "subscribed", "the approval")
        assert await client.call("contacts.pending") == []
        contacts = await client.call("contacts.list")
        assert isinstance(contacts, list)
        assert [(c["jid"], c["subscription"]) for c in contacts] == [(ann, "from")]
        with pytest.raises(ControlError, match="not a valid JID"):
            await client.call("contacts.refuse", jid="@@bad")
        with pytest.raises(ControlError, match="expected a JID"):
            await client.call("contacts.approve")
        assert await client.call("contacts.remove", jid=ann) == {"jid": ann, "removed": True}
        await seen.wait_for(lambda s: s.type == "unsubscribed", "the removal")
        assert await client.call("contacts.list") == []


# -- headunit contacts ---------------------------------------------------------------------------------


async def test_headunit_contacts_lists_and_answers_through_the_running_agent(
        net: Net, xmpp_account: AccountFactory, folder: Path,
        car_agent: tuple[str, ContactsPlugin, ControlServer]) -> None:
    car_jid, policy, control = car_agent
    profile = str(control_profile(folder, control.path))
    ann, ann_seen = await stranger_waiting(net, xmpp_account, car_jid, policy, nick="Ann")
    bob, bob_seen = await stranger_waiting(net, xmpp_account, car_jid, policy, nick="Bob")

    rc, out, err = await headunit("contacts", profile, "--pending")
    assert rc == 0, err
    header, *rows = out.splitlines()
    assert header.split() == ["JID", "SINCE", "NICK", "MESSAGE"]
    assert [row.split()[0] for row in rows] == [ann, bob] and "Ann" in rows[0] and "hello" in rows[0]

    rc, out, err = await headunit("contacts", profile, "--pending", "--json")
    assert rc == 0, err
    assert [(r["jid"], r["nick"]) for r in json.loads(out)] == [(ann, "Ann"), (bob, "Bob")]

    rc, out, err = await headunit("contacts", profile, "approve", ann)
    assert (rc, out.strip()) == (0, f"approved {ann}: they now see the car's presence"), err
    await ann_seen.wait_for(lambda s: s.type == "subscribed", "ann's approval")
    rc, out, err = await headunit("contacts", profile, "refuse", bob)
    assert (rc, out.strip()) == (0, f"refused {bob}"), err
    await bob_seen.wait_for(lambda s: s.type == "unsubscribed", "bob's refusal")

    rc, out, err = await headunit("contacts", profile)
    assert rc == 0, err
    header, *rows = out.splitlines()
    assert header.split() == ["JID", "NAME", "GROUPS", "SUBSCRIPTION", "PRESENCE"]
    assert len(rows) == 1 and rows[0].split() == [ann, "sees", "the", "car", "-"]  # not subscribed to ann

    rc, out, err = await headunit("contacts", profile, "refuse", bob)
    assert rc == 1 and f"no pending subscription request from {bob}" in err


async def test_headunit_contacts_without_an_agent(folder: Path) -> None:
    socket = folder / "control.sock"
    profile = str(control_profile(folder, socket))
    rc, out, err = await headunit("contacts", profile, "--pending")
    assert rc == 3 and out == ""
    assert f"no agent is running for this profile (no socket at {socket})" in err
    rc, _, err = await headunit("contacts", profile, "approve")
    assert rc == 2 and "approve needs a JID" in err
