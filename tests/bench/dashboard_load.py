"""The dashboard page: time from navigation to a live, usable page, in Debian's Chromium.

The agent runs in this process on the demo profile against a throw-away Prosody; one
headless Chromium is launched once, and each run opens a fresh browser context (empty
cache, no cookies, no session storage), like the kiosk after a reboot. Measured with
the wall clock around Playwright calls, so each figure includes Playwright's own round
trips; the baseline in the same run is the same navigation to the agent's tiny
``/healthz`` text, which carries that overhead and the HTTP round trip but no page.
"""

from __future__ import annotations

import asyncio
import secrets
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from playwright.async_api import Browser, ViewportSize, async_playwright, expect

from agent.app import Agent
from tests.harness.agentproc import demo_profile
from tests.harness.browser import CHROMIUM, FLAGS
from devserver.prosody import Prosody

VIEWPORT: ViewportSize = {"width": 800, "height": 480}


@dataclass(frozen=True)
class PageLoad:
    ready_s: float  # navigation start → the greeting shown and the WebSocket open (state on screen)
    interactive_s: float  # → and a tap on the Contacts tab has shown that screen
    baseline_s: float  # navigation start → /healthz loaded, in a fresh context too


async def measure_once(browser: Browser, url: str, address: str, name: str) -> PageLoad:
    context = await browser.new_context(viewport=VIEWPORT)
    try:
        page = await context.new_page()
        start = time.perf_counter()
        await page.goto(url)
        await expect(page.get_by_test_id("car-name")).to_have_text(name, timeout=10_000)
        await expect(page.locator("body")).to_have_attribute("data-link", "open", timeout=10_000)
        ready = time.perf_counter() - start
        await page.get_by_test_id("tab-contacts").click()
        await expect(page.get_by_test_id("screen-contacts")).to_be_visible(timeout=10_000)
        interactive = time.perf_counter() - start
    finally:
        await context.close()
    context = await browser.new_context(viewport=VIEWPORT)
    try:
        page = await context.new_page()
        start = time.perf_counter()
        await page.goto(f"{address}healthz")
        baseline = time.perf_counter() - start
    finally:
        await context.close()
    return PageLoad(ready, interactive, baseline)


async def measure(repeats: int = 7, progress: object = print) -> list[PageLoad]:
    results: list[PageLoad] = []
    with tempfile.TemporaryDirectory(prefix="headunit-bench-") as folder, Prosody(Path(folder)) as server:
        password = secrets.token_urlsafe(12)
        jid = server.register(f"bench-{secrets.token_hex(3)}", password)
        agent = Agent(demo_profile(server.server_info(), jid, password), speed=5.0)
        await agent.start()
        try:
            await agent.xmpp.wait_online(30)
            assert agent.dashboard is not None
            async with async_playwright() as playwright:
                browser = await playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True,
                                                           args=FLAGS)
                try:
                    await measure_once(browser, agent.dashboard.url, agent.dashboard.address,
                                       agent.profile.name)  # warm-up: the agent's first page, not counted
                    for i in range(repeats):
                        results.append(await measure_once(browser, agent.dashboard.url, agent.dashboard.address,
                                                          agent.profile.name))
                        last = results[-1]
                        progress(f"  page load {i + 1}/{repeats}: live {last.ready_s * 1000:.0f} ms, "  # type: ignore[operator]
                                 f"interactive {last.interactive_s * 1000:.0f} ms, "
                                 f"baseline {last.baseline_s * 1000:.0f} ms")
                finally:
                    await browser.close()
        finally:
            await asyncio.wait_for(agent.stop(), 30)
    return results


def medians(results: list[PageLoad]) -> PageLoad:
    return PageLoad(statistics.median(r.ready_s for r in results),
                    statistics.median(r.interactive_s for r in results),
                    statistics.median(r.baseline_s for r in results))
