"""The ``driver.*`` commands of the local control socket: how ``headunit driver`` answers for the driver.

Arguments come from another process, so each is checked here and a bad one is a
clear error (a ``ValueError``, which the control server sends back as such).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from agent.cabin.prompts import DriverPrompts
from agent.control import Handler

_QUESTION_ID = re.compile(r"[0-9a-f]{6}")
MAX_RECENT = 100


def cabin_control_handlers(prompts: DriverPrompts) -> dict[str, Handler]:
    """``driver.pending``, ``driver.notices``, ``driver.ack`` and ``driver.answer``, answered by ``prompts``."""

    async def pending(_: Mapping[str, Any]) -> object:
        return prompts.pending().as_json()

    async def notices(args: Mapping[str, Any]) -> object:
        limit = _whole(args.get("limit", 20), "limit")
        return [n.as_json() for n in await prompts.recent(min(max(limit, 0), MAX_RECENT))]

    async def ack(args: Mapping[str, Any]) -> object:
        return (await prompts.acknowledge(_whole(args.get("id"), "id"))).as_json()

    async def answer(args: Mapping[str, Any]) -> object:
        accept = args.get("accept")
        if not isinstance(accept, bool):
            raise ValueError("accept: expected true or false")
        question = prompts.answer(question_id(args.get("id")), accept)
        return {**question.as_json(), "accepted": accept}

    return {"driver.pending": pending, "driver.notices": notices, "driver.ack": ack, "driver.answer": answer}


def question_id(value: object) -> str:
    """A question's id as ``DriverPrompts`` makes them (six hex digits); ValueError otherwise."""
    if not isinstance(value, str) or not _QUESTION_ID.fullmatch(value.strip().lower()):
        raise ValueError(f"id: expected a question id like 3fa9c2, found {_shown(value)}")
    return value.strip().lower()


def _whole(value: object, name: str) -> int:
    """A message number from JSON or the command line; ValueError otherwise."""
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 2**63:
        return value
    if isinstance(value, str) and re.fullmatch(r"\s*\d{1,18}\s*", value):
        return int(value)
    raise ValueError(f"{name}: expected a whole number, found {_shown(value)}")


def _shown(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:39] + "…"
