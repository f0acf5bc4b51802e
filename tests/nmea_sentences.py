"""Building NMEA 0183 sentences for the GNSS tests, with checksums computed, never hard-coded."""

from __future__ import annotations


def xor(body: str) -> int:
    """The NMEA checksum: XOR of the characters between '$' and '*'."""
    value = 0
    for char in body:
        value ^= ord(char)
    return value


def line(body: str) -> bytes:
    """A complete sentence with a computed checksum and CR LF."""
    return f"${body}*{xor(body):02X}\r\n".encode()


def ddmm(value: float, width: int, hemispheres: str) -> str:
    """Degrees as NMEA's (d)ddmm.mmmm plus hemisphere letter."""
    degrees = int(abs(value))
    minutes = (abs(value) - degrees) * 60
    return f"{degrees:0{width}d}{minutes:07.4f},{hemispheres[value < 0]}"


def where(lat: float, lon: float) -> str:
    return f"{ddmm(lat, 2, 'NS')},{ddmm(lon, 3, 'EW')}"
