"""Backends chosen by name and imported only when chosen, like python-can's ``BACKENDS``."""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import Any

from drivers.errors import DriverInitError, UnknownBackend


def create(kind: str, backends: Mapping[str, tuple[str, str]], backend: str, *args: Any, **options: Any) -> Any:
    """Import the class registered as ``backend`` and build it with ``args`` and ``options``.

    An unknown or unloadable backend raises UnknownBackend; options its constructor
    refuses raise DriverInitError. ``kind`` ("GNSS", "camera") names it in the message.
    """
    try:
        module_name, class_name = backends[backend]
    except KeyError:
        known = ", ".join(sorted(backends))
        raise UnknownBackend(f"unknown {kind} backend {backend!r} (known: {known})") from None
    try:
        cls = getattr(importlib.import_module(module_name), class_name)
    except (ImportError, AttributeError) as exc:
        raise UnknownBackend(f"{kind} backend {backend!r} cannot be loaded: {exc}") from exc
    try:
        return cls(*args, **options)
    except (TypeError, ValueError) as exc:
        raise DriverInitError(f"bad options for {kind} backend {backend!r}: {exc}") from exc
