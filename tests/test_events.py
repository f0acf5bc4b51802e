"""agent.events.Event: listen returns the unsubscribe, emit reaches every listener, a failing one is logged."""

from __future__ import annotations

import logging

import pytest

from agent.events import Event


def test_every_listener_hears_each_value_in_subscription_order() -> None:
    event: Event[int] = Event("numbers")
    heard: list[tuple[str, int]] = []
    event.listen(lambda n: heard.append(("first", n)))
    event.listen(lambda n: heard.append(("second", n)))
    event.emit(1)
    event.emit(2)
    assert heard == [("first", 1), ("second", 1), ("first", 2), ("second", 2)]


def test_unsubscribe_stops_only_its_own_subscription_and_is_idempotent() -> None:
    event: Event[str] = Event("words")
    heard: list[str] = []
    first = event.listen(heard.append)
    event.listen(heard.append)  # the same callable twice: two subscriptions
    assert event.listeners == 2
    first()
    first()
    assert event.listeners == 1
    event.emit("once")
    assert heard == ["once"]


def test_a_failing_listener_is_logged_with_the_event_and_the_others_still_run(
        caplog: pytest.LogCaptureFixture) -> None:
    event: Event[int] = Event("queue depth")
    heard: list[int] = []

    def broken(_: int) -> None:
        raise RuntimeError("listener bug")

    event.listen(broken)
    event.listen(heard.append)
    with caplog.at_level(logging.ERROR, logger="agent.events"):
        event.emit(7)
    assert heard == [7]
    [record] = [r for r in caplog.records if r.name == "agent.events"]
    assert "queue depth listener" in record.getMessage() and "7" in record.getMessage()
    assert record.exc_info is not None and isinstance(record.exc_info[1], RuntimeError)


def test_a_listener_may_unsubscribe_itself_or_subscribe_another_while_being_called() -> None:
    event: Event[None] = Event("link")
    heard: list[str] = []
    late: list[str] = []

    def once(_: None) -> None:
        heard.append("once")
        unsubscribe()
        event.listen(lambda _: late.append("late"))

    unsubscribe = event.listen(once)
    event.emit(None)  # the listener added during this emit is not called by it
    event.emit(None)
    assert heard == ["once"]
    assert late == ["late"]


def test_cancellation_and_other_base_exceptions_are_not_swallowed() -> None:
    event: Event[None] = Event("stop")

    def interrupted(_: None) -> None:
        raise KeyboardInterrupt

    event.listen(interrupted)
    with pytest.raises(KeyboardInterrupt):
        event.emit(None)
