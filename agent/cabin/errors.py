"""What can go wrong when the driver is asked or told something."""

from __future__ import annotations

from agent.errors import HeadunitError


class CabinError(HeadunitError):
    """A prompt for the driver could not be shown or answered."""


class EmptyPrompt(CabinError, ValueError):
    """Nothing is left to show once the text was cleaned."""


class PromptNotFound(CabinError, LookupError):
    """No notice or question has that id (never had, or no longer kept)."""


class AlreadyAnswered(CabinError, ValueError):
    """The notice was acknowledged already, or the question is closed."""


class NoAcknowledgement(CabinError, ValueError):
    """The notice did not ask for an acknowledgement."""
