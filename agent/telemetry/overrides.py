"""Operators' changes to the telemetry rules, kept in SQLite and laid over the profile's.

The profile's ``[[telemetry.rules]]`` are the defaults. An operator may *set* a
rule (it replaces or adds the rule for its path) or *remove* one (the removal of
a profile rule is kept as a tombstone, so the path stays off after a restart);
*reset* forgets every change. Each change is committed (WAL, ``synchronous=FULL``)
before it is applied, so a change the operator was told about survives a SIGKILL
or a power cut. Setting a path back to exactly the profile's rule drops the
override: the rule is the profile's again.
"""

from __future__ import annotations

import logging
import math
import sqlite3
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Literal, Optional

from agent.errors import HeadunitError
from agent.profile.sections import VSS_OR_OWN_PATH
from agent.profile.model import TelemetryRule
from agent.storage import Database
from agent.telemetry.codec import MAX_PATHS

log = logging.getLogger(__name__)

Origin = Literal["profile", "operator"]
Change = Optional[TelemetryRule]  # None: the profile's rule for the path is removed

SCHEMA = """
CREATE TABLE IF NOT EXISTS rules (
    path TEXT PRIMARY KEY,
    removed INTEGER NOT NULL,    -- 1: the profile's rule for this path is off; 0: the rule below
    every REAL,
    change REAL,
    min_interval REAL,
    changed_at REAL NOT NULL     -- wall clock (epoch s) of the change
);
"""

MAX_RULES = MAX_PATHS  # a batch names at most this many paths, or the fleet cannot decode it
MAX_PATH_CHARS = 256
PATH = VSS_OR_OWN_PATH  # as the profile's rule paths


class RuleError(HeadunitError, ValueError):
    """A telemetry rule change the agent cannot take; the message says why."""


def is_rule_path(path: str) -> bool:
    """True for a path a rule may name: ``Vehicle.*`` (VSS) or ``Headunit.*`` (the agent's own)."""
    return len(path) <= MAX_PATH_CHARS and PATH.fullmatch(path) is not None


def check_rule(rule: TelemetryRule) -> None:
    """Raise ``RuleError`` unless ``rule`` is one the profile loader would also accept."""
    if not isinstance(rule.path, str) or not is_rule_path(rule.path):
        raise RuleError(f"not a VSS path like Vehicle.Speed: {str(rule.path)[:60]!r}")
    if rule.every is None and rule.change is None:
        raise RuleError(f"{rule.path}: a rule needs every (seconds), change (threshold) or both")
    if rule.every is not None and not (_finite(rule.every) and rule.every > 0):
        raise RuleError(f"{rule.path}: every must be a number of seconds above 0, not {rule.every!r}")
    if rule.change is not None and not (_finite(rule.change) and rule.change >= 0):
        raise RuleError(f"{rule.path}: change must be a number from 0, not {rule.change!r}")
    if not (_finite(rule.min_interval) and rule.min_interval >= 0):
        raise RuleError(f"{rule.path}: min_interval must be a number of seconds from 0, not {rule.min_interval!r}")


def _finite(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


class RuleOverrides:
    """The profile's rules with the operators' changes on top, stored in ``db_path``."""

    def __init__(self, profile: Sequence[TelemetryRule], db_path: Path, *,
                 wall: Callable[[], float] = time.time) -> None:
        self.profile = {rule.path: rule for rule in profile}
        self._wall = wall
        self.db = Database(db_path, SCHEMA)
        self._closed = False
        self._changes: dict[str, Change] = _load(self.db.conn, db_path)
        self._effective = self._compute()
        if self._changes:
            log.info("telemetry: %d operator changes laid over the profile's rules", len(self._changes))

    # -- reading -----------------------------------------------------------------

    @property
    def effective(self) -> tuple[TelemetryRule, ...]:
        """The rules in force: the profile's (in its order, as changed), then the operators' new paths."""
        return self._effective

    @property
    def changes(self) -> Mapping[str, Change]:
        """The operators' changes by path: a rule, or None for a removed profile rule."""
        return dict(self._changes)

    @property
    def removed(self) -> tuple[TelemetryRule, ...]:
        """The profile's rules that an operator switched off."""
        return tuple(rule for path, rule in self.profile.items()
                     if path in self._changes and self._changes[path] is None)

    def get(self, path: str) -> TelemetryRule | None:
        """The rule in force for ``path``, if any."""
        return self._changes[path] if path in self._changes else self.profile.get(path)

    def origin(self, path: str) -> Origin | None:
        """Where the rule in force for ``path`` comes from; None when no rule is in force."""
        if self.get(path) is None:
            return None
        return "operator" if path in self._changes else "profile"

    # -- changing ----------------------------------------------------------------

    async def set(self, rule: TelemetryRule) -> None:
        """Replace or add the rule for ``rule.path``, durably; ``RuleError`` if it cannot be taken."""
        check_rule(rule)
        if self.get(rule.path) is None and len(self._effective) >= MAX_RULES:
            raise RuleError(f"already {len(self._effective)} rules, the most one car may have")
        if rule == self.profile.get(rule.path):
            await self._forget(rule.path)
        else:
            await self._store(rule.path, rule)

    async def remove(self, path: str) -> bool:
        """Stop sampling ``path``, durably; False (and nothing written) when no rule is in force for it."""
        if self.get(path) is None:
            return False
        if path in self.profile:
            await self._store(path, None)
        else:
            await self._forget(path)
        return True

    async def reset(self) -> int:
        """Forget every operator change: the profile's rules again. Returns how many were forgotten."""
        self._check_open()
        forgotten = await self.db.run(lambda conn: int(conn.execute("DELETE FROM rules").rowcount))
        self._changes.clear()
        self._effective = self._compute()
        return forgotten

    def close(self) -> None:
        """Close the database; idempotent. Changes after this raise ``RuleError``."""
        self._closed = True
        self.db.close()

    # -- internals -----------------------------------------------------------------

    async def _store(self, path: str, change: Change) -> None:
        self._check_open()
        row = _row(path, change, self._wall())
        await self.db.run(lambda conn: conn.execute(
            "INSERT INTO rules (path, removed, every, change, min_interval, changed_at) VALUES (?, ?, ?, ?, ?, ?)"
            " ON CONFLICT (path) DO UPDATE SET removed = excluded.removed, every = excluded.every,"
            " change = excluded.change, min_interval = excluded.min_interval, changed_at = excluded.changed_at",
            row))
        self._changes[path] = change
        self._effective = self._compute()

    async def _forget(self, path: str) -> None:
        self._check_open()
        await self.db.run(lambda conn: conn.execute("DELETE FROM rules WHERE path = ?", (path,)))
        self._changes.pop(path, None)
        self._effective = self._compute()

    def _check_open(self) -> None:
        if self._closed:
            raise RuleError("the telemetry rules cannot be changed now: telemetry has stopped")

    def _compute(self) -> tuple[TelemetryRule, ...]:
        laid = [self._changes.get(path, rule) for path, rule in self.profile.items()]
        added = [rule for path, rule in sorted(self._changes.items()) if path not in self.profile]
        return tuple(rule for rule in [*laid, *added] if rule is not None)


def _row(path: str, change: Change, at: float) -> tuple[str, int, float | None, float | None, float | None, float]:
    if change is None:
        return path, 1, None, None, None, at
    return path, 0, change.every, change.change, change.min_interval, at


def _load(conn: sqlite3.Connection, db_path: Path) -> dict[str, Change]:
    """The stored changes; a row that is not a valid rule (a hand-edited file) is skipped, with a log line."""
    changes: dict[str, Change] = {}
    rows = conn.execute("SELECT path, removed, every, change, min_interval FROM rules ORDER BY path").fetchall()
    for path, removed, every, change, min_interval in rows:
        try:
            changes[path] = _change(path, removed, every, change, min_interval)
        except (RuleError, TypeError, ValueError) as exc:
            log.warning("telemetry: %s: stored rule change for %r ignored: %s", db_path.name, path, exc)
    return changes


def _change(path: object, removed: object, every: object, change: object, min_interval: object) -> Change:
    if not isinstance(path, str) or not is_rule_path(path):
        raise RuleError(f"not a VSS path like Vehicle.Speed: {str(path)[:60]!r}")
    if removed == 1:
        return None
    if removed != 0:
        raise RuleError(f"removed is {removed!r}, not 0 or 1")
    interval = _number(min_interval)
    rule = TelemetryRule(path, every=_number(every), change=_number(change),
                         min_interval=TelemetryRule.min_interval if interval is None else interval)
    check_rule(rule)
    return rule


def _number(value: object) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise RuleError(f"{value!r} is not a number")
    return float(value)
