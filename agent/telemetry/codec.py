"""The telemetry payload: one batch of samples as a compact XML element.

::

    <batch xmlns='urn:headunit:telemetry:0' v='1' id='7f3a9c-000123' t0='1776471120.25'
           paths='Vehicle.Speed Vehicle.CurrentLocation.Latitude'>0 0 63.5
    1 12 37.394721
    0 988 64.1</batch>

One line per sample, ``<path index> <dt> <value>``: ``dt`` is milliseconds since
the previous line's timestamp (the first line's is ``t0``), values are in their
shortest exact text (floats as ``repr``: ``63.5``, ``inf``, ``nan``; integers;
``t``/``f`` for booleans; strings JSON-quoted). Timestamps are kept to the
millisecond: a decoded timestamp is ``round(original * 1000) / 1000``.

With ``enc='deflate'`` the same lines are raw-deflated and base64-encoded. The
encoder picks whichever is smaller: for the 64-sample batch of speed, rpm,
latitude and longitude in the tests, plain text is about 16 bytes per sample
and deflate about 9 (Teltonika Codec 8: 45 bytes per record).

``decode`` takes what the network gives it: anything malformed, of an unknown
version, or too large raises ``CodecError`` and nothing else.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
import zlib
from collections.abc import Sequence
from xml.etree.ElementTree import Element

from agent.errors import HeadunitError
from agent.policies.telemetry import Sample
from agent.vehicle.state import Value

NAMESPACE = "urn:headunit:telemetry:0"
TAG = f"{{{NAMESPACE}}}batch"
VERSION = "1"

MAX_TEXT = 256 * 1024  # characters of lines, after inflating
MAX_SAMPLES = 10_000
MAX_PATHS = 256
MAX_STRING = 1024  # characters of one string value

PATH = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*")
_T0 = re.compile(r"-?\d{1,13}(?:\.\d{1,3})?")
_DT = re.compile(r"-?\d{1,13}")
_INT = re.compile(r"-?\d{1,40}")
_FLOAT = re.compile(r"-?(?:\d+\.\d*(?:e[-+]?\d+)?|\d+e[-+]?\d+|inf)|nan")
_MAX_PATH_CHARS = 256


class CodecError(HeadunitError, ValueError):
    """A telemetry payload could not be encoded or decoded; says what and where."""


# -- encoding --------------------------------------------------------------------


def encode(batch_id: str, samples: Sequence[Sample], *, deflate: bool | None = None) -> Element:
    """The payload element for one batch; ``deflate=None`` picks plain text or deflate, whichever is smaller."""
    if not samples:
        raise CodecError(f"batch {batch_id}: no samples to encode")
    paths: dict[str, int] = {}
    lines = []
    first = previous = _millis(samples[0].timestamp)
    for sample in samples:
        index = paths.setdefault(_check_path(sample.path), len(paths))
        ms = _millis(sample.timestamp)
        lines.append(f"{index} {ms - previous} {_value_text(sample.value)}")
        previous = ms
    text = "\n".join(lines)
    element = Element(TAG, {"v": VERSION, "id": batch_id, "t0": _t0_text(first), "paths": " ".join(paths)})
    packed = _deflate(text) if deflate is not False else text
    if deflate or (deflate is None and len(packed) < len(text)):
        element.set("enc", "deflate")
        element.text = packed
    else:
        element.text = text
    return element


def _millis(timestamp: float) -> int:
    if not math.isfinite(timestamp):
        raise CodecError(f"timestamp {timestamp!r} is not a time")
    return round(timestamp * 1000)


def _t0_text(ms: int) -> str:
    seconds, millis = divmod(abs(ms), 1000)
    text = f"{'-' if ms < 0 else ''}{seconds}"
    return f"{text}.{millis:03d}".rstrip("0") if millis else text


def _check_path(path: str) -> str:
    if not isinstance(path, str) or len(path) > _MAX_PATH_CHARS or not PATH.fullmatch(path):
        raise CodecError(f"not a VSS path: {path!r}")
    return path


def _value_text(value: Value) -> str:
    if isinstance(value, bool):
        return "t" if value else "f"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # ASCII only: safe in XML whatever the string holds
    raise CodecError(f"cannot encode a {type(value).__name__} value: {value!r}")


def _deflate(text: str) -> str:
    packer = zlib.compressobj(9, zlib.DEFLATED, -15)
    raw = packer.compress(text.encode()) + packer.flush()
    return base64.b64encode(raw).decode("ascii")


# -- decoding --------------------------------------------------------------------


def decode(element: Element) -> list[Sample]:
    """The samples of a payload, in order; ``CodecError`` on anything else."""
    if element.tag != TAG:
        raise CodecError(f"not a telemetry batch: <{element.tag}>")
    if element.get("v") != VERSION:
        raise CodecError(f"unsupported telemetry version {element.get('v')!r} (this agent reads {VERSION})")
    paths = _paths(element.get("paths", ""))
    t0 = element.get("t0", "")
    if not _T0.fullmatch(t0):
        raise CodecError(f"bad t0 {t0[:40]!r}")
    text = _payload_text(element)
    previous = _t0_millis(t0)
    samples: list[Sample] = []
    for number, line in enumerate(text.split("\n"), 1):
        if not line.strip():
            continue
        if len(samples) == MAX_SAMPLES:
            raise CodecError(f"more than {MAX_SAMPLES} samples in one batch")
        try:
            sample, previous = _line(line.strip(), paths, previous)
        except CodecError as exc:
            raise CodecError(f"line {number}: {exc}") from None
        samples.append(sample)
    return samples


def _paths(text: str) -> list[str]:
    paths = text.split()
    if not paths or len(paths) > MAX_PATHS:
        raise CodecError(f"a batch names 1 to {MAX_PATHS} paths, not {len(paths)}")
    for path in paths:
        _check_path(path)
    return paths


def _t0_millis(text: str) -> int:
    negative = text.startswith("-")
    seconds, _, fraction = text.lstrip("-").partition(".")
    ms = int(seconds) * 1000 + int(fraction.ljust(3, "0") or 0)
    return -ms if negative else ms


def _payload_text(element: Element) -> str:
    raw = element.text or ""
    encoding = element.get("enc")
    if encoding is None:
        if len(raw) > MAX_TEXT:
            raise CodecError(f"payload larger than {MAX_TEXT} characters")
        return raw
    if encoding != "deflate":
        raise CodecError(f"unknown encoding {encoding[:40]!r}")
    if len(raw) > MAX_TEXT:
        raise CodecError(f"deflated payload larger than {MAX_TEXT} characters")
    return _inflate(raw)


def _inflate(text: str) -> str:
    try:
        packed = base64.b64decode("".join(text.split()), validate=True)
        unpacker = zlib.decompressobj(-15)
        raw = unpacker.decompress(packed, MAX_TEXT + 1)
    except (binascii.Error, zlib.error, ValueError) as exc:
        raise CodecError(f"bad deflate payload: {exc}") from None
    if len(raw) > MAX_TEXT or unpacker.unconsumed_tail:
        raise CodecError(f"payload inflates to more than {MAX_TEXT} bytes")
    if not unpacker.eof:
        raise CodecError("deflate payload is truncated")
    try:
        return raw.decode()
    except UnicodeDecodeError as exc:
        raise CodecError(f"payload is not UTF-8: {exc}") from None


def _line(line: str, paths: list[str], previous: int) -> tuple[Sample, int]:
    parts = line.split(" ", 2)
    if len(parts) != 3:
        raise CodecError(f"expected 'path-index dt value', found {line[:60]!r}")
    index, dt, value = parts
    if not index.isdigit() or int(index) >= len(paths):
        raise CodecError(f"path index {index[:20]!r} is not one of the {len(paths)} paths")
    if not _DT.fullmatch(dt):
        raise CodecError(f"bad time step {dt[:20]!r}")
    ms = previous + int(dt)
    return Sample(paths[int(index)], _value(value), ms / 1000), ms


def _value(text: str) -> Value:
    if text == "t" or text == "f":
        return text == "t"
    if _INT.fullmatch(text):
        return int(text)
    if _FLOAT.fullmatch(text):
        return float(text)
    if text.startswith('"') and len(text) <= 6 * MAX_STRING + 2:
        try:
            value = json.loads(text)
        except ValueError as exc:
            raise CodecError(f"bad string value {text[:40]!r}: {exc}") from None
        if isinstance(value, str) and len(value) <= MAX_STRING:
            return value
    raise CodecError(f"bad value {text[:40]!r}")
