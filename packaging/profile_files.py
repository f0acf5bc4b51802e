#!/usr/bin/env python3
"""Copy a profile and every file it names into one folder (/etc/headunit), ready for the service.

A profile names files relative to its own folder (DBC, replay logs, password file, CA,
place names, a camera folder). Those inside the profile's folder are copied keeping their
relative path, so the profile needs no change. Those outside it (``../run/demo/car.password``)
are copied next to the profile and the key is rewritten to the new name. ``[storage]
data_dir`` is commented out: the service keeps its state in its StateDirectory
(/var/lib/headunit), and a data folder under /etc would be read-only there anyway.

The copy is edited as text (so comments stay) and then parsed again: it must be the
original profile with exactly those changes, or nothing is written. Standard library
only: this runs with Debian's python3, before any venv exists.

Usage: profile_files.py PROFILE TARGET_FOLDER   (exit 0 done, 2 refused, with a message)
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

KeyPath = tuple[str | int, ...]

# Keys whose value is meant to be a file; a missing one is worth a warning.
FILE_KEYS = frozenset({"password_file", "ca_file", "dbc", "replay_file", "file", "places"})
DROPPED_KEYS = {("storage", "data_dir"): "the service keeps its state in /var/lib/headunit"}
INSTALLED_NAME = "profile.toml"


class Refused(Exception):
    """The profile cannot be installed as it is; the message says why."""


@dataclass
class Plan:
    """What installing one profile does: files to copy and keys to change."""

    copies: dict[Path, str] = field(default_factory=dict)  # source -> path relative to the target
    rewrites: dict[KeyPath, tuple[str, str]] = field(default_factory=dict)  # key -> (old, new)
    dropped: list[KeyPath] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def strings(node: Any, path: KeyPath = ()) -> Iterator[tuple[KeyPath, str]]:
    """Every string value of tables and arrays of tables (plain arrays are commands, not paths)."""
    if isinstance(node, dict):
        for key, value in node.items():
            yield from strings(value, (*path, key))
    elif isinstance(node, list) and all(isinstance(item, dict) for item in node):
        for index, item in enumerate(node):
            yield from strings(item, (*path, index))
    elif isinstance(node, str) and path:
        yield path, node


def dotted(path: KeyPath) -> str:
    return "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in path).lstrip(".")


def plan(profile: Path, data: dict[str, Any]) -> Plan:
    """Decide, for every string naming an existing file or folder, where it goes."""
    base = profile.parent.resolve()
    result = Plan()
    taken = {INSTALLED_NAME}
    outside: dict[Path, str] = {}
    for path, value in strings(data):
        key = path[-1]
        if tuple(p for p in path if isinstance(p, str)) in DROPPED_KEYS:
            result.dropped.append(path)
            continue
        if os.path.isabs(value) or "\n" in value or not value.strip():
            if os.path.isabs(value) and key in FILE_KEYS:
                result.notes.append(f"{dotted(path)}: {value} kept as it is (the headunit user must be able to read it)")
            continue
        source = Path(os.path.normpath(base / value))
        if not (source.is_file() or source.is_dir()) or source in (base, *base.parents):
            if key in FILE_KEYS:
                result.notes.append(f"{dotted(path)}: WARNING: {value} does not exist; not copied")
            continue
        if source.is_relative_to(base):
            result.copies[source] = str(source.relative_to(base))
            taken.add(result.copies[source].split("/")[0])
            continue
        if source not in outside:
            outside[source] = ""
    for source in outside:  # after the inside ones, so a name never hides a file kept in place
        name = _free_name(source.name, taken)
        taken.add(name)
        result.copies[source] = name
    for path, value in strings(data):
        source = Path(os.path.normpath(base / value)) if not os.path.isabs(value) else None
        if source in outside:
            result.rewrites[path] = (value, result.copies[source])
    return result


def _free_name(name: str, taken: set[str]) -> str:
    stem, dot, suffix = name.partition(".")
    candidate, n = name, 1
    while candidate in taken:
        n += 1
        candidate = f"{stem}-{n}{dot}{suffix}"
    return candidate


def rewrite(text: str, work: Plan) -> str:
    """The profile's text with the planned keys changed; refused if a key cannot be found."""
    done: set[tuple[str, str]] = set()
    for path, (old, new) in work.rewrites.items():
        if (str(path[-1]), old) in done:
            continue  # the same key and value elsewhere: replaced along with the first
        done.add((str(path[-1]), old))
        key = re.escape(str(path[-1]))
        pattern = re.compile(rf"(?<![\w.-])({key}\s*=\s*)([\"']){re.escape(old)}\2")
        text, count = pattern.subn(lambda m: m.group(1) + json.dumps(new, ensure_ascii=False), text)
        if not count:
            raise Refused(f"{dotted(path)}: could not find {old!r} written plainly; use a plain string")
    for path in work.dropped:
        reason = DROPPED_KEYS[tuple(p for p in path if isinstance(p, str))]
        pattern = re.compile(rf"^([ \t]*)({re.escape(str(path[-1]))}\s*=.*)$", re.MULTILINE)
        text, count = pattern.subn(rf"\1# \2  # removed on install: {reason}", text, count=1)
        if not count:
            raise Refused(f"{dotted(path)}: not on a line of its own; remove it from the profile")
    return text


def expected(data: Any, work: Plan, path: KeyPath = ()) -> Any:
    """The original data with the planned changes: what the new text must parse to."""
    if isinstance(data, dict):
        return {k: expected(v, work, (*path, k)) for k, v in data.items() if (*path, k) not in work.dropped}
    if isinstance(data, list):
        return [expected(v, work, (*path, i)) for i, v in enumerate(data)]
    return work.rewrites[path][1] if path in work.rewrites else data


def copy(source: Path, target: Path) -> None:
    """One file or folder into the target; a file onto itself (reinstalling from /etc) is a no-op."""
    if target.exists() and source.exists() and os.path.samefile(source, target):
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    if source.is_dir():
        shutil.copytree(source, target, dirs_exist_ok=True)
    else:
        shutil.copyfile(source, target)


def install(profile: Path, folder: Path) -> list[str]:
    """Copy the profile into ``folder`` as profile.toml with its files; return what was done."""
    try:
        text = profile.read_text(encoding="utf-8")
        data = tomllib.loads(text)
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise Refused(f"{profile}: cannot read it as TOML: {exc}") from exc
    work = plan(profile, data)
    new_text = rewrite(text, work)
    if tomllib.loads(new_text) != expected(data, work):
        raise Refused("rewriting the paths changed more than the paths; edit the profile by hand")
    folder.mkdir(parents=True, exist_ok=True)
    for source, relative in work.copies.items():
        copy(source, folder / relative)
    installed = folder / INSTALLED_NAME
    if installed.exists() and installed.read_text(encoding="utf-8") != new_text:
        shutil.copyfile(installed, folder / f"{INSTALLED_NAME}.old")
        work.notes.append(f"the previous profile is kept as {folder / (INSTALLED_NAME + '.old')}")
    installed.write_text(new_text, encoding="utf-8")
    done = [f"copied {relative}" for relative in work.copies.values()]
    done += [f"{dotted(p)}: {old} -> {new}" for p, (old, new) in work.rewrites.items()]
    done += [f"{dotted(p)}: commented out ({DROPPED_KEYS[tuple(x for x in p if isinstance(x, str))]})"
             for p in work.dropped]
    return done + work.notes


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__.strip().splitlines()[-1], file=sys.stderr)
        return 2
    try:
        for line in install(Path(argv[0]), Path(argv[1])):
            print(f"headunit: profile: {line}")
    except (Refused, OSError) as exc:
        print(f"headunit: profile not installed: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
