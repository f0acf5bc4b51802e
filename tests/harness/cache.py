"""The tests' machine cache: what is slow to build and the same for every clone (like pip's cache).

It lives in ``$HEADUNIT_TEST_CACHE``, else ``$XDG_CACHE_HOME/headunit``, else
``~/.cache/headunit``. Each entry is named after a key made of what it depends on, is
written under a temporary name and renamed into place with a manifest beside it, and is
rebuilt when the manifest is missing or does not match. A file lock per entry makes
concurrent builders (pytest-xdist workers, two clones testing at once) wait for the first.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path


def cache_root() -> Path:
    """The per-user folder the tests keep their machine-wide cache in."""
    explicit = os.environ.get("HEADUNIT_TEST_CACHE")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "headunit"


def key_of(inputs: Mapping[str, str]) -> str:
    """A short stable hash of what an entry depends on."""
    text = json.dumps(dict(sorted(inputs.items())), sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@contextmanager
def locked(name: str) -> Iterator[Path]:
    """Hold the cache's lock called ``name`` (blocking); yields the cache folder."""
    root = cache_root()
    root.mkdir(parents=True, exist_ok=True)
    with open(root / f"{name}.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield root
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _manifest(path: Path) -> Path:
    return path.with_name(path.name + ".json")


def is_valid(path: Path, inputs: Mapping[str, str]) -> bool:
    """True when ``path`` is complete: its manifest names the same inputs and its size."""
    try:
        manifest = json.loads(_manifest(path).read_text())
        return bool(manifest["inputs"] == dict(inputs) and manifest["size"] == path.stat().st_size)
    except (OSError, ValueError, KeyError, TypeError):
        return False


def discard(path: Path) -> None:
    """Forget an entry (found broken when used): the next :func:`cached_file` rebuilds it."""
    _manifest(path).unlink(missing_ok=True)
    path.unlink(missing_ok=True)


def cached_file(stem: str, suffix: str, inputs: Mapping[str, str], build: Callable[[Path], None]) -> Path:
    """The cached file for ``inputs``; ``build(partial_path)`` makes it the first time."""
    with locked(stem) as root:
        path = root / f"{stem}-{key_of(inputs)}{suffix}"
        if is_valid(path, inputs):
            return path
        discard(path)
        partial = path.with_name(f"{path.name}.partial-{os.getpid()}")
        partial.unlink(missing_ok=True)
        try:
            build(partial)
            partial.rename(path)
        finally:
            partial.unlink(missing_ok=True)
        _manifest(path).write_text(json.dumps({"inputs": dict(inputs), "size": path.stat().st_size}))
        return path
