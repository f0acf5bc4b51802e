"""The dashboard's server side, through a real socket: aiohttp's client against an Agent running in
this process on the demo drive, logged in to the session's real Prosody, with operators, strangers
and watchers as real slixmpp clients.

Most tests replay the drive at real speed: the car is parked (not moving) for its first 35 s,
which is when they run. The driving ones replay it 30 times faster.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import os
import secrets
import shutil
import socket
import stat
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import slixmpp

from agent.app import Agent
from agent.dashboard import Dashboard
from agent.dashboard.token import TOKEN_FILE, URL_FILE
from agent.errors import AgentStartError
from agent.profile.model import DashboardConfig
from agent.vehicle import paths
from tests.harness.agentproc import REPO, wait_until
from tests.harness.dashboard import WAIT, Page, car_profile, open_page, running, token_of, ws_url
from devserver.clients import Watcher, close_client, log_in, verified_client
from devserver.prosody import AccountFactory, ServerInfo

FAST = 30.0  # the 353 s drive in about 12 s
QUICK = "On my way"
ORDER = ["hello", "vehicle", "connection", "presence", "contacts", "messages", "prompts", "offers"]


# -- helpers ------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def person(server: ServerInfo, jid: str, password: str) -> AsyncIterator[slixmpp.ClientXMPP]:
    """Someone's XMPP client (receipts on), logged in."""
    client = verified_client(jid, password, server, plugins=["xep_0184"])
    try:
        await log_in(client, server)
        yield client
    finally:
        await close_client(client)


def collect(client: slixmpp.ClientXMPP, event: str) -> list[Any]:
    seen: list[Any] = []
    client.add_event_handler(event, seen.append)
    return seen


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def raw_get(port: int, target: str, headers: str = "") -> tuple[int, str]:
    """One HTTP/1.1 request written by hand (no client normalises ``..`` away); status and whole answer."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(f"GET {target} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n{headers}"
                     "Connection: close\r\n\r\n".encode())
        await writer.drain()
        answer = (await asyncio.wait_for(reader.read(), WAIT)).decode("utf-8", "replace")
    finally:
        writer.close()
    return int(answer.split(" ", 2)[1]), answer


# -- the WebSocket's door -----------------------------------------------------------------


async def test_the_websocket_refuses_without_the_token_or_from_a_foreign_page(
        prosody_server: ServerInfo, xmpp_account: AccountFactory, http: aiohttp.ClientSession) -> None:
    """Tried: no token, an empty and a wrong one, the right one from a foreign Origin or a foreign Host
    (DNS rebinding), then the right one from the page's own origin. Kept: 403 with a one-line reason and
    no upgrade for each refusal; the last one connects."""
    async with running(car_profile(prosody_server, *xmpp_account("car"))) as agent:
        assert agent.dashboard is not None
        port, token = agent.dashboard.port, token_of(agent)
        key = base64.b64encode(secrets.token_bytes(16)).decode()
        upgrade = {"Connection": "Upgrade", "Upgrade": "websocket", "Sec-WebSocket-Version": "13",
                   "Sec-WebSocket-Key": key}
        refusals = [
            (None, {}, "dashboard: no token"),
            ("", {}, "dashboard: no token"),
            ("x" + token[1:], {}, "dashboard: wrong token"),
            (token + "x", {}, "dashboard: wrong token"),
            (token, {"Origin": "http://evil.example"}, "dashboard: foreign origin 'http://evil.example'"),
            (token, {"Origin": f"http://127.0.0.1:{port + 1}"}, "dashboard: foreign origin"),
            (token, {"Origin": "null"}, "dashboard: foreign origin 'null'"),
            (token, {"Host": f"rebind.example:{port}", "Origin": f"http://rebind.example:{port}"},
             "is not this machine"),
        ]
        for given, extra, reason in refusals:
            async with http.get(ws_url(agent.dashboard, given), headers={**upgrade, **extra}) as answer:
                text = await answer.text()
                assert answer.status == 403, (given, extra)
                assert reason in text and text.count("\n") == 1, text
                assert "Sec-WebSocket-Accept" not in answer.headers
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await http.ws_connect(ws_url(agent.dashboard, "nope"))
        assert refused.value.status == 403
        assert agent.dashboard.clients == 0

        ws = await http.ws_connect(ws_url(agent.dashboard, token), origin=f"http://127.0.0.1:{port}")
        page = Page(ws)
        await page.wait_for("hello")
        assert agent.dashboard.clients == 1
        await page.close()


async def test_an_agent_does_not_start_on_a_port_in_use_nor_off_loopback_without_allow_remote(
        prosody_server: ServerInfo, xmpp_account: AccountFactory) -> None:
    """Tried: an agent whose dashboard port another socket holds; an agent whose [dashboard] says
    0.0.0.0 without allow_remote (built past the loader, which refuses it too). Kept: each start fails
    with a clear error naming the address, and publishes no address."""
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    port = holder.getsockname()[1]
    car, car_pw = xmpp_account("car")
    cases = [(DashboardConfig(port=port), f"dashboard: cannot listen on 127.0.0.1:{port}: address in use"),
             (DashboardConfig(host="0.0.0.0", port=0),
              "dashboard: 0.0.0.0 is not a loopback address; listening there needs allow_remote = true")]
    try:
        for config, error in cases:
            agent = Agent(car_profile(prosody_server, car, car_pw, dashboard=config))
            try:
                with pytest.raises(AgentStartError) as refused:
                    await agent.start()
                assert str(refused.value) == error
                assert not (agent.data_dir / URL_FILE).exists()
            finally:
                await asyncio.wait_for(agent.stop(), 15)
                shutil.rmtree(agent.data_dir, ignore_errors=True)
    finally:
        holder.close()


# -- what a page gets -----------------------------------------------------------------------


async def test_a_page_gets_the_full_state_in_order_then_every_page_the_changes(
        prosody_server: ServerInfo, xmpp_account: AccountFactory, http: aiohttp.ClientSession) -> None:
    """Tried: two pages connect once the replay fills the state; an operator's message arrives.
    Kept: each page's first eight frames in the protocol's order with the profile's details and the
    vehicle snapshot; the message reaches both pages as a change."""
    (car, car_pw), (op, op_pw) = xmpp_account("car"), xmpp_account("operator")
    async with running(car_profile(prosody_server, car, car_pw, operators=(op,))) as agent, \
            person(prosody_server, op, op_pw) as operator:
        await wait_until(lambda: agent.state.get(paths.LOW_VOLTAGE_STATE) is not None, WAIT)
        async with open_page(http, agent) as first, open_page(http, agent) as second:
            assert agent.dashboard is not None and agent.dashboard.clients == 2
            for page in (first, second):
                assert [f["type"] for f in page.frames[:8]] == ORDER
                hello, vehicle, connection, presence, contacts, messages, prompts, offers = page.frames[:8]
                assert hello["car"] == car and hello["name"] == agent.profile.name
                assert hello["quick_replies"] == ["Driving, will answer later", "On my way", "Call me"]
                assert hello["moving_speed"] == agent.profile.policies.mode.moving_speed
                assert hello["theme"] == "auto" and hello["version"]
                assert vehicle["full"] is True
                assert paths.LOW_VOLTAGE_STATE in vehicle["values"]
                assert set(vehicle["values"][paths.LOW_VOLTAGE_STATE]) == {"value", "stale", "at"}
                assert connection["state"] == "online" and connection["outbox"] == 0
                assert presence["auto"] is True and presence["show"] == presence["auto_show"]
                assert contacts["pending"] == [] and messages == {"type": "messages", "full": True, "messages": []}
                assert prompts == {"type": "prompts", "notices": [], "questions": []}
                assert offers == {"type": "offers", "calls": [], "files": []}

            operator.send_message(mto=slixmpp.JID(car), mbody="Where are you?", mtype="chat")
            for page in (first, second):
                got = await page.wait_for("messages", lambda f: not f["full"])
                [message] = got["messages"]
                assert (message["peer"], message["direction"], message["body"], message["state"]) == (
                    op, "in", "Where are you?", None)
        await wait_until(lambda: agent.dashboard is not None and agent.dashboard.clients == 0, WAIT)


@pytest.mark.slow
async def test_vehicle_changes_follow_the_replayed_drive(
        prosody_server: ServerInfo, xmpp_account: AccountFactory, http: aiohttp.ClientSession) -> None:
    """Tried: a page connected while the drive replays 30 times faster. Kept: vehicle changes
    (``full: false``) carrying the speed as it rises past 50 km/h, the mode becoming driving, each value
    equal to what the state held when it was sent or later."""
    async with running(car_profile(prosody_server, *xmpp_account("car")), speed=FAST) as agent, \
            open_page(http, agent) as page:
        await wait_until(lambda: any(
            (f["values"].get(paths.SPEED) or {}).get("value", 0) > 50 for f in page.of("vehicle")), 60)
        changes = [f for f in page.of("vehicle") if not f["full"]]
        speeds = [f["values"][paths.SPEED]["value"] for f in changes if paths.SPEED in f["values"]]
        assert len(set(speeds)) >= 5, speeds
        assert all(isinstance(s, (int, float)) for s in speeds)
        modes = [f["values"][paths.MODE]["value"] for f in changes if paths.MODE in f["values"]]
        assert "driving" in modes, modes
        assert [f["full"] for f in page.of("vehicle")] == [True] + [False] * len(changes)


# -- what a page does -----------------------------------------------------------------------


async def test_chat_send_reaches_the_operator_and_its_progress_comes_back(
        prosody_server: ServerInfo, xmpp_account: AccountFactory, http: aiohttp.ClientSession) -> None:
    """Tried: the parked car's page sends a message to an operator (receipts on), then asks for the
    thread. Kept: the operator gets the body; the result carries the stored message; its state moves
    on to delivered in later frames; chat.thread returns it."""
    (car, car_pw), (op, op_pw) = xmpp_account("car"), xmpp_account("operator")
    async with running(car_profile(prosody_server, car, car_pw, operators=(op,))) as agent, \
            person(prosody_server, op, op_pw) as operator, open_page(http, agent) as page:
        received = collect(operator, "message")
        assert not agent.cabin.driving.is_moving()
        result = await page.request("chat.send", to=op, body="  Running late, 10 min \n")
        assert result["ok"] is True, result
        sent = result["value"]
        assert (sent["peer"], sent["direction"], sent["body"]) == (op, "out", "Running late, 10 min")
        await wait_until(lambda: any(m["body"] == "Running late, 10 min" for m in received), WAIT)
        await page.wait_for("messages", lambda f: any(
            m["id"] == sent["id"] and m["state"] == "delivered" for m in f["messages"]))

        thread = await page.request("chat.thread", peer=op)
        assert [m["id"] for m in thread["value"]] == [sent["id"]]
        older = await page.request("chat.thread", peer=op, before=sent["id"])
        assert older["value"] == []


@pytest.mark.slow
async def test_while_driving_only_the_quick_replies_can_be_sent(
        prosody_server: ServerInfo, xmpp_account: AccountFactory, http: aiohttp.ClientSession) -> None:
    """Tried: while the replay drives, a typed message, then a quick reply. Kept: the first refused
    ("typing is disabled while driving") and never sent; the quick reply reaches the operator."""
    (car, car_pw), (op, op_pw) = xmpp_account("car"), xmpp_account("operator")
    async with running(car_profile(prosody_server, car, car_pw, operators=(op,)), speed=FAST) as agent, \
            person(prosody_server, op, op_pw) as operator, open_page(http, agent) as page:
        received = collect(operator, "message")
        await wait_until(lambda: agent.state.value(paths.MODE) == "driving", 60)
        typed = await page.request("chat.send", to=op, body="I'll be there at five")
        assert typed == {"type": "result", "id": typed["id"], "ok": False,
                         "error": "typing is disabled while driving"}
        quick = await page.request("chat.send", to=op, body=QUICK)
        assert quick["ok"] is True, quick
        await wait_until(lambda: any(m["body"] == QUICK for m in received), WAIT)
        assert [m["body"] for m in received if m["body"]] == [QUICK]  # same stream: the typed one would be first
        assert [m.body for m in await agent.messages.thread(op)] == [QUICK]


async def test_a_subscription_request_is_approved_on_the_page(
        prosody_server: ServerInfo, xmpp_account: AccountFactory, http: aiohttp.ClientSession) -> None:
    """Tried: a stranger (not an operator) asks for the car's presence; the page approves it; then a
    second approval of the same JID. Kept: the request shown as pending; the stranger gets
    "subscribed"; the pending list empties; the repeat is refused with a reason."""
    (car, car_pw), (stranger_jid, stranger_pw) = xmpp_account("car"), xmpp_account("stranger")
    async with running(car_profile(prosody_server, car, car_pw)) as agent, \
            person(prosody_server, stranger_jid, stranger_pw) as stranger, open_page(http, agent) as page:
        answers = collect(stranger, "presence")
        await stranger.get_roster(timeout=WAIT)  # RFC 6121: subscription answers go to roster-interested clients
        stranger.send_presence_subscription(pto=car, ptype="subscribe")
        shown = await page.wait_for("contacts", lambda f: [p["jid"] for p in f["pending"]] == [stranger_jid])
        assert isinstance(shown["pending"][0]["since"], float)
        mark = len(page.frames)
        result = await page.request("contacts.approve", jid=stranger_jid)
        assert result["ok"] is True and result["value"] == {"jid": stranger_jid, "approved": True}
        await wait_until(lambda: any(p["from"].bare == car and p["type"] == "subscribed" for p in answers), WAIT)
        await page.wait_for("contacts", lambda f: f["pending"] == [], since=mark)
        again = await page.request("contacts.approve", jid=stranger_jid)
        assert again["ok"] is False and "no pending subscription request" in again["error"]


async def test_notices_questions_and_offers_are_answered_on_the_page(
        prosody_server: ServerInfo, xmpp_account: AccountFactory, http: aiohttp.ClientSession) -> None:
    """Tried: an operator's message asking for an acknowledgement, a question, a call offer; the page
    answers each. Kept: each shown, then gone; the operator told by chat; the asker gets the answer;
    the caller "accepted"; a file answer to a call's id refused."""
    (car, car_pw), (op, op_pw) = xmpp_account("car"), xmpp_account("operator")
    async with running(car_profile(prosody_server, car, car_pw, operators=(op,))) as agent, \
            person(prosody_server, op, op_pw) as operator, open_page(http, agent) as page:
        received = collect(operator, "message")
        notice = await agent.prompts.notify(op, "Pick up the parcel at gate 3", ack_required=True)
        shown = await page.wait_for("prompts", lambda f: f["notices"])
        assert shown["notices"] == [{"id": notice.id, "sender": op, "text": "Pick up the parcel at gate 3",
                                     "ack_required": True, "at": notice.created}]
        mark = len(page.frames)
        assert (await page.request("notice.ack", notice=notice.id))["ok"] is True
        await page.wait_for("prompts", lambda f: f["notices"] == [], since=mark)
        await wait_until(lambda: any("The driver acknowledged your message" in m["body"] for m in received),
                         WAIT)
        twice = await page.request("notice.ack", notice=notice.id)
        assert twice["ok"] is False and "already" in twice["error"]

        asked = asyncio.create_task(agent.prompts.confirm("Unlock the doors?", op, timeout=WAIT))
        question = (await page.wait_for("prompts", lambda f: f["questions"]))["questions"][0]
        assert (question["requester"], question["question"]) == (op, "Unlock the doors?")
        assert (await page.request("question.answer", question=question["id"], accept=True))["ok"] is True
        assert await asyncio.wait_for(asked, WAIT) is None  # None: accepted

        offer = agent.offers.offer_call(op, ["audio"])
        calls = (await page.wait_for("offers", lambda f: f["calls"]))["calls"]
        assert calls == [{"id": offer.id, "peer": op, "media": ["audio"], "at": offer.at}]
        wrong = await page.request("file.accept", file=offer.id)
        assert wrong["ok"] is False and wrong["error"] == f"offer {offer.id} is a call, not a file"
        answered = await page.request("call.answer", call=offer.id)
        assert answered["value"] == {"id": offer.id, "kind": "call", "peer": op, "at": offer.at, "media": ["audio"],
                                     "outcome": "accepted"}
        assert await offer.decision(WAIT) == "accepted"
        await page.wait_for("offers", lambda f: f["calls"] == [] and f["files"] == [])


async def test_the_presence_override_reaches_a_watcher_and_automatic_returns(
        prosody_server: ServerInfo, xmpp_account: AccountFactory, http: aiohttp.ClientSession) -> None:
    """Tried: an operator watches the parked car; the page sets do-not-disturb, then automatic.
    Kept: the watcher sees dnd with the driver's text, then the mode's presence again; the page's
    presence frames say auto false, then true."""
    (car, car_pw), (op, op_pw) = xmpp_account("car"), xmpp_account("operator")
    async with running(car_profile(prosody_server, car, car_pw, operators=(op,))) as agent, \
            open_page(http, agent) as page:
        watcher = Watcher(op, op_pw, prosody_server, car)
        await watcher.start()
        try:
            await watcher.wait_for(lambda: bool(watcher.seen), WAIT)
            auto_show = page.of("presence")[-1]["auto_show"]
            assert auto_show != "dnd"
            mark = len(page.frames)
            result = await page.request("presence.set", show="dnd", status="In a meeting")
            assert (result["value"]["show"], result["value"]["status"], result["value"]["auto"]) == (
                "dnd", "In a meeting", False)
            await watcher.wait_for(lambda: (watcher.seen[-1].show, watcher.seen[-1].status) == (
                "dnd", "In a meeting"), WAIT)
            frame = await page.wait_for("presence", lambda f: not f["auto"], since=mark)
            assert (frame["show"], frame["status"]) == ("dnd", "In a meeting")

            mark = len(page.frames)
            assert (await page.request("presence.auto"))["ok"] is True
            frame = await page.wait_for("presence", lambda f: f["auto"], since=mark)
            assert frame["show"] == frame["auto_show"] != "dnd"
            await watcher.wait_for(lambda: watcher.seen[-1].show == (
                "" if frame["show"] == "available" else frame["show"]), WAIT)
            refused = await page.request("presence.set", show="chat")
            assert refused["ok"] is False
            assert refused["error"] == "show: expected one of available, away, xa, dnd, found 'chat'"
        finally:
            await watcher.stop()


async def test_bad_frames_are_answered_with_errors_and_the_page_stays_connected(
        prosody_server: ServerInfo, xmpp_account: AccountFactory, http: aiohttp.ClientSession) -> None:
    """Tried: not JSON, deep nesting, a list, no id, a string id, an unknown type, missing and wrong
    fields, a binary frame, a 70 kB frame, then 100 requests at once. Kept: one error result each
    (id null when unreadable), "slow down" beyond the rate, and a good request still answered."""
    async with running(car_profile(prosody_server, *xmpp_account("car"))) as agent, \
            open_page(http, agent) as page:
        ws = page.ws
        cases: list[tuple[str | bytes, int | None, str]] = [
            ("{not json", None, "not JSON"),
            ("[" * 50_000, None, "not JSON"),
            ('{"id": 1, "type": "presence.auto", "x": NaN}', None, "not JSON"),
            ("[1, 2]", None, "expected a JSON object"),
            ('{"type": "presence.auto"}', None, "id: expected an integer"),
            ('{"id": "7", "type": "presence.auto"}', None, "id: expected an integer"),
            ('{"id": 2, "type": "reboot"}', 2, "unknown request type 'reboot'"),
            ('{"id": 3, "type": "chat.send", "to": "op@example.org"}', 3, "body: expected a non-empty text"),
            ('{"id": 4, "type": "chat.send", "to": "not a jid@@", "body": "hi"}', 4, "not a valid JID"),
            ('{"id": 5, "type": "notice.ack", "notice": "one"}', 5, "notice: expected a whole number"),
            ('{"id": 6, "type": "question.answer", "question": "ab12", "accept": "yes"}', 6,
             "accept: expected true or false"),
            ('{"id": 7, "type": "notice.ack", "notice": 99}', 7, "99"),  # no such notice
            ('{"id": 8, "type": "presence.set", "show": "dnd", "status": "%s"}' % ("x" * 101), 8,
             "status: expected a text of at most 100 characters"),
            (b"\x00\x01", None, "text frames only (JSON)"),
            (json.dumps({"id": 9, "type": "chat.send", "to": "a@b", "body": "x" * 70_000}), None,
             "frame over 64 kB refused"),
        ]
        for frame, request_id, error in cases:
            mark = len(page.frames)
            await (ws.send_bytes(frame) if isinstance(frame, bytes) else ws.send_str(frame))
            got = await page.wait_for("result", since=mark)
            assert (got["id"], got["ok"]) == (request_id, False), (frame[:60], got)
            assert error in got["error"], (frame[:60], got)
        assert page.closed is None and not ws.closed

        await asyncio.sleep(1.1)  # a second of quiet: the page's budget is full again (20)
        mark = len(page.frames)
        for i in range(100):
            await ws.send_str(json.dumps({"id": 1000 + i, "type": "no.such"}))
        await wait_until(lambda: len(page.of("result", mark)) == 100, WAIT)
        errors = [f["error"] for f in page.of("result", mark)]
        assert errors[:20] == ["unknown request type 'no.such'"] * 20
        assert "slow down" in errors

        await asyncio.sleep(1.1)
        good = await page.request("chat.thread", peer="nobody@example.org")
        assert good == {"type": "result", "id": good["id"], "ok": True, "value": []}


# -- the token, the files, the CLI ------------------------------------------------------------


async def run_cli(*args: str, data_dir: Path) -> tuple[int, str, str]:
    """``headunit dashboard`` as its own process (this loop keeps serving while it asks)."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "agent", *args, cwd=REPO, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE, env={**os.environ, "HEADUNIT_DATA_DIR": str(data_dir)})
    out, err = await asyncio.wait_for(process.communicate(), WAIT)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def test_each_start_has_its_own_private_token_and_the_cli_prints_the_address(
        prosody_server: ServerInfo, xmpp_account: AccountFactory, http: aiohttp.ClientSession,
        caplog: pytest.LogCaptureFixture) -> None:
    """Tried: ``headunit dashboard`` before any start; an agent started, a page connected, the agent
    stopped and started again on the same folder. Kept: exit 3 without an agent; token and address
    files 0600, the address carrying the token and the bound port, printed by the CLI, logged without
    the token; the page closed with 1001 (going away) at stop and the files gone (a stale address left
    by a killed agent: exit 3 too); a new token at the next start, the old one refused."""
    caplog.set_level(logging.INFO, logger="agent")
    (car, car_pw) = xmpp_account("car")
    profile = car_profile(prosody_server, car, car_pw)
    folder = profile.storage.data_dir
    assert folder is not None
    demo = str(REPO / "profiles" / "demo.toml")
    try:
        code, out, err = await run_cli("dashboard", demo, data_dir=folder)
        assert (code, out) == (3, "") and f"no dashboard address in {folder / URL_FILE}" in err

        agent = Agent(profile)
        await agent.start()
        try:
            assert agent.dashboard is not None
            first = token_of(agent)
            url = (folder / URL_FILE).read_text().strip()
            assert url == agent.dashboard.url == f"http://127.0.0.1:{agent.dashboard.port}/#token={first}"
            for name in (TOKEN_FILE, URL_FILE):
                assert stat.S_IMODE((folder / name).stat().st_mode) == 0o600, name
            assert [p.name for p in folder.iterdir() if p.name.startswith(".dashboard")] == []
            logged = "\n".join(r.getMessage() for r in caplog.records)
            assert f"dashboard at http://127.0.0.1:{agent.dashboard.port}/ (token in {folder / URL_FILE})" in logged
            assert first not in logged
            code, out, err = await run_cli("dashboard", demo, data_dir=folder)
            assert (code, out) == (0, url + "\n"), err

            ws = await http.ws_connect(ws_url(agent.dashboard, first))
            page = Page(ws)
            await page.wait_for("offers")
        finally:
            await asyncio.wait_for(agent.stop(), 15)
        await asyncio.wait_for(page._reader, WAIT)
        assert ws.close_code == aiohttp.WSCloseCode.GOING_AWAY
        assert not (folder / TOKEN_FILE).exists() and not (folder / URL_FILE).exists()
        code, out, err = await run_cli("dashboard", demo, data_dir=folder)
        assert code == 3 and "the agent is not running" in err
        (folder / URL_FILE).write_text(url + "\n")  # left behind by a killed agent
        code, out, err = await run_cli("dashboard", demo, data_dir=folder)
        assert (code, out) == (3, "") and f"nothing answers at {url.split('#')[0]}" in err
        (folder / URL_FILE).unlink()

        async with running(profile) as again:
            assert again.dashboard is not None
            second = token_of(again)
            assert second != first and len(second) >= 43
            with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
                await http.ws_connect(ws_url(again.dashboard, first))
            assert refused.value.status == 403
    finally:
        shutil.rmtree(folder, ignore_errors=True)


# -- the page's files ----------------------------------------------------------------------------


async def test_static_files_stay_inside_their_folder_and_carry_the_security_headers(
        prosody_server: ServerInfo, xmpp_account: AccountFactory, tmp_path: Path) -> None:
    """Tried: the shipped page, /healthz, a file of a static folder, then ways out of that folder
    (``..`` plain and percent-encoded, a symlink, the folder itself) towards a secret next to it.
    Kept: the page and files with CSP, no framing, no-store on the page; every way out refused
    without the secret; no directory listing."""
    static = tmp_path / "static"
    static.mkdir()
    (static / "index.html").write_text("<!doctype html><title>test page</title>\n")
    (static / "app.js").write_text("export const answer = 42;\n")
    (tmp_path / "secret.txt").write_text("TOP-SECRET\n")
    (static / "link.txt").symlink_to(tmp_path / "secret.txt")
    car, car_pw = xmpp_account("car")
    agent = Agent(car_profile(prosody_server, car, car_pw, dashboard=DashboardConfig(enabled=False, port=0)))
    assert agent.dashboard is None
    config = agent.profile.dashboard
    shipped = Dashboard(agent.cabin, config, agent.data_dir)
    ours = Dashboard(agent.cabin, config, agent.data_dir, static_dir=static)
    try:
        await shipped.start()
        status, answer = await raw_get(shipped.port, "/")
        assert status == 200 and "<!doctype html>" in answer.lower()
        head = answer.split("\r\n\r\n", 1)[0].lower()
        assert "content-security-policy: default-src 'self'; connect-src 'self'; img-src 'self' data:; " \
               "style-src 'self'; script-src 'self'" in head
        assert "x-frame-options: deny" in head and "cache-control: no-store" in head
        status, answer = await raw_get(shipped.port, "/healthz")
        assert status == 200 and answer.endswith("\r\n\r\nok\n")
        await shipped.stop()

        await ours.start()
        status, answer = await raw_get(ours.port, "/static/app.js")
        assert status == 200 and "answer = 42" in answer
        assert "x-frame-options: deny" in answer.lower() and "content-security-policy:" in answer.lower()
        for target in ("/static/../secret.txt", "/static/%2e%2e/secret.txt", "/static/..%2fsecret.txt",
                       "/static/%2e%2e%2fsecret.txt", "/static/..%5csecret.txt", "/static/link.txt",
                       "/static/../../../../etc/passwd", "/static/", "/static", "/secret.txt"):
            status, answer = await raw_get(ours.port, target)
            assert status in (400, 403, 404), (target, status)
            assert "TOP-SECRET" not in answer and "root:" not in answer and "app.js" not in answer, target
            assert "x-frame-options: deny" in answer.lower(), target
    finally:
        await ours.stop()
        await shipped.stop()
        await asyncio.wait_for(agent.stop(), 15)
        shutil.rmtree(agent.data_dir, ignore_errors=True)
