"""One way to hear about something: ``event.listen(callback)`` returns the unsubscribe.

Every publisher of the agent (the XMPP session, chat, contacts, presence, power, the
telemetry queue, the supervisor) owns one :class:`Event` per kind of news and calls
:meth:`Event.emit`; whoever wants to know calls :meth:`Event.listen` and keeps the
callable it returns, as with Home Assistant's ``EventBus.async_listen``. A listener
that raises is logged with the event's name and the value, and the others still run.
Listeners are called synchronously, in the order they subscribed, on the emitting
thread (the event loop for everything in ``agent/``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Generic, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")

Unsubscribe = Callable[[], None]


class Event(Generic[T]):
    """News of one kind from one publisher; ``T`` is what each listener is called with."""

    __slots__ = ("name", "_listeners")

    def __init__(self, name: str) -> None:
        self.name = name  # for the log: "xmpp online", "chat message", ...
        self._listeners: list[_Entry[T]] = []

    def listen(self, callback: Callable[[T], None]) -> Unsubscribe:
        """Call ``callback(value)`` at each :meth:`emit` from now on; returns the unsubscribe (idempotent)."""
        entry = _Entry(callback)  # the same callable twice is two subscriptions, each removed by its own
        self._listeners.append(entry)

        def unsubscribe() -> None:
            if entry in self._listeners:
                self._listeners.remove(entry)

        return unsubscribe

    def emit(self, value: T) -> None:
        """Call every listener with ``value``; one that raises is logged, the others still run."""
        for entry in list(self._listeners):
            try:
                entry.callback(value)
            except Exception:
                log.exception("%s listener %r failed on %s", self.name, entry.callback, _short(value))

    @property
    def listeners(self) -> int:
        """How many subscriptions are live."""
        return len(self._listeners)

    def __repr__(self) -> str:
        return f"<Event {self.name!r}: {len(self._listeners)} listeners>"


class _Entry(Generic[T]):
    """One subscription: compared by identity, so an unsubscribe removes exactly its own."""

    __slots__ = ("callback",)

    def __init__(self, callback: Callable[[T], None]) -> None:
        self.callback = callback


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 200 else text[:199] + "…"
