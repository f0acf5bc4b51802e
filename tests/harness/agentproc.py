"""Runs ``headunit run`` as a real process against a test server, and a watcher client as the operator."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import signal
import subprocess
import tempfile
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path

from agent.profile import load_profile
from agent.profile.model import Profile, StorageConfig
from devserver.prosody import ServerInfo

REPO = Path(__file__).resolve().parents[2]
DEMO_PROFILE = REPO / "profiles" / "demo.toml"


def demo_profile(server: ServerInfo, jid: str, password: str, *, path: Path = DEMO_PROFILE) -> Profile:
    """The demo profile for an in-process Agent: this account and server, a fresh state folder."""
    profile = load_profile(path, environ={
        "HEADUNIT_JID": jid, "HEADUNIT_PASSWORD": password, "HEADUNIT_HOST": server.host,
        "HEADUNIT_PORT": str(server.port), "HEADUNIT_CA_FILE": str(server.ca_file)})
    state = Path(tempfile.mkdtemp(prefix="hu-test-"))  # short: UNIX socket paths are limited
    # any free port for the dashboard: tests run side by side and next to `make run`
    return dataclasses.replace(profile, storage=StorageConfig(state),
                               dashboard=dataclasses.replace(profile.dashboard, port=0))


async def wait_until(predicate: Callable[[], object], timeout: float) -> None:
    """Poll ``predicate`` until it is true; TimeoutError after ``timeout`` seconds."""
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.02)


class AgentProcess:
    """``python -m agent run PROFILE`` with the account taken from the environment."""

    def __init__(self, server: ServerInfo, jid: str, password: str, *, profile: Path = DEMO_PROFILE,
                 speed: float | None = None, extra_env: dict[str, str] | None = None,
                 data_dir: str | None = None, python: str = sys.executable) -> None:
        self.command = [python, "-m", "agent", "run", str(profile)]
        if speed is not None:
            self.command += ["--speed", str(speed)]
        # short: UNIX socket paths are limited; reuse one to restart "the same car"
        self.data_dir = data_dir or tempfile.mkdtemp(prefix="hu-agent-")
        self.env = {**os.environ, "HEADUNIT_DATA_DIR": self.data_dir, "HEADUNIT_JID": jid, "HEADUNIT_PASSWORD": password,
                    "HEADUNIT_HOST": server.host, "HEADUNIT_PORT": str(server.port),
                    "HEADUNIT_CA_FILE": str(server.ca_file), "PYTHONUNBUFFERED": "1",
                    "HEADUNIT_DASHBOARD_PORT": "0",
                    **(extra_env or {})}
        self.process: subprocess.Popen[str] | None = None
        self.lines: deque[str] = deque(maxlen=2000)
        self._line_times: list[tuple[float, str]] = []
        self.started_at = 0.0
        self._pump: threading.Thread | None = None

    def start(self) -> None:
        self.started_at = time.monotonic()
        self.process = subprocess.Popen(self.command, env=self.env, cwd=REPO, text=True,
                                        stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        self._pump = threading.Thread(target=self._read, daemon=True)
        self._pump.start()

    def _read(self) -> None:
        assert self.process is not None and self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line.rstrip("\n"))
            self._line_times.append((time.monotonic(), line))

    def first_line_time(self, text: str) -> float | None:
        """Seconds from start to the first output line containing ``text``."""
        for at, line in list(self._line_times):
            if text in line:
                return at - self.started_at
        return None

    async def wait_for_line(self, text: str, timeout: float) -> float:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            at = self.first_line_time(text)
            if at is not None:
                return at
            if self.process is not None and self.process.poll() is not None:
                raise AssertionError(f"agent exited ({self.process.returncode}) before {text!r}:\n{self.tail()}")
            await asyncio.sleep(0.05)
        raise AssertionError(f"no {text!r} from the agent within {timeout} s:\n{self.tail()}")

    def stop(self, timeout: float = 10.0) -> int:
        """SIGINT, as Ctrl-C does; SIGKILL if it does not stop within ``timeout``."""
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
                raise AssertionError(f"agent did not stop within {timeout} s:\n{self.tail()}") from None
        if self._pump is not None:
            self._pump.join(2)
        return self.process.returncode

    def tail(self, n: int = 40) -> str:
        return "\n".join(list(self.lines)[-n:])


