"""Where the agent keeps its state, the one way it opens SQLite, and the one way it replaces a file.

Every database is in WAL mode with ``synchronous=FULL``: a transaction that
returned is on disk, whatever happens to the process or the power next. Each
database has one worker thread, so a slow SD card never blocks the event loop.
Each database is checked (``PRAGMA quick_check``) when it is opened; one that
fails is kept aside, whole, and a new one started, so the agent always runs.

Other files are written with :func:`atomic_write` (temporary name in the same
folder, fsync, verify, rename, fsync the folder): a reader, or the next start
after a power cut, finds the old file or the new one, never half of one. What a
cut leaves behind under a temporary name is removed at start by
:func:`sweep_leftovers`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import sqlite3
import stat
import time
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

from agent.errors import HeadunitError
from agent.profile.model import StorageConfig

log = logging.getLogger(__name__)

T = TypeVar("T")


class StorageError(HeadunitError, OSError):
    """A database could not be opened or repaired."""


SERVICE_STATE = Path("/var/lib/headunit")  # the installed service's StateDirectory


def data_dir(config: StorageConfig, environ: Mapping[str, str] | None = None,
             service_state: Path = SERVICE_STATE) -> Path:
    """$HEADUNIT_DATA_DIR, else the profile's folder, else systemd's $STATE_DIRECTORY, else the
    installed service's /var/lib/headunit when it is ours (the service user, or root, running
    ``headunit status`` and the like), else ~/.local/state/headunit; created (only the agent's
    user may enter it)."""
    env = os.environ if environ is None else environ
    if env.get("HEADUNIT_DATA_DIR"):
        folder = Path(env["HEADUNIT_DATA_DIR"])
    elif config.data_dir is not None:
        folder = config.data_dir
    elif env.get("STATE_DIRECTORY"):
        folder = Path(env["STATE_DIRECTORY"].split(":")[0])
    elif _is_ours(service_state):
        folder = service_state
    else:
        folder = Path(env.get("XDG_STATE_HOME") or Path.home() / ".local" / "state") / "headunit"
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    return folder


def _is_ours(folder: Path) -> bool:
    """True if ``folder`` exists and belongs to this user (or we are root)."""
    try:
        owner = folder.stat().st_uid
    except OSError:
        return False
    return os.getuid() in (0, owner)


def connect(path: Path) -> sqlite3.Connection:
    """Open (or create) a database durably after checking it; a damaged one is kept aside and started afresh."""
    try:
        conn = _open(path)
        result = conn.execute("PRAGMA quick_check").fetchone()[0]
        if result == "ok":
            log.debug("storage: %s passed its check", path.name)
            return conn
        conn.close()
        detail = f"quick_check: {result}"
    except (sqlite3.DatabaseError, StorageError) as exc:
        detail = str(exc)
    aside = path.with_name(f"{path.name}.corrupt-{time.strftime('%Y%m%d-%H%M%S')}")
    log.error("storage: %s failed its check (%s): kept aside as %s, a new empty database replaces it "
              "(what was in it is not lost, but the agent no longer uses it)", path, detail, aside.name)
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


# -- files other than databases ----------------------------------------------------------

TEMPORARY_SUFFIX = ".partial"
LEFTOVERS = (  # relative to the data folder: names only a write cut short leaves behind
    f".*{TEMPORARY_SUFFIX}",  # atomic_write's temporaries (state files, downloads)
    ".dashboard.token.*", ".dashboard.url.*",  # agent/dashboard/token.py's replacements
    f"logs/bundles/.bundle-*{TEMPORARY_SUFFIX}",  # agent/logbook.py: a bundle being written…
    "logs/bundles/headunit-logs-*.tar.gz",  # …or handed to an upload that never finished
)
SOCKET_FOLDERS = ".ctl*"  # agent/control.py binds its socket in such a folder, then links it into place


def atomic_write(path: Path, chunks: Iterable[bytes], verify: Callable[[Path], object] | None = None,
                 *, mode: int = 0o600) -> int:
    """Replace ``path`` with ``chunks`` so that a cut at any moment leaves the old file or the new one.

    The bytes go to a temporary name in the same folder and are fsynced; ``verify``
    (if given) is then called with the temporary path and refuses the file by raising
    (a download whose digest or size is wrong); only then is it renamed over ``path``
    and the folder fsynced, so the rename itself survives a power cut. Returns the
    number of bytes written. On any failure ``path`` is untouched and the temporary
    gone: StorageError (an OSError) when ``verify`` refuses, OSError when the disk
    fails, and whatever ``chunks`` raises (a download cut short) as it is. Blocking:
    from the loop, use ``asyncio.to_thread``.
    """
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(4)}{TEMPORARY_SUFFIX}")
    try:
        size = _write_synced(temporary, chunks, mode)
        if verify is not None:
            _verify(temporary, verify, path)
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            temporary.unlink()
        raise
    fsync_folder(path.parent)
    return size


def _write_synced(temporary: Path, chunks: Iterable[bytes], mode: int) -> int:
    size = 0
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
    with os.fdopen(fd, "wb") as out:
        for chunk in chunks:
            out.write(chunk)
            size += len(chunk)
        out.flush()
        os.fsync(out.fileno())
    return size


def _verify(temporary: Path, verify: Callable[[Path], object], path: Path) -> None:
    try:
        verify(temporary)
    except Exception as exc:
        raise StorageError(f"{path.name} refused, the old file (if any) is kept: {exc}") from exc


def fsync_folder(folder: Path) -> None:
    """Make a rename, creation or removal in ``folder`` durable (the entry lives in the folder)."""
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def sweep_leftovers(folder: Path) -> list[str]:
    """Remove what writes cut short (a crash, a power cut) left in the data folder; return the names.

    Only the agent's own temporary names are touched (:data:`LEFTOVERS`, socket folders),
    never anything else in the folder. Call it once at start, when this agent is known to be
    the only one on the folder (the control socket is ours), before anything writes.
    """
    removed: list[str] = []
    for pattern in LEFTOVERS:
        for entry in sorted(folder.glob(pattern)):
            if _remove_file(entry):
                removed.append(str(entry.relative_to(folder)))
    for entry in sorted(folder.glob(SOCKET_FOLDERS)):
        if _remove_socket_folder(entry):
            removed.append(entry.name)
    if removed:
        log.warning("storage: removed %d leftovers of writes cut short (a crash or a power cut): %s",
                    len(removed), ", ".join(removed))
    return removed


def _remove_file(entry: Path) -> bool:
    try:
        if not stat.S_ISREG(entry.lstat().st_mode):
            return False
        entry.unlink()
    except FileNotFoundError:
        return False
    except OSError as exc:
        log.warning("storage: leftover %s not removed: %s", entry, exc)
        return False
    return True


def _remove_socket_folder(entry: Path) -> bool:
    """A control-socket folder holds at most one socket; anything else in it means it is not ours."""
    try:
        if not stat.S_ISDIR(entry.lstat().st_mode):
            return False
        for inside in entry.iterdir():
            if inside.name != "s" or not stat.S_ISSOCK(inside.lstat().st_mode):
                return False
            inside.unlink()
        entry.rmdir()
    except FileNotFoundError:
        return False
    except OSError as exc:
        log.warning("storage: leftover %s not removed: %s", entry, exc)
        return False
    return True
