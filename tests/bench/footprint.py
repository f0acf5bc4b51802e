"""The running agent's idle memory (RSS) and its time from start to online, on a real Prosody."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import statistics
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil

from tests.harness.agentproc import DEMO_PROFILE, AgentProcess
from devserver.prosody import Prosody


@dataclass
class Footprint:
    online_s: float  # process start → "online as" logged
    rss_mb: float  # resident set size once online and settled
    uss_mb: float  # memory unique to the process (what stopping it would free)


async def measure_once(server: Prosody, settle: float = 5.0, profile: Path = DEMO_PROFILE,
                       python: str = sys.executable) -> Footprint:
    car = f"bench-{secrets.token_hex(3)}"
    password = secrets.token_urlsafe(12)
    jid = server.register(car, password)
    agent = AgentProcess(server.server_info(), jid, password, profile=profile, python=python)
    agent.start()
    try:
        online = await agent.wait_for_line("online as", timeout=60)
        await asyncio.sleep(settle)
        assert agent.process is not None
        info = psutil.Process(agent.process.pid).memory_full_info()
        return Footprint(online, info.rss / 2**20, info.uss / 2**20)
    finally:
        agent.stop()


async def measure(repeats: int = 3, progress: object = print, *,
                  headless: bool = False, python: str = sys.executable) -> list[Footprint]:
    """``headless``: the demo profile with ``[dashboard] enabled = false`` (a car without a screen)."""
    results = []
    with tempfile.TemporaryDirectory(prefix="headunit-bench-") as folder, Prosody(Path(folder)) as server, \
            _profile(headless) as profile:
        for i in range(repeats):
            results.append(await measure_once(server, profile=profile, python=python))
            progress(f"  agent run {i + 1}/{repeats}{' (no dashboard)' if headless else ''}: "  # type: ignore[operator]
                     f"online after {results[-1].online_s:.2f} s, RSS {results[-1].rss_mb:.1f} MB")
    return results


@contextlib.contextmanager
def _profile(headless: bool) -> Iterator[Path]:
    """The demo profile, or a copy without the dashboard next to it (its relative paths still hold)."""
    if not headless:
        yield DEMO_PROFILE
        return
    text = DEMO_PROFILE.read_text().replace("[dashboard]\n", "[dashboard]\nenabled = false\n", 1)
    copy = DEMO_PROFILE.with_name(f".bench-headless-{secrets.token_hex(4)}.toml")
    copy.write_text(text)
    try:
        yield copy
    finally:
        copy.unlink(missing_ok=True)


def medians(results: list[Footprint]) -> Footprint:
    return Footprint(statistics.median(r.online_s for r in results),
                     statistics.median(r.rss_mb for r in results),
                     statistics.median(r.uss_mb for r in results))
