"""Reading one TOML table of a profile: each refusal names the file and the dotted key."""

from __future__ import annotations

import dataclasses
import math
import os
import re
import tomllib
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from types import MappingProxyType
from typing import Any, NoReturn, TypeGuard

from agent.errors import ProfileError

BOUNDS: Mapping[str, Callable[[float], bool]] = MappingProxyType({
    "any": lambda v: True, ">= 0": lambda v: v >= 0, "> 0": lambda v: v > 0,
})


def read_toml(file: str) -> dict[str, Any]:
    try:
        with open(file, "rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError as exc:
        raise ProfileError(file, "", "an existing profile file (no such file)") from exc
    except OSError as exc:
        raise ProfileError(file, "", "a readable profile file", exc.strerror) from exc
    except UnicodeDecodeError as exc:
        raise ProfileError(file, "", "UTF-8 text", f"undecodable byte at offset {exc.start}") from exc
    except tomllib.TOMLDecodeError as exc:
        reason, _, where = str(exc).partition(" (at ")
        raise ProfileError(file, where.rstrip(")"), f"valid TOML ({reason})") from exc


def present(**values: Any) -> dict[str, Any]:
    """The keyword arguments that were given; the others keep the model's defaults."""
    return {name: value for name, value in values.items() if value is not None}


def field_names(cls: type[Any]) -> tuple[str, ...]:
    return tuple(f.name for f in dataclasses.fields(cls))


def is_int(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


class Table:
    """One TOML table being read: it knows its file and dotted key, so each refusal names both."""

    def __init__(self, file: str, base: Path, data: Mapping[str, Any], prefix: str = "",
                 labels: Mapping[str, str] | None = None) -> None:
        self.file = file
        self.base = base  # relative paths start here: the profile's folder
        self.data = data
        self.prefix = prefix
        self.labels = labels or {}  # keys that came from elsewhere, e.g. the environment

    def key(self, name: str) -> str:
        if name in self.labels:
            return self.labels[name]
        return ".".join(part for part in (self.prefix, name) if part)

    def fail(self, name: str, expected: str, found: object = None) -> NoReturn:
        raise ProfileError(self.file, self.key(name), expected, found)

    def has(self, name: str) -> bool:
        return name in self.data

    def only(self, allowed: Iterable[str]) -> None:
        """Refuse keys nobody reads: a typo must not be silently ignored."""
        allowed = tuple(allowed)
        for name in self.data:
            if name not in allowed:
                self.fail(name, f"a known key (allowed here: {', '.join(allowed)})")

    def raw(self, name: str, what: str, required: bool = False) -> Any:
        if name not in self.data:
            if required:
                self.fail(name, f"{what}; the key is required")
            return None
        return self.data[name]

    def child(self, name: str, value: object) -> Table:
        if not isinstance(value, dict):
            self.fail(name, "a table", value)
        return Table(self.file, self.base, value, self.key(name))

    def section(self, name: str, required: bool = False) -> Table:
        """A sub-table; an empty one when absent and not required."""
        value = self.raw(name, "a table", required)
        return self.child(name, {} if value is None else value)

    def array(self, name: str, required: bool = False) -> list[Any] | None:
        value = self.raw(name, "an array", required)
        if value is not None and not isinstance(value, list):
            self.fail(name, "an array", value)
        return value

    def tables(self, name: str) -> list[Table]:
        return [self.child(f"{name}[{i}]", item) for i, item in enumerate(self.array(name) or [])]

    def text(self, name: str, *, required: bool = False, what: str = "a non-empty string",
            pattern: re.Pattern[str] | None = None) -> str | None:
        value = self.raw(name, what, required)
        if value is None:
            return None
        if not isinstance(value, str) or not value or (pattern and not pattern.fullmatch(value)):
            self.fail(name, what, value)
        return value

    def strings(self, name: str, *, what: str, pattern: re.Pattern[str]) -> tuple[str, ...] | None:
        items = self.array(name)
        if items is None:
            return None
        for i, item in enumerate(items):
            if not isinstance(item, str) or not pattern.fullmatch(item):
                self.fail(f"{name}[{i}]", what, item)
        return tuple(items)

    def choice(self, name: str, options: Sequence[object], required: bool = False) -> Any:
        what = "one of " + ", ".join(repr(option) for option in options)
        value = self.raw(name, what, required)
        if value is not None and (isinstance(value, bool) or value not in options):
            self.fail(name, what, value)
        return value

    def integer(self, name: str, lo: int | None = None, hi: int | None = None) -> int | None:
        what = "an integer" + (f" {lo}..{hi}" if hi is not None else f" >= {lo}" if lo is not None else "")
        value = self.raw(name, what)
        if value is not None and (not is_int(value) or (lo is not None and value < lo)
                                  or (hi is not None and value > hi)):
            self.fail(name, what, value)
        return None if value is None else int(value)

    def number(self, name: str, bound: str = "> 0") -> float | None:
        what = "a number" + ("" if bound == "any" else f" {bound}")
        value = self.raw(name, what)
        if value is None:
            return None
        if (isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value)
                or not BOUNDS[bound](value)):
            self.fail(name, what, value)
        return float(value)

    def flag(self, name: str) -> bool | None:
        value = self.raw(name, "true or false")
        if value is not None and not isinstance(value, bool):
            self.fail(name, "true or false", value)
        return value

    def path(self, name: str, *, required: bool = False, suffixes: Sequence[str] = ()) -> Path | None:
        """An existing file; a relative path is taken from the profile's folder."""
        what = "a path to an existing file" + (f" ending in {' / '.join(suffixes)}" if suffixes else "")
        raw = self.text(name, required=required, what=what)
        if raw is None:
            return None
        path = Path(os.path.normpath(self.base / raw))
        if suffixes and path.suffix.lower() not in suffixes:
            self.fail(name, what, raw)
        if not path.is_file():
            self.fail(name, what, str(path))
        return path
