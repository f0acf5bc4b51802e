"""Offline place names for presence texts: the nearest named point, and a compass word for the heading.

"Parked · Pangyoyeok-ro" and "Driving · 98 km/h · Gyeongbu Expressway southbound" need a
road name on every fix, with no network: a CSV of named points (``lat,lon,name``, a few
hundred to a few thousand rows, densified along the roads so the nearest point names the
road the car is on) and a grid index over it, so a lookup reads a handful of cells.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from agent.errors import HeadunitError

EARTH_RADIUS_M = 6_371_000.0
CELL_DEG = 0.0025  # grid cell: about 280 m north-south
COLUMNS = ("lat", "lon", "name")
_LON_CELLS = math.ceil(360.0 / CELL_DEG)

COMPASS = ("northbound", "north-eastbound", "eastbound", "south-eastbound",
           "southbound", "south-westbound", "westbound", "north-westbound")


class PlacesError(HeadunitError, ValueError):
    """A places file cannot be used; the message names the file and the line."""


@dataclass(frozen=True, slots=True)
class Place:
    latitude: float
    longitude: float
    name: str


def haversine_m(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Great-circle distance in metres between two WGS84 points (spherical Earth)."""
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    h = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * EARTH_RADIUS_M * math.asin(min(1.0, math.sqrt(h)))


def compass(heading_degrees: float) -> str:
    """The direction of travel in 8 sectors of 45°: 0° ± 22.5° is "northbound", 90° "eastbound".

    A heading exactly on a boundary goes to the sector clockwise of it (22.5° is north-east).
    """
    if not math.isfinite(heading_degrees):
        raise ValueError(f"a heading in degrees is needed, not {heading_degrees!r}")
    return COMPASS[math.floor((heading_degrees % 360.0 + 22.5) / 45.0) % 8]


def _cell(latitude: float, longitude: float) -> tuple[int, int]:
    return math.floor((latitude + 90.0) / CELL_DEG), math.floor((longitude + 180.0) / CELL_DEG) % _LON_CELLS


class Places:
    """Named points with a fixed-size grid index; ``nearest`` looks only at the cells in reach."""

    def __init__(self, places: Iterable[Place]) -> None:
        self._grid: dict[tuple[int, int], list[Place]] = {}
        self._count = 0
        for place in places:
            self._grid.setdefault(_cell(place.latitude, place.longitude), []).append(place)
            self._count += 1

    def __len__(self) -> int:
        return self._count

    @classmethod
    def load(cls, csv_path: Path | str) -> Places:
        """Read a ``lat,lon,name`` CSV with a header row; PlacesError names the file and line of a bad row."""
        path = Path(csv_path)
        try:
            with path.open(encoding="utf-8-sig", newline="") as file:
                return cls(list(_read_rows(file, str(path))))
        except OSError as exc:
            raise PlacesError(f"{path}: cannot read: {exc.strerror or exc}") from exc
        except UnicodeDecodeError as exc:
            raise PlacesError(f"{path}: not UTF-8 text: {exc}") from exc
        except csv.Error as exc:
            raise PlacesError(f"{path}: not a CSV file: {exc}") from exc

    def nearest(self, lat: float, lon: float, max_distance_m: float = 300.0) -> str | None:
        """The name of the closest place within ``max_distance_m``, or None if there is none."""
        if not (math.isfinite(lat) and math.isfinite(lon)) or not -90.0 <= lat <= 90.0:
            return None
        best: Place | None = None
        best_m = max_distance_m
        for place in self._candidates(lat, lon, max_distance_m):
            metres = haversine_m(lat, lon, place.latitude, place.longitude)
            if metres <= best_m:
                best, best_m = place, metres
        return best.name if best is not None else None

    def _candidates(self, lat: float, lon: float, reach_m: float) -> Iterator[Place]:
        """Every place in the grid cells that a circle of ``reach_m`` around the point can touch."""
        dlat = math.degrees(reach_m / EARTH_RADIUS_M)
        widest = abs(lat) + dlat  # the circle is widest (in degrees of longitude) on its poleward edge
        dlon = 180.0 if widest >= 89.9 else min(180.0, dlat / math.cos(math.radians(widest)))
        row0, _ = _cell(max(-90.0, lat - dlat), lon)
        row1, _ = _cell(min(90.0, lat + dlat), lon)
        span = min(_LON_CELLS - 1, math.ceil(dlon / CELL_DEG))
        _, centre = _cell(lat, lon)
        columns = {(centre + k) % _LON_CELLS for k in range(-span, span + 1)}
        for row in range(row0, row1 + 1):
            for column in columns:
                yield from self._grid.get((row, column), ())


def _read_rows(file: Iterable[str], where: str) -> Iterator[Place]:
    reader = csv.reader(file)
    header = next(reader, None)
    if header is None or [h.strip().lower() for h in header] != list(COLUMNS):
        raise PlacesError(f"{where}:1: expected the header row lat,lon,name, found {header!r}")
    for row in reader:
        if not row or (len(row) == 1 and not row[0].strip()):
            continue  # a blank line
        yield _place(row, f"{where}:{reader.line_num}")


def _place(row: list[str], where: str) -> Place:
    if len(row) != 3:
        raise PlacesError(f"{where}: expected 3 fields (lat,lon,name), found {len(row)}: {row!r}")
    lat = _coordinate(row[0], 90.0, "latitude", where)
    lon = _coordinate(row[1], 180.0, "longitude", where)
    name = " ".join(row[2].split())
    if not name:
        raise PlacesError(f"{where}: expected a place name, found an empty one")
    return Place(lat, lon, name)


def _coordinate(text: str, limit: float, what: str, where: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise PlacesError(f"{where}: expected a {what} in degrees, found {text!r}") from None
    if not -limit <= value <= limit:  # also refuses NaN
        raise PlacesError(f"{where}: expected a {what} -{limit:g}..{limit:g}, found {text!r}")
    return value
