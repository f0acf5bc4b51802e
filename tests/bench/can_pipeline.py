"""CPU cost of the CAN pipeline on a saturated bus, next to a plain python-can + cantools loop.

Both read the same frames from python-can's virtual interface, sent by a thread
at the worst-case classic CAN rate (about 7,400 frames/s at 1 Mbit/s). CPU is
the process's CPU time minus the sender thread's own, over the sending period.
"""

from __future__ import annotations

import asyncio
import statistics
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import can
import cantools

from agent.clock import Clock
from agent.profile.model import CanConfig
from agent.vehicle.can_feed import CanFeed
from agent.vehicle.mode import ModeSettings
from agent.vehicle.mode_tracker import ModeTracker
from agent.vehicle.state import VehicleState

RATE = 7400.0


@dataclass
class Run:
    frames_sent: int
    frames_handled: int
    wall: float
    cpu: float

    @property
    def share(self) -> float:
        return self.cpu / self.wall

    @property
    def per_frame_us(self) -> float:
        return self.cpu / self.frames_sent * 1e6


def saturated_frames(log_file: Path, seconds: float) -> list[can.Message]:
    """The demo drive's frames in order, as many as ``seconds`` of a saturated bus carries."""
    wanted = int(RATE * seconds)
    frames: list[can.Message] = []
    while len(frames) < wanted:
        with can.LogReader(str(log_file)) as reader:
            for msg in reader:
                frames.append(msg)
                if len(frames) == wanted:
                    break
    return frames


def _send(channel: str, frames: list[can.Message], result: dict[str, float], started: threading.Event) -> None:
    bus = can.Bus(interface="virtual", channel=channel, receive_own_messages=False)
    try:
        started.wait()
        cpu0 = time.thread_time()
        t0 = time.monotonic()
        for i, msg in enumerate(frames):
            ahead = t0 + i / RATE - time.monotonic()
            if ahead > 0.001:
                time.sleep(ahead)
            bus.send(msg)
        result["cpu"] = time.thread_time() - cpu0
        result["wall"] = time.monotonic() - t0
    finally:
        bus.shutdown()


async def _measure(channel: str, frames: list[can.Message], handled: Callable[[], int]) -> Run:
    result: dict[str, float] = {}
    started = threading.Event()
    sender = threading.Thread(target=_send, args=(channel, frames, result, started))
    sender.start()
    await asyncio.sleep(0.2)
    cpu0 = time.process_time()
    started.set()
    while sender.is_alive():
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.1)  # let the last batch through
    cpu = time.process_time() - cpu0 - result["cpu"]
    return Run(len(frames), handled(), result["wall"], cpu)


async def run_pipeline(config: CanConfig, frames: list[can.Message], channel: str) -> Run:
    """The agent's own pipeline: CanPort → DbcDecoder → VehicleState (with the mode tracker listening)."""
    clock = Clock()
    state = VehicleState(clock=clock.now)
    feed = CanFeed(state, config, clock=clock.now)
    feed.port.interface = "virtual"
    feed.port.channel = channel
    tracker = ModeTracker(state, ModeSettings(), clock)
    tracker.start()
    task = asyncio.create_task(feed.port.run())
    while not feed.port.is_connected:
        await asyncio.sleep(0.01)
    try:
        return await _measure(channel, frames, lambda: feed.port.stats.frames)
    finally:
        tracker.stop()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def run_baseline(dbc: Path, frames: list[can.Message], channel: str) -> Run:
    """The textbook loop: a python-can Notifier in the loop and cantools decoding every frame."""
    db = cantools.database.load_file(str(dbc))
    bus = can.Bus(interface="virtual", channel=channel, receive_own_messages=False)
    count = 0

    def listener(msg: can.Message) -> None:
        nonlocal count
        count += 1
        try:
            db.decode_message(msg.arbitration_id, msg.data)
        except KeyError:
            pass

    notifier = can.Notifier(bus, [listener], loop=asyncio.get_running_loop())
    try:
        return await _measure(channel, frames, lambda: count)
    finally:
        notifier.stop()
        bus.shutdown()


def median_run(runs: list[Run]) -> Run:
    return sorted(runs, key=lambda r: r.cpu)[len(runs) // 2]


async def compare(config: CanConfig, log_file: Path, *, seconds: float = 5.0, repeats: int = 5,
                  progress: Callable[[str], None] = print) -> dict[str, list[Run]]:
    frames = saturated_frames(log_file, seconds)
    runs: dict[str, list[Run]] = {"headunit": [], "baseline": []}
    for i in range(repeats):  # alternate, so drift on a shared machine hits both alike
        runs["headunit"].append(await run_pipeline(config, frames, f"bench-hu-{i}"))
        assert config.dbc is not None
        runs["baseline"].append(await run_baseline(config.dbc, frames, f"bench-base-{i}"))
        progress(f"  CAN run {i + 1}/{repeats}: headunit {runs['headunit'][-1].share:.1%}, "
                 f"baseline {runs['baseline'][-1].share:.1%} of one core")
    return runs


def ratio(runs: dict[str, list[Run]]) -> float:
    return statistics.median(b.cpu / h.cpu for h, b in zip(runs["headunit"], runs["baseline"]))


Runner = Callable[[], Awaitable[None]]
