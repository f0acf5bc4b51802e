"""Agent errors by phase: start-up (profile), operation, timeouts."""

from __future__ import annotations


class HeadunitError(Exception):
    """Base class of the agent's own errors."""


class ProfileError(HeadunitError, ValueError):
    """A profile was refused: names the file, the key path and what was expected."""

    def __init__(self, file: str, key: str, expected: str, found: object = None) -> None:
        self.file = file
        self.key = key
        self.expected = expected
        self.found = found
        where = f"{file}: {key}" if key else file
        detail = f"expected {expected}"
        if found is not None:
            detail += f", found {found!r}"
        super().__init__(f"{where}: {detail}")


class AgentStartError(HeadunitError):
    """The agent could not start (e.g. the server refused the credentials)."""


class AgentTimeout(HeadunitError, TimeoutError):
    """Something the agent waited for did not happen in time."""
