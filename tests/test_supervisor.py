"""Every task has an owner: a crashing one is restarted with backoff, the others carry on, stop cancels all."""

from __future__ import annotations

import asyncio
import logging

import pytest

from agent.supervisor import Supervisor
from drivers.backoff import Backoff


async def test_a_crashing_task_is_restarted_and_its_neighbour_keeps_running(caplog: pytest.LogCaptureFixture) -> None:
    supervisor = Supervisor()
    attempts = 0
    ticks = 0

    async def flaky() -> None:
        nonlocal attempts
        attempts += 1
        if attempts < 3:
            raise OSError("device vanished")
        await asyncio.Event().wait()

    async def steady() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0.01)

    with caplog.at_level(logging.ERROR):
        supervisor.start("flaky", flaky, backoff=Backoff(initial=0.01, cap=0.02))
        supervisor.start("steady", steady)
        async with asyncio.timeout(5):
            while attempts < 3:
                await asyncio.sleep(0.01)
    assert supervisor.is_running("flaky") and supervisor.is_running("steady") and ticks > 0
    assert caplog.text.count("flaky crashed") == 2 and "device vanished" in caplog.text
    await supervisor.stop(timeout=1)
    assert not supervisor.is_running("flaky") and not supervisor.is_running("steady")


async def test_stop_cancels_named_tasks_first_and_is_idempotent() -> None:
    supervisor = Supervisor()
    cancelled: list[str] = []

    def forever(name: str) -> object:
        async def run() -> None:
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                cancelled.append(name)
                raise
        return run

    for name in ("can", "gnss", "sweep"):
        supervisor.start(name, forever(name))  # type: ignore[arg-type]
    await asyncio.sleep(0)  # let them start
    await supervisor.stop(["can", "gnss"])
    assert sorted(cancelled) == ["can", "gnss"] and supervisor.is_running("sweep")
    await supervisor.stop()
    await supervisor.stop()
    assert sorted(cancelled) == ["can", "gnss", "sweep"]


async def test_a_task_that_ignores_cancellation_does_not_hold_the_stop(caplog: pytest.LogCaptureFixture) -> None:
    supervisor = Supervisor()
    release = asyncio.Event()

    async def stubborn() -> None:
        while not release.is_set():
            try:
                await asyncio.sleep(10)
            except asyncio.CancelledError:
                pass  # deliberately wrong, to check the timeout

    supervisor.start("stubborn", stubborn, restart=False)
    await asyncio.sleep(0)
    with caplog.at_level(logging.WARNING):
        await supervisor.stop(timeout=0.2)
    assert "did not stop within" in caplog.text
    release.set()
    for task in [t for t in asyncio.all_tasks() if t.get_name() == "stubborn"]:
        task.cancel()
        await task


async def test_a_name_cannot_be_started_twice() -> None:
    supervisor = Supervisor()
    supervisor.start("x", lambda: asyncio.sleep(10))
    with pytest.raises(ValueError, match="already running"):
        supervisor.start("x", lambda: asyncio.sleep(10))
    await supervisor.stop()
