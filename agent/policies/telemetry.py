"""The telemetry policy: per VSS path, when a value becomes a sample for the fleet.

A rule samples its path when the value changed by at least ``change`` since
the rule's last sample (numbers; any change for booleans and strings; with
``change = 0`` every change), and at least every ``every`` seconds with the
current value (a heartbeat), but never more often than ``min_interval``. The
first fresh value of a path is always sampled, as the fleet's baseline.

A change that comes too soon waits for the interval to pass; if more changes
come meanwhile, the *latest* one is sent, with the value and original
timestamp of that latest change (it is what the car knows now; the fleet
wanted at most one sample per interval); if the value comes back within the
threshold of the last sample meanwhile, nothing is sent. Stale values are never
sampled, not even by the heartbeat. Every timer runs in vehicle time
(``Clock``), so a replay at 10x samples the same drive. The rules can be
replaced while sampling (an operator's change, ``replace_rules``): each path
keeps what it remembers and is judged by its new rule at once.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from agent.clock import Clock
from agent.profile.model import TelemetryRule
from agent.vehicle.state import EventKind, Reading, StateEvent, Value, VehicleState

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Sample:
    """One observation for the fleet: a VSS path, its value, and when it was observed."""

    path: str
    value: Value
    timestamp: float  # the observation's original wall-clock epoch seconds


def is_number(value: Value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def changed_enough(rule: TelemetryRule, old: Value, new: Value) -> bool:
    """True if going from ``old`` (last sample) to ``new`` is a change this rule reports."""
    if rule.change is None or old == new:
        return False
    if is_number(old) and is_number(new):
        difference = abs(float(new) - float(old))
        return difference >= rule.change or math.isnan(difference)
    return True


class _RuleState:
    """What one rule remembers: the last sample, a change waiting for its interval, the timer."""

    def __init__(self, rule: TelemetryRule) -> None:
        self.rule = rule
        self.last_value: Value | None = None
        self.last_at: float | None = None  # vehicle time of the last sample
        self.waiting: Reading | None = None  # latest change held back by min_interval
        self.timer: asyncio.TimerHandle | None = None

    def cancel(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None


class TelemetryPolicy:
    """Subscribes to the rules' paths and hands samples to ``on_samples`` as they are due."""

    def __init__(self, state: VehicleState, rules: Sequence[TelemetryRule], clock: Clock,
                 on_samples: Callable[[list[Sample]], None]) -> None:
        self._state = state
        self._rules = {rule.path: _RuleState(rule) for rule in rules}
        self._clock = clock
        self._on_samples = on_samples
        self._unsubscribe: Callable[[], None] | None = None

    def start(self) -> None:
        """Listen to the rules' paths and sample the values already known."""
        if self._unsubscribe is not None:
            return
        self._unsubscribe = self._state.listen(self._on_event, list(self._rules))
        for path, rule in self._rules.items():
            reading = self._state.get(path)
            if reading is not None and not reading.is_stale:
                self._consider(rule, reading)

    def replace_rules(self, rules: Sequence[TelemetryRule]) -> None:
        """Sample by ``rules`` from now on, without a restart.

        A path that keeps a rule keeps its history (last sample, a change held back),
        judged by its new rule at once; a new path's current value is sampled as its
        baseline; a path without a rule any more is no longer sampled (a change it held
        back is dropped, as the operator no longer wants it).
        """
        wanted = {rule.path: rule for rule in rules}
        old, self._rules = self._rules, {}
        for path, rule in wanted.items():
            kept = old.pop(path, None)
            self._rules[path] = kept if kept is not None else _RuleState(rule)
        for gone in old.values():
            gone.cancel()
            gone.waiting = None
        if self._unsubscribe is None:  # not started: start() samples what is known
            for path, rule in wanted.items():
                self._rules[path].rule = rule
            return
        self._unsubscribe()
        self._unsubscribe = self._state.listen(self._on_event, list(self._rules))
        for path, rule in wanted.items():
            state = self._rules[path]
            if state.rule != rule or state.last_at is None:
                self._retarget(state, rule)

    def stop(self) -> None:
        """Stop listening and cancel every timer; idempotent. A change held back is dropped."""
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        for rule in self._rules.values():
            rule.cancel()
            rule.waiting = None

    # -- decisions -------------------------------------------------------------

    def _on_event(self, event: StateEvent) -> None:
        rule = self._rules.get(event.path)
        if rule is None or event.kind is not EventKind.CHANGED or event.new.is_stale:
            return
        self._consider(rule, event.new)

    def _consider(self, rule: _RuleState, reading: Reading) -> None:
        """A fresh value arrived: sample it now, hold it for the interval, or let it pass."""
        if rule.last_value is not None and not changed_enough(rule.rule, rule.last_value, reading.value):
            held, rule.waiting = rule.waiting, None  # back within the threshold: a held change is moot
            if held is not None or rule.timer is None:
                self._schedule(rule)  # the heartbeat (perhaps overdue after a stale spell)
            return
        if self._wait(rule) > 0:
            rule.waiting = reading
            self._schedule(rule)
        else:
            self._emit(rule, reading)

    def _retarget(self, rule: _RuleState, new: TelemetryRule) -> None:
        """Judge a rule's held change, or else the path's current value, by its new rule."""
        rule.cancel()
        rule.rule = new
        reading = rule.waiting if rule.waiting is not None else self._state.get(new.path)
        rule.waiting = None
        if reading is not None and not reading.is_stale:
            self._consider(rule, reading)
        else:
            self._schedule(rule)

    def _on_timer(self, rule: _RuleState) -> None:
        rule.timer = None
        if rule.waiting is not None:
            reading, rule.waiting = rule.waiting, None
            self._emit(rule, reading)
            return
        current = self._state.get(rule.rule.path)
        if current is None or current.is_stale:
            return  # no heartbeat on a stale value; the next fresh one re-arms the timer
        if self._heartbeat_due(rule):
            self._emit(rule, current)
        else:
            self._schedule(rule)  # woke a hair early

    def _emit(self, rule: _RuleState, reading: Reading) -> None:
        if not math.isfinite(reading.timestamp):
            log.warning("telemetry: %s has no usable timestamp (%r); not sampled", reading.path, reading.timestamp)
            return
        rule.last_value = reading.value
        rule.last_at = self._clock.now()
        rule.waiting = None
        try:
            self._on_samples([Sample(reading.path, reading.value, reading.timestamp)])
        except Exception:
            log.exception("telemetry sample of %s not taken", reading.path)
        self._schedule(rule)

    # -- timing (vehicle seconds) ----------------------------------------------

    def _wait(self, rule: _RuleState) -> float:
        """Vehicle seconds before this rule may sample again (0: now)."""
        if rule.last_at is None:
            return 0.0
        return max(0.0, rule.last_at + rule.rule.min_interval - self._clock.now())

    def _heartbeat_due(self, rule: _RuleState) -> bool:
        every = rule.rule.every
        if every is None:
            return False
        return rule.last_at is None or self._clock.now() >= rule.last_at + every - 1e-6

    def _next_due(self, rule: _RuleState) -> float | None:
        """Vehicle seconds until this rule's timer should fire, or None for no timer."""
        if rule.waiting is not None:
            return self._wait(rule)
        every = rule.rule.every
        if every is None or rule.last_at is None:
            return None  # the first fresh value is sampled when it comes
        due = rule.last_at + max(every, rule.rule.min_interval)
        return max(0.0, due - self._clock.now())

    def _schedule(self, rule: _RuleState) -> None:
        rule.cancel()
        if self._unsubscribe is None:
            return
        due = self._next_due(rule)
        if due is None:
            return
        loop = asyncio.get_running_loop()
        rule.timer = loop.call_later(self._clock.real_delay(due), self._on_timer, rule)
