"""Dead-link detection: a car in a tunnel keeps a TCP connection that will never answer.

The server is probed with an XEP-0199 ping after ``ping_interval`` seconds with
nothing received, or a few seconds after we sent something and heard nothing
back. If nothing at all arrives within ``ping_timeout`` of a probe, the link is
dead: the transport is dropped without closing the stream, so stream
management (XEP-0198) can resume it on the next connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)

SENT_UNANSWERED = 5.0  # s after an unanswered send before we probe, if pings are due later


class LinkMonitor:
    """Watches one connected stream; ``run()`` returns when the link is declared dead."""

    def __init__(self, *, last_received: Callable[[], float], last_sent: Callable[[], float],
                 send_probe: Callable[[], Any], ping_interval: float, ping_timeout: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._last_received = last_received
        self._last_sent = last_sent
        self._send_probe = send_probe
        self.ping_interval = ping_interval
        self.ping_timeout = ping_timeout
        self._clock = clock
        self.probe_sent: float | None = None
        self.probes = 0
        self._poked = asyncio.Event()

    def step(self) -> bool:
        """One check; True if the link is dead."""
        now = self._clock()
        received = self._last_received()
        if self.probe_sent is not None:
            if received >= self.probe_sent:
                self.probe_sent = None  # something came back: alive
            elif now - self.probe_sent >= self.ping_timeout:
                return True
            return False
        quiet = now - received
        unanswered = self._last_sent() - received
        if quiet >= self.ping_interval or (unanswered > 0 and quiet >= min(SENT_UNANSWERED, self.ping_interval)):
            self.probe_sent = now
            self.probes += 1
            self._send_probe()
        return False

    def next_check(self) -> float:
        """When :meth:`step` has something to decide (clock time), if nothing arrives meanwhile."""
        received = self._last_received()
        if self.probe_sent is not None:
            return self.probe_sent + self.ping_timeout
        due = received + self.ping_interval
        if self._last_sent() > received:
            due = min(due, received + min(SENT_UNANSWERED, self.ping_interval))
        return due

    def poke(self) -> None:
        """Something was sent after a quiet spell: the next check may be sooner than planned."""
        self._poked.set()

    async def run(self) -> None:
        """Sleep until the next deadline (no polling: a parked car's link costs a ping a minute)."""
        while not self.step():
            self._poked.clear()
            delay = max(0.0, self.next_check() - self._clock()) + 0.001
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self._poked.wait()
        log.warning("no answer from the server for %.0f s: the link is dead", self.ping_timeout)
