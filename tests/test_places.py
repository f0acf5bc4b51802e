"""Offline place names: the demo route's roads from places.csv, far-away points, compass words, bad files."""

from __future__ import annotations

import math
import tomllib
from pathlib import Path

import pytest

from agent.vehicle.places import COMPASS, Place, Places, PlacesError, compass

DEMO = Path(__file__).resolve().parents[1] / "profiles" / "demo"
M_PER_DEG = math.pi * 6_371_000.0 / 180.0


def drive_legs() -> list[tuple[tuple[float, float], tuple[float, float], str]]:
    """(from, to, street of the waypoint it leads to) for every leg of the demo route."""
    route = tomllib.loads((DEMO / "route.toml").read_text(encoding="utf-8"))
    points = [(route["start"]["lat"], route["start"]["lon"], route["start"]["street"])]
    for phase in route["phase"]:
        points += [(w["lat"], w["lon"], w["street"]) for w in phase.get("waypoints", ())]
    return [((a[0], a[1]), (b[0], b[1]), b[2]) for a, b in zip(points, points[1:])]


def offset(lat: float, lon: float, east_m: float, north_m: float) -> tuple[float, float]:
    return lat + north_m / M_PER_DEG, lon + east_m / (M_PER_DEG * math.cos(math.radians(lat)))


@pytest.fixture(scope="module")
def demo() -> Places:
    return Places.load(DEMO / "places.csv")


def test_the_demo_file_names_the_road_in_the_middle_of_every_leg(demo: Places) -> None:
    legs = drive_legs()
    assert len(legs) == 14 and 300 <= len(demo) <= 3000
    for (a, b, street) in legs:
        middle = ((a[0] + b[0]) / 2, (a[1] + b[1]) / 2)
        for east, north in ((0, 0), (8, 0), (-8, 0), (0, 8)):  # GNSS error: a few metres off the line
            assert demo.nearest(*offset(*middle, east, north)) == street, (middle, east, north)


def test_the_start_and_the_end_of_the_demo_drive(demo: Places) -> None:
    assert demo.nearest(37.40150, 127.10880) == "Pangyoyeok-ro"  # parked at the start
    assert demo.nearest(37.37190, 127.11412) == "Jeongja-il-ro"  # parked at the end
    assert demo.nearest(37.38300, 127.10885) == "Gyeongbu Expressway"


def test_nothing_is_named_far_from_every_place(demo: Places) -> None:
    end = (37.37190, 127.11412)
    assert demo.nearest(*offset(*end, 0, 290)) == "Jeongja-il-ro"
    assert demo.nearest(*offset(*end, 0, 320)) is None  # beyond the default 300 m
    assert demo.nearest(*offset(*end, 0, 320), max_distance_m=400) == "Jeongja-il-ro"
    assert demo.nearest(48.8566, 2.3522) is None  # Paris
    assert demo.nearest(float("nan"), 127.1) is None


def test_the_grid_looks_past_cell_edges_the_date_line_and_near_the_poles() -> None:
    places = Places([Place(0.0, 179.9995, "east of the line"), Place(89.9990, 10.0, "near the pole"),
                     Place(10.0, 20.0, "a"), Place(10.0, 20.0026, "b")])
    assert places.nearest(0.0, -179.9995) == "east of the line"  # 111 m across the antimeridian
    assert places.nearest(89.9990, -170.0, max_distance_m=300) == "near the pole"  # 220 m over the pole
    assert places.nearest(10.0, 20.00249) == "b"  # on a cell edge, the neighbour cell's point is nearer
    assert places.nearest(10.0, 20.00121) == "a"


def test_nearest_is_fast_enough_for_every_fix(demo: Places) -> None:
    """A grid lookup reads a few cells, not the whole file: count the candidates."""
    candidates = list(demo._candidates(37.39, 127.107, 300.0))
    assert 0 < len(candidates) < len(demo) / 2


@pytest.mark.parametrize(("heading", "word"), [
    (0.0, "northbound"), (22.4999, "northbound"), (22.5, "north-eastbound"), (45.0, "north-eastbound"),
    (67.5, "eastbound"), (112.5, "south-eastbound"), (157.5, "southbound"), (180.0, "southbound"),
    (202.5, "south-westbound"), (247.5, "westbound"), (292.5, "north-westbound"), (337.4999, "north-westbound"),
    (337.5, "northbound"), (359.999, "northbound"), (360.0, "northbound"), (-22.5, "northbound"),
    (-22.5001, "north-westbound"), (720.0 + 90.0, "eastbound"),
])
def test_compass_sectors_at_their_boundaries(heading: float, word: str) -> None:
    assert compass(heading) == word


def test_compass_has_eight_sectors_and_refuses_what_is_not_a_heading() -> None:
    assert [compass(45.0 * k) for k in range(8)] == list(COMPASS)
    for nonsense in (float("nan"), float("inf")):
        with pytest.raises(ValueError, match="heading"):
            compass(nonsense)


@pytest.mark.parametrize(("text", "message"), [
    ("lat,lon,name\n37.4,127.1,Main St\n37.5,east,Side St\n",
     r"bad\.csv:3: expected a longitude in degrees, found 'east'"),
    ("lat,lon,name\n37.4,127.1,Main St\n\n91,127.1,North Pole Rd\n",
     r"bad\.csv:4: expected a latitude -90\.\.90, found '91'"),
    ("lat,lon,name\n37.4,127.1\n", r"bad\.csv:2: expected 3 fields \(lat,lon,name\), found 2"),
    ("lat,lon,name\n37.4,127.1,  \n", r"bad\.csv:2: expected a place name"),
    ("lat,lon,name\n37.4,nan,Main St\n", r"bad\.csv:2: expected a longitude -180\.\.180, found 'nan'"),
    ("latitude,longitude,street\n37.4,127.1,Main St\n", r"bad\.csv:1: expected the header row lat,lon,name"),
    ("", r"bad\.csv:1: expected the header row"),
    (b"lat,lon,name\n37.4,127.1,\xff\n", r"bad\.csv: not UTF-8"),
])
def test_a_malformed_file_is_refused_naming_the_line(tmp_path: Path, text: str | bytes, message: str) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_bytes(text if isinstance(text, bytes) else text.encode())
    with pytest.raises(PlacesError, match=message):
        Places.load(bad)


def test_a_missing_file_is_refused_naming_it(tmp_path: Path) -> None:
    with pytest.raises(PlacesError, match=r"nowhere\.csv: cannot read"):
        Places.load(tmp_path / "nowhere.csv")


def test_a_good_file_with_a_bom_quoted_names_and_a_blank_line(tmp_path: Path) -> None:
    good = tmp_path / "good.csv"
    good.write_text('\ufefflat,lon,name\n37.4,127.1,"Main St, north end"\n\n-33.86,151.21,  George   St \n',
                    encoding="utf-8")
    places = Places.load(good)
    assert len(places) == 2
    assert places.nearest(37.4, 127.1) == "Main St, north end"
    assert places.nearest(-33.86, 151.21) == "George St"
