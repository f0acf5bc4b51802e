"""What the driver hands the agent, checked once for every door (dashboard, control socket, CLI).

Values arrive from another process as JSON (or from a command line), so each function
takes ``object`` and returns the typed value or raises :class:`InputError`, whose
message names the field and quotes what was given: the same sentence whichever door
the driver used. Nothing is ever silently cut or changed beyond trimming spaces and
lower-casing ids.
"""

from __future__ import annotations

import re

from agent import jid as jids
from agent.cabin.errors import CabinError
from agent.messages.store import MAX_BODY_BYTES
from agent.policies.presence import MAX_STATUS, OVERRIDE_SHOWS as PRESENCE_SHOWS

MAX_ID = 64  # characters of any id a door may pass (longer ones are not ours)
_ID = re.compile(r"[0-9a-f]{6}")  # prompts and offers: six hex digits (secrets.token_hex(3))
_DIGITS = re.compile(r"\s*\d{1,18}\s*")


class InputError(CabinError, ValueError):
    """The driver's request is malformed; nothing was done."""

    def __init__(self, name: str, problem: str) -> None:
        self.field = name
        super().__init__(f"{name}: {problem}")


def person(name: str, value: object) -> str:
    """Someone the driver writes to or answers: a bare JID with a local part, e.g. ann@example.org."""
    try:
        return jids.person(value)
    except jids.JidError as exc:
        raise InputError(name, str(exc)) from exc


def chat_body(name: str, value: object) -> str:
    """A chat message: some text of at most MAX_BODY_BYTES in UTF-8, refused (never cut) if longer."""
    if not isinstance(value, str) or not value.strip():
        raise InputError(name, f"expected a non-empty text, found {shown(value)}")
    size = len(value.encode("utf-8", errors="replace"))
    if size > MAX_BODY_BYTES:
        raise InputError(name, f"a message is at most {MAX_BODY_BYTES} bytes, this one has {size}")
    return value.strip()


def presence_show(name: str, value: object) -> str:
    """One of PRESENCE_SHOWS."""
    if not isinstance(value, str) or value not in PRESENCE_SHOWS:
        raise InputError(name, f"expected one of {', '.join(PRESENCE_SHOWS)}, found {shown(value)}")
    return value


def status_text(name: str, value: object) -> str | None:
    """An optional presence status of at most MAX_STATUS characters; None when absent."""
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > MAX_STATUS:
        raise InputError(name, f"expected a text of at most {MAX_STATUS} characters, found {shown(value)}")
    return value


def short_id(name: str, value: object) -> str:
    """The id of an offer or a question: six hex digits, any case, spaces trimmed."""
    if isinstance(value, str) and len(value) <= MAX_ID and _ID.fullmatch(value.strip().lower()):
        return value.strip().lower()
    raise InputError(name, f"expected an id like 3fa9c2, found {shown(value)}")


def number(name: str, value: object) -> int:
    """A notice's number: a whole number from JSON, or its digits as text (a command line)."""
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 2**63:
        return value
    if isinstance(value, str) and _DIGITS.fullmatch(value):
        return int(value)
    raise InputError(name, f"expected a whole number, found {shown(value)}")


def flag(name: str, value: object) -> bool:
    """true or false (JSON booleans only: 1 and "yes" are not answers)."""
    if not isinstance(value, bool):
        raise InputError(name, f"expected true or false, found {shown(value)}")
    return value


def count(name: str, value: object, default: int, most: int, *, least: int = 1) -> int:
    """A whole number from ``least`` to ``most``; ``default`` when absent (None)."""
    if value is None:
        return default
    if not isinstance(value, int) or isinstance(value, bool) or not least <= value <= most:
        raise InputError(name, f"expected a whole number from {least} to {most}, found {shown(value)}")
    return value


def shown(value: object) -> str:
    """``value`` quoted for an error message, at most 40 characters."""
    text = repr(value)
    return text if len(text) <= 40 else text[:39] + "…"
