"""Owns the agent's long-running tasks: restarts a crashed one with backoff, cancels all on stop."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from typing import Any

from agent.events import Event
from drivers.backoff import Backoff

log = logging.getLogger(__name__)

TaskFactory = Callable[[], Coroutine[Any, Any, None]]


class Supervisor:
    """Every task has this owner; an exception in one does not take the process down."""

    def __init__(self) -> None:
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self.crashed: Event[str] = Event("task crash")  # with the task's name, at each crash

    def start(self, name: str, factory: TaskFactory, *, restart: bool = True,
              backoff: Backoff | None = None) -> None:
        if name in self._tasks:
            raise ValueError(f"task {name!r} already running")
        runner = self._keep_running(name, factory, backoff or Backoff()) if restart else factory()
        self._tasks[name] = asyncio.create_task(runner, name=name)

    async def _keep_running(self, name: str, factory: TaskFactory, backoff: Backoff) -> None:
        while True:
            try:
                await factory()
                log.debug("%s finished", name)
                return
            except asyncio.CancelledError:
                raise
            except Exception:
                delay = backoff.next_delay()
                log.exception("%s crashed; restarting in %.1f s", name, delay)
                self.crashed.emit(name)
                await asyncio.sleep(delay)

    def is_running(self, name: str) -> bool:
        task = self._tasks.get(name)
        return task is not None and not task.done()

    async def stop(self, names: list[str] | None = None, timeout: float = 3.0) -> None:
        """Cancel the named tasks (all if None) and wait for them, at most ``timeout``."""
        chosen = [n for n in (names if names is not None else list(self._tasks)) if n in self._tasks]
        tasks = [self._tasks.pop(n) for n in chosen]
        for task in tasks:
            task.cancel()
        if not tasks:
            return
        done, pending = await asyncio.wait(tasks, timeout=timeout)
        for task in pending:
            log.warning("task %s did not stop within %.1f s", task.get_name(), timeout)
        for task in done:
            if not task.cancelled() and task.exception() is not None:
                log.error("task %s ended with %r", task.get_name(), task.exception())
