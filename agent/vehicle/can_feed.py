"""CAN → vehicle state: decodes the mapped DBC signals and OBD-II answers into VSS paths."""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING

import can

from agent.vehicle.config import CanConfig, ObdConfig
from agent.vehicle.state import VehicleState
from drivers.backoff import Backoff
from drivers.can import CanPort, DbcDecoder, FrameFilter, SignalSpec

if TYPE_CHECKING:
    from drivers.can.obd import ObdPoller

log = logging.getLogger(__name__)

RATE_WINDOW = 10.0  # s over which frames_per_second counts
SOURCE = "can"
OBD_SOURCE = "obd"


class CanFeed:
    """Owns the CAN port of a profile and writes what it decodes into the state."""

    def __init__(self, state: VehicleState, config: CanConfig, obd: ObdConfig | None = None, *,
                 clock: Callable[[], float], speed: float = 1.0) -> None:
        self._state = state
        self._clock = clock
        self._rate_samples: deque[tuple[float, int]] = deque()  # (monotonic, frames read so far)
        self._refresh_every = config.stale_after / 4
        self._refreshed: dict[int, float] = {}
        state.set_stale_after(SOURCE, config.stale_after)
        specs = [SignalSpec(m.message, m.signal, m.path, m.scale, m.offset, m.datatype)
                 for m in config.signals]
        self.decoder = DbcDecoder.from_file(config.dbc, specs) if config.dbc and specs else None
        frame_filter = self.decoder.frame_filter if self.decoder else FrameFilter()
        self.obd: ObdPoller | None = None
        if obd is not None:
            from drivers.can import obd as obd_driver

            self.obd = self._make_obd(obd)
            frame_filter = frame_filter | obd_driver.FRAME_FILTER
        self.port = CanPort(
            config.interface, config.channel, self._on_frames, frame_filter,
            bitrate=config.bitrate, fd=config.fd, data_bitrate=config.data_bitrate,
            replay_file=config.replay_file, replay_speed=speed, replay_loop=config.replay_loop,
            backoff=Backoff(initial=1.0, cap=30.0),
        )

    def _make_obd(self, obd: ObdConfig) -> ObdPoller:
        from drivers.can.obd import ObdPoller

        paths = {p.pid: p.path for p in obd.pids}
        self._state.set_stale_after(OBD_SOURCE, obd.stale_after)

        def on_value(pid: int, value: float) -> None:
            self._state.update(paths[pid], value, OBD_SOURCE)

        return ObdPoller(self._send, [p.pid for p in obd.pids], on_value,
                         interval=obd.interval, timeout=obd.timeout)

    async def _send(self, msg: can.Message) -> None:
        await self.port.send(msg)  # the port exists by the time the poller runs

    def frames_per_second(self) -> float | None:
        """Frames read per second over the last RATE_WINDOW s (wall time); None before any frame."""
        now = time.monotonic()
        samples = self._rate_samples
        while len(samples) > 1 and now - samples[1][0] >= RATE_WINDOW:
            samples.popleft()  # the newest sample older than the window stays, as the base
        if not samples or now <= samples[0][0]:
            return None
        start, frames = samples[0]
        return (self.port.stats.frames - frames) / (now - start)

    def _note_rate(self) -> None:
        """Sampled as frames arrive, at most once a second: no timer, and nothing to do while the bus sleeps."""
        now = time.monotonic()
        if not self._rate_samples or now - self._rate_samples[-1][0] >= 1.0:
            self._rate_samples.append((now, self.port.stats.frames))

    def _on_frames(self, frames: list[can.Message]) -> None:
        """Called in the loop with a batch of wanted frames."""
        self._note_rate()
        decoder = self.decoder
        update = self._state.update
        now = self._clock()
        for msg in frames:
            arbitration_id = msg.arbitration_id
            if decoder is not None:
                route, values = decoder.decode(arbitration_id, msg.is_extended_id, msg.data)
                if values:
                    for path, value in values:
                        update(path, value, SOURCE, msg.timestamp)  # type: ignore[arg-type]
                    self._refreshed[arbitration_id] = now
                    continue
                if route is not None:
                    if now - self._refreshed.get(arbitration_id, -1e9) >= self._refresh_every:
                        self._refreshed[arbitration_id] = now
                        self._state.refresh(route.keys, msg.timestamp)  # type: ignore[arg-type]
                    continue
            if self.obd is not None:
                self.obd.feed(msg)  # it ignores ids that are not OBD-II answers
