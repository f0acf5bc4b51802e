"""JIDs, the one way: reduce to the bare JID, tell an operator, compare two addresses.

Every part of the agent that names someone (the driver's doors, the contacts policy,
chat, commands, PubSub members) goes through here, so "Ann@Example.org/phone" is
``ann@example.org`` everywhere. Parsing and normalisation (RFC 7622 via stringprep)
are slixmpp's :class:`~slixmpp.jid.JID`, a data helper that needs no stream.
"""

from __future__ import annotations

from collections.abc import Sequence

from slixmpp.jid import JID, InvalidJID

from agent.errors import HeadunitError

MAX_JID_CHARS = 3071  # RFC 7622: three parts of at most 1023 bytes each


class JidError(HeadunitError, ValueError):
    """Not a JID (or not the kind asked for); the message quotes what was given."""


def bare(jid: object) -> str:
    """The normalised bare JID of ``jid`` (any resource dropped); JidError if it is not a JID."""
    if not isinstance(jid, str) or not jid.strip():
        raise JidError(f"expected a JID like ann@example.org, found {_shown(jid)}")
    if len(jid) > MAX_JID_CHARS:
        raise JidError(f"a JID has at most {MAX_JID_CHARS} characters, this one has {len(jid)}")
    try:
        parsed = JID(jid.strip())
    except InvalidJID as exc:
        raise JidError(f"not a valid JID: {_shown(jid)} ({exc})") from exc
    if not parsed.bare:
        raise JidError(f"not a valid JID: {_shown(jid)}")
    return str(parsed.bare)


def person(jid: object) -> str:
    """A person's bare JID, name@domain: like :func:`bare`, and a local part is required."""
    found = bare(jid)
    if "@" not in found:
        raise JidError(f"expected a person's JID like ann@example.org, found {_shown(jid)}")
    return found


def same_bare(a: str, b: str) -> bool:
    """True if both are JIDs of the same account (invalid ones are never the same)."""
    try:
        return bare(a) == bare(b)
    except JidError:
        return False


def is_operator(jid: str, operators: Sequence[str]) -> bool:
    """True if the bare JID is listed, or its domain is listed as "@domain"; False for a non-JID."""
    try:
        parsed = JID(jid)
    except InvalidJID:
        return False
    found, domain = str(parsed.bare).lower(), str(parsed.domain).lower()
    return bool(found) and any(found == op.lower() or op.lower() == f"@{domain}" for op in operators)


def _shown(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:59] + "…"
