"""Replays a candump .log / .asc / .blf file onto a python-can virtual channel, paced by its timestamps.

This is the simulated car: the agent reads the channel exactly as it reads a
real bus. ``speed`` runs the log faster (10.0 = ten times real time).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import can

from drivers.errors import DriverInitError

log = logging.getLogger(__name__)

SUFFIXES = (".log", ".asc", ".blf")
_SLEEP_AHEAD = 0.002  # sleep only when at least this far ahead of the schedule


class LogReplay:
    """A log file and how fast to play it."""

    def __init__(self, file: Path | str, *, speed: float = 1.0, loop: bool = False) -> None:
        self.file = Path(file)
        if self.file.suffix.lower() not in SUFFIXES:
            raise DriverInitError(f"{self.file}: a CAN log must end in one of {', '.join(SUFFIXES)}")
        if not self.file.is_file():
            raise DriverInitError(f"{self.file}: no such CAN log")
        if speed <= 0:
            raise DriverInitError(f"replay speed must be positive, not {speed}")
        self.speed = speed
        self.loop = loop
        self.sent = 0

    def messages(self) -> Iterator[can.Message]:
        """The log's frames, in order; a line python-can cannot read is skipped by its reader."""
        with can.LogReader(str(self.file)) as reader:
            yield from reader

    def play_to_virtual(self, channel: str, stop: threading.Event) -> None:
        """Send the log onto virtual ``channel`` until it ends (or forever if looping) or ``stop``."""
        bus = can.Bus(interface="virtual", channel=channel, receive_own_messages=False)
        try:
            while not stop.is_set():
                self._play_once(bus, stop)
                if not self.loop:
                    break
        finally:
            bus.shutdown()
        log.info("replay of %s done: %d frames", self.file.name, self.sent)

    def _play_once(self, bus: can.BusABC, stop: threading.Event) -> None:
        start = time.monotonic()
        first: float | None = None
        for msg in self.messages():
            if stop.is_set():
                return
            if first is None:
                first = msg.timestamp
            due = start + (msg.timestamp - first) / self.speed
            ahead = due - time.monotonic()
            if ahead > _SLEEP_AHEAD and stop.wait(ahead):
                return
            bus.send(msg)
            self.sent += 1
