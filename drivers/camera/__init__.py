"""Cameras: a V4L2 device through ffmpeg, or JPEG files (the fake); chosen by name.

Backends are imported only when chosen, like python-can's ``BACKENDS``.
"""

from __future__ import annotations

import importlib
from typing import Any

from drivers.camera.base import Camera, Still, jpeg_size
from drivers.errors import DriverInitError, UnknownBackend

__all__ = ["BACKENDS", "Camera", "Still", "create_camera", "jpeg_size"]

BACKENDS: dict[str, tuple[str, str]] = {
    "file": ("drivers.camera.file", "FileCamera"),
    "v4l2": ("drivers.camera.v4l2", "V4l2Camera"),
}


def create_camera(backend: str, **options: Any) -> Camera:
    """Build the camera backend named ``backend``; its options are its constructor's keywords."""
    try:
        module_name, class_name = BACKENDS[backend]
    except KeyError:
        known = ", ".join(sorted(BACKENDS))
        raise UnknownBackend(f"unknown camera backend {backend!r} (known: {known})") from None
    try:
        cls = getattr(importlib.import_module(module_name), class_name)
    except (ImportError, AttributeError) as exc:
        raise UnknownBackend(f"camera backend {backend!r} cannot be loaded: {exc}") from exc
    try:
        camera: Camera = cls(**options)
    except (TypeError, ValueError) as exc:
        raise DriverInitError(f"bad options for camera backend {backend!r}: {exc}") from exc
    return camera
