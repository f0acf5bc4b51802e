"""Telemetry to the fleet, with no loss: policy → durable queue → PubSub publisher.

``Telemetry`` owns the three. The policy turns vehicle state into samples
(``rules``), which are committed to an SQLite queue (``queue``) before anything
is sent; the sender (``sender``) publishes them in batches to the fleet's PubSub
node (``agent.xmpp.plugins.telemetry``) and acks them in the queue only when the service
stored them. Coverage gaps, restarts and SIGKILL lose nothing; a batch sent
twice has the same id, so the fleet drops the copy.

Lifecycle, as the agent wires it: ``start()`` with the inputs; ``run()`` under
the supervisor (it needs the XMPP client, not a session: it waits for
``wait_online`` itself); at shutdown ``flush(timeout)`` while still online, then
cancel ``run()``, then ``await stop()``.

The rules in force are the profile's with the operators' changes laid over them
(``overrides``, kept in their own SQLite file): ``set_rule``, ``remove_rule`` and
``reset_rules`` commit a change, then the policy samples by it at once; samples
already taken stay queued whatever the rules become.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path

from agent.clock import Clock
from agent.profile.model import TelemetryConfig, TelemetryRule
from agent.telemetry.overrides import Origin, RuleError, RuleOverrides
from agent.telemetry.queue import Sample, TelemetryQueue
from agent.policies.telemetry import TelemetryPolicy
from agent.telemetry.sender import TelemetrySender
from agent.vehicle.state import VehicleState
from agent.telemetry.publisher import Publisher, node_name

log = logging.getLogger(__name__)

DB_NAME = "telemetry.db"
RULES_DB_NAME = "telemetry-rules.db"  # the operators' changes: apart from the samples, as a setting
PRUNE_EVERY = 3600.0  # s between deletions of acknowledged samples past their retention

__all__ = ["Telemetry", "Sample", "Origin", "Publisher", "RuleError", "node_name"]


class Telemetry:
    """The telemetry pipeline of one car: policy → queue → sender."""

    def __init__(self, state: VehicleState, config: TelemetryConfig, publisher: Publisher,
                 data_dir: Path, clock: Clock, wait_online: Callable[[], Awaitable[object]]) -> None:
        if config.service is None:
            raise ValueError("telemetry needs a PubSub service (telemetry.service in the profile)")
        self.queue = TelemetryQueue(data_dir / DB_NAME, retention=config.retention)
        try:
            self.overrides = RuleOverrides(config.rules, data_dir / RULES_DB_NAME)
        except BaseException:
            self.queue.close()
            raise
        self.publisher = publisher
        self.sender = TelemetrySender(self.queue, self.publisher, batch_max=config.batch_max,
                                      batch_delay=clock.real_delay(config.batch_delay), wait_online=wait_online)
        self.policy = TelemetryPolicy(state, self.overrides.effective, clock, self._take)
        self._buffer: list[Sample] = []
        self._recording = 0  # samples taken from the buffer whose commit has not returned yet
        self._writer: asyncio.Task[None] | None = None

    @property
    def pending(self) -> int:
        """Samples taken and not yet acknowledged by the fleet's service."""
        return self.queue.pending() + self._recording + len(self._buffer)

    # -- the rules ------------------------------------------------------------------

    @property
    def rules(self) -> tuple[TelemetryRule, ...]:
        """The rules in force: the profile's, as the operators changed them."""
        return self.overrides.effective

    @property
    def removed_rules(self) -> tuple[TelemetryRule, ...]:
        """The profile's rules an operator switched off (``reset_rules`` brings them back)."""
        return self.overrides.removed

    def origin(self, path: str) -> Origin | None:
        """Where the rule in force for ``path`` comes from, "profile" or "operator"; None: no rule."""
        return self.overrides.origin(path)

    async def set_rule(self, rule: TelemetryRule) -> None:
        """Replace or add the rule for ``rule.path``, durably and at once; ``RuleError`` if unacceptable."""
        await self.overrides.set(rule)
        self._apply(f"rule for {rule.path} set")

    async def remove_rule(self, path: str) -> bool:
        """Stop sampling ``path``, durably and at once; False if no rule was in force for it."""
        if not await self.overrides.remove(path):
            return False
        self._apply(f"rule for {path} removed")
        return True

    async def reset_rules(self) -> int:
        """Forget every operator change: the profile's rules again. Returns how many changes were forgotten."""
        forgotten = await self.overrides.reset()
        self._apply(f"{forgotten} operator changes forgotten, the profile's rules apply")
        return forgotten

    def _apply(self, what: str) -> None:
        self.policy.replace_rules(self.overrides.effective)
        log.info("telemetry: %s (%d rules in force)", what, len(self.overrides.effective))

    # -- lifecycle ------------------------------------------------------------------

    def start(self) -> None:
        """Start sampling the vehicle state."""
        self.policy.start()

    async def run(self) -> None:
        """Publish until cancelled (the supervisor's task), pruning old acknowledged samples hourly."""
        async with asyncio.TaskGroup() as group:
            group.create_task(self.sender.run(), name="telemetry-sender")
            group.create_task(self._prune(), name="telemetry-prune")

    async def flush(self, timeout: float) -> bool:
        """Commit what the policy produced and publish it now; True if all was acknowledged in time."""
        await self._drain()
        return await self.sender.flush(timeout)

    async def stop(self) -> None:
        """Stop sampling, commit the last samples, close the queue; idempotent. Cancel ``run()`` first."""
        self.policy.stop()
        await self._drain()
        self.queue.close()
        self.overrides.close()

    # -- policy → queue ----------------------------------------------------------

    def _take(self, samples: list[Sample]) -> None:
        """From the policy (synchronous): buffer, and commit with the others of this loop turn."""
        self._buffer.extend(samples)
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._write(), name="telemetry-record")

    async def _write(self) -> None:
        while self._buffer:
            samples, self._buffer = self._buffer, []
            self._recording = len(samples)
            try:
                await self.queue.record(samples)
            except Exception:
                log.exception("telemetry: %d samples could not be stored and are lost", len(samples))
            finally:
                self._recording = 0

    async def _drain(self) -> None:
        if self._writer is not None:
            await asyncio.shield(self._writer)
        if self._buffer:
            await self._write()

    async def _prune(self) -> None:
        while True:
            try:
                gone = await self.queue.prune()
            except Exception:
                log.exception("telemetry: pruning the queue failed")
            else:
                if gone:
                    log.info("telemetry: %d acknowledged samples past retention deleted", gone)
            await asyncio.sleep(PRUNE_EVERY)
