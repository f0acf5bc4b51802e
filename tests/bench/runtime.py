"""A virtualenv with the agent's runtime packages only, as on a car: what the footprint is measured in.

The test venv (.venv) also holds pytest and its friends; slixmpp imports pygments when it is
installed (for coloured XML in debug logs), which a car never has. ``make bench`` measures the
agent in build/bench-venv instead: ``pip install -e .`` without the test extras.
"""

from __future__ import annotations

import subprocess
import sys

from tests.harness.agentproc import REPO

VENV = REPO / "build" / "bench-venv"


def python(progress: object = print) -> str:
    """The runtime venv's interpreter, made or brought up to date (setup.cfg changed) first."""
    interpreter = VENV / "bin" / "python"
    stamp = VENV / ".installed"
    setup = REPO / "setup.cfg"
    if not stamp.exists() or stamp.stat().st_mtime < setup.stat().st_mtime:
        progress(f"  making {VENV.relative_to(REPO)} (the runtime packages only, as on a car)")  # type: ignore[operator]
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(VENV)], check=True)
        subprocess.run([str(interpreter), "-m", "pip", "install", "-q", "--disable-pip-version-check", "-e",
                        str(REPO)], check=True, cwd=REPO)
        stamp.touch()
    return str(interpreter)


def import_breakdown(interpreter: str) -> list[tuple[str, float]]:
    """RSS (MB) after importing, in a fresh interpreter of the runtime venv, each part the agent loads, in order."""
    steps = ["asyncio, ssl, sqlite3 (the standard library the agent uses)", "slixmpp", "can", "cantools",
             "pynmea2, serial", "gpiozero", "agent (everything the headless agent imports)",
             "agent.dashboard (the touchscreen's web server)"]
    code = """
import sys
def rss():
    for line in open('/proc/self/status'):
        if line.startswith('VmRSS:'):
            return int(line.split()[1]) / 1024
print('start', rss())
import asyncio, ssl, sqlite3, json, logging; print(0, rss())
import slixmpp; print(1, rss())
import can; print(2, rss())
import cantools; print(3, rss())
import pynmea2, serial; print(4, rss())
import gpiozero; print(5, rss())
import agent.app, drivers.gpio, drivers.can.obd, drivers.gnss.serial; print(6, rss())
import agent.dashboard; print(7, rss())
"""
    out = subprocess.run([interpreter, "-c", code], capture_output=True, text=True, cwd=REPO, check=True).stdout
    values = [float(line.split()[1]) for line in out.splitlines()]
    rows = [("the interpreter", values[0])]
    rows += [(step, values[i + 1] - values[i]) for i, step in enumerate(steps)]
    return rows
