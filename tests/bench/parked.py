"""The parked agent: CPU share and wake-ups per second over a minute, all threads, from /proc.

The demo drive is replayed fast until the ignition is off; then nothing happens, as in a car
parked overnight on a permanent supply. CPU is the time on the CPU of every thread
(``/proc/PID/task/*/schedstat``); a wake-up is a context switch (voluntary + involuntary, from
``status``): an idle thread that sleeps and wakes once is one. The baseline, measured in the same
run, is a Python interpreter that only sleeps (the floor any process here has).
"""

from __future__ import annotations

import asyncio
import os
import secrets
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from devserver.prosody import Prosody
from tests.harness.agentproc import DEMO_PROFILE, AgentProcess

WINDOW = 60.0  # s measured
SETTLE = 10.0  # s after the ignition went off before measuring
SPEED = 50.0  # the 6-minute drive in about 7 s


@dataclass
class Parked:
    cpu_share: float  # of one core
    wakeups_per_s: float
    threads: int
    per_thread: list[tuple[str, float, float]]  # (name, CPU share, wake-ups/s)


def _thread_counters(pid: int) -> dict[int, tuple[str, int, int]]:
    """{tid: (name, ns on the CPU, context switches)} of every live thread."""
    found = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        folder = f"/proc/{pid}/task/{tid}"
        try:
            name = Path(folder, "comm").read_text().strip()
            run_ns = int(Path(folder, "schedstat").read_text().split()[0])
            switches = 0
            for line in Path(folder, "status").read_text().splitlines():
                if line.startswith(("voluntary_ctxt_switches:", "nonvoluntary_ctxt_switches:")):
                    switches += int(line.split()[1])
        except (OSError, ValueError, IndexError):
            continue  # the thread ended while we read it
        found[int(tid)] = (name, run_ns, switches)
    return found


async def measure_pid(pid: int, window: float = WINDOW) -> Parked:
    """CPU share and wake-ups of ``pid`` over ``window`` seconds (threads that came and went excluded)."""
    before, start = _thread_counters(pid), time.monotonic()
    await asyncio.sleep(window)
    after, elapsed = _thread_counters(pid), time.monotonic() - start
    per_thread = []
    for tid, (name, run_ns, switches) in sorted(after.items()):
        if tid in before:
            _, run0, switch0 = before[tid]
            per_thread.append((f"{name}/{tid}", (run_ns - run0) / 1e9 / elapsed, (switches - switch0) / elapsed))
    return Parked(sum(t[1] for t in per_thread), sum(t[2] for t in per_thread), len(after), per_thread)


async def measure(python: str = sys.executable, progress: object = print) -> tuple[Parked, Parked]:
    """(the parked agent, a sleeping interpreter), each over WINDOW seconds."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix="headunit-parked-") as folder, Prosody(Path(folder)) as server:
        password = secrets.token_urlsafe(12)
        jid = server.register(f"parked-{secrets.token_hex(3)}", password)
        agent = AgentProcess(server.server_info(), jid, password, profile=DEMO_PROFILE, speed=SPEED, python=python)
        agent.start()
        try:
            await agent.wait_for_line("online as", timeout=60)
            await agent.wait_for_line("→ off", timeout=120)  # the drive is over, the ignition off
            await asyncio.sleep(SETTLE)
            assert agent.process is not None
            progress(f"  parked agent: measuring {WINDOW:.0f} s")  # type: ignore[operator]
            parked = await measure_pid(agent.process.pid)
        finally:
            agent.stop()
    sleeper = subprocess.Popen([python, "-c", "import time; time.sleep(3600)"])
    try:
        await asyncio.sleep(2)
        progress(f"  baseline (a sleeping interpreter): measuring {WINDOW:.0f} s")  # type: ignore[operator]
        floor = await measure_pid(sleeper.pid)
    finally:
        sleeper.kill()
        sleeper.wait()
    return parked, floor
