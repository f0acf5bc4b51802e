"""Messages for the driver, kept in SQLite so one waiting for an acknowledgement outlives a restart.

One file (``cabin.db`` in the agent's data dir) written through
:class:`agent.storage.Database`. The table is bounded: only the newest ``keep``
notices are kept. Text from the network is cleaned here (control and bidi
override characters dropped, length capped), whoever calls.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent.cabin.errors import AlreadyAnswered, EmptyPrompt, PromptNotFound
from agent.storage import Database

FILE = "cabin.db"
KEEP = 100  # notices kept, newest first
MAX_TEXT = 1000  # characters of one notice shown to the driver
MAX_SENDER = 3071  # RFC 7622: three parts of at most 1023 bytes each
CUT = "…"

# C0 controls but tab and newline, DEL and C1, bidi embeddings/overrides/isolates (they can make
# a text read differently from what it is), lone surrogates, non-characters.
_DROP = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069\ud800-\udfff\ufffe\uffff]")

SCHEMA = """
CREATE TABLE IF NOT EXISTS notices (
    id INTEGER PRIMARY KEY AUTOINCREMENT,  -- never reused, even after old rows are dropped
    sender TEXT NOT NULL,                  -- bare JID of whoever sent it
    text TEXT NOT NULL,
    ack_required INTEGER NOT NULL,
    created REAL NOT NULL,                 -- wall clock, epoch seconds
    acknowledged_at REAL                   -- NULL until the driver acknowledged it
);
"""
_COLUMNS = "id, sender, text, ack_required, created, acknowledged_at"


@dataclass(frozen=True)
class Notice:
    """A message shown to the driver, and whether they acknowledged it."""

    id: int
    sender: str
    text: str
    ack_required: bool
    created: float
    acknowledged_at: float | None = None

    @property
    def is_waiting(self) -> bool:
        """It asks for an acknowledgement the driver has not given yet."""
        return self.acknowledged_at is None

    def as_json(self) -> dict[str, Any]:
        return {"kind": "notice", "id": self.id, "sender": self.sender, "text": self.text,
                "ack_required": self.ack_required, "created": self.created,
                "acknowledged_at": self.acknowledged_at}


def clean_text(text: str, limit: int = MAX_TEXT) -> str:
    """``text`` fit for the dashboard: without control characters, stripped, at most ``limit`` characters.

    Raises EmptyPrompt if nothing is left.
    """
    cleaned = _DROP.sub("", text.replace("\r\n", "\n").replace("\r", "\n")).strip()
    if not cleaned:
        raise EmptyPrompt("the text is empty (once control characters are removed)")
    if len(cleaned) > limit:
        cleaned = cleaned[:limit - len(CUT)].rstrip() + CUT
    return cleaned


def clean_sender(sender: str) -> str:
    """A sender's JID as shown and stored: bare, one line, bounded."""
    return clean_text(sender.split("/", 1)[0].replace("\n", " "), MAX_SENDER)


class NoticeStore:
    """The notices table; every method but the start-up read runs in the database's thread."""

    def __init__(self, path: Path, keep: int = KEEP) -> None:
        if keep < 1:
            raise ValueError(f"keep must be at least 1, not {keep}")
        self.keep = keep
        self.db = Database(path, SCHEMA)

    def waiting_at_start(self) -> list[Notice]:
        """The notices still waiting for an acknowledgement, oldest first (before anything else runs)."""
        rows = self.db.conn.execute(f"SELECT {_COLUMNS} FROM notices WHERE "
                                    "acknowledged_at IS NULL ORDER BY id").fetchall()
        return [_notice(row) for row in rows]

    async def add(self, sender: str, text: str, ack_required: bool, created: float
                  ) -> tuple[Notice, list[Notice]]:
        """Store a notice; returns it and the waiting notices dropped to stay within ``keep``."""
        return await self.db.run(lambda conn: _add(conn, sender, text, ack_required, created, self.keep))

    async def acknowledge(self, notice_id: int, at: float) -> Notice:
        """Mark a waiting notice seen (acknowledged), exactly once; PromptNotFound, AlreadyAnswered."""
        return await self.db.run(lambda conn: _acknowledge(conn, notice_id, at))

    async def recent(self, limit: int) -> list[Notice]:
        """The newest ``limit`` notices, oldest first."""
        def read(conn: sqlite3.Connection) -> list[Notice]:
            rows = conn.execute(f"SELECT {_COLUMNS} FROM notices ORDER BY id DESC LIMIT ?",
                                (max(0, min(limit, self.keep)),)).fetchall()
            return [_notice(row) for row in reversed(rows)]
        return await self.db.run(read)

    def close(self) -> None:
        """Finish queued work and close; idempotent."""
        self.db.close()


def _add(conn: sqlite3.Connection, sender: str, text: str, ack_required: bool, created: float,
         keep: int) -> tuple[Notice, list[Notice]]:
    with _transaction(conn):
        cursor = conn.execute("INSERT INTO notices (sender, text, ack_required, created) VALUES (?, ?, ?, ?)",
                              (sender, text, int(ack_required), created))
        notice = Notice(int(cursor.lastrowid or 0), sender, text, ack_required, created)
        old = conn.execute(f"SELECT {_COLUMNS} FROM notices ORDER BY id DESC LIMIT -1 OFFSET ?",
                           (keep,)).fetchall()
        if old:
            conn.execute("DELETE FROM notices WHERE id <= ?", (max(row[0] for row in old),))
    return notice, [n for n in map(_notice, old) if n.is_waiting]


@contextmanager
def _transaction(conn: sqlite3.Connection) -> Iterator[None]:
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def _acknowledge(conn: sqlite3.Connection, notice_id: int, at: float) -> Notice:
    row = conn.execute(f"SELECT {_COLUMNS} FROM notices WHERE id = ?", (notice_id,)).fetchone()
    if row is None:
        raise PromptNotFound(f"no message {notice_id} for the driver (never sent, or no longer kept)")
    notice = _notice(row)
    if notice.acknowledged_at is not None:
        raise AlreadyAnswered(f"message {notice_id} was acknowledged already")
    updated = conn.execute("UPDATE notices SET acknowledged_at = ? WHERE id = ? AND acknowledged_at IS NULL",
                           (at, notice_id))
    if updated.rowcount != 1:  # cannot happen with one writer thread; kept as the guarantee of "once"
        raise AlreadyAnswered(f"message {notice_id} was acknowledged already")
    return Notice(notice.id, notice.sender, notice.text, notice.ack_required, notice.created, at)


def _notice(row: Sequence[Any]) -> Notice:
    ident, sender, text, ack_required, created, acknowledged_at = row
    return Notice(int(ident), str(sender), str(text), bool(ack_required), float(created),
                  None if acknowledged_at is None else float(acknowledged_at))
