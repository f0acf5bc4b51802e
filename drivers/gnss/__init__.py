"""GNSS receivers: NMEA 0183 over serial, replay of an NMEA log, or gpsd; chosen by name.

Backends are imported only when chosen, like python-can's ``BACKENDS``, so a
board without pyserial can still run the replay backend.
"""

from __future__ import annotations

import importlib
from typing import Any

from drivers.errors import DriverInitError, UnknownBackend
from drivers.gnss.base import Fix, FixCallback, GnssSource, NmeaStats

__all__ = ["BACKENDS", "Fix", "FixCallback", "GnssSource", "NmeaStats", "create_source"]

BACKENDS: dict[str, tuple[str, str]] = {
    "serial": ("drivers.gnss.serial", "SerialSource"),
    "replay": ("drivers.gnss.replay", "ReplaySource"),
    "gpsd": ("drivers.gnss.gpsd", "GpsdSource"),
}


def create_source(backend: str, on_fix: FixCallback, **options: Any) -> GnssSource:
    """Build the GNSS backend named ``backend``; its options are its constructor's keywords."""
    try:
        module_name, class_name = BACKENDS[backend]
    except KeyError:
        known = ", ".join(sorted(BACKENDS))
        raise UnknownBackend(f"unknown GNSS backend {backend!r} (known: {known})") from None
    try:
        cls = getattr(importlib.import_module(module_name), class_name)
    except (ImportError, AttributeError) as exc:
        raise UnknownBackend(f"GNSS backend {backend!r} cannot be loaded: {exc}") from exc
    try:
        source: GnssSource = cls(on_fix, **options)
    except TypeError as exc:
        raise DriverInitError(f"bad options for GNSS backend {backend!r}: {exc}") from exc
    return source
