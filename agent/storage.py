"""Where the agent keeps its state, and the one way it opens SQLite.

Every database is in WAL mode with ``synchronous=FULL``: a transaction that
returned is on disk, whatever happens to the process or the power next. Each
database has one worker thread, so a slow SD card never blocks the event loop.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sqlite3
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

from agent.errors import HeadunitError
from agent.profile.model import StorageConfig

log = logging.getLogger(__name__)

T = TypeVar("T")


class StorageError(HeadunitError, OSError):
    """A database could not be opened or repaired."""


def data_dir(config: StorageConfig, environ: Mapping[str, str] | None = None) -> Path:
    """$HEADUNIT_DATA_DIR, else the profile's folder, else systemd's $STATE_DIRECTORY,
    else ~/.local/state/headunit; created (only the agent's user may enter it)."""
    env = os.environ if environ is None else environ
    if env.get("HEADUNIT_DATA_DIR"):
        folder = Path(env["HEADUNIT_DATA_DIR"])
    elif config.data_dir is not None:
        folder = config.data_dir
    elif env.get("STATE_DIRECTORY"):
        folder = Path(env["STATE_DIRECTORY"].split(":")[0])
    else:
        folder = Path(env.get("XDG_STATE_HOME") or Path.home() / ".local" / "state") / "headunit"
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    return folder


def connect(path: Path) -> sqlite3.Connection:
    """Open (or create) a database durably; a corrupt one is moved aside and started afresh."""
    try:
        conn = _open(path)
        result = conn.execute("PRAGMA quick_check").fetchone()[0]
        if result == "ok":
            return conn
        conn.close()
        detail = f"quick_check: {result}"
    except (sqlite3.DatabaseError, StorageError) as exc:
        detail = str(exc)
    aside = path.with_name(f"{path.name}.corrupt-{time.strftime('%Y%m%d-%H%M%S')}")
    log.error("%s is damaged (%s): kept as %s, starting a new one", path, detail, aside.name)
    for suffix in ("", "-wal", "-shm"):
        side = Path(f"{path}{suffix}")
        if side.exists():
            side.rename(Path(f"{aside}{suffix}"))
    return _open(path)


def _open(path: Path) -> sqlite3.Connection:
    try:
        conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=10)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("PRAGMA foreign_keys=ON")
    except sqlite3.DatabaseError as exc:
        raise StorageError(f"cannot open {path}: {exc}") from exc
    return conn


class Database:
    """One SQLite file and the one thread that touches it."""

    def __init__(self, path: Path, schema: str) -> None:
        self.path = path
        self.conn = connect(path)
        self.conn.executescript(schema)
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"db-{path.stem}")

    async def run(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``work(conn)`` in the database's thread."""
        return await asyncio.get_running_loop().run_in_executor(self._worker, work, self.conn)

    def close(self) -> None:
        """Finish queued work and close; idempotent."""
        self._worker.shutdown(wait=True)
        try:
            self.conn.close()
        except sqlite3.ProgrammingError:
            pass
