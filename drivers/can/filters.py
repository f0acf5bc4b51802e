"""Which frames reach Python: exact frame ids, and J1939 PGNs whatever the source address."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

STANDARD_MASK = 0x7FF
EXTENDED_MASK = 0x1FFFFFFF
# J1939 29-bit id: priority(3) | EDP(1) | DP(1) | PF(8) | PS(8) | SA(8).
_PDU2_MASK = 0x03FFFF00  # PF >= 240: PS is a group extension, part of the PGN
_PDU1_MASK = 0x03FF0000  # PF < 240: PS is a destination address, not part of the PGN


def j1939_pgn(frame_id: int) -> int:
    """The PGN of a 29-bit J1939 frame id (destination address zeroed for PDU1)."""
    pdu_format = (frame_id >> 16) & 0xFF
    if pdu_format < 240:
        return (frame_id >> 8) & 0x3FF00
    return (frame_id >> 8) & 0x3FFFF


@dataclass(frozen=True)
class FrameFilter:
    """A set of wanted frames; ``accepts`` is a couple of set lookups, cheap per frame."""

    ids: frozenset[tuple[int, bool]] = frozenset()  # (arbitration id, is_extended)
    pgns: frozenset[int] = frozenset()

    def __or__(self, other: FrameFilter) -> FrameFilter:
        return FrameFilter(self.ids | other.ids, self.pgns | other.pgns)

    def __bool__(self) -> bool:
        return bool(self.ids or self.pgns)

    def accepts(self, arbitration_id: int, is_extended: bool) -> bool:
        if (arbitration_id, is_extended) in self.ids:
            return True
        return is_extended and bool(self.pgns) and j1939_pgn(arbitration_id) in self.pgns

    def can_filters(self) -> list[dict[str, Any]]:
        """The same set as python-can ``can_filters`` (kernel filters on SocketCAN)."""
        filters: list[dict[str, Any]] = [
            {"can_id": can_id, "can_mask": EXTENDED_MASK if ext else STANDARD_MASK, "extended": ext}
            for can_id, ext in sorted(self.ids)
        ]
        for pgn in sorted(self.pgns):
            pdu1 = ((pgn >> 8) & 0xFF) < 240
            filters.append({"can_id": pgn << 8, "can_mask": _PDU1_MASK if pdu1 else _PDU2_MASK,
                            "extended": True})
        return filters
