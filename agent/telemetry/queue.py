"""The durable telemetry queue: samples wait in SQLite until the fleet's service stored them.

Every sample gets a ``seq`` when it is committed. The sender takes the oldest
unsent samples into a *batch* with a persistent id, publishes it, and acks it;
only one batch is in flight at a time, so acknowledged samples are always a
prefix of the queue. Each step is one transaction, so a SIGKILL or a power cut
at any instant leaves every committed sample either acknowledged or due to be
(re)sent, in order, and never under two batch ids: a batch reserved before a
crash comes back after it with the same id and the same samples.

Batch ids are ``<store>-<counter>``: ``store`` is a random tag drawn when the
database is created (a damaged file moved aside starts a new store, so ids are
never reused even then) and ``counter`` never goes back (SQLite AUTOINCREMENT).
"""

from __future__ import annotations

import logging
import math
import re
import secrets
import sqlite3
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from agent.errors import HeadunitError
from agent.events import Event
from agent.policies.telemetry import Sample as Sample  # the queue holds what the policy samples
from agent.vehicle.state import Value
from agent.storage import Database

log = logging.getLogger(__name__)

T = TypeVar("T")

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS batches (
    counter INTEGER PRIMARY KEY AUTOINCREMENT,
    acked_at REAL                -- wall clock of the acknowledgement; NULL: in flight
);
CREATE TABLE IF NOT EXISTS samples (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    path TEXT NOT NULL,
    kind TEXT NOT NULL,          -- b(ool), i(nt), f(loat), s(tring)
    value NOT NULL,
    timestamp REAL NOT NULL,     -- wall clock (epoch s) of the observation
    batch INTEGER REFERENCES batches(counter)  -- NULL: not sent yet
);
CREATE INDEX IF NOT EXISTS samples_by_batch ON samples(batch);
CREATE INDEX IF NOT EXISTS batches_by_ack ON batches(acked_at);
"""

_KINDS: dict[type, str] = {bool: "b", int: "i", float: "f", str: "s"}
_SQLITE_INT = range(-(2**63), 2**63)
_NO_SPACE = re.compile(r"\S{1,256}")


class QueueError(HeadunitError):
    """The queue was asked something it cannot do (an unknown batch id, a bad sample)."""


@dataclass(frozen=True, slots=True)
class Batch:
    """Samples reserved together under one persistent id, oldest first."""

    id: str
    seqs: tuple[int, ...]
    samples: tuple[Sample, ...]


@dataclass(frozen=True, slots=True)
class QueueStats:
    last_seq: int  # highest seq ever recorded (0: none)
    acked_seq: int  # every sample up to this seq has been acknowledged
    unsent: int  # samples not in any batch yet
    in_flight: int  # samples of the batch reserved and not yet acknowledged
    batches: int  # batches ever made by this store

    @property
    def pending(self) -> int:
        return self.unsent + self.in_flight


class TelemetryQueue:
    """Samples recorded durably, handed out in batches, kept until acknowledged (then ``retention`` s)."""

    def __init__(self, db_path: Path, *, retention: float = 86400.0,
                 wall: Callable[[], float] = time.time) -> None:
        self.retention = retention
        self._wall = wall
        self.db = Database(db_path, SCHEMA)
        self.store = self._store_tag(self.db.conn)
        self._stats = self._load_stats(self.db.conn)
        self._oldest_unsent_at: float | None = 0.0 if self._stats.unsent else None
        self.changed: Event[QueueStats] = Event("telemetry queue")  # a sample recorded, batched or acked
        if self._stats.pending:
            log.info("telemetry queue %s: %d samples pending from before", db_path.name, self._stats.pending)

    # -- reading -------------------------------------------------------------

    @property
    def stats(self) -> QueueStats:
        return self._stats

    def pending(self) -> int:
        """Samples recorded and not yet acknowledged by the fleet's service."""
        return self._stats.pending

    def oldest_unsent_at(self) -> float | None:
        """``time.monotonic()`` when the oldest unsent sample arrived (0.0: before this process), or None."""
        return self._oldest_unsent_at

    def batch_id(self, counter: int) -> str:
        return f"{self.store}-{counter:06d}"

    # -- writing -------------------------------------------------------------

    async def record(self, samples: Sequence[Sample]) -> range:
        """Append ``samples`` durably in one transaction; return their seqs (a bad sample is logged and left out)."""
        rows = []
        for sample in samples:
            try:
                rows.append(_row(sample))
            except QueueError as exc:
                log.warning("telemetry: %s; dropped", exc)
        if not rows:
            return range(0)
        seqs = await self.db.run(lambda conn: _transaction(conn, lambda: _insert(conn, rows)))
        if self._stats.unsent == 0:
            self._oldest_unsent_at = time.monotonic()
        self._set(last_seq=seqs.stop - 1, unsent=self._stats.unsent + len(rows))
        return seqs

    async def next_batch(self, max_samples: int) -> Batch | None:
        """The batch in flight if there is one (same id and samples as before), else a new one; None if empty."""
        if max_samples < 1:
            raise QueueError(f"a batch holds at least one sample, not {max_samples}")
        counter, seqs, samples = await self.db.run(
            lambda conn: _transaction(conn, lambda: _reserve(conn, max_samples)))
        if not seqs:
            return None
        if self._stats.in_flight == 0:
            unsent = self._stats.unsent - len(seqs)
            self._set(unsent=unsent, in_flight=len(seqs), batches=max(counter, self._stats.batches))
            if unsent == 0:
                self._oldest_unsent_at = None
        return Batch(self.batch_id(counter), seqs, samples)

    async def ack(self, batch_id: str) -> None:
        """The fleet's service stored ``batch_id``: its samples leave the queue (rows kept ``retention`` s)."""
        counter = self._counter_of(batch_id)
        acked_seq = await self.db.run(
            lambda conn: _transaction(conn, lambda: _ack(conn, counter, self._wall())))
        if acked_seq is None:
            log.debug("telemetry batch %s was already acknowledged", batch_id)
            return
        self._set(acked_seq=acked_seq, in_flight=0)

    async def prune(self) -> int:
        """Delete acknowledged samples older than ``retention``; return how many went."""
        cutoff = self._wall() - self.retention
        return await self.db.run(lambda conn: _transaction(conn, lambda: _prune(conn, cutoff)))

    def close(self) -> None:
        """Finish queued work and close the database; idempotent."""
        self.db.close()

    # -- internals -----------------------------------------------------------

    def _counter_of(self, batch_id: str) -> int:
        store, _, counter = batch_id.rpartition("-")
        if store != self.store or not counter.isdigit():
            raise QueueError(f"{batch_id!r} is not a batch of this queue (store {self.store})")
        return int(counter)

    def _set(self, **changes: int) -> None:
        values = {name: getattr(self._stats, name) for name in QueueStats.__dataclass_fields__}
        values.update(changes)
        self._stats = QueueStats(**values)
        self.changed.emit(self._stats)

    @staticmethod
    def _store_tag(conn: sqlite3.Connection) -> str:
        conn.execute("INSERT OR IGNORE INTO meta VALUES ('store', ?)", (secrets.token_hex(3),))
        return str(conn.execute("SELECT value FROM meta WHERE key = 'store'").fetchone()[0])

    @staticmethod
    def _load_stats(conn: sqlite3.Connection) -> QueueStats:
        def one(sql: str) -> int:
            row = conn.execute(sql).fetchone()  # sqlite_sequence has no row before the first insert
            return int(row[0] or 0) if row else 0

        last_seq = one("SELECT seq FROM sqlite_sequence WHERE name = 'samples'")
        first_pending = one("SELECT min(s.seq) FROM samples s LEFT JOIN batches b ON s.batch = b.counter"
                            " WHERE b.acked_at IS NULL")  # acknowledged samples are a prefix
        return QueueStats(
            last_seq=last_seq,
            acked_seq=first_pending - 1 if first_pending else last_seq,
            unsent=one("SELECT count(*) FROM samples WHERE batch IS NULL"),
            in_flight=one("SELECT count(*) FROM samples s JOIN batches b ON s.batch = b.counter"
                          " WHERE b.acked_at IS NULL"),
            batches=one("SELECT seq FROM sqlite_sequence WHERE name = 'batches'"),
        )


# -- work done in the database's thread ----------------------------------------


def _transaction(conn: sqlite3.Connection, work: Callable[[], T]) -> T:
    """Run ``work`` in one write transaction: all of it is committed, or none."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        result = work()
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
    return result


def _insert(conn: sqlite3.Connection, rows: list[tuple[str, str, object, float]]) -> range:
    conn.executemany("INSERT INTO samples (path, kind, value, timestamp) VALUES (?, ?, ?, ?)", rows)
    last = int(conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'samples'").fetchone()[0])
    return range(last - len(rows) + 1, last + 1)


def _reserve(conn: sqlite3.Connection, max_samples: int) -> tuple[int, tuple[int, ...], tuple[Sample, ...]]:
    row = conn.execute("SELECT counter FROM batches WHERE acked_at IS NULL ORDER BY counter LIMIT 1").fetchone()
    if row is not None:
        counter = int(row[0])
    else:
        first = conn.execute("SELECT min(seq) FROM samples WHERE batch IS NULL").fetchone()[0]
        if first is None:
            return 0, (), ()
        counter = int(conn.execute("INSERT INTO batches (acked_at) VALUES (NULL)").lastrowid or 0)
        conn.execute("UPDATE samples SET batch = ? WHERE seq IN (SELECT seq FROM samples"
                     " WHERE batch IS NULL ORDER BY seq LIMIT ?)", (counter, max_samples))
    found = conn.execute("SELECT seq, path, kind, value, timestamp FROM samples WHERE batch = ?"
                         " ORDER BY seq", (counter,)).fetchall()
    return counter, tuple(r[0] for r in found), tuple(_sample(*r[1:]) for r in found)


def _ack(conn: sqlite3.Connection, counter: int, now: float) -> int | None:
    row = conn.execute("SELECT acked_at FROM batches WHERE counter = ?", (counter,)).fetchone()
    if row is None:
        raise QueueError(f"no telemetry batch {counter} in the queue")
    if row[0] is not None:
        return None
    conn.execute("UPDATE batches SET acked_at = ? WHERE counter = ?", (now, counter))
    return int(conn.execute("SELECT max(seq) FROM samples WHERE batch = ?", (counter,)).fetchone()[0] or 0)


def _prune(conn: sqlite3.Connection, cutoff: float) -> int:
    old = "SELECT counter FROM batches WHERE acked_at IS NOT NULL AND acked_at < ?"
    gone = conn.execute(f"DELETE FROM samples WHERE batch IN ({old})", (cutoff,)).rowcount
    conn.execute(f"DELETE FROM batches WHERE counter IN ({old})", (cutoff,))
    return int(gone)


def _row(sample: Sample) -> tuple[str, str, object, float]:
    kind = _KINDS.get(type(sample.value))
    if (kind is None or not isinstance(sample.path, str) or not _NO_SPACE.fullmatch(sample.path)
            or not isinstance(sample.timestamp, (int, float)) or not math.isfinite(sample.timestamp)):
        raise QueueError(f"not a telemetry sample: {sample!r}")
    value: object = sample.value
    if isinstance(value, float) and math.isnan(value) or kind == "i" and value not in _SQLITE_INT:
        value = str(value)  # SQLite has no 65-bit integers and stores NaN as NULL
    return sample.path, kind, value, float(sample.timestamp)


def _sample(path: str, kind: str, value: object, timestamp: float) -> Sample:
    decoded: Value
    if kind == "b":
        decoded = bool(value)
    elif kind == "i":
        decoded = int(value)  # type: ignore[call-overload]
    elif kind == "f":
        decoded = float(value)  # type: ignore[arg-type]
    else:
        decoded = str(value)
    return Sample(path, decoded, timestamp)
