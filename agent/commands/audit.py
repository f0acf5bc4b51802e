"""The audit trail of remote commands: every attempt, who, when, what, and how it ended.

One SQLite file (``audit.db`` in the agent's data dir) written through
:class:`agent.storage.Database`, so an entry that was recorded survives a cut
power supply, and ``headunit audit`` can read it while the agent runs (WAL).
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agent.storage import Database

FILE = "audit.db"
MAX_TAIL = 1000  # entries one tail may return

SCHEMA = """
CREATE TABLE IF NOT EXISTS audit (
    id INTEGER PRIMARY KEY,
    time REAL NOT NULL,           -- wall clock, epoch seconds
    requester TEXT NOT NULL,      -- full JID of whoever asked
    command TEXT NOT NULL,        -- node asked for ("" for the command list)
    arguments TEXT NOT NULL,      -- JSON: validated values, private ones redacted
    result TEXT NOT NULL,         -- ok, forbidden, invalid, rate-limited, interlock, cancelled, timeout, error, ...
    detail TEXT NOT NULL,         -- why, in words (which interlock, which field, ...)
    interlocks TEXT NOT NULL      -- JSON: [{"name", "ok", "reason"}]
);
"""

# Results an entry may have.
OK = "ok"
FORBIDDEN = "forbidden"
INVALID = "invalid"
RATE_LIMITED = "rate-limited"
INTERLOCK = "interlock"
CANCELLED = "cancelled"
TIMEOUT = "timeout"
ERROR = "error"
FAILED = "failed"  # the handler ran and reported failure
UNKNOWN = "unknown-command"


@dataclass(frozen=True)
class Decision:
    """What one interlock said about one attempt."""

    name: str
    ok: bool
    reason: str | None = None

    def as_json(self) -> dict[str, Any]:
        return {"name": self.name, "ok": self.ok, "reason": self.reason}


@dataclass(frozen=True)
class AuditEntry:
    """One attempt to list or run a command."""

    time: float
    requester: str
    command: str
    result: str
    detail: str = ""
    arguments: Mapping[str, Any] = field(default_factory=dict)
    interlocks: tuple[Decision, ...] = ()

    def as_json(self) -> dict[str, Any]:
        return {"time": self.time, "requester": self.requester, "command": self.command,
                "result": self.result, "detail": self.detail, "arguments": dict(self.arguments),
                "interlocks": [d.as_json() for d in self.interlocks]}


class AuditLog:
    """Appends entries and reads the latest ones back."""

    def __init__(self, path: Path) -> None:
        self.db = Database(path, SCHEMA)

    @classmethod
    def in_dir(cls, folder: Path) -> AuditLog:
        return cls(folder / FILE)

    async def record(self, entry: AuditEntry) -> None:
        """Write one entry; returns once it is on disk."""
        await self.db.run(lambda conn: _insert(conn, entry))

    async def tail(self, n: int = 50) -> list[AuditEntry]:
        """The latest ``n`` entries, oldest first."""
        return await self.db.run(lambda conn: read_tail(conn, n))

    def close(self) -> None:
        self.db.close()


def _insert(conn: sqlite3.Connection, entry: AuditEntry) -> None:
    conn.execute(
        "INSERT INTO audit (time, requester, command, arguments, result, detail, interlocks)"
        " VALUES (?, ?, ?, ?, ?, ?, ?)",
        (entry.time, entry.requester, entry.command,
         json.dumps(dict(entry.arguments), ensure_ascii=False, default=str),
         entry.result, entry.detail, json.dumps([d.as_json() for d in entry.interlocks])))


def read_tail(conn: sqlite3.Connection, n: int) -> list[AuditEntry]:
    """The latest ``n`` entries of an open audit database, oldest first."""
    rows = conn.execute(
        "SELECT time, requester, command, arguments, result, detail, interlocks FROM audit"
        " ORDER BY id DESC LIMIT ?", (max(0, min(n, MAX_TAIL)),)).fetchall()
    return [_entry(row) for row in reversed(rows)]


def read_file_tail(path: Path, n: int) -> list[AuditEntry]:
    """The tail of an audit file, read-only (the agent may be writing it meanwhile)."""
    conn = sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True, timeout=10)
    try:
        return read_tail(conn, n)
    finally:
        conn.close()


def _entry(row: Sequence[Any]) -> AuditEntry:
    when, requester, command, arguments, result, detail, interlocks = row
    decisions = tuple(Decision(str(d.get("name")), bool(d.get("ok")), d.get("reason"))
                      for d in json.loads(interlocks))
    return AuditEntry(float(when), requester, command, result, detail, json.loads(arguments), decisions)


def now() -> float:
    """The wall clock used for entries (a function so tests can read what it means)."""
    return time.time()
