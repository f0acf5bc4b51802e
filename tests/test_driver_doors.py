"""The driver's two doors give the same answers: the dashboard's WebSocket and the control socket.

Tried: the same actions, good and bad, through both doors of one agent (on the real Prosody,
parked at the start of the demo drive): a long non-ASCII message, a JID without "@", unknown
and malformed ids, mixed-case ids, a presence the driver may not choose, a contact nobody asked
about, a notice that does not exist. Kept: the same refusal, word for word, or the same answer.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from agent.app import Agent
from agent.control import ControlClient, ControlError
from devserver.prosody import AccountFactory, ServerInfo
from tests.harness.dashboard import WAIT, Page, car_profile, open_page, running

LONG_KOREAN = "운전 중" * 1500  # 4 characters, 10 bytes in UTF-8: 15,000 bytes, over the 10,000 allowed


class Doors:
    """One agent's dashboard page and control socket, asked the same thing."""

    def __init__(self, agent: Agent, page: Page, control: ControlClient) -> None:
        self.agent = agent
        self.page = page
        self.control = control

    async def dashboard(self, kind: str, **fields: Any) -> tuple[str, Any]:
        result = await self.page.request(kind, **fields)
        return ("ok", result["value"]) if result["ok"] else ("refused", result["error"])

    async def socket(self, cmd: str, **args: Any) -> tuple[str, Any]:
        try:
            return "ok", await self.control.call(cmd, **args)
        except ControlError as exc:
            return "refused", str(exc)


@pytest.fixture
async def doors(prosody_server: ServerInfo, xmpp_account: AccountFactory) -> AsyncIterator[Doors]:
    car, password = xmpp_account("car")
    async with aiohttp.ClientSession() as http, running(car_profile(prosody_server, car, password)) as agent, \
            open_page(http, agent) as page, ControlClient(agent.control.path) as control:
        yield Doors(agent, page, control)


Call = tuple[str, dict[str, object]]
REFUSED_BY_BOTH: list[tuple[str, Call, Call, str | None]] = [
    ("a long non-ASCII message", ("chat.send", {"to": "ann@example.org", "body": LONG_KOREAN}),
     ("chat.send", {"to": "ann@example.org", "body": LONG_KOREAN}),
     "body: a message is at most 10000 bytes, this one has 15000"),
    ("a JID without @", ("chat.send", {"to": "ann", "body": "hi"}), ("chat.send", {"to": "ann", "body": "hi"}),
     "to: expected a person's JID like ann@example.org, found 'ann'"),
    ("a thread with a JID without @", ("chat.thread", {"peer": "ann"}), ("chat.show", {"peer": "ann"}),
     "peer: expected a person's JID like ann@example.org, found 'ann'"),
    ("a contact without @", ("contacts.approve", {"jid": "example.org"}), ("contacts.approve", {"jid": "example.org"}),
     "jid: expected a person's JID like ann@example.org, found 'example.org'"),
    ("an unknown offer", ("call.answer", {"call": "abcdef"}), ("offers.answer", {"id": "abcdef", "accept": True}),
     "no offer 'abcdef' is waiting (answered, timed out or withdrawn)"),
    ("a malformed offer id", ("file.decline", {"file": "../../etc"}), ("offers.answer", {"id": "../../etc", "accept": False}),
     None),  # named by its kind on the page ("file: ..."), "offer: ..." on the socket: compared below
    ("an unknown question", ("question.answer", {"question": "ABCDEF", "accept": True}),
     ("driver.answer", {"id": "ABCDEF", "accept": True}), "no question 'abcdef' for the driver"),
    ("a question answered with a string", ("question.answer", {"question": "abcdef", "accept": "yes"}),
     ("driver.answer", {"id": "abcdef", "accept": "yes"}), "accept: expected true or false, found 'yes'"),
    ("an unknown notice", ("notice.ack", {"notice": 99}), ("driver.ack", {"id": 99}), None),
    ("a notice that is not a number", ("notice.ack", {"notice": "one"}), ("driver.ack", {"id": "one"}),
     "notice: expected a whole number, found 'one'"),
    ("a presence the driver may not choose", ("presence.set", {"show": "chat"}), ("presence.set", {"show": "chat"}),
     "show: expected one of available, away, xa, dnd, found 'chat'"),
    ("a status too long", ("presence.set", {"show": "dnd", "status": "x" * 101}),
     ("presence.set", {"show": "dnd", "status": "x" * 101}), None),
    ("a contact nobody asked about", ("contacts.refuse", {"jid": "nobody@example.org"}),
     ("contacts.refuse", {"jid": "nobody@example.org"}), "no pending subscription request from nobody@example.org"),
]


async def test_both_doors_refuse_the_same_input_with_the_same_words(doors: Doors) -> None:
    """One agent for every case (starting one per case would cost seconds each); a failure names its case."""
    for name, (kind, fields), (cmd, args), expected in REFUSED_BY_BOTH:
        on_page, on_socket = await doors.dashboard(kind, **fields), await doors.socket(cmd, **args)
        assert on_page[0] == on_socket[0] == "refused", (name, on_page, on_socket)
        if kind == "file.decline":  # the page names the offer by its kind, the socket by "offer"
            assert on_page[1] == on_socket[1].replace("offer:", "file:", 1), (name, on_page, on_socket)
            assert on_socket[1] == "offer: expected an id like 3fa9c2, found '../../etc'", name
        else:
            assert on_page[1] == on_socket[1], (name, on_page, on_socket)
        if expected is not None:
            assert on_page[1].startswith(expected), (name, on_page[1])
        assert doors.agent.offers.pending() == [] and not doors.agent.prompts.pending(), name  # nothing was done


async def test_mixed_case_ids_are_taken_by_both_doors(doors: Doors) -> None:
    agent = doors.agent
    first, second = agent.offers.offer_call("op@example.org", ["audio"]), agent.offers.offer_file(
        "op@example.org", "route.gpx", 1200)
    on_page = await doors.dashboard("call.answer", call=f" {first.id.upper()} ")
    on_socket = await doors.socket("offers.answer", id=second.id.upper(), accept=True)
    assert on_page == ("ok", {"id": first.id, "kind": "call", "peer": "op@example.org", "at": first.at,
                              "media": ["audio"], "outcome": "accepted"})
    assert on_socket == ("ok", {"id": second.id, "kind": "file", "peer": "op@example.org", "at": second.at,
                                "name": "route.gpx", "size": 1200, "outcome": "accepted"})
    assert (await first.decision(WAIT), await second.decision(WAIT)) == ("accepted", "accepted")


async def test_both_doors_answer_the_same_presence_and_the_same_message_shape(doors: Doors) -> None:
    on_page = await doors.dashboard("presence.set", show="dnd", status="Lunch")
    on_socket = await doors.socket("presence.set", show="dnd", status="Lunch")
    assert on_page == on_socket and on_page[0] == "ok" and on_page[1]["show"] == "dnd"
    assert await doors.dashboard("presence.auto") == await doors.socket("presence.auto")

    page_message = await doors.dashboard("chat.send", to="Ann@Example.org/phone", body="  On my way  ")
    socket_message = await doors.socket("chat.send", to="Ann@Example.org/phone", body="  On my way  ")
    assert page_message[0] == socket_message[0] == "ok"
    assert page_message[1].keys() == socket_message[1].keys()
    for message in (page_message[1], socket_message[1]):
        assert (message["peer"], message["body"], message["direction"]) == ("ann@example.org", "On my way", "out")
    assert page_message[1]["id"] != socket_message[1]["id"]  # two messages: one per door
