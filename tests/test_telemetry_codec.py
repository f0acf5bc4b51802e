"""The telemetry payload: exact round trips (timestamps to the millisecond), few bytes, hostile input refused."""

from __future__ import annotations

import base64
import math
import random
import zlib
from xml.etree.ElementTree import Element, fromstring, tostring

import pytest

from agent.telemetry.codec import MAX_SAMPLES, MAX_TEXT, NAMESPACE, TAG, CodecError, decode, encode
from agent.telemetry.queue import Sample
from agent.vehicle import paths

T0 = 1776471120.25


def realistic_batch(n: int = 64, seed: int = 1) -> list[Sample]:
    """Speed, engine speed (CAN, 1 Hz, jittered), latitude and longitude (GNSS, 1 Hz): ``n`` samples."""
    rng = random.Random(seed)
    speed, rpm, lat, lon = 50.0, 2100, 37.394721, 127.110512
    samples: list[Sample] = []
    for second in range(n // 4):
        speed = round(speed + rng.uniform(-2, 2), 1)
        rpm = int(rpm + rng.uniform(-80, 80))
        lat, lon = round(lat + 0.00012, 6), round(lon + 0.00009, 6)
        can, gnss = T0 + second + rng.uniform(0, 0.02), T0 + second + 0.5
        samples += [Sample(paths.SPEED, speed, can), Sample(paths.ENGINE_SPEED, rpm, can + 0.001),
                    Sample(paths.LATITUDE, lat, gnss), Sample(paths.LONGITUDE, lon, gnss)]
    return samples


def to_ms(samples: list[Sample]) -> list[Sample]:
    """What the codec promises to keep: everything, timestamps rounded to the millisecond."""
    return [Sample(s.path, s.value, round(s.timestamp * 1000) / 1000) for s in samples]


def on_the_wire(element: Element) -> Element:
    """Serialised and parsed again, as a receiver gets it."""
    return fromstring(tostring(element))


def same(a: list[Sample], b: list[Sample]) -> bool:
    """Equal, with NaN equal to NaN and types kept (True is not 1, 1 is not 1.0)."""
    def key(s: Sample) -> tuple[object, ...]:
        value = "nan" if isinstance(s.value, float) and math.isnan(s.value) else s.value
        return s.path, type(s.value), value, s.timestamp
    return [key(s) for s in a] == [key(s) for s in b]


# -- round trips ---------------------------------------------------------------------


ODD_VALUES: list[bool | int | float | str] = [
    True, False, 0, 1, -7, 2**70, -(2**63), 0.1, -0.0, 1e-7, 1e16, 123456.789, math.inf, -math.inf, math.nan,
    "", "P", 'say "hi"', "two\nlines\tand\\slash", "Gyeongbu 고속도로 🚗", "<tag attr='x'>&amp;</tag>", "1", "t",
]


@pytest.mark.parametrize("count", [1, 3, len(ODD_VALUES)])
def test_every_value_kind_comes_back_exactly(count: int) -> None:
    samples = [Sample(f"Vehicle.Test.Value{i % 5}", v, T0 + i * 0.0137) for i, v in enumerate(ODD_VALUES[:count])]
    decoded = decode(on_the_wire(encode("abc-000001", samples)))
    assert same(decoded, to_ms(samples))


def test_timestamps_keep_their_order_even_when_it_goes_backwards() -> None:
    stamps = [T0, T0 + 0.0004, T0 - 3.2, T0 + 86400 * 365, 0.0, T0 + 0.0015, 1e-3]
    samples = [Sample(paths.SPEED, i, ts) for i, ts in enumerate(stamps)]
    decoded = decode(on_the_wire(encode("abc-000002", samples)))
    assert [s.timestamp for s in decoded] == [round(ts * 1000) / 1000 for ts in stamps]


def test_a_realistic_batch_is_deflated_a_single_sample_is_not_and_both_decode() -> None:
    batch = realistic_batch()
    big = encode("abc-000003", batch)
    small = encode("abc-000004", batch[:1])
    assert big.get("enc") == "deflate" and small.get("enc") is None
    assert same(decode(on_the_wire(big)), to_ms(batch))
    assert same(decode(on_the_wire(small)), to_ms(batch[:1]))
    assert big.tag == TAG and big.get("id") == "abc-000003" and big.get("v") == "1"


def test_bytes_per_sample_of_a_realistic_batch() -> None:
    """Measured (and printed) for the report; Teltonika's Codec 8 spends 45 bytes per record."""
    batch = realistic_batch(64)
    sizes = {name: len(tostring(encode("7f3a9c-000123", batch, deflate=flag)))
             for name, flag in (("deflate", True), ("plain", False))}
    print("\ntelemetry payload, 64 samples of speed/rpm/lat/lon: "
          + ", ".join(f"{name} {size} B ({size / 64:.1f} B/sample)" for name, size in sizes.items()))
    assert sizes["deflate"] < sizes["plain"] and sizes["deflate"] / 64 < 45
    assert same(decode(on_the_wire(encode("7f3a9c-000123", batch, deflate=False))), to_ms(batch))
    assert same(decode(on_the_wire(encode("7f3a9c-000123", batch[:1], deflate=True))), to_ms(batch[:1]))


def test_encoding_refuses_what_it_cannot_carry() -> None:
    with pytest.raises(CodecError):
        encode("x-1", [])
    with pytest.raises(CodecError):
        encode("x-1", [Sample("Vehicle Speed", 1, T0)])
    with pytest.raises(CodecError):
        encode("x-1", [Sample(paths.SPEED, 1, math.nan)])
    with pytest.raises(CodecError):
        encode("x-1", [Sample(paths.SPEED, None, T0)])  # type: ignore[arg-type]


# -- hostile input -------------------------------------------------------------------


def batch_element(text: str, **attrs: str) -> Element:
    element = Element(TAG, {"v": "1", "t0": "1776471120.25", "paths": "Vehicle.Speed Vehicle.Gear", **attrs})
    element.text = text
    return element


def deflated(raw: bytes) -> str:
    packer = zlib.compressobj(9, zlib.DEFLATED, -15)
    return base64.b64encode(packer.compress(raw) + packer.flush()).decode()


HOSTILE: dict[str, Element] = {
    "wrong namespace": Element("{urn:other}batch", {"v": "1"}),
    "unknown version": batch_element("0 0 1", v="2"),
    "no version": batch_element("0 0 1", v=""),
    "no paths": batch_element("0 0 1", paths=""),
    "bad path": batch_element("0 0 1", paths="Vehicle.Speed ../../etc"),
    "too many paths": batch_element("0 0 1", paths=" ".join(f"P.x{i}" for i in range(300))),
    "bad t0": batch_element("0 0 1", t0="soon"),
    "t0 with exponent": batch_element("0 0 1", t0="1e9"),
    "path index out of range": batch_element("2 0 1"),
    "negative path index": batch_element("-1 0 1"),
    "bad dt": batch_element("0 1.5 1"),
    "huge dt": batch_element("0 99999999999999999999 1"),
    "two fields": batch_element("0 1"),
    "hex number": batch_element("0 0 0x10"),
    "underscored number": batch_element("0 0 1_000"),
    "two dots": batch_element("0 0 1.2.3"),
    "word": batch_element("0 0 true"),
    "unquoted string": batch_element("0 0 hello"),
    "open string": batch_element('0 0 "hello'),
    "string then junk": batch_element('0 0 "a" "b"'),
    "long string": batch_element('0 0 "' + "x" * 5000 + '"'),
    "absurd integer": batch_element("0 0 " + "9" * 5000),
    "huge plain payload": batch_element("0 0 1\n" * (MAX_TEXT // 6 + 10)),
    "too many samples": batch_element("0 0 1\n" * (MAX_SAMPLES + 1)),
    "unknown encoding": batch_element("MCAwIDE=", enc="gzip"),
    "bad base64": batch_element("!!!notbase64!!!", enc="deflate"),
    "truncated deflate": batch_element(deflated(b"0 0 1\n0 5 2")[:8], enc="deflate"),
    "deflate bomb": batch_element(deflated(b"0 0 1\n" * 3_000_000), enc="deflate"),
    "not utf-8 inside": batch_element(deflated(b'0 0 "\xff\xfe"'), enc="deflate"),
}


@pytest.mark.parametrize("name", list(HOSTILE))
def test_hostile_payloads_raise_codec_error_only(name: str) -> None:
    with pytest.raises(CodecError):
        decode(HOSTILE[name])


def test_random_damage_to_a_payload_raises_codec_error_or_decodes() -> None:
    """Seeded fuzzing of the text and attributes: never any other exception."""
    rng = random.Random(3)
    good = tostring(encode("abc-000009", realistic_batch(16)[:5] + [Sample(paths.MODE, "dri\"ving", T0)]))
    plain = encode("abc-000010", realistic_batch(4))
    texts = [good, tostring(plain)]
    outcomes = {"decoded": 0, "refused": 0}
    for _ in range(3000):
        raw = bytearray(rng.choice(texts))
        for _ in range(rng.randint(1, 4)):
            raw[rng.randrange(len(raw))] = rng.randrange(32, 127)
        try:
            element = fromstring(bytes(raw))
        except Exception:
            continue  # not XML any more: the XMPP parser would have refused it first
        try:
            decode(element)
            outcomes["decoded"] += 1
        except CodecError:
            outcomes["refused"] += 1
    assert outcomes["decoded"] > 0 and outcomes["refused"] > 100, outcomes


def test_blank_lines_and_surrounding_whitespace_are_tolerated() -> None:
    decoded = decode(batch_element("\n  0 0 63.5\n\n1 250 \"P\"\n  "))
    assert decoded == [Sample("Vehicle.Speed", 63.5, 1776471120.25), Sample("Vehicle.Gear", "P", 1776471120.5)]
    assert NAMESPACE == "urn:headunit:telemetry:0"
