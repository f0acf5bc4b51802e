"""GNSS receivers: NMEA 0183 over serial, replay of an NMEA log, or gpsd; chosen by name.

Backends are imported only when chosen, like python-can's ``BACKENDS``, so a
board without pyserial can still run the replay backend.
"""

from __future__ import annotations

from typing import Any

from drivers import registry
from drivers.gnss.base import Fix, FixCallback, GnssSource, NmeaStats

__all__ = ["BACKENDS", "Fix", "FixCallback", "GnssSource", "NmeaStats", "create_source"]

BACKENDS: dict[str, tuple[str, str]] = {
    "serial": ("drivers.gnss.serial", "SerialSource"),
    "replay": ("drivers.gnss.replay", "ReplaySource"),
    "gpsd": ("drivers.gnss.gpsd", "GpsdSource"),
}


def create_source(backend: str, on_fix: FixCallback, **options: Any) -> GnssSource:
    """Build the GNSS backend named ``backend``; its options are its constructor's keywords."""
    source: GnssSource = registry.create("GNSS", BACKENDS, backend, on_fix, **options)
    return source
