"""How the profile sets up the vehicle's inputs: CAN (DBC signals, OBD-II) and GNSS.

Declared here, next to the feeds that read them (``can_feed``, ``gnss_feed``);
:mod:`agent.profile.loader` builds them from TOML and :mod:`agent.profile.model`
holds them in the profile.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class SignalMapping:
    """One DBC signal feeding one VSS path: value = dbc_value * scale + offset."""

    path: str
    message: str | int  # DBC message name, or its frame id
    signal: str
    scale: float = 1.0
    offset: float = 0.0
    unit: str | None = None
    datatype: str | None = None  # "boolean", "int", "float" or "string"; None keeps the decoded type


@dataclass(frozen=True)
class CanConfig:
    interface: str  # "socketcan", "virtual", "replay" or any python-can interface
    channel: str = "can0"
    bitrate: int | None = None
    fd: bool = False
    data_bitrate: int | None = None
    dbc: Path | None = None
    signals: tuple[SignalMapping, ...] = ()
    replay_file: Path | None = None  # interface "replay": a .log/.asc/.blf file
    replay_loop: bool = False
    stale_after: float = 2.0  # s without a frame before CAN values go stale
    # Sending (vehicle actions). Off unless the profile says so: the agent never writes on the car's bus.
    write: bool = False
    write_interface: str | None = None  # None: the bus being read; required when that is a replay
    write_channel: str | None = None  # None: ``channel``


@dataclass(frozen=True)
class ObdPid:
    pid: int
    path: str  # where its value goes; defaults per PID in agent/profile/loader.py (OBD_DEFAULT_PATHS)


@dataclass(frozen=True)
class ObdConfig:
    pids: tuple[ObdPid, ...]
    interval: float = 1.0  # s between polls of the whole list
    timeout: float = 0.2  # s to wait for the first answer to one request
    stale_after: float = 5.0


@dataclass(frozen=True)
class GnssConfig:
    source: str  # "serial", "gpsd" or "replay"
    port: str | None = None  # serial
    baudrate: int = 9600
    host: str = "127.0.0.1"  # gpsd
    gpsd_port: int = 2947
    file: Path | None = None  # replay: an NMEA log
    stale_after: float = 5.0
