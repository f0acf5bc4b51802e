"""Debian's Chromium, headless, driven by Playwright: for the dashboard's tests and screenshots.

The machine's own ``/usr/bin/chromium`` is used (Playwright never downloads a browser
here), with a fresh temporary profile each time, nothing fetched from the internet, and
every console error and uncaught page error kept so a test can say the page ran clean.
Under pytest a missing Chromium skips the test with the reason; elsewhere it raises
:class:`BrowserUnavailable`.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

from playwright.async_api import ConsoleMessage, Error, Page, async_playwright

CHROMIUM = Path("/usr/bin/chromium")
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", "--no-first-run", "--disable-quic"]
VIEWPORTS = {"small": (800, 480), "large": (1280, 720)}  # the touchscreens the page is made for
TIMEOUT_MS = 15_000  # Playwright's default wait for an element or a navigation


class BrowserUnavailable(RuntimeError):
    """Debian's Chromium (or Playwright) cannot be used on this machine."""


@dataclass
class Tab:
    """One page in its own fresh browser profile, and what went wrong in it."""

    page: Page
    errors: list[str] = field(default_factory=list)  # console errors and uncaught exceptions

    def _on_console(self, message: ConsoleMessage) -> None:
        if message.type == "error":
            self.errors.append(f"console: {message.text}")

    def _on_error(self, error: Error) -> None:
        self.errors.append(f"page error: {error}")


def unavailable_reason() -> str | None:
    """Why the browser cannot run here, or None."""
    if not CHROMIUM.is_file() or not os.access(CHROMIUM, os.X_OK):
        return f"{CHROMIUM} is missing (apt-get install chromium)"
    return None


def _unavailable(reason: str) -> None:
    if os.environ.get("PYTEST_CURRENT_TEST"):
        import pytest

        pytest.skip(reason)
    raise BrowserUnavailable(reason)


@asynccontextmanager
async def chromium(width: int = 800, height: int = 480) -> AsyncIterator[Tab]:
    """A headless Chromium page of ``width`` × ``height`` CSS pixels; closed and its profile removed after."""
    reason = unavailable_reason()
    if reason is not None:
        _unavailable(reason)
    profile = Path(tempfile.mkdtemp(prefix="hu-chromium-"))
    try:
        async with async_playwright() as playwright:
            context = await playwright.chromium.launch_persistent_context(
                str(profile), executable_path=str(CHROMIUM), headless=True, args=FLAGS,
                viewport={"width": width, "height": height}, device_scale_factor=1,
                has_touch=True, locale="en-GB")
            try:
                context.set_default_timeout(TIMEOUT_MS)
                page = context.pages[0] if context.pages else await context.new_page()
                tab = Tab(page)
                page.on("console", tab._on_console)
                page.on("pageerror", tab._on_error)
                yield tab
            finally:
                await context.close()
    finally:
        shutil.rmtree(profile, ignore_errors=True)
