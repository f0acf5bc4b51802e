"""1:1 chat on a real Prosody: receipts, carbons, archive catch-up, re-sending, and hostile input.

The car is a slixmpp client with stream management (as the agent's session has)
plus the chat plugin and a MessageStore; the contact, the car's phone and a
stranger are plain slixmpp clients.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import slixmpp
from slixmpp.types import MessageTypes
from slixmpp.xmlstream import ET
from slixmpp.xmlstream.handler import Callback
from slixmpp.xmlstream.matcher import StanzaPath

from agent.messages import MessageError, MessageStore, StoredMessage
from agent.messages.store import MAX_BODY_BYTES, TRUNCATED
from agent.xmpp.plugins.base import enable
from agent.xmpp.plugins.chat import NS_RECEIPTS, NS_SID, ChatPlugin
from devserver.prosody import AccountFactory, ServerInfo

TIMEOUT = 15.0


@dataclass
class Peer:
    """A plain client that records the chat messages and receipts it gets."""

    client: slixmpp.ClientXMPP
    messages: list[Any] = field(default_factory=list)
    receipts: list[str] = field(default_factory=list)

    def send(self, to: str, body: str, *, origin_id: str | None = None, receipt: bool = True,
             mtype: MessageTypes = "chat", extra: list[ET.Element] | None = None) -> str:
        msg = self.client.make_message(mto=to, mbody=body, mtype=mtype)
        msg["id"] = origin_id or self.client.new_id()
        if origin_id:
            ET.SubElement(msg.xml, f"{{{NS_SID}}}origin-id", {"id": origin_id})
        if receipt:
            ET.SubElement(msg.xml, f"{{{NS_RECEIPTS}}}request")
        for element in extra or []:
            msg.xml.append(element)
        msg.send()
        return str(msg["id"])

    async def stop(self) -> None:
        await disconnect(self.client)


def make_client(server: ServerInfo, jid: str, password: str, resource: str) -> slixmpp.ClientXMPP:
    client = slixmpp.ClientXMPP(f"{jid}/{resource}", password)
    client.enable_direct_tls = False
    client.enable_plaintext = False
    client.ca_certs = Path(server.ca_file)
    return client


def when_online(client: slixmpp.ClientXMPP, *, presence: bool = True) -> asyncio.Event:
    """An event set at session start, after the initial presence (as the agent's session sends it)."""
    online = asyncio.Event()

    def started(_: Any) -> None:
        if presence:
            client.send_presence()  # Prosody then delivers what it kept offline
        online.set()

    client.add_event_handler("session_start", started)
    return online


async def connect(client: slixmpp.ClientXMPP, server: ServerInfo, online: asyncio.Event) -> None:
    client.connect(server.host, server.port)
    async with asyncio.timeout(TIMEOUT):
        await online.wait()


async def disconnect(client: slixmpp.ClientXMPP) -> None:
    if client.is_connected():
        async with asyncio.timeout(TIMEOUT):
            await client.disconnect(wait=1.0)


async def peer(server: ServerInfo, jid: str, password: str, resource: str = "desk", *,
               receipts: bool = True, cleanup: list[Callable[[], Awaitable[None]]]) -> Peer:
    client = make_client(server, jid, password, resource)
    client.register_plugin("xep_0184", {"auto_ack": receipts})
    client.register_plugin("xep_0359")
    found = Peer(client)
    cleanup.append(found.stop)
    client.add_event_handler("message", lambda msg: found.messages.append(msg) if msg["type"] == "chat" else None)
    client.add_event_handler("receipt_received", lambda msg: found.receipts.append(msg["receipt"]))
    await connect(client, server, when_online(client))
    return found


@dataclass
class Car:
    client: slixmpp.ClientXMPP
    store: MessageStore
    new: list[StoredMessage]
    live_bodies: list[str]
    archive_results: list[str]
    chat: ChatPlugin = field(init=False)

    def enable_chat(self) -> ChatPlugin:
        self.chat = enable(self.client, ChatPlugin, store=self.store)
        self.chat.new_message.listen(self.new.append)
        return self.chat

    async def stop(self) -> None:
        if "chat" in vars(self):  # enabled
            await self.chat.stop()
        await disconnect(self.client)
        self.store.close()


async def start_car(server: ServerInfo, jid: str, password: str, db: Path, *, presence: bool = True,
                    sm: bool = True, before: Callable[[ChatPlugin], Awaitable[Any]] | None = None,
                    late: bool = False, cleanup: list[Callable[[], Awaitable[None]]]) -> Car:
    """A car online with chat caught up; notes which bodies came live and which archive ids came back."""
    client = make_client(server, jid, password, "headunit")
    online = when_online(client, presence=presence)  # registered first: presence goes before the catch-up
    if sm:
        client.register_plugin("xep_0198")  # the agent's session has stream management
    store = MessageStore(db)
    car = Car(client, store, [], [], [])
    cleanup.append(car.stop)
    client.add_event_handler("message", lambda msg: car.live_bodies.append(msg["body"]))
    client.register_handler(Callback("test: archive results", StanzaPath("message/mam_result"),
                                     lambda msg: _note_archived(car, msg)))
    if not late:
        car.enable_chat()
    if before is not None:
        await before(car.chat)
    await connect(client, server, online)
    if late:
        car.enable_chat()  # on a session that is already up
    await car.chat.wait_for_catch_up(TIMEOUT)
    return car


def _note_archived(car: Car, result: Any) -> None:
    """Archive results with a body (Prosody also archives the receipts the car sends)."""
    if result["mam_result"]["forwarded"]["stanza"]["body"]:
        car.archive_results.append(result["mam_result"]["id"])


@pytest.fixture
async def cleanup() -> AsyncIterator[list[Callable[[], Awaitable[None]]]]:
    """Everything a test started, stopped afterwards even if it failed."""
    started: list[Callable[[], Awaitable[None]]] = []
    yield started
    for stop in reversed(started):
        await stop()


async def until(check: Callable[[], Awaitable[bool] | bool], what: str) -> None:
    """Poll ``check`` until true; fail with ``what`` after a generous timeout."""
    try:
        async with asyncio.timeout(TIMEOUT):
            while True:
                result = check()
                if await result if inspect.isawaitable(result) else result:
                    return
                await asyncio.sleep(0.05)
    except TimeoutError:
        raise AssertionError(f"not within {TIMEOUT} s: {what}") from None


async def bodies(store: MessageStore, peer: str) -> list[str]:
    return [m.body for m in await store.thread(peer)]


async def state(store: MessageStore, origin_id: str | None) -> str | None:
    found = await store.get(origin_id or "")
    return None if found is None else found.state


async def round_trip(client: slixmpp.ClientXMPP) -> None:
    """The server has handled everything this client sent before (it answers in order)."""
    await client.get_roster(timeout=TIMEOUT)


async def state_is(store: MessageStore, origin_id: str | None, expected: str) -> bool:
    return await state(store, origin_id) == expected


def origin_of(msg: Any) -> str | None:
    element = msg.xml.find(f"{{{NS_SID}}}origin-id")
    return None if element is None else str(element.get("id"))


# -- in and out -------------------------------------------------------------------


async def test_a_message_in_is_stored_once_and_answered_with_a_receipt(
        prosody_server: ServerInfo, xmpp_account: AccountFactory, tmp_path: Path,
        cleanup: list[Callable[[], Awaitable[None]]]) -> None:
    car_jid, car_password = xmpp_account("car")
    alice_jid, alice_password = xmpp_account("alice")
    car = await start_car(prosody_server, car_jid, car_password, tmp_path / "messages.db", cleanup=cleanup)
    alice = await peer(prosody_server, alice_jid, alice_password, cleanup=cleanup)

    sent_id = alice.send(car_jid, "Please call the depot", origin_id="alice-origin-1")
    await until(lambda: alice.receipts == [sent_id], "the car's receipt")
    alice.send(car_jid, "Please call the depot", origin_id="alice-origin-1")  # her client retries
    await until(lambda: alice.receipts == [sent_id, sent_id], "a receipt for the retry too")

    (kept,) = await car.store.thread(alice_jid)
    assert (kept.body, kept.direction, kept.via) == ("Please call the depot", "in", "live")
    assert kept.origin_id == "alice-origin-1" and kept.stanza_id == sent_id
    assert kept.archive_id, "our server's stanza-id is kept"
    assert [m.body for m in car.new] == ["Please call the depot"]


async def test_a_message_out_carries_an_origin_id_and_ends_delivered(
        prosody_server: ServerInfo, xmpp_account: AccountFactory, tmp_path: Path,
        cleanup: list[Callable[[], Awaitable[None]]]) -> None:
    car_jid, car_password = xmpp_account("car")
    alice_jid, alice_password = xmpp_account("alice")
    car = await start_car(prosody_server, car_jid, car_password, tmp_path / "messages.db", cleanup=cleanup)
    alice = await peer(prosody_server, alice_jid, alice_password, cleanup=cleanup)

    progress: list[str | None] = []
    car.chat.progress.listen(lambda m: progress.append(m.state))
    message = await car.chat.send(alice_jid, "Arriving in 10 minutes")
    assert message.state in ("sent", "acked", "delivered") and message.origin_id
    await until(lambda: len(alice.messages) == 1, "the message at the contact")
    got = alice.messages[0]
    assert got["body"] == "Arriving in 10 minutes" and got["from"].bare == car_jid
    assert origin_of(got) == message.origin_id == got["id"]
    assert got.xml.find(f"{{{NS_RECEIPTS}}}request") is not None
    await until(lambda: state_is(car.store, message.origin_id, "delivered"), "delivered after her receipt")
    await until(lambda: progress[-1:] == ["delivered"], "the dashboard told of each step")
    # Each move is told with the message as stored then: a step overtaken before it was read (the
    # server's ack landing first) shows its successor. Never backwards, and the last is "delivered".
    order: list[str | None] = ["sent", "acked", "delivered"]
    assert progress == sorted(progress, key=order.index) and len(progress) >= 2
    assert car.new[0].origin_id == message.origin_id and car.new[0].state == "queued"
    for bad_peer, body in (("two@@at-signs", "hi"), ("", "hi"), (alice_jid, "\x00 ")):
        with pytest.raises(MessageError):
            await car.chat.send(bad_peer, body)
    assert len(car.new) == 1, "nothing stored for a refused send"


async def test_without_a_receipt_the_servers_ack_makes_it_acked(
        prosody_server: ServerInfo, xmpp_account: AccountFactory, tmp_path: Path,
        cleanup: list[Callable[[], Awaitable[None]]]) -> None:
    car_jid, car_password = xmpp_account("car")
    bob_jid, bob_password = xmpp_account("bob")
    car = await start_car(prosody_server, car_jid, car_password, tmp_path / "messages.db", cleanup=cleanup)
    bob = await peer(prosody_server, bob_jid, bob_password, receipts=False, cleanup=cleanup)

    message = await car.chat.send(bob_jid, "No receipts here")
    await until(lambda: state_is(car.store, message.origin_id, "acked"), "the stream management ack")
    await until(lambda: len(bob.messages) == 1, "the message at the contact")
    await round_trip(bob.client)
    assert await state(car.store, message.origin_id) == "acked", "no receipt: never delivered"
    assert await car.store.unacked() == []


async def test_carbons_of_the_accounts_other_client_are_stored_with_their_direction(
        prosody_server: ServerInfo, xmpp_account: AccountFactory, tmp_path: Path,
        cleanup: list[Callable[[], Awaitable[None]]]) -> None:
    car_jid, car_password = xmpp_account("car")
    alice_jid, alice_password = xmpp_account("alice")
    car = await start_car(prosody_server, car_jid, car_password, tmp_path / "messages.db", cleanup=cleanup)
    phone = await peer(prosody_server, car_jid, car_password, resource="phone", cleanup=cleanup)
    alice = await peer(prosody_server, alice_jid, alice_password, cleanup=cleanup)

    phone.send(alice_jid, "Sent from the driver's phone", origin_id="phone-1")
    alice.send(f"{car_jid}/phone", "Only to the phone", origin_id="alice-2")
    await until(lambda: len(car.new) == 2, "both carbons stored")

    out, incoming = sorted(await car.store.thread(alice_jid), key=lambda m: m.direction, reverse=True)
    assert (out.direction, out.via, out.body, out.origin_id) == ("out", "carbon", "Sent from the driver's phone",
                                                                  "phone-1")
    assert out.state == "acked" and await car.store.unacked() == []
    assert (incoming.direction, incoming.via, incoming.body) == ("in", "carbon", "Only to the phone")
    assert car.live_bodies == [], "carbons, not messages to the car itself"


# -- the archive --------------------------------------------------------------------


async def test_messages_sent_while_offline_come_from_the_archive_once_with_their_time(
        prosody_server: ServerInfo, xmpp_account: AccountFactory, tmp_path: Path,
        cleanup: list[Callable[[], Awaitable[None]]]) -> None:
    car_jid, car_password = xmpp_account("car")
    alice_jid, alice_password = xmpp_account("alice")
    alice = await peer(prosody_server, alice_jid, alice_password, cleanup=cleanup)
    before = int(time.time())
    ids = [alice.send(car_jid, f"while you were away {n}") for n in range(3)]
    await round_trip(alice.client)

    # no presence: Prosody keeps its offline copies, only the archive speaks
    car = await start_car(prosody_server, car_jid, car_password, tmp_path / "messages.db", presence=False,
                          cleanup=cleanup)

    kept = await car.store.thread(alice_jid)
    assert [m.body for m in kept] == [f"while you were away {n}" for n in range(3)]
    assert {m.via for m in kept} == {"mam"} and car.live_bodies == []
    assert sorted(m.archive_id or "" for m in kept) == sorted(car.archive_results)
    assert all(before <= m.sent_at <= m.received_at for m in kept), "the time they were sent"
    assert await car.store.last_archive_id() == car.archive_results[-1]
    await until(lambda: sorted(alice.receipts) == sorted(ids), "receipts, now that the car has them")


async def test_catch_up_and_offline_delivery_together_store_each_once_also_after_a_restart(
        prosody_server: ServerInfo, xmpp_account: AccountFactory, tmp_path: Path,
        cleanup: list[Callable[[], Awaitable[None]]]) -> None:
    car_jid, car_password = xmpp_account("car")
    alice_jid, alice_password = xmpp_account("alice")
    alice = await peer(prosody_server, alice_jid, alice_password, cleanup=cleanup)
    sent = [f"parcel {n} is ready" for n in range(3)]
    for body in sent:
        alice.send(car_jid, body)
    await round_trip(alice.client)

    car = await start_car(prosody_server, car_jid, car_password, tmp_path / "messages.db", cleanup=cleanup)
    await until(lambda: len(car.live_bodies) == 3, "Prosody's offline delivery")
    assert sorted(car.live_bodies) == sorted(sent) and len(car.archive_results) == 3, "both paths ran"
    assert await bodies(car.store, alice_jid) == sent
    last = await car.store.last_archive_id()
    await car.stop()

    alice.send(car_jid, "one more while the car was off")
    await round_trip(alice.client)
    again = await start_car(prosody_server, car_jid, car_password, tmp_path / "messages.db", cleanup=cleanup)
    await until(lambda: len(again.live_bodies) == 1, "the new offline message")
    assert await bodies(again.store, alice_jid) == [*sent, "one more while the car was off"]
    assert [m.body for m in again.new] == ["one more while the car was off"]
    assert len(again.archive_results) == 1, f"the second catch-up reads only after {last}"


# -- our own messages across sessions ----------------------------------------------------


async def test_messages_queued_or_unacknowledged_before_a_fresh_session_are_resent_with_their_origin_id(
        prosody_server: ServerInfo, xmpp_account: AccountFactory, tmp_path: Path,
        cleanup: list[Callable[[], Awaitable[None]]]) -> None:
    car_jid, car_password = xmpp_account("car")
    alice_jid, alice_password = xmpp_account("alice")
    alice = await peer(prosody_server, alice_jid, alice_password, cleanup=cleanup)
    db = tmp_path / "messages.db"
    previous_run = MessageStore(db)
    lost = await previous_run.queue_outgoing(alice_jid, "handed to a link that then died")
    await previous_run.mark(lost.origin_id or "", "sent")
    previous_run.close()
    offline: list[StoredMessage] = []

    async def send_while_offline(chat: ChatPlugin) -> None:
        offline.append(await chat.send(alice_jid, "written in a tunnel"))

    car = await start_car(prosody_server, car_jid, car_password, db, before=send_while_offline, cleanup=cleanup)
    assert offline[0].state == "queued"

    await until(lambda: len(alice.messages) == 2, "both messages at the contact")
    assert {(m["body"], origin_of(m)) for m in alice.messages} == {
        ("handed to a link that then died", lost.origin_id), ("written in a tunnel", offline[0].origin_id)}
    for origin_id in (lost.origin_id, offline[0].origin_id):
        await until(lambda: state_is(car.store, origin_id, "delivered"), "delivered")
    assert await car.chat.resend_unacked() == 0


async def test_a_message_the_archive_holds_counts_as_acked_and_is_not_sent_again(
        prosody_server: ServerInfo, xmpp_account: AccountFactory, tmp_path: Path,
        cleanup: list[Callable[[], Awaitable[None]]]) -> None:
    car_jid, car_password = xmpp_account("car")
    alice_jid, alice_password = xmpp_account("alice")
    db = tmp_path / "messages.db"
    car = await start_car(prosody_server, car_jid, car_password, db, sm=False, cleanup=cleanup)  # no acks
    message = await car.chat.send(alice_jid, "Alice is offline")
    await round_trip(car.client)
    assert await state(car.store, message.origin_id) == "sent"
    await car.stop()

    again = await start_car(prosody_server, car_jid, car_password, db, sm=False, cleanup=cleanup)
    assert await state(again.store, message.origin_id) == "acked", "our archive has it"
    assert len(again.archive_results) == 1 and again.new == []
    alice = await peer(prosody_server, alice_jid, alice_password, cleanup=cleanup)
    await round_trip(alice.client)
    await until(lambda: len(alice.messages) >= 1, "offline delivery to the contact")
    await round_trip(alice.client)
    assert [m["body"] for m in alice.messages] == ["Alice is offline"], "sent once"


# -- hostile input ----------------------------------------------------------------------


def forged(kind: str, attrs: dict[str, str], sender: str, to: str, body: str) -> ET.Element:
    """A carbon or archive result wrapper around a message that never happened."""
    wrapper = ET.Element(kind, attrs)
    forwarded = ET.SubElement(wrapper, "{urn:xmpp:forward:0}forwarded")
    inner = ET.SubElement(forwarded, "{jabber:client}message", {"from": sender, "to": to, "type": "chat"})
    ET.SubElement(inner, "{jabber:client}body").text = body
    return wrapper


async def test_hostile_messages_are_stored_safely_or_dropped_with_a_log_line(
        prosody_server: ServerInfo, xmpp_account: AccountFactory, tmp_path: Path,
        cleanup: list[Callable[[], Awaitable[None]]], caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="agent")
    car_jid, car_password = xmpp_account("car")
    alice_jid, alice_password = xmpp_account("alice")
    stranger_jid, stranger_password = xmpp_account("stranger")
    car = await start_car(prosody_server, car_jid, car_password, tmp_path / "messages.db", cleanup=cleanup)
    alice = await peer(prosody_server, alice_jid, alice_password, receipts=False, cleanup=cleanup)
    stranger = await peer(prosody_server, stranger_jid, stranger_password, resource="evil", cleanup=cleanup)

    alice.send(car_jid, "x" * 200_000)  # Prosody refuses stanzas over 256 KiB; the store takes 10 kB
    await until(lambda: len(car.new) == 1, "the big message")
    big = car.new[0]
    assert big.body.endswith(TRUNCATED) and len(big.body.encode("utf-8")) <= MAX_BODY_BYTES
    assert "body of 200000 bytes cut" in caplog.text and big.archive_id

    # stanza-ids claiming the big message's archive id: by alice (never believed), by the car (Prosody keeps it)
    for by in (alice_jid, car_jid):
        spoof = ET.Element(f"{{{NS_SID}}}stanza-id", {"by": by, "id": big.archive_id})
        alice.send(car_jid, f"spoofed by {by}", extra=[spoof])
    await until(lambda: len(car.new) == 3, "both spoofed messages stored as messages of their own")
    by_alice, by_car = car.new[1:]
    assert by_alice.archive_id not in (None, big.archive_id), "our server's id, not alice's"
    assert by_car.archive_id is None, "Prosody 0.12 forwards the forged id next to its own: neither is believed"
    assert "stanza-ids by us (forged)" in caplog.text

    ours = await car.chat.send(alice_jid, "to alice, who sends no receipts")
    await until(lambda: state_is(car.store, ours.origin_id, "acked"), "acked")
    stranger.send(car_jid, "Buy now", receipt=False)
    stranger.send(car_jid, "Breaking news", mtype="headline", receipt=False)
    for extra in (
        forged("{urn:xmpp:carbons:2}sent", {}, f"{car_jid}/headunit", alice_jid, "I owe you 1000 EUR"),
        forged("{urn:xmpp:mam:2}result", {"queryid": "guessed", "id": "forged-1"}, alice_jid, car_jid, "Fired"),
    ):
        wrapper = stranger.client.make_message(mto=car_jid)
        wrapper.xml.append(extra)
        wrapper.send()
    receipt = stranger.client.make_message(mto=car_jid)
    receipt["receipt"] = ours.origin_id
    receipt.send()
    stranger.send(car_jid, "last from the stranger", receipt=False)
    await until(lambda: car.new[-1].body == "last from the stranger", "the stranger's last message")

    assert await bodies(car.store, stranger_jid) == ["Buy now", "last from the stranger"]
    assert [(m.direction, m.body) for m in await car.store.thread(alice_jid)][1:] == [
        ("in", f"spoofed by {alice_jid}"), ("in", f"spoofed by {car_jid}"),
        ("out", "to alice, who sends no receipts")], "no forged carbon, no forged archive result"
    assert await state(car.store, ours.origin_id) == "acked", "a stranger's receipt proves nothing"
    assert [m.peer for m in await car.store.threads()] == [stranger_jid, alice_jid]
    for line in ("headline message from", "dropped a carbon forged by", "archive result we did not ask for"):
        assert line in caplog.text

    alice.send(car_jid, "still there?")
    await until(lambda: car.new[-1].body == "still there?", "the car still takes messages")
    count = len(car.new)
    assert await car.chat.catch_up() == 0, "the archive has nothing the store lacks"
    assert len(car.new) == count
    by_car_now = [m for m in await car.store.thread(alice_jid) if m.local_id == by_car.local_id]
    assert by_car_now[0].archive_id, "the archive's copy gave it the real archive id"


async def test_an_archive_id_the_server_forgot_falls_back_to_the_newest_messages(
        prosody_server: ServerInfo, xmpp_account: AccountFactory, tmp_path: Path,
        cleanup: list[Callable[[], Awaitable[None]]], caplog: pytest.LogCaptureFixture) -> None:
    car_jid, car_password = xmpp_account("car")
    alice_jid, alice_password = xmpp_account("alice")
    db = tmp_path / "messages.db"
    old = MessageStore(db)
    await old.set_archive_id("expired-long-ago")  # e.g. past the server's archive_expires_after
    old.close()
    alice = await peer(prosody_server, alice_jid, alice_password, cleanup=cleanup)
    alice.send(car_jid, "still in the archive")
    await round_trip(alice.client)

    car = await start_car(prosody_server, car_jid, car_password, db, presence=False, cleanup=cleanup)
    assert await bodies(car.store, alice_jid) == ["still in the archive"]
    assert "the archive no longer has 'expired-long-ago'" in caplog.text
    assert await car.store.last_archive_id() == car.archive_results[-1]


async def test_a_service_started_on_a_session_already_online_catches_up_at_once(
        prosody_server: ServerInfo, xmpp_account: AccountFactory, tmp_path: Path,
        cleanup: list[Callable[[], Awaitable[None]]]) -> None:
    car_jid, car_password = xmpp_account("car")
    alice_jid, alice_password = xmpp_account("alice")
    alice = await peer(prosody_server, alice_jid, alice_password, cleanup=cleanup)
    alice.send(car_jid, "sent before the car's chat started")
    await round_trip(alice.client)

    car = await start_car(prosody_server, car_jid, car_password, tmp_path / "messages.db", presence=False,
                          late=True, cleanup=cleanup)
    assert [(m.body, m.via) for m in car.new] == [("sent before the car's chat started", "mam")]
    alice.send(f"{car_jid}/headunit", "and one live")  # to the full JID: without presence, bare goes offline
    await until(lambda: len(car.new) == 2, "the live message")
    assert (car.new[1].body, car.new[1].via) == ("and one live", "live")
