"""Offers to the driver (incoming calls and files): one decision each, bounded, hostile names cleaned."""

from __future__ import annotations

import asyncio

import pytest

from agent.cabin import AlreadyAnswered, CabinError, Offer, Offers, PromptNotFound


async def test_a_call_is_accepted_once_and_listeners_hear_it_appear_and_end() -> None:
    offers = Offers()
    heard: list[tuple[str, str | None]] = []
    offers.listen(lambda o: heard.append((o.id, o.outcome)))
    call = offers.offer_call("alice@example.org", ["video", "audio", "smell"])
    assert call.media == ("audio", "video") and [o.id for o in offers.pending()] == [call.id]
    waiting = asyncio.create_task(call.decision(timeout=10))
    await asyncio.sleep(0)
    assert offers.answer(call.id, accept=True) is call
    assert await waiting == "accepted" and offers.pending() == []
    assert heard == [(call.id, None), (call.id, "accepted")]
    with pytest.raises(PromptNotFound):
        offers.answer(call.id, accept=False)


async def test_no_answer_is_a_timeout_and_a_late_answer_is_refused() -> None:
    offers = Offers()
    ended: list[Offer] = []
    offers.listen(lambda o: ended.append(o) if not o.is_open else None)
    file = offers.offer_file("bob@example.org", "report.pdf", 1234)
    assert await file.decision(timeout=0.05) == "timeout"
    await asyncio.sleep(0)
    assert offers.pending() == [] and ended == [file], "the dashboard hears that it ended"
    with pytest.raises(PromptNotFound):
        offers.answer(file.id, accept=True)


async def test_a_withdrawn_offer_ends_and_cannot_be_answered() -> None:
    offers = Offers()
    call = offers.offer_call("alice@example.org", ["audio"])
    offers.withdraw(call)
    assert await call.decision(timeout=1) == "withdrawn"
    with pytest.raises(PromptNotFound):
        offers.answer(call.id, accept=True)
    offers.withdraw(call)  # harmless once ended
    assert call.outcome == "withdrawn"


async def test_hostile_names_are_cleaned_and_a_flood_is_declined_at_once() -> None:
    offers = Offers(max_pending=2)
    file = offers.offer_file("eve@example.org", "\u202ecod.exe\x00\n" + "x" * 500, 10)
    assert "\u202e" not in file.name and "\x00" not in file.name and "\n" not in file.name
    assert len(file.name) <= 120 and file.name.endswith("…")
    offers.offer_call("eve@example.org", ["audio"])
    third = offers.offer_call("eve@example.org", ["audio"])
    assert await third.decision(timeout=1) == "declined" and len(offers.pending()) == 2
    with pytest.raises(CabinError):
        offers.offer_call("eve@example.org", [])
    with pytest.raises(CabinError):
        offers.offer_file("eve@example.org", "x", -1)
    offers.close()
    assert offers.pending() == [] and file.outcome == "withdrawn"
    with pytest.raises((PromptNotFound, AlreadyAnswered)):
        offers.answer(file.id, accept=True)
