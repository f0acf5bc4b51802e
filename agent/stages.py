"""A staged stop, as Home Assistant's ``async_stop`` does it: named stages, each with its own timeout.

The agent stops in order: its inputs, what waits for the driver, the queues, the
policies and services, the goodbye on XMPP, the stores. Each stage runs as its own
task; one that overruns its timeout is logged by name, cancelled, and the next stage
runs anyway, so a server that never answers the goodbye cannot keep the databases
open. Within a stage, a step that fails is logged and the next step runs. A
cancellation of the stop itself is never swallowed: the running stage is cancelled
with it and the ``CancelledError`` propagates.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

log = logging.getLogger(__name__)

Step = Callable[[], Awaitable[object] | object]  # a coroutine function or a plain function
GRACE = 0.5  # s an overrunning stage has to end once cancelled, before the next one starts anyway


@dataclass(frozen=True)
class Stage:
    """One stage of the stop: its steps run in order, within ``timeout`` seconds in all."""

    name: str
    timeout: float
    steps: Sequence[tuple[str, Step]] = field(default_factory=tuple)


@dataclass
class StageReport:
    """How one stage went: for the log and for the tests."""

    name: str
    seconds: float = 0.0
    overran: bool = False
    failed: list[str] = field(default_factory=list)  # steps that raised


async def run_stages(stages: Sequence[Stage]) -> list[StageReport]:
    """Run every stage in order; an overrun or a failure is logged and the next stage still runs."""
    reports = []
    for stage in stages:
        reports.append(await _run_stage(stage))
    return reports


async def _run_stage(stage: Stage) -> StageReport:
    report = StageReport(stage.name)
    began = time.monotonic()
    task = asyncio.create_task(_run_steps(stage, report), name=f"stop-{stage.name}")
    try:
        done, _ = await asyncio.wait({task}, timeout=stage.timeout)
    except asyncio.CancelledError:  # the stop itself was cancelled: so is its stage, and it propagates
        task.cancel()
        raise
    if not done:
        report.overran = True
        log.warning("stop: stage %r did not finish within %g s; cancelled, going on with the next", stage.name,
                    stage.timeout)
        task.cancel()
        await asyncio.wait({task}, timeout=GRACE)  # a step that ignores the cancel is left behind
    elif not task.cancelled() and (error := task.exception()) is not None:  # pragma: no cover - steps are guarded
        log.error("stop: stage %r failed: %r", stage.name, error)
    report.seconds = time.monotonic() - began
    log.debug("stop: stage %s took %.2f s", stage.name, report.seconds)
    return report


async def _run_steps(stage: Stage, report: StageReport) -> None:
    for name, step in stage.steps:
        try:
            result = step()
            if isinstance(result, Awaitable):
                await result
        except asyncio.CancelledError:
            raise
        except Exception:
            report.failed.append(name)
            log.exception("stop: %s (stage %s) failed; going on", name, stage.name)
