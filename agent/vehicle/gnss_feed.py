"""GNSS → vehicle state: each valid fix becomes VSS CurrentLocation values."""

from __future__ import annotations

from typing import TYPE_CHECKING

from agent.vehicle.config import GnssConfig
from agent.vehicle import paths
from agent.vehicle.state import VehicleState

if TYPE_CHECKING:
    from drivers.gnss.base import Fix, GnssSource

SOURCE = "gnss"


class GnssFeed:
    """Owns the profile's GNSS source and writes its fixes into the state."""

    def __init__(self, state: VehicleState, config: GnssConfig, *, speed: float = 1.0) -> None:
        from drivers.gnss import create_source

        self._state = state
        state.set_stale_after(SOURCE, config.stale_after)
        options: dict[str, object]
        if config.source == "serial":
            options = {"port": config.port, "baudrate": config.baudrate}
        elif config.source == "gpsd":
            options = {"host": config.host, "port": config.gpsd_port}
        else:
            options = {"file": config.file, "speed": speed}
        self.source: GnssSource = create_source(config.source, self._on_fix, **options)

    def _on_fix(self, fix: Fix) -> None:
        update = self._state.update
        ts = fix.time.timestamp() if fix.time is not None else None
        # NMEA carries 1e-6 minutes at best: 7 decimals of a degree (about 1 cm) keep all of it
        update(paths.LATITUDE, round(fix.latitude, 7), SOURCE, ts)
        update(paths.LONGITUDE, round(fix.longitude, 7), SOURCE, ts)
        update(paths.GNSS_FIX_TYPE, fix.fix_type, SOURCE, ts)
        if fix.altitude is not None:
            update(paths.ALTITUDE, fix.altitude, SOURCE, ts)
        if fix.course is not None:
            update(paths.HEADING, fix.course, SOURCE, ts)
        if fix.time is not None:
            update(paths.LOCATION_TIMESTAMP, fix.time.isoformat(), SOURCE, ts)
