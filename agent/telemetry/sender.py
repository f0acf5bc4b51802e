"""Moves batches from the durable queue to the fleet's PubSub node, acking only what the service stored.

One batch at a time: wait until online and until a batch is worth a publish
(``batch_max`` samples, or the oldest has waited ``batch_delay``), publish it
under its persistent id, and ack it in the queue when the service's result
comes. A failure is logged and the *same* batch is retried after a capped,
jittered backoff; a batch reserved before a crash is the first one sent after it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from agent.telemetry.codec import CodecError, encode
from agent.telemetry.queue import Batch, QueueStats, TelemetryQueue
from agent.telemetry.publisher import NodeSetupError, PublishError, Publisher
from drivers.backoff import Backoff

log = logging.getLogger(__name__)

PUBLISH_TIMEOUT = 30.0  # s for the service's answer to one publish


class TelemetrySender:
    """The queue's only consumer; ``run()`` until cancelled, ``flush()`` at ignition off."""

    def __init__(self, queue: TelemetryQueue, publisher: Publisher, *, batch_max: int,
                 batch_delay: float, wait_online: Callable[[], Awaitable[object]],
                 publish_timeout: float = PUBLISH_TIMEOUT, backoff: Backoff | None = None) -> None:
        self._queue = queue
        self._publisher = publisher
        self._batch_max = batch_max
        self._batch_delay = batch_delay
        self._wait_online = wait_online
        self._publish_timeout = publish_timeout
        self._backoff = backoff or Backoff(initial=2.0, cap=120.0)
        self._wake = asyncio.Event()
        self._progress = asyncio.Event()
        self._flushing = 0
        self._node_ready = False
        self.published = 0  # batches acknowledged by the service since start
        self.failures = 0  # attempts (node setup or publish) that failed since start
        queue.changed.listen(self._on_queue_changed)

    async def run(self) -> None:
        """Publish batches until cancelled."""
        while True:
            await self._wait_for_batch()
            await self._wait_until_online()
            if not self._node_ready and not await self._ensure_node():
                continue
            await self._send_one()

    async def flush(self, timeout: float) -> bool:
        """Send now what is recorded (no batch delay); True once all of it was acknowledged in time."""
        target = self._queue.stats.last_seq
        self._flushing += 1
        self._wake.set()
        try:
            async with asyncio.timeout(timeout):
                while self._queue.stats.acked_seq < target and self._queue.pending():
                    self._progress.clear()
                    await self._progress.wait()
            return True
        except TimeoutError:
            log.warning("telemetry: %d samples still unsent after %.0f s", self._queue.pending(), timeout)
            return False
        finally:
            self._flushing -= 1

    # -- steps -----------------------------------------------------------------

    async def _wait_for_batch(self) -> None:
        while (delay := self._time_until_due()) != 0.0:
            self._wake.clear()
            try:
                async with asyncio.timeout(delay):
                    await self._wake.wait()
            except TimeoutError:
                pass

    def _time_until_due(self) -> float | None:
        """Seconds until a batch is worth publishing: 0 now, None when the queue is empty."""
        stats = self._queue.stats
        if stats.in_flight or stats.unsent >= self._batch_max or (stats.unsent and self._flushing):
            return 0.0
        oldest = self._queue.oldest_unsent_at()
        if not stats.unsent or oldest is None:
            return None
        return max(0.0, oldest + self._batch_delay - time.monotonic())

    async def _wait_until_online(self) -> None:
        while True:
            try:
                await self._wait_online()
                return
            except TimeoutError:  # a wait with a deadline (XmppSession.wait_online): wait again
                continue

    async def _ensure_node(self) -> bool:
        try:
            await self._publisher.ensure_node()
        except NodeSetupError as exc:
            await self._back_off(f"telemetry node not ready: {exc}")
            return False
        self._node_ready = True
        return True

    async def _send_one(self) -> None:
        batch = await self._queue.next_batch(self._batch_max)
        if batch is None:
            return
        try:
            payload = encode(batch.id, batch.samples)
        except CodecError as exc:  # cannot get better by retrying: do not block the queue behind it
            log.error("telemetry batch %s cannot be encoded (%s): dropped %d samples", batch.id, exc,
                      len(batch.samples))
            await self._queue.ack(batch.id)
            return
        try:
            await self._publisher.publish(batch.id, payload, self._publish_timeout)
        except PublishError as exc:
            await self._failed(batch, exc)
            return
        await self._queue.ack(batch.id)
        self._backoff.reset()
        self.published += 1
        log.debug("telemetry batch %s (%d samples) stored by the fleet", batch.id, len(batch.samples))

    async def _failed(self, batch: Batch, exc: PublishError) -> None:
        if exc.condition in ("item-not-found", "forbidden"):
            self._node_ready = False  # the node went away (Prosody says forbidden): set it up again first
        await self._back_off(f"telemetry batch {batch.id} ({len(batch.samples)} samples) not published: {exc}")

    async def _back_off(self, why: str) -> None:
        self.failures += 1
        delay = self._backoff.next_delay()
        log.warning("%s; retrying in %.1f s", why, delay)
        await asyncio.sleep(delay)

    def _on_queue_changed(self, _: QueueStats) -> None:
        self._wake.set()
        self._progress.set()
