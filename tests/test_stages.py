"""agent.stages: a staged stop where a hanging or failing stage cannot hold up the ones after it."""

from __future__ import annotations

import asyncio
import logging

import pytest

from agent.stages import Stage, run_stages


async def test_a_hanging_stage_is_cut_at_its_timeout_and_the_next_stages_still_run(
        caplog: pytest.LogCaptureFixture) -> None:
    ran: list[str] = []
    cancelled = asyncio.Event()

    async def hang() -> None:
        try:
            await asyncio.Event().wait()  # a server that never answers
        except asyncio.CancelledError:
            cancelled.set()
            raise

    stages = [Stage("first", 1.0, [("one", lambda: ran.append("one"))]),
              Stage("goodbye", 0.05, [("hang", hang), ("after the hang", lambda: ran.append("never"))]),
              Stage("stores", 1.0, [("close", lambda: ran.append("close"))])]
    with caplog.at_level(logging.WARNING, logger="agent.stages"):
        reports = await run_stages(stages)
    assert ran == ["one", "close"]  # the hanging stage's own later steps are what it gives up
    assert cancelled.is_set()
    assert [(r.name, r.overran) for r in reports] == [("first", False), ("goodbye", True), ("stores", False)]
    assert any("'goodbye' did not finish within 0.05 s" in r.getMessage() for r in caplog.records)


async def test_a_failing_step_is_logged_and_the_rest_of_its_stage_runs(caplog: pytest.LogCaptureFixture) -> None:
    ran: list[str] = []

    def broken() -> None:
        raise RuntimeError("database already closed")

    async def later() -> None:
        ran.append("later")

    with caplog.at_level(logging.ERROR, logger="agent.stages"):
        [report] = await run_stages([Stage("stores", 1.0, [("messages", broken), ("audit", later)])])
    assert ran == ["later"]
    assert report.failed == ["messages"] and not report.overran
    assert any("messages (stage stores) failed" in r.getMessage() for r in caplog.records)


async def test_a_step_that_ignores_its_cancel_does_not_keep_the_next_stage_waiting() -> None:
    ran: list[str] = []
    release = asyncio.Event()

    async def stubborn() -> None:
        while not release.is_set():
            try:
                await release.wait()
            except asyncio.CancelledError:
                continue  # swallows the cancel: a bug in a step, not in the stop

    reports = await run_stages([Stage("stuck", 0.05, [("stubborn", stubborn)]),
                                Stage("stores", 1.0, [("close", lambda: ran.append("close"))])])
    assert ran == ["close"] and reports[0].overran
    release.set()
    await asyncio.sleep(0)


async def test_a_cancelled_stop_is_not_swallowed_and_cancels_its_running_stage() -> None:
    entered = asyncio.Event()
    stage_cancelled = asyncio.Event()
    ran: list[str] = []

    async def slow() -> None:
        entered.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            stage_cancelled.set()
            raise

    stop = asyncio.create_task(run_stages([Stage("queues", 60.0, [("flush", slow)]),
                                           Stage("stores", 1.0, [("close", lambda: ran.append("close"))])]))
    await entered.wait()
    stop.cancel()
    with pytest.raises(asyncio.CancelledError):
        await stop
    assert stop.cancelled()
    await asyncio.wait_for(stage_cancelled.wait(), 5)
    assert ran == []  # a cancelled stop goes no further
