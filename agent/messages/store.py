"""The local message store: every 1:1 message in and out, once, for the dashboard.

One SQLite file (see ``agent.storage``). A message can reach the car several
times: live, as offline delivery, as a carbon, and again from the server's
archive (XEP-0313); an outgoing one may be re-sent after a fresh session. So a
message is recognised, in this order, by the archive id our own server gave it
(XEP-0359 ``stanza-id`` ``by`` our bare JID; the caller only passes one it
trusts), by its sender's ``origin-id`` in the same conversation, or by the same
``id`` attribute and body in the same conversation. A duplicate is not stored
again; what it adds (the archive id, proof the server has our message) is
merged into the row already there.

Bodies are capped (``MAX_BODY_BYTES``) and stripped of the characters XML 1.0
forbids, so nothing from the network can bloat or poison the database.
"""

from __future__ import annotations

import logging
import re
import sqlite3
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from agent.errors import HeadunitError
from agent.storage import Database

log = logging.getLogger(__name__)

Direction = Literal["in", "out"]
State = Literal["queued", "sent", "acked", "delivered", "failed"]
Via = Literal["local", "live", "carbon", "mam"]  # local: written on this car

MAX_BODY_BYTES = 10_000
TRUNCATED = " [… truncated]"
MAX_ID_CHARS = 256  # longer ids are not ids anyone sends: dropped, never used for matching
MAX_JID_CHARS = 3071  # RFC 7622: three parts of at most 1023 bytes each

# A state only moves forward: a late "sent" never hides "delivered". "failed"
# gives way to proof of the opposite (the server's ack or the peer's receipt).
_RANK: dict[str, int] = {"queued": 0, "sent": 1, "failed": 2, "acked": 3, "delivered": 4}
PENDING: tuple[State, ...] = ("queued", "sent")

_FORBIDDEN = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")

SCHEMA = """
CREATE TABLE IF NOT EXISTS messages (
    local_id    INTEGER PRIMARY KEY,
    peer        TEXT NOT NULL,
    direction   TEXT NOT NULL CHECK (direction IN ('in', 'out')),
    body        TEXT NOT NULL,
    stanza_id   TEXT,
    origin_id   TEXT,
    archive_id  TEXT UNIQUE,
    sent_at     REAL NOT NULL,
    received_at REAL NOT NULL,
    state       TEXT CHECK (state IN ('queued', 'sent', 'acked', 'delivered', 'failed')),
    via         TEXT NOT NULL CHECK (via IN ('local', 'live', 'carbon', 'mam'))
);
CREATE UNIQUE INDEX IF NOT EXISTS messages_origin
    ON messages (peer, direction, origin_id) WHERE origin_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS messages_stanza
    ON messages (peer, direction, stanza_id) WHERE stanza_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS messages_thread ON messages (peer, sent_at);
CREATE INDEX IF NOT EXISTS messages_pending ON messages (state) WHERE state IN ('queued', 'sent');
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
PRAGMA user_version = 1;
"""

_COLUMNS = ("local_id, peer, direction, body, stanza_id, origin_id, archive_id, "
            "sent_at, received_at, state, via")


class MessageError(HeadunitError, ValueError):
    """A message the agent was asked to send cannot be (empty body, bad address)."""


@dataclass(frozen=True)
class StoredMessage:
    """One row of the store, as the dashboard shows it."""

    local_id: int
    peer: str  # the other side's bare JID
    direction: Direction
    body: str
    stanza_id: str | None  # the stanza's ``id`` attribute
    origin_id: str | None  # XEP-0359, set by the sender
    archive_id: str | None  # XEP-0359 stanza-id by our own server (= its MAM id)
    sent_at: float  # wall clock, epoch s: the original time (XEP-0203 delay when given)
    received_at: float  # when it entered this store
    state: State | None  # outgoing only
    via: Via

    @property
    def is_pending(self) -> bool:
        """Outgoing and not yet known to be on the server."""
        return self.direction == "out" and self.state in PENDING


def clean_body(body: str, *, peer: str = "?", limit: int = MAX_BODY_BYTES) -> str:
    """The body without XML-forbidden characters, cut to ``limit`` UTF-8 bytes with a marker."""
    cleaned = _FORBIDDEN.sub("", body)
    if len(cleaned) != len(body):
        log.warning("message with %s: dropped %d character(s) XML forbids", peer, len(body) - len(cleaned))
    encoded = cleaned.encode("utf-8")
    if len(encoded) <= limit:
        return cleaned
    room = limit - len(TRUNCATED.encode("utf-8"))
    log.warning("message with %s: body of %d bytes cut to %d", peer, len(encoded), limit)
    return encoded[:room].decode("utf-8", errors="ignore") + TRUNCATED


def clean_id(value: str | None) -> str | None:
    """An id fit to match on, or None (absent, empty, oversized or with forbidden characters)."""
    if not value or len(value) > MAX_ID_CHARS or _FORBIDDEN.search(value):
        return None
    return value


def check_peer(peer: str) -> str:
    """A bare JID as the store keeps it; raises MessageError for anything else."""
    if not peer or len(peer) > MAX_JID_CHARS or "/" in peer or _FORBIDDEN.search(peer) or peer != peer.strip():
        raise MessageError(f"not a bare JID: {peer[:80]!r}")
    return peer


class MessageStore:
    """The message database; every method runs in the database's own thread."""

    def __init__(self, path: Path) -> None:
        self.db = Database(path, SCHEMA)

    def close(self) -> None:
        """Finish queued work and close; idempotent."""
        self.db.close()

    # -- writing ---------------------------------------------------------------

    async def add_incoming(self, peer: str, body: str, *, direction: Direction = "in",
                           stanza_id: str | None = None, origin_id: str | None = None,
                           archive_id: str | None = None, sent_at: float | None = None,
                           via: Via = "live") -> StoredMessage | None:
        """Store a message that came from the network; None if it was already here.

        ``direction`` is "out" for our own messages seen again (a carbon of another
        of our clients, our archive). ``archive_id`` must be a stanza-id set by our
        own server: the caller checks ``by``. ``sent_at`` is the XEP-0203 stamp.
        """
        now = time.time()
        when = now if sent_at is None else min(sent_at, now)  # a stamp from the future is not believed
        row = _Row(check_peer(peer), direction, clean_body(body, peer=peer), clean_id(stanza_id),
                   clean_id(origin_id), clean_id(archive_id), when, now,
                   "acked" if direction == "out" else None, via)
        return await self.db.run(lambda conn: _insert(conn, row))

    async def queue_outgoing(self, peer: str, body: str) -> StoredMessage:
        """Store a message the car is about to send, state "queued", with a fresh origin-id."""
        text = clean_body(body, peer=check_peer(peer))
        if not text.strip():
            raise MessageError("an empty message is not sent")
        now = time.time()
        row = _Row(peer, "out", text, None, uuid.uuid4().hex, None, now, now, "queued", "local")
        stored = await self.db.run(lambda conn: _insert(conn, row))
        assert stored is not None, "a fresh origin-id cannot be a duplicate"
        return stored

    async def mark(self, origin_id: str, state: State, *, peer: str | None = None) -> bool:
        """Move our message ``origin_id`` (to ``peer``, when given) forward to ``state``; True if it moved."""
        if state not in _RANK:
            raise ValueError(f"unknown message state {state!r}")
        return await self.db.run(lambda conn: _mark(conn, origin_id, state, peer))

    async def set_archive_id(self, archive_id: str) -> None:
        """Remember the newest archive (MAM) id caught up to."""
        await self.db.run(lambda conn: conn.execute(
            "INSERT INTO meta (key, value) VALUES ('last_archive_id', ?) "
            "ON CONFLICT (key) DO UPDATE SET value = excluded.value", (archive_id,)))

    # -- reading ---------------------------------------------------------------

    async def last_archive_id(self) -> str | None:
        """The archive id the last catch-up reached, None before the first one."""
        row = await self.db.run(lambda conn: conn.execute(
            "SELECT value FROM meta WHERE key = 'last_archive_id'").fetchone())
        return None if row is None else str(row[0])

    async def get(self, origin_id: str) -> StoredMessage | None:
        """Our outgoing message with this origin-id."""
        return await self._one(f"SELECT {_COLUMNS} FROM messages WHERE direction = 'out' AND origin_id = ?",
                               (origin_id,))

    async def unacked(self) -> list[StoredMessage]:
        """Outgoing messages the server is not known to have (queued or sent), oldest first."""
        return await self._all(f"SELECT {_COLUMNS} FROM messages WHERE state IN ('queued', 'sent') "
                               "ORDER BY local_id", ())

    async def thread(self, peer: str, limit: int = 50, *, before: int | None = None) -> list[StoredMessage]:
        """The last ``limit`` messages with ``peer`` (older than message ``before``, when given), oldest first."""
        if before is None:
            newest = await self._all(f"SELECT {_COLUMNS} FROM messages WHERE peer = ? "
                                     "ORDER BY sent_at DESC, local_id DESC LIMIT ?", (peer, limit))
        else:
            newest = await self._all(
                f"SELECT {_COLUMNS} FROM messages WHERE peer = ? AND (sent_at, local_id) < "
                "(SELECT sent_at, local_id FROM messages WHERE local_id = ?) "
                "ORDER BY sent_at DESC, local_id DESC LIMIT ?", (peer, before, limit))
        return newest[::-1]

    async def recent_threads(self, threads: int = 20, per_thread: int = 50) -> list[StoredMessage]:
        """The latest ``per_thread`` messages of each of the ``threads`` most recent conversations,
        grouped by conversation (most recent first), each oldest first: what a dashboard shows."""
        latest = (await self.threads())[:threads]
        found: list[StoredMessage] = []
        for last in latest:
            found += await self.thread(last.peer, per_thread)
        return found

    async def get_local(self, local_id: int) -> StoredMessage | None:
        """The message with this local id."""
        return await self._one(f"SELECT {_COLUMNS} FROM messages WHERE local_id = ?", (local_id,))

    async def threads(self) -> list[StoredMessage]:
        """The latest message of each conversation, the most recent conversation first."""
        return await self._all(
            f"SELECT {_COLUMNS} FROM messages m WHERE local_id = ("
            "  SELECT local_id FROM messages WHERE peer = m.peer ORDER BY sent_at DESC, local_id DESC LIMIT 1"
            ") ORDER BY sent_at DESC, local_id DESC", ())

    async def _one(self, sql: str, args: tuple[object, ...]) -> StoredMessage | None:
        rows = await self._all(sql, args)
        return rows[0] if rows else None

    async def _all(self, sql: str, args: tuple[object, ...]) -> list[StoredMessage]:
        rows = await self.db.run(lambda conn: conn.execute(sql, args).fetchall())
        return [_message(row) for row in rows]


# -- in the database thread ------------------------------------------------------


@dataclass(frozen=True)
class _Row:
    peer: str
    direction: Direction
    body: str
    stanza_id: str | None
    origin_id: str | None
    archive_id: str | None
    sent_at: float
    received_at: float
    state: State | None
    via: Via


@contextmanager
def _transaction(conn: sqlite3.Connection) -> Iterator[None]:
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def _insert(conn: sqlite3.Connection, row: _Row) -> StoredMessage | None:
    with _transaction(conn):
        existing = _find_duplicate(conn, row)
        if existing is not None:
            _merge(conn, existing, row)
            return None
        cursor = conn.execute(
            f"INSERT INTO messages ({_COLUMNS}) VALUES (NULL, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (row.peer, row.direction, row.body, row.stanza_id, row.origin_id, row.archive_id,
             row.sent_at, row.received_at, row.state, row.via))
        local_id = cursor.lastrowid
    assert local_id is not None
    return StoredMessage(local_id, row.peer, row.direction, row.body, row.stanza_id, row.origin_id,
                         row.archive_id, row.sent_at, row.received_at, row.state, row.via)


def _find_duplicate(conn: sqlite3.Connection, row: _Row) -> StoredMessage | None:
    """The stored message this one repeats: same archive id, else origin-id, else id and body."""
    where = "peer = ? AND direction = ?"
    queries: list[tuple[str, tuple[object, ...]]] = []
    if row.archive_id is not None:
        queries.append(("archive_id = ?", (row.archive_id,)))
    if row.origin_id is not None:
        queries.append((f"{where} AND origin_id = ?", (row.peer, row.direction, row.origin_id)))
    if row.stanza_id is not None:
        queries.append((f"{where} AND stanza_id = ? AND body = ?",
                        (row.peer, row.direction, row.stanza_id, row.body)))
    for condition, args in queries:
        found = conn.execute(f"SELECT {_COLUMNS} FROM messages WHERE {condition} LIMIT 1", args).fetchone()
        if found is not None:
            return _message(found)
    return None


def _merge(conn: sqlite3.Connection, existing: StoredMessage, row: _Row) -> None:
    """Keep what the repeat adds: our server's archive id; for our own message, that the server has it."""
    if existing.archive_id is None and row.archive_id is not None:
        taken = conn.execute("SELECT 1 FROM messages WHERE archive_id = ?", (row.archive_id,)).fetchone()
        if taken is None:
            conn.execute("UPDATE messages SET archive_id = ? WHERE local_id = ?",
                         (row.archive_id, existing.local_id))
    if existing.direction == "out" and existing.state is not None and row.via in ("mam", "carbon"):
        if _RANK["acked"] > _RANK[existing.state]:
            conn.execute("UPDATE messages SET state = 'acked' WHERE local_id = ?", (existing.local_id,))


def _mark(conn: sqlite3.Connection, origin_id: str, state: State, peer: str | None) -> bool:
    with _transaction(conn):
        sql = "SELECT local_id, state FROM messages WHERE direction = 'out' AND origin_id = ?"
        args: tuple[object, ...] = (origin_id,)
        if peer is not None:
            sql, args = sql + " AND peer = ?", (origin_id, peer)
        found = conn.execute(sql, args).fetchall()
        moved = [local_id for local_id, old in found if old is not None and _RANK[state] > _RANK[old]]
        for local_id in moved:
            conn.execute("UPDATE messages SET state = ? WHERE local_id = ?", (state, local_id))
    return bool(moved)


def _message(row: tuple[Any, ...]) -> StoredMessage:
    """A row in ``_COLUMNS`` order; the table's CHECK constraints keep the literals valid."""
    return StoredMessage(*row)
