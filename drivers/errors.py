"""Driver errors, split by phase like python-can's ``can/exceptions.py``."""

from __future__ import annotations


class DriverError(Exception):
    """Base class of every error a driver raises."""


class DriverInitError(DriverError):
    """The backend could not be opened or configured (missing device, bad option)."""


class DriverOperationError(DriverError):
    """The backend failed while running (device vanished, bus-off, I/O error)."""


class DriverTimeout(DriverError, TimeoutError):
    """A request to the hardware got no answer in time."""


class UnknownBackend(DriverInitError, LookupError):
    """The profile names a backend that does not exist or cannot be imported."""
