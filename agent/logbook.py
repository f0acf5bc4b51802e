"""The agent's own recent logs, kept on disk where the ``logs`` command can bundle them.

A rotating file handler on the root logger writes ``<data_dir>/logs/headunit.log``
(and ``headunit.log.1`` … ``.N`` as it rotates), so the logs on disk stay bounded
whatever runs. :meth:`Logbook.bundle` packs them, oldest first, with a few text
files the caller adds (``status.txt``) into a ``.tar.gz`` built in a thread. The
files are opened under the handler's lock, so a rotation during the bundle
neither loses nor repeats lines; a bundle over the upload limit keeps the newest
lines; a full disk leaves nothing half-written behind. Only the log files the
handler writes go in: never the profile or a password file.
"""

from __future__ import annotations

import asyncio
import errno
import io
import logging
import os
import re
import secrets
import sys
import tarfile
import tempfile
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from logging.handlers import RotatingFileHandler
from pathlib import Path
from types import MappingProxyType
from typing import Any, BinaryIO

from agent.errors import HeadunitError

log = logging.getLogger(__name__)

FOLDER = "logs"  # under the data folder
LOG_NAME = "headunit.log"
BUNDLES = "bundles"  # under the logs folder: bundles being uploaded
FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"  # agent/cli.py's, with the date
DATE_FORMAT = "%Y-%m-%d %H:%M:%S%z"
REDACTED = "[redacted]"
MIN_SECRET = 4  # characters: shorter "secrets" would redact ordinary words
MAX_LIVE_BUNDLES = 3  # handed out and not discarded yet; beyond, the oldest is removed
MAX_EXTRAS = 16
MAX_EXTRA_BYTES = 64 * 1024  # one extra text file, cut beyond this
NEWLINE_SEARCH = 64 * 1024  # bytes searched for a line start where a file is cut
MANIFEST = "bundle.txt"
FIT_ATTEMPTS = 4  # archives written at most to fit a limit
LOG_FILE_RE = re.compile(r"^headunit\.log(?:\.([1-9][0-9]{0,2}))?$")
EXTRA_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
EMPTY: Mapping[str, str] = MappingProxyType({})


class LogbookError(HeadunitError, OSError):
    """The logs could not be kept or bundled; the message says which step and why."""


@dataclass(frozen=True)
class LogBundle:
    """A bundle on disk: where, how big, what is in it, and what was left out to fit."""

    path: Path
    name: str  # the name to share it under, e.g. headunit-logs-20261121T101500Z.tar.gz
    size: int  # bytes of the .tar.gz
    files: tuple[str, ...]  # the log files in it, oldest first
    cut: str = ""  # what was left out to fit the size limit, or ""


@dataclass
class _Source:
    """One log file opened for the bundle: the bytes ``start``..``end`` go in."""

    name: str
    file: BinaryIO
    start: int
    end: int

    @property
    def size(self) -> int:
        return self.end - self.start


class _RedactingFormatter(logging.Formatter):
    """The log format, with any of the given secrets replaced (defence in depth)."""

    def __init__(self, secrets_: Iterable[str]) -> None:
        super().__init__(FORMAT, DATE_FORMAT)
        # Longest first, so a secret that contains another is replaced whole.
        self.secrets = tuple(sorted({s for s in secrets_ if len(s) >= MIN_SECRET}, key=len, reverse=True))

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        for secret in self.secrets:
            text = text.replace(secret, REDACTED)
        return text


class _LogFile(RotatingFileHandler):
    """A rotating file that says once on stderr when it cannot write (a full disk), not per line."""

    failing = False
    _failed_now = False

    def emit(self, record: logging.LogRecord) -> None:
        self._failed_now = False
        super().emit(record)
        if self.failing and not self._failed_now:
            self.failing = False
            sys.stderr.write(f"headunit: writing {self.baseFilename} again\n")

    def handleError(self, record: logging.LogRecord) -> None:
        error = sys.exc_info()[1]
        if not isinstance(error, OSError):
            super().handleError(record)
            return
        self._failed_now = True
        if not self.failing:
            self.failing = True
            sys.stderr.write(f"headunit: cannot write {self.baseFilename} ({error}): "
                             "log lines are lost until it can\n")


class Logbook:
    """The agent's log files in ``folder``: bounded, rotated, and bundled on request."""

    def __init__(self, folder: Path, *, max_bytes: int = 1_000_000, backups: int = 3,
                 redact: Iterable[str] = (), level: int = logging.NOTSET) -> None:
        if max_bytes < 1024 or backups < 1:
            raise ValueError(f"a logbook needs max_bytes >= 1024 and backups >= 1, not {max_bytes}, {backups}")
        self.folder = Path(folder)
        self.max_bytes = max_bytes
        self.backups = backups
        self.level = level
        self._formatter = _RedactingFormatter(redact)
        self._handler: _LogFile | None = None
        self._lock = asyncio.Lock()  # one bundle is built at a time
        self._live: dict[Path, None] = {}  # bundles handed out, oldest first

    @classmethod
    def in_dir(cls, data_dir: Path, **options: Any) -> Logbook:
        """The logbook of the agent whose data folder is ``data_dir``: ``data_dir/logs``."""
        return cls(Path(data_dir) / FOLDER, **options)

    @property
    def path(self) -> Path:
        """The current log file."""
        return self.folder / LOG_NAME

    @property
    def bundles(self) -> Path:
        """Where bundles are written while they are uploaded."""
        return self.folder / BUNDLES

    @property
    def is_installed(self) -> bool:
        return self._handler is not None

    # -- the handler ---------------------------------------------------------------

    def install(self) -> None:
        """Start writing the root logger's records to the log file; idempotent.

        LogbookError when the folder or the file cannot be opened.
        """
        if self._handler is not None:
            return
        try:
            self.folder.mkdir(parents=True, exist_ok=True, mode=0o700)
            handler = _LogFile(self.path, maxBytes=self.max_bytes, backupCount=self.backups,
                               encoding="utf-8")
        except OSError as exc:
            raise LogbookError(f"cannot keep the agent's logs in {self.folder}: {exc}") from exc
        handler.setFormatter(self._formatter)
        handler.setLevel(self.level)
        logging.getLogger().addHandler(handler)
        self._handler = handler

    def uninstall(self) -> None:
        """Stop writing the log file and close it; idempotent."""
        handler, self._handler = self._handler, None
        if handler is None:
            return
        logging.getLogger().removeHandler(handler)
        handler.close()

    # -- bundles -------------------------------------------------------------------

    async def bundle(self, extra: Mapping[str, str] = EMPTY, *, limit: int | None = None) -> LogBundle:
        """A .tar.gz of every log file (oldest first) and the ``extra`` text files, built off the loop.

        ``limit``: the largest bundle wanted, in bytes (the upload service's); older lines
        are left out to fit. The caller discards the bundle once shared; the next bundle
        removes whatever was left behind. LogbookError when it cannot be built.
        """
        extras = check_extras(extra)
        if limit is not None and limit <= 0:
            raise ValueError(f"a bundle limit must be positive, not {limit}")
        async with self._lock:
            while len(self._live) >= MAX_LIVE_BUNDLES:
                oldest = next(iter(self._live))
                log.warning("log bundle %s was never discarded: removed", oldest.name)
                self.discard(oldest)
            made = await asyncio.to_thread(self._build, extras, limit, frozenset(self._live))
            self._live[made.path] = None
        log.info("log bundle %s: %d bytes, %d log files%s", made.name, made.size, len(made.files),
                 f", {made.cut}" if made.cut else "")
        return made

    def discard(self, bundle: LogBundle | Path) -> None:
        """Remove a bundle once it was shared (or failed to be); safe to call twice."""
        path = bundle.path if isinstance(bundle, LogBundle) else bundle
        self._live.pop(path, None)
        try:
            path.unlink(missing_ok=True)
        except OSError as exc:
            log.warning("log bundle %s not removed: %s", path, exc)

    def _build(self, extras: dict[str, bytes], limit: int | None, keep: frozenset[Path]) -> LogBundle:
        """In a worker thread: clear old bundles, snapshot the logs, write the archive."""
        made_at = datetime.now(UTC)
        stamp = made_at.strftime("%Y%m%dT%H%M%SZ")
        try:
            self.bundles.mkdir(parents=True, exist_ok=True, mode=0o700)
            self._sweep(keep)
        except OSError as exc:
            raise _bundle_error(exc) from exc
        sources = self._snapshot()
        try:
            path, cut = self._write_to_fit(made_at, sources, extras, limit)
        finally:
            for source in sources:
                source.file.close()
        return LogBundle(path, f"headunit-logs-{stamp}.tar.gz", path.stat().st_size,
                         tuple(s.name for s in sources if s.size > 0), cut)

    def _write_to_fit(self, made_at: datetime, sources: list[_Source], extras: dict[str, bytes],
                      limit: int | None) -> tuple[Path, str]:
        """Write the archive; over ``limit``, leave out more of the oldest lines and write it again.

        Logs compress several times over, so the first try nearly always fits; only
        data gzip cannot shrink needs another, with the budget cut by the excess.
        """
        stamp = made_at.strftime("%Y%m%dT%H%M%SZ")
        budget = None if limit is None else _first_budget(limit, len(sources), extras)
        for _ in range(FIT_ATTEMPTS):
            cut = _fit(sources, budget, limit)
            path = self._write(stamp, _manifest(made_at, sources, cut, limit), sources, extras)
            size = path.stat().st_size
            if limit is None or budget is None or size <= limit:
                return path, cut
            path.unlink(missing_ok=True)
            if budget == 0:
                break
            budget = max(0, budget - (size - limit) - 1024)
        raise LogbookError(f"the log bundle does not fit the upload limit of {limit} bytes "
                           "even without its log files")

    def _sweep(self, keep: frozenset[Path]) -> None:
        """Remove bundles (and partial ones) that nobody holds: left by a crash or a caller."""
        for entry in self.bundles.iterdir():
            if entry not in keep and entry.is_file():
                entry.unlink(missing_ok=True)

    def _snapshot(self) -> list[_Source]:
        """Open every log file, oldest first, and note its size, all under the handler's lock:
        a rotation waits for it (a few file opens), and an open file keeps its bytes whatever
        is renamed later. Nothing is logged under the lock: that could rotate the files."""
        handler = self._handler
        sources: list[_Source] = []
        unreadable: list[str] = []
        if handler is not None:
            handler.acquire()
        try:
            if handler is not None:
                handler.flush()
            for path in _log_files(self.folder):
                try:
                    file = path.open("rb")
                except OSError as exc:
                    unreadable.append(f"{path.name}: {exc.strerror}")
                    continue
                sources.append(_Source(path.name, file, 0, os.fstat(file.fileno()).st_size))
        except BaseException:
            for source in sources:
                source.file.close()
            raise
        finally:
            if handler is not None:
                handler.release()
        if unreadable:
            log.warning("log files not bundled: %s", "; ".join(unreadable))
        return sources

    def _write(self, stamp: str, manifest: str, sources: list[_Source], extras: dict[str, bytes]) -> Path:
        """Write the archive to a temporary file, then rename it: never a half-written bundle."""
        try:
            fd, temporary = tempfile.mkstemp(dir=self.bundles, prefix=".bundle-", suffix=".partial")
        except OSError as exc:
            raise _bundle_error(exc) from exc
        partial = Path(temporary)
        top = f"headunit-logs-{stamp}"
        try:
            with os.fdopen(fd, "wb") as raw, tarfile.open(fileobj=raw, mode="w:gz") as tar:
                _add(tar, f"{top}/{MANIFEST}", io.BytesIO(manifest.encode()), len(manifest.encode()))
                for source in sources:
                    if source.size > 0:
                        source.file.seek(source.start)
                        _add(tar, f"{top}/{source.name}", source.file, source.size)
                for name, data in extras.items():
                    _add(tar, f"{top}/{name}", io.BytesIO(data), len(data))
            final = self.bundles / f"headunit-logs-{stamp}-{secrets.token_hex(3)}.tar.gz"
            partial.rename(final)
        except BaseException as exc:
            partial.unlink(missing_ok=True)
            if isinstance(exc, (OSError, tarfile.TarError)):
                raise _bundle_error(exc) from exc
            raise
        return final


# -- helpers ---------------------------------------------------------------------------


def check_extras(extra: Mapping[str, str]) -> dict[str, bytes]:
    """The extra text files as bytes, each cut to MAX_EXTRA_BYTES; ValueError for a bad name."""
    if len(extra) > MAX_EXTRAS:
        raise ValueError(f"at most {MAX_EXTRAS} extra files in a log bundle, not {len(extra)}")
    files: dict[str, bytes] = {}
    for name, text in extra.items():
        if not EXTRA_NAME_RE.fullmatch(name) or LOG_FILE_RE.fullmatch(name) or name == MANIFEST:
            raise ValueError(f"{name[:80]!r} cannot name an extra file of a log bundle")
        data = text.encode("utf-8", errors="replace")
        files[name] = data if len(data) <= MAX_EXTRA_BYTES else data[:MAX_EXTRA_BYTES] + b"\n[cut]\n"
    return files


def _log_files(folder: Path) -> list[Path]:
    """The log files in ``folder``, oldest (highest number) first."""
    try:
        entries = [p for p in folder.iterdir() if LOG_FILE_RE.fullmatch(p.name) and p.is_file()]
    except FileNotFoundError:
        return []
    return sorted(entries, key=_age, reverse=True)


def _age(path: Path) -> int:
    match = LOG_FILE_RE.fullmatch(path.name)
    return int(match.group(1) or 0) if match else 0


def _first_budget(limit: int, logs: int, extras: dict[str, bytes]) -> int:
    """Bytes of log lines to try first: the limit less the tar headers and the extra files
    (gzip's framing and the tar padding are paid for by the compression of the lines)."""
    members = logs + len(extras) + 1
    return max(0, limit - 512 * members - sum(len(d) for d in extras.values()))


def _fit(sources: list[_Source], budget: int | None, limit: int | None) -> str:
    """Keep the newest ``budget`` bytes of whole lines, leave out the oldest; say what was left out."""
    for source in sources:
        source.start = 0
    if budget is None:
        return ""
    left_out: list[str] = []
    for source in reversed(sources):  # newest first
        if source.size <= budget:
            budget -= source.size
            continue
        source.start = _line_start(source.file, source.end - budget, source.end)
        budget = 0
        left_out.append(f"{source.name}: its first {source.start} bytes" if source.size
                        else f"{source.name}: all of it")
    if not left_out:
        return ""
    return f"left out to fit the limit of {limit} bytes: " + "; ".join(reversed(left_out))


def _line_start(file: BinaryIO, offset: int, end: int) -> int:
    """The first line start at or after ``offset`` (or ``end`` if none is near): whole lines only."""
    if offset <= 0:
        return 0
    file.seek(offset - 1)
    chunk = file.read(min(NEWLINE_SEARCH, end - offset + 1))
    newline = chunk.find(b"\n")
    return end if newline < 0 else offset + newline


def _manifest(made_at: datetime, sources: list[_Source], cut: str, limit: int | None) -> str:
    names = [s.name for s in sources if s.size > 0]
    lines = [
        f"headunit log bundle, made {made_at.isoformat(timespec='seconds')}",
        "log files, oldest first: " + (", ".join(names) if names else "none (nothing logged yet)"),
        cut or ("nothing left out" + (f" (limit {limit} bytes)" if limit else "")),
    ]
    return "\n".join(lines) + "\n"


def _add(tar: tarfile.TarFile, name: str, file: BinaryIO, size: int) -> None:
    info = tarfile.TarInfo(name)
    info.size = size
    info.mtime = int(time.time())
    info.mode = 0o600
    tar.addfile(info, file)


def _bundle_error(exc: BaseException) -> LogbookError:
    """A clear message for a failed bundle; a full disk is named as such."""
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return LogbookError(f"no space left on the car's disk for the log bundle ({exc.strerror}); "
                            "nothing was kept")
    return LogbookError(f"the log bundle could not be written: {exc}")
