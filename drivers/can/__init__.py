"""CAN access: the bus owner (``CanPort``), DBC decoding, OBD-II polling, log replay."""

from drivers.can.dbc import DbcDecoder, SignalSpec
from drivers.can.filters import FrameFilter, j1939_pgn
from drivers.can.port import CanPort, CanStats

__all__ = ["CanPort", "CanStats", "DbcDecoder", "FrameFilter", "SignalSpec", "j1939_pgn"]
