"""NmeaStream against every way a receiver line goes wrong, and the replay backend on real files.

Valid sentences are built here with their own checksum helper; each malformed
case checks that its counter moved and that the valid sentences around it
still produced their fixes.
"""

from __future__ import annotations

import asyncio
import logging
import random
import struct
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import pytest

from drivers.errors import DriverInitError, UnknownBackend
from drivers.gnss import Fix, create_source
from drivers.gnss.nmea import NmeaStream
from drivers.gnss.replay import ReplaySource
from tests.nmea_sentences import line, where, xor

DAY = date(2025, 3, 23)
ROLLED_OVER = DAY - timedelta(weeks=1024)  # what a receiver with the week-number bug reports


# -- building sentences ---------------------------------------------------------






def hhmmss(second: int) -> str:
    t = datetime(2025, 1, 1, 12, 0, 0) + timedelta(seconds=second)
    return t.strftime("%H%M%S") + ".00"






def gga(second: int, lat: float, lon: float, talker: str = "GP", quality: int = 1, alt: float = 545.4) -> bytes:
    return line(f"{talker}GGA,{hhmmss(second)},{where(lat, lon)},{quality},08,0.9,{alt:.1f},M,46.9,M,,")


def rmc(second: int, lat: float, lon: float, talker: str = "GP", status: str = "A", day: date = DAY) -> bytes:
    return line(f"{talker}RMC,{hhmmss(second)},{status},{where(lat, lon)},022.4,084.4,{day:%d%m%y},003.1,W,A")


def gll(second: int, lat: float, lon: float, talker: str = "GP", status: str = "A") -> bytes:
    return line(f"{talker}GLL,{where(lat, lon)},{hhmmss(second)},{status},A")


def vtg(kmh: float = 41.5, course: float = 84.4) -> bytes:
    return line(f"GPVTG,{course:.1f},T,,M,{kmh / 1.852:.2f},N,{kmh:.1f},K,A")


def gsa(fix: int = 3) -> bytes:
    return line(f"GPGSA,A,{fix},04,05,,09,12,,,24,,,,,2.5,1.3,2.1")


def gsv(talker: str = "GP", in_view: int = 8) -> bytes:
    return line(f"{talker}GSV,2,1,{in_view:02d},01,40,083,46,02,17,308,41,12,07,344,39,14,22,228,45")


def lat_of(second: int) -> float:
    return 48.1 + second * 0.0001


def lon_of(second: int) -> float:
    return -11.5 - second * 0.0002


def epoch(second: int) -> list[bytes]:
    """A receiver's epoch in u-blox order: RMC first, then VTG, GGA, GSA, GSV."""
    lat, lon = lat_of(second), lon_of(second)
    return [rmc(second, lat, lon), vtg(), gga(second, lat, lon), gsa(), gsv()]


def utc(second: int) -> datetime:
    return datetime(2025, 3, 23, 12, 0, 0, tzinfo=timezone.utc) + timedelta(seconds=second)


def positions(fixes: list[Fix]) -> list[tuple[float, float, datetime | None]]:
    return [(round(f.latitude, 6), round(f.longitude, 6), f.time) for f in fixes]


def expected(seconds: range | list[int]) -> list[tuple[float, float, datetime | None]]:
    return [(round(lat_of(s), 6), round(lon_of(s), 6), utc(s)) for s in seconds]


def feed_all(*chunks: bytes) -> tuple[NmeaStream, list[Fix]]:
    stream = NmeaStream()
    fixes = [fix for chunk in chunks for fix in stream.feed(chunk)]
    return stream, fixes


def assert_balanced(stream: NmeaStream) -> None:
    stats = stream.stats
    assert stats.sentences == stats.accepted + stats.skipped(), stats


# -- the good path ------------------------------------------------------------------


def test_one_fix_per_epoch_with_merged_fields() -> None:
    """Two u-blox-order epochs: one fix each; the second carries GGA/GSA/GSV values of the first."""
    stream, fixes = feed_all(b"".join(epoch(0) + epoch(1)))
    assert positions(fixes) == expected([0, 1])
    second = fixes[1]
    assert second.altitude == pytest.approx(545.4)
    assert second.speed == pytest.approx(41.5, abs=0.05)
    assert second.course == pytest.approx(84.4)
    assert second.fix_type == "THREE_D"
    assert (second.quality, second.satellites_used, second.satellites_in_view) == (1, 8, 8)
    assert (second.hdop, second.pdop, second.vdop) == (1.3, 2.5, 2.1)
    assert fixes[0].altitude is None  # RMC led the first epoch: GGA had not been seen yet
    assert stream.stats.accepted == 10 and stream.stats.fixes == 2
    assert_balanced(stream)


def test_gga_only_stream_gets_time_once_a_date_is_known() -> None:
    """GGA has no date: fixes carry time None until ZDA supplies one, then the full UTC time."""
    zda = line(f"GPZDA,{hhmmss(1)},23,03,2025,00,00")
    stream, fixes = feed_all(gga(0, 48.1, 11.5), zda, gga(2, 48.1, 11.5))
    assert [f.time for f in fixes] == [None, utc(2)]
    assert fixes[1].fix_type == "THREE_D"  # no GSA: inferred from GGA's altitude


def test_date_rolls_over_at_midnight_for_gga() -> None:
    """A GGA just after midnight, before that epoch's RMC, is dated the next day."""
    late = line(f"GPRMC,235959.00,A,{where(48.1, 11.5)},0.0,0.0,{DAY:%d%m%y},,,A")
    early = line(f"GPGGA,000000.00,{where(48.1, 11.5)},1,08,0.9,500.0,M,46.9,M,,")
    _, fixes = feed_all(late, early)
    assert [f.time for f in fixes] == [
        datetime(2025, 3, 23, 23, 59, 59, tzinfo=timezone.utc),
        datetime(2025, 3, 24, 0, 0, 0, tzinfo=timezone.utc),
    ]


@pytest.mark.parametrize("talker", ["GP", "GN", "GL", "GA", "GB", "GQ", "BD", "GI"])
def test_every_talker_gives_fixes(talker: str) -> None:
    """GGA, RMC and GLL of each constellation's talker each open an epoch and give a fix."""
    stream, fixes = feed_all(
        gga(0, lat_of(0), lon_of(0), talker=talker),
        rmc(1, lat_of(1), lon_of(1), talker=talker),
        gll(2, lat_of(2), lon_of(2), talker=talker),
        gsv(talker=talker, in_view=11),
        gga(3, lat_of(3), lon_of(3), talker=talker),
    )
    assert [p[:2] for p in positions(fixes)] == [e[:2] for e in expected([0, 1, 2, 3])]
    assert [f.time for f in fixes] == [None, utc(1), utc(2), utc(3)]  # GGA first: no date yet
    assert {f.talker for f in fixes} == {talker}
    assert fixes[-1].satellites_in_view == 11
    assert stream.stats.skipped() == 0


def test_satellites_in_view_add_up_across_constellations() -> None:
    _, fixes = feed_all(gsv("GP", 9), gsv("GL", 6), gsv("GA", 4), gga(0, 48.1, 11.5, talker="GN"))
    assert fixes[0].satellites_in_view == 19


# -- one test per malformed case ----------------------------------------------------


def around(bad: bytes) -> bytes:
    """A bad sentence between two valid epochs (seconds 0 and 2)."""
    return b"".join(epoch(0)) + bad + b"".join(epoch(2))


def check_kept(bad: bytes, counter: str, count: int = 1) -> NmeaStream:
    stream, fixes = feed_all(around(bad))
    assert getattr(stream.stats, counter) == count, stream.stats
    assert positions(fixes) == expected([0, 2]), "the valid epochs around it must survive"
    assert stream.stats.accepted == 10
    assert_balanced(stream)
    return stream


def test_bad_checksum() -> None:
    good = gga(1, lat_of(1), lon_of(1))
    bad = good.replace(b"4806", b"4807")  # a flipped digit, checksum unchanged
    assert bad != good
    check_kept(bad, "bad_checksum")


def test_bad_checksum_not_hex() -> None:
    body = "GPGGA," + gga(1, 48.1, 11.5).decode()[7:].split("*")[0]
    check_kept(f"${body}*ZZ\r\n".encode(), "bad_checksum")


def test_missing_checksum() -> None:
    complete = gga(1, lat_of(1), lon_of(1)).split(b"*")[0] + b"\r\n"
    check_kept(complete, "no_checksum")


@pytest.mark.parametrize(
    "bad",
    [
        pytest.param(gga(1, 48.1, 11.5)[:30] + b"\r\n", id="cut-in-fields"),
        pytest.param(gga(1, 48.1, 11.5).split(b"*")[0] + b"*4\r\n", id="cut-in-checksum"),
        pytest.param(gga(1, 48.1, 11.5)[25:], id="head-lost"),
        pytest.param(b"$GPG\r\n", id="cut-in-address"),
    ],
)
def test_truncated(bad: bytes) -> None:
    check_kept(bad, "truncated")


def test_spliced_sentence_keeps_the_one_that_follows() -> None:
    """A sentence cut by the next '$' is dropped; the next sentence (epoch 1's GGA) is kept."""
    cut = gga(1, lat_of(1), lon_of(1))[:33]
    stream, fixes = feed_all(cut + gga(1, lat_of(1), lon_of(1)) + gga(2, lat_of(2), lon_of(2)))
    assert stream.stats.spliced == 1
    assert [(round(f.latitude, 6), round(f.longitude, 6)) for f in fixes] == [
        (round(lat_of(s), 6), round(lon_of(s), 6)) for s in (1, 2)
    ]
    assert_balanced(stream)


def test_whole_sentences_without_line_ends_are_all_kept() -> None:
    """Lost CR LF between complete sentences: each still checks, so nothing is dropped."""
    glued = b"".join(s.rstrip(b"\r\n") for s in epoch(0) + epoch(1))
    stream, fixes = feed_all(glued + b"\r\n")
    assert positions(fixes) == expected([0, 1])
    assert stream.stats.skipped() == 0


def test_nul_bytes_are_dropped_and_the_sentences_kept() -> None:
    """NUL padding before, inside and after sentences: counted, and every fix survives."""
    padded = b"\x00" * 16 + b"".join(s[:10] + b"\x00\x00" + s[10:] for s in epoch(0)) + b"\x00" * 5
    stream, fixes = feed_all(padded + b"".join(epoch(1)))
    assert stream.stats.nul_bytes == 16 + 5 * 2 + 5
    assert positions(fixes) == expected([0, 1])
    assert stream.stats.skipped() == 0


def test_empty_fields() -> None:
    stream = check_kept(line("GPGGA," + "," * 13), "empty_fields")
    assert stream.stats.parse_error == 0


def test_empty_position_with_valid_quality_is_empty_fields() -> None:
    check_kept(line(f"GPGGA,{hhmmss(1)},,,,,1,08,0.9,545.4,M,46.9,M,,"), "empty_fields")


@pytest.mark.parametrize(
    "bad",
    [
        pytest.param(rmc(1, 48.1, 11.5, status="V"), id="rmc-status-V"),
        pytest.param(gga(1, 48.1, 11.5, quality=0), id="gga-quality-0"),
        pytest.param(line(f"GPGGA,{hhmmss(1)},,,,,0,00,99.99,,,,,,"), id="gga-no-fix-ublox"),
        pytest.param(gll(1, 48.1, 11.5, status="V"), id="gll-status-V"),
    ],
)
def test_invalid_fix(bad: bytes) -> None:
    check_kept(bad, "invalid_fix")


def test_week_rollover_date_is_not_trusted() -> None:
    """RMC dated 1024 weeks early is skipped; the GGA of that epoch still gives a fix, undated."""
    assert ROLLED_OVER.year in (2005, 2006)
    stream, fixes = feed_all(rmc(0, 48.1, 11.5, day=ROLLED_OVER), gga(0, 48.2, 11.6))
    assert stream.stats.rollover == 1
    assert len(fixes) == 1
    assert (round(fixes[0].latitude, 6), fixes[0].time) == (48.2, None)


def test_week_rollover_in_zda() -> None:
    zda = line(f"GPZDA,{hhmmss(1)},{ROLLED_OVER:%d,%m,%Y},00,00")
    check_kept(zda, "rollover")


@pytest.mark.parametrize(
    "body",
    [
        "PUBX,00,081350.00,4717.11321,N,00833.91518,E,546.589,G3,2.1,2.0,0.007,77.52",
        "PMTK001,604,3",
        "PGRME,15.0,M,45.0,M,25.0,M",
    ],
)
def test_proprietary(body: str) -> None:
    check_kept(line(body), "proprietary")


@pytest.mark.parametrize(
    "bad",
    [
        pytest.param(line("GPTXT,01,01,02,ANTSTATUS=OK"), id="txt"),
        pytest.param(line("IIGGA," + gga(1, 48.1, 11.5).decode()[7:].split("*")[0]), id="foreign-talker"),
        pytest.param(b"!AIVDM,1,1,,A,13aEOK?P00PD2wVMdLDRhgvL289?,0*26\r\n", id="ais"),
    ],
)
def test_unsupported(bad: bytes) -> None:
    check_kept(bad, "unsupported")


@pytest.mark.parametrize(
    "bad",
    [
        pytest.param(line(f"GPGGA,{hhmmss(1)},48A7.038,N,01131.000,E,1,08,0.9,545.4,M,46.9,M,,"), id="letter-in-lat"),
        pytest.param(line(f"GPGGA,{hhmmss(1)},4807.038,N,01131.000,E,1,08,0.9,nan,M,46.9,M,,"), id="nan-altitude"),
        pytest.param(line(f"GPGGA,{hhmmss(1)},4867.038,N,01131.000,E,1,08,0.9,545.4,M,46.9,M,,"), id="minutes-67"),
        pytest.param(line(f"GPRMC,256199.00,A,{where(48.1, 11.5)},0.0,0.0,230325,,,A"), id="hour-25"),
        pytest.param(line(f"GPRMC,{hhmmss(1)},A,{where(48.1, 11.5)},0.0,0.0,320325,,,A"), id="day-32"),
        pytest.param(line(f"GPGGA,{hhmmss(1)},4807.038,X,01131.000,E,1,08,0.9,545.4,M,46.9,M,,"), id="hemisphere-X"),
    ],
)
def test_parse_error(bad: bytes) -> None:
    check_kept(bad, "parse_error")


@pytest.mark.parametrize(
    "bad",
    [
        pytest.param(b"x" * 300 + b"\r\n", id="text"),
        pytest.param(line("GPGGA," + ",".join(["123.456"] * 14)), id="sentence"),
        pytest.param(b"$" + b"A" * 5000 + b"\r\n", id="endless"),
    ],
)
def test_overlong_line(bad: bytes) -> None:
    assert len(bad) > 84
    check_kept(bad, "too_long")


def test_high_precision_gga_needs_a_larger_max_length() -> None:
    """An RTK receiver's GGA exceeds 82 characters: dropped by default, kept with max_length=120."""
    body = f"GNGGA,{hhmmss(0)},4807.03801234,N,01131.00001234,W,4,12,0.50,545.4123,M,46.9123,M,1.0,0000"
    sentence = line(body)
    assert len(sentence.rstrip()) > 82
    strict = NmeaStream()
    assert strict.feed(sentence) == [] and strict.stats.too_long == 1
    roomy = NmeaStream(max_length=120)
    (fix,) = roomy.feed(sentence)
    assert (fix.quality, fix.altitude) == (4, 545.4123)
    assert fix.longitude == pytest.approx(-(11 + 31.00001234 / 60))


def ubx_frame(rng: random.Random, length: int, avoid: bytes = b"") -> bytes:
    """A UBX binary frame (sync 0xB5 0x62, class, id, length, payload, Fletcher checksum)."""
    while length & 0xFF in avoid:
        length += 1
    while True:
        payload = bytes(rng.choice([b for b in range(256) if b not in avoid]) for _ in range(length))
        head = bytes([0x01, 0x07]) + struct.pack("<H", length)
        a = b = 0
        for byte in head + payload:
            a = (a + byte) & 0xFF
            b = (b + a) & 0xFF
        frame = b"\xb5\x62" + head + payload + bytes([a, b])
        if not any(byte in avoid for byte in frame):  # length and checksum bytes too
            return frame


def test_binary_garbage_between_sentences() -> None:
    """UBX frames (bytes of every value, including '$' and line ends) on the NMEA port."""
    rng = random.Random(7)
    noise = b"".join(ubx_frame(rng, n) for n in (20, 92, 300))
    stream, fixes = feed_all(b"".join(epoch(0)) + noise + b"".join(epoch(2)))
    assert stream.stats.garbage >= 3
    assert positions(fixes) == expected([0, 2])
    assert stream.stats.accepted == 10
    assert_balanced(stream)


def test_partial_lines_split_at_every_byte_position() -> None:
    """Any two-way split, and byte-by-byte feeding, gives the same fixes and counters as one feed."""
    blob = around(b"\x00$GPGGA,12" + gga(1, lat_of(1), lon_of(1))[:-3] + b"\r\n" + line("PUBX,00"))
    whole, reference = feed_all(blob)
    assert len(reference) == 2
    assert (whole.stats.spliced, whole.stats.truncated, whole.stats.proprietary) == (1, 1, 1)
    for cut in range(len(blob) + 1):
        split, fixes = feed_all(blob[:cut], blob[cut:])
        assert fixes == reference, f"split at {cut}"
        assert split.stats == whole.stats, f"split at {cut}"
    one_by_one, fixes = feed_all(*(blob[i : i + 1] for i in range(len(blob))))
    assert fixes == reference and one_by_one.stats == whole.stats


def test_flush_completes_an_unterminated_last_line() -> None:
    stream = NmeaStream()
    assert stream.feed(gga(0, 48.1, 11.5).rstrip(b"\r\n")) == []
    assert len(stream.flush()) == 1


# -- a generated stream of everything at once ---------------------------------------


@dataclass
class Garbage:
    kind: str
    data: bytes
    needs_dollar_after: bool = False


def garbage(rng: random.Random, second: int) -> Garbage:
    """One bad item of a random kind, built so that its counter is known exactly."""
    lat, lon = lat_of(second) + 1, lon_of(second) + 1  # wrong positions: must never appear
    valid = gga(second, lat, lon)
    body = valid.split(b"*")[0]
    kind = rng.choice(
        ["bad_checksum", "no_checksum", "truncated", "spliced", "empty_fields", "invalid_fix",
         "rollover", "proprietary", "too_long", "garbage", "unsupported"]
    )
    data = {
        "bad_checksum": body + b"*%02X\r\n" % (xor(body.decode()[1:]) ^ rng.randint(1, 255)),
        "no_checksum": body + b"\r\n",
        "truncated": body[: rng.randint(1, 40)] + b"\r\n",
        "spliced": body[: rng.randint(1, len(body) - 1)],
        "empty_fields": line("GPGGA," + "," * 13),
        "invalid_fix": rng.choice(
            [rmc(second, lat, lon, status="V"), gga(second, lat, lon, quality=0), gll(second, lat, lon, status="V")]
        ),
        "rollover": rmc(second, lat, lon, day=ROLLED_OVER),
        "proprietary": line(rng.choice(["PUBX,00,1,2,3", "PMTK001,604,3", "PSRF150,1"])),
        "too_long": bytes(rng.choice(b"ABCDEF0123456789,.*") for _ in range(rng.randint(83, 400))) + b"\r\n",
        "garbage": ubx_frame(rng, rng.randint(8, 200), avoid=b"$\r\n"),
        "unsupported": line("GPTXT,01,01,02,u-blox ag"),
    }[kind]
    return Garbage(kind, data, needs_dollar_after=kind in ("spliced", "garbage"))


def test_mixed_garbage_stream_yields_exactly_the_valid_fixes() -> None:
    """200 epochs with every bad kind interleaved, NULs sprinkled, fed in random pieces (seeded)."""
    rng = random.Random(20250323)
    clean: list[bytes] = []
    dirty: list[bytes] = []
    injected: dict[str, int] = {}
    for second in range(200):
        for sentence in epoch(second):
            clean.append(sentence)
            while rng.random() < 0.4:
                item = garbage(rng, second)
                injected[item.kind] = injected.get(item.kind, 0) + 1
                dirty.append(item.data)
                if item.needs_dollar_after:  # or it would merge with the next bad item
                    break
            dirty.append(sentence)
    stream_bytes = bytearray(b"".join(dirty))
    nuls = stream_bytes.count(0)  # UBX frames carry some
    for _ in range(300):
        stream_bytes.insert(rng.randrange(len(stream_bytes) + 1), 0)
    nuls += 300

    _, reference = feed_all(b"".join(clean))
    dirty_stream = NmeaStream()
    fixes: list[Fix] = []
    position = 0
    while position < len(stream_bytes):
        size = rng.randint(1, 700)
        fixes += dirty_stream.feed(bytes(stream_bytes[position : position + size]))
        position += size

    assert positions(fixes) == expected(range(200))
    assert fixes == reference, "garbage must not change any value of any fix"
    stats = dirty_stream.stats
    assert stats.nul_bytes == nuls
    assert stats.accepted == len(clean)
    assert {kind: getattr(stats, kind) for kind in injected} == injected
    assert stats.skipped() == sum(injected.values())
    assert set(injected) >= {"bad_checksum", "spliced", "garbage", "too_long", "rollover", "invalid_fix"}
    assert_balanced(dirty_stream)


# -- logging ----------------------------------------------------------------------


def test_warnings_are_rate_limited(caplog: pytest.LogCaptureFixture) -> None:
    """1000 bad lines within 30 s give one warning; a bad line after 30 s gives the next summary."""
    now = [100.0]
    stream = NmeaStream(clock=lambda: now[0], name="test-port")
    caplog.set_level(logging.DEBUG, logger="drivers.gnss")
    for _ in range(1000):
        stream.feed(b"$GPGGA,garbage\r\n")
        now[0] += 0.02
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    debugs = [r for r in caplog.records if r.levelno == logging.DEBUG]
    assert len(warnings) == 1 and "test-port" in warnings[0].getMessage()
    assert len(debugs) == 1000
    now[0] += 30.0
    stream.feed(line("PUBX,00"))  # ordinary skips (proprietary, no fix yet) are counted, never warned
    stream.feed(line("GPRMC,120000.00,V,,,,,,,180426,,,N"))
    assert len([r for r in caplog.records if r.levelno == logging.WARNING]) == 1
    assert (stream.stats.proprietary, stream.stats.invalid_fix) == (1, 1)
    stream.feed(b"$GPGGA,garbage\r\n")
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2
    assert "truncated 1000" in warnings[1].getMessage() and "proprietary" not in warnings[1].getMessage()


# -- replay of a log file -----------------------------------------------------------


@pytest.fixture
def drive_log(tmp_path: Path) -> Path:
    """Five epochs one second apart, with some junk a real log has, and no final line end."""
    data = b"".join(b"".join(epoch(s)) + line("GPTXT,01,01,02,hello") for s in range(5))
    path = tmp_path / "drive.nmea"
    path.write_bytes(b"\x00garbage\r\n" + data.rstrip(b"\r\n"))
    return path


async def test_replay_paces_by_receiver_time_and_ends(drive_log: Path) -> None:
    """speed=20: the 1 s gaps become >= 50 ms in the loop; run() returns at the end of the file."""
    loop = asyncio.get_running_loop()
    seen: list[tuple[float, Fix]] = []
    source = ReplaySource(lambda fix: seen.append((loop.time(), fix)), drive_log, speed=20.0)
    await asyncio.wait_for(source.run(), timeout=30)
    assert positions([fix for _, fix in seen]) == expected(range(5))
    gaps = [b - a for (a, _), (b, _) in zip(seen, seen[1:])]
    assert all(gap >= 0.9 * (1.0 / 20.0) for gap in gaps), gaps
    assert source.stats.unsupported == 5 and source.stats.truncated == 1
    assert not source.is_connected


async def test_replay_loops_until_stopped(drive_log: Path) -> None:
    fixes: list[Fix] = []
    got_enough = asyncio.Event()

    def on_fix(fix: Fix) -> None:
        fixes.append(fix)
        if len(fixes) >= 12:
            got_enough.set()

    source = create_source("replay", on_fix, file=str(drive_log), speed=1000.0, loop=True)
    runner = asyncio.create_task(source.run())
    await asyncio.wait_for(got_enough.wait(), timeout=30)
    assert source.is_connected
    await source.stop()
    await source.stop()  # idempotent
    assert runner.done() and runner.exception() is None
    assert positions(fixes[:12]) == expected([0, 1, 2, 3, 4] * 2 + [0, 1])


async def test_replay_callback_errors_are_counted_not_fatal(drive_log: Path) -> None:
    kept: list[Fix] = []

    def on_fix(fix: Fix) -> None:
        kept.append(fix)
        if len(kept) % 2:
            raise RuntimeError("listener bug")

    source = ReplaySource(on_fix, drive_log, speed=1000.0)
    await asyncio.wait_for(source.run(), timeout=30)
    assert len(kept) == 5 and source.stats.callback_errors == 3


async def test_stop_before_run_returns_at_once(drive_log: Path) -> None:
    source = ReplaySource(lambda fix: None, drive_log, loop=True)
    await source.stop()
    await asyncio.wait_for(source.run(), timeout=5)
    assert source.stats.sentences == 0


def test_registry_rejects_unknown_backends_and_bad_options(tmp_path: Path) -> None:
    with pytest.raises(UnknownBackend, match="known: gpsd, replay, serial"):
        create_source("glonass-over-morse", lambda fix: None)
    with pytest.raises(DriverInitError, match="does not exist"):
        create_source("replay", lambda fix: None, file=tmp_path / "missing.nmea")
    with pytest.raises(DriverInitError, match="bad options"):
        create_source("replay", lambda fix: None, file=tmp_path, colour="red")
    with pytest.raises(DriverInitError, match="speed"):
        (tmp_path / "x.nmea").write_bytes(b"")
        create_source("replay", lambda fix: None, file=tmp_path / "x.nmea", speed=0)
