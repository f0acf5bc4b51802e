"""``headunit`` as an operator or driver runs it: its own process, next to an agent the test runs."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Mapping
from pathlib import Path

from tests.harness.agentproc import REPO

TIMEOUT = 30.0  # s for one command


async def headunit(*args: str, env: Mapping[str, str] | None = None,
                   timeout: float = TIMEOUT) -> tuple[int, str, str]:
    """``python -m agent ARGS`` as its own process (this event loop keeps serving meanwhile);
    the caller's HEADUNIT_* variables are left out, ``env`` is added. (exit status, stdout, stderr)."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("HEADUNIT_")}
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "agent", *args, cwd=REPO, env={**clean, **(env or {})},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    async with asyncio.timeout(timeout):
        out, err = await process.communicate()
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


def control_profile(folder: Path, socket: Path, name: str = "CLI test car") -> Path:
    """A profile with just enough to find an agent's control socket (no password, no CA)."""
    profile = folder / "car.toml"
    profile.write_text(
        f'[profile]\nname = "{name}"\n\n'
        '[account]\njid = "car@localhost"\npassword_env = "HEADUNIT_TEST_NO_SUCH_VARIABLE"\n\n'
        f'[control]\nsocket = "{socket}"\n')
    return profile
