"""Cameras: a V4L2 device through ffmpeg, or JPEG files (the fake); chosen by name.

Backends are imported only when chosen, like python-can's ``BACKENDS``.
"""

from __future__ import annotations

from typing import Any

from drivers import registry
from drivers.camera.base import Camera, Still, jpeg_size

__all__ = ["BACKENDS", "Camera", "Still", "create_camera", "jpeg_size"]

BACKENDS: dict[str, tuple[str, str]] = {
    "file": ("drivers.camera.file", "FileCamera"),
    "v4l2": ("drivers.camera.v4l2", "V4l2Camera"),
}


def create_camera(backend: str, **options: Any) -> Camera:
    """Build the camera backend named ``backend``; its options are its constructor's keywords."""
    camera: Camera = registry.create("camera", BACKENDS, backend, **options)
    return camera
