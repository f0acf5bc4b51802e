"""The running agent's idle memory (RSS) and its time from start to online, on a real Prosody."""

from __future__ import annotations

import asyncio
import secrets
import statistics
import tempfile
from dataclasses import dataclass
from pathlib import Path

import psutil

from tests.harness.agentproc import AgentProcess
from tests.harness.prosody import Prosody


@dataclass
class Footprint:
    online_s: float  # process start → "online as" logged
    rss_mb: float  # resident set size once online and settled
    uss_mb: float  # memory unique to the process (what stopping it would free)


async def measure_once(server: Prosody, settle: float = 5.0) -> Footprint:
    car = f"bench-{secrets.token_hex(3)}"
    password = secrets.token_urlsafe(12)
    jid = server.register(car, password)
    agent = AgentProcess(server.server_info(), jid, password)
    agent.start()
    try:
        online = await agent.wait_for_line("online as", timeout=60)
        await asyncio.sleep(settle)
        assert agent.process is not None
        info = psutil.Process(agent.process.pid).memory_full_info()
        return Footprint(online, info.rss / 2**20, info.uss / 2**20)
    finally:
        agent.stop()


async def measure(repeats: int = 3, progress: object = print) -> list[Footprint]:
    results = []
    with tempfile.TemporaryDirectory(prefix="headunit-bench-") as folder, Prosody(Path(folder)) as server:
        for i in range(repeats):
            results.append(await measure_once(server))
            progress(f"  agent run {i + 1}/{repeats}: online after {results[-1].online_s:.2f} s, "  # type: ignore[operator]
                     f"RSS {results[-1].rss_mb:.1f} MB")
    return results


def medians(results: list[Footprint]) -> Footprint:
    return Footprint(statistics.median(r.online_s for r in results),
                     statistics.median(r.rss_mb for r in results),
                     statistics.median(r.uss_mb for r in results))
