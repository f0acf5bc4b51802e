"""Test hooks on the control socket, only when the agent starts with ``HEADUNIT_TEST_HOOKS=1``.

``debug.block {"seconds": N}`` blocks the event loop with ``time.sleep``, as a hung
call would, so the tests can show that a blocked loop feeds no watchdog. It sends a
marker to the notify socket just before and just after the block: datagrams arrive
in order, so whatever the test receives between the two was sent during the block.
Never available otherwise: nobody can stall a car through its control socket.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Mapping
from typing import Any

from agent.control import ControlError, Handler
from agent.service.notify import Notifier

log = logging.getLogger(__name__)

TEST_HOOKS_VARIABLE = "HEADUNIT_TEST_HOOKS"
MARKER = "X_HEADUNIT_DEBUG"  # an assignment systemd ignores (sd_notify(3): unknown ones are)
MAX_BLOCK = 120.0  # s


def debug_handlers(notifier: Callable[[], Notifier],
                   environ: Mapping[str, str] | None = None) -> dict[str, Handler]:
    """``debug.block`` with HEADUNIT_TEST_HOOKS=1 in the environment; nothing otherwise."""
    env = os.environ if environ is None else environ
    if env.get(TEST_HOOKS_VARIABLE) != "1":
        return {}
    log.warning("test hooks are on (%s=1): debug.block can stall this agent", TEST_HOOKS_VARIABLE)

    async def block(args: Mapping[str, Any]) -> object:
        seconds = args.get("seconds")
        if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not 0 < seconds <= MAX_BLOCK:
            raise ControlError(f"seconds: expected a number from 0 to {MAX_BLOCK:g}, found {seconds!r}")
        log.warning("debug.block: blocking the event loop for %g s", seconds)
        notifier().notify(**{MARKER: f"block {seconds:g}"})
        time.sleep(seconds)  # on purpose: the loop stops here
        notifier().notify(**{MARKER: "unblocked"})
        return {"blocked": seconds}

    return {"debug.block": block}
