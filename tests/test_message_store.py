"""The message store on its own: each message once however often it comes, states only move forward,
nothing from the network bloats or poisons the file, and everything survives a reopen."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from agent.messages import MessageError, MessageStore
from agent.messages.store import MAX_BODY_BYTES, TRUNCATED

CAR = "car@example.org"
ALICE = "alice@example.org"
BOB = "bob@example.org"


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[MessageStore]:
    opened = MessageStore(tmp_path / "messages.db")
    yield opened
    opened.close()


async def test_a_message_is_stored_once_by_archive_id_origin_id_or_id_and_body(store: MessageStore) -> None:
    first = await store.add_incoming(ALICE, "hello", stanza_id="m1", origin_id="o1", archive_id="A1")
    assert first is not None and first.direction == "in" and first.via == "live" and first.state is None
    repeats = [
        await store.add_incoming(ALICE, "hello again?", archive_id="A1", via="mam"),  # same archive id
        await store.add_incoming(ALICE, "hello", origin_id="o1", stanza_id="other", via="carbon"),
        await store.add_incoming(ALICE, "hello", stanza_id="m1"),  # no origin-id: id and body
    ]
    assert repeats == [None, None, None]
    others = [
        await store.add_incoming(BOB, "hello", origin_id="o1", stanza_id="m1"),  # another conversation
        await store.add_incoming(ALICE, "hello, second", stanza_id="m1"),  # same id, another body
        await store.add_incoming(ALICE, "hello", archive_id="A2"),  # the server says: another message
    ]
    assert all(message is not None for message in others)
    assert [m.body for m in await store.thread(ALICE)] == ["hello", "hello, second", "hello"]
    assert [m.body for m in await store.thread(BOB)] == ["hello"]


async def test_a_repeat_from_the_archive_adds_the_archive_id_to_the_live_copy(store: MessageStore) -> None:
    live = await store.add_incoming(ALICE, "offline delivery", stanza_id="m7", sent_at=1000.0)
    assert live is not None and live.archive_id is None
    assert await store.add_incoming(ALICE, "offline delivery", stanza_id="m7", archive_id="A7", via="mam") is None
    (kept,) = await store.thread(ALICE)
    assert kept.local_id == live.local_id and kept.archive_id == "A7" and kept.via == "live"
    assert kept.sent_at == 1000.0, "the original time is kept"


async def test_outgoing_states_only_move_forward_and_only_for_the_right_peer(store: MessageStore) -> None:
    out = await store.queue_outgoing(ALICE, "on my way")
    assert out.state == "queued" and out.direction == "out" and out.via == "local"
    assert out.origin_id is not None and len(out.origin_id) >= 16
    assert await store.mark(out.origin_id, "delivered", peer=BOB) is False, "a receipt from someone else"
    assert await store.mark(out.origin_id, "sent")
    assert await store.mark(out.origin_id, "delivered", peer=ALICE)
    assert await store.mark(out.origin_id, "acked") is False, "a late server ack"
    assert await store.mark(out.origin_id, "sent") is False
    stored = await store.get(out.origin_id)
    assert stored is not None and stored.state == "delivered"
    failed = await store.queue_outgoing(ALICE, "lost?")
    assert failed.origin_id is not None
    assert await store.mark(failed.origin_id, "failed")
    assert await store.mark(failed.origin_id, "sent") is False
    assert await store.mark(failed.origin_id, "delivered"), "a receipt proves it arrived after all"
    with pytest.raises(ValueError):
        await store.mark(out.origin_id, "read")  # type: ignore[arg-type]


async def test_unacked_lists_queued_and_sent_and_an_archived_copy_acks_ours(store: MessageStore) -> None:
    queued = await store.queue_outgoing(ALICE, "one")
    sent = await store.queue_outgoing(BOB, "two")
    done = await store.queue_outgoing(ALICE, "three")
    assert sent.origin_id and done.origin_id and queued.origin_id
    await store.mark(sent.origin_id, "sent")
    await store.mark(done.origin_id, "acked")
    assert [m.body for m in await store.unacked()] == ["one", "two"]
    copy = await store.add_incoming(BOB, "two", direction="out", origin_id=sent.origin_id,
                                    archive_id="A9", via="mam")
    assert copy is None, "our own message from the archive is the same message"
    assert [m.body for m in await store.unacked()] == ["one"]
    acked = await store.get(sent.origin_id)
    assert acked is not None and acked.state == "acked" and acked.archive_id == "A9"


async def test_a_message_of_ours_seen_elsewhere_is_outgoing_and_acked(store: MessageStore) -> None:
    carbon = await store.add_incoming(ALICE, "from my phone", direction="out", origin_id="p1", via="carbon")
    assert carbon is not None and carbon.direction == "out" and carbon.state == "acked"
    assert await store.unacked() == []


async def test_threads_and_thread_order_by_original_time(store: MessageStore) -> None:
    now = time.time()
    await store.add_incoming(ALICE, "late", sent_at=now - 10)
    await store.add_incoming(ALICE, "early (caught up from the archive)", sent_at=now - 100, via="mam")
    await store.add_incoming(BOB, "bob's", sent_at=now - 50)
    await store.queue_outgoing(BOB, "reply to bob")
    assert [m.body for m in await store.thread(ALICE)] == ["early (caught up from the archive)", "late"]
    assert [m.body for m in await store.thread(ALICE, limit=1)] == ["late"]
    assert [(m.peer, m.body) for m in await store.threads()] == [(BOB, "reply to bob"), (ALICE, "late")]
    late = (await store.thread(ALICE))[-1]
    assert [m.body for m in await store.thread(ALICE, before=late.local_id)] == [
        "early (caught up from the archive)"], "paging back from a message"
    assert [(m.peer, m.body) for m in await store.recent_threads(threads=2, per_thread=1)] == [
        (BOB, "reply to bob"), (ALICE, "late")]
    assert [m.body for m in await store.recent_threads(threads=1)] == ["bob's", "reply to bob"]
    assert (await store.get_local(late.local_id)) == late


async def test_a_huge_body_is_cut_with_a_marker_and_logged(store: MessageStore,
                                                           caplog: pytest.LogCaptureFixture) -> None:
    huge = "é" * 500_000  # 1 MB of UTF-8
    stored = await store.add_incoming(ALICE, huge, stanza_id="big")
    assert stored is not None and stored.body.endswith(TRUNCATED)
    assert len(stored.body.encode("utf-8")) <= MAX_BODY_BYTES
    assert set(stored.body.removesuffix(TRUNCATED)) == {"é"}, "cut on a character boundary"
    assert "body of 1000000 bytes cut" in caplog.text
    (kept,) = await store.thread(ALICE)
    assert kept.body == stored.body


async def test_characters_xml_forbids_never_reach_the_database(store: MessageStore) -> None:
    hostile = "a\x00b\x01c\x1bd\ud800e\ufffff\tg\nh"
    stored = await store.add_incoming(ALICE, hostile, stanza_id="x\x00y")
    assert stored is not None and stored.body == "abcdef\tg\nh"
    assert stored.stanza_id is None, "an id with forbidden characters is not used to match"
    raw = store.db.conn.execute("SELECT body FROM messages").fetchone()[0]
    assert raw == "abcdef\tg\nh"


async def test_bad_addresses_and_empty_bodies_are_refused(store: MessageStore) -> None:
    for peer in ("", "car@example.org/phone", "a\x00b@example.org", " padded@example.org", "x" * 4000):
        with pytest.raises(MessageError):
            await store.add_incoming(peer, "hi")
    with pytest.raises(MessageError):
        await store.queue_outgoing(ALICE, " \x00 ")
    assert await store.threads() == []


async def test_a_stamp_from_the_future_is_not_believed(store: MessageStore) -> None:
    before = time.time()
    stored = await store.add_incoming(ALICE, "from 2100", sent_at=4102444800.0)
    assert stored is not None and before <= stored.sent_at <= time.time()


async def test_everything_survives_a_reopen(tmp_path: Path) -> None:
    first = MessageStore(tmp_path / "m.db")
    out = await first.queue_outgoing(ALICE, "queued before the power cut")
    await first.add_incoming(ALICE, "hi", archive_id="A1")
    await first.set_archive_id("A1")
    first.close()
    first.close()
    again = MessageStore(tmp_path / "m.db")
    try:
        assert await again.last_archive_id() == "A1"
        assert [m.origin_id for m in await again.unacked()] == [out.origin_id]
        assert await again.add_incoming(ALICE, "hi", archive_id="A1") is None
        await again.set_archive_id("A2")
        assert await again.last_archive_id() == "A2"
    finally:
        again.close()
