"""A dashboard page as the browser's script would be, and an in-process agent to open it on.

For the tests that talk to the dashboard's WebSocket with aiohttp's client (no browser).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import shutil
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp

from agent.app import Agent
from agent.dashboard import Dashboard
from agent.dashboard.token import TOKEN_FILE
from agent.profile.model import DashboardConfig, FleetConfig, Profile
from devserver.prosody import ServerInfo
from tests.harness.agentproc import demo_profile, wait_until

WAIT = 20.0  # generous: only there so that a broken agent cannot hang a test


class Page:
    """A dashboard page as the browser's script would be: one WebSocket, every frame kept."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.frames: list[dict[str, Any]] = []
        self.closed: aiohttp.WSMessage | None = None
        self._ids = iter(range(1, 1_000_000))
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        async for message in self.ws:
            if message.type == aiohttp.WSMsgType.TEXT:
                self.frames.append(json.loads(message.data))
        self.closed = message if self.ws.closed else None

    def of(self, kind: str, since: int = 0) -> list[dict[str, Any]]:
        return [f for f in self.frames[since:] if f["type"] == kind]

    async def wait_for(self, kind: str, where: Callable[[dict[str, Any]], object] = lambda f: True,
                       since: int = 0) -> dict[str, Any]:
        """The first frame of ``kind`` (from index ``since``) for which ``where`` holds."""
        found: list[dict[str, Any]] = []

        def seen() -> bool:
            found[:] = [f for f in self.of(kind, since) if where(f)]
            return bool(found)

        await wait_until(seen, WAIT)
        return found[0]

    async def send(self, kind: str, **fields: Any) -> int:
        request_id = next(self._ids)
        await self.ws.send_json({"id": request_id, "type": kind, **fields})
        return request_id

    async def request(self, kind: str, **fields: Any) -> dict[str, Any]:
        """Send a request, return its ``result``."""
        request_id = await self.send(kind, **fields)
        return await self.wait_for("result", lambda f: f["id"] == request_id)

    async def close(self) -> None:
        await self.ws.close()
        await asyncio.gather(self._reader, return_exceptions=True)


def token_of(agent: Agent) -> str:
    return (agent.data_dir / TOKEN_FILE).read_text().strip()


def ws_url(dashboard: Dashboard, token: str | None) -> str:
    query = "" if token is None else f"?token={token}"
    return f"http://127.0.0.1:{dashboard.port}/ws{query}"


@contextlib.asynccontextmanager
async def open_page(http: aiohttp.ClientSession, agent: Agent) -> AsyncIterator[Page]:
    assert agent.dashboard is not None
    ws = await http.ws_connect(ws_url(agent.dashboard, token_of(agent)))
    page = Page(ws)
    try:
        await page.wait_for("offers")  # the last frame of the greeting
        yield page
    finally:
        await page.close()


def car_profile(server: ServerInfo, jid: str, password: str, *, operators: tuple[str, ...] = (),
                dashboard: DashboardConfig | None = None) -> Profile:
    profile = demo_profile(server, jid, password)
    return dataclasses.replace(profile, dashboard=dashboard or DashboardConfig(port=0),
                               fleet=FleetConfig(operators))


@contextlib.asynccontextmanager
async def running(profile: Profile, *, speed: float = 1.0) -> AsyncIterator[Agent]:
    """An Agent started on ``profile`` and online; stopped, and its state folder removed, after."""
    agent = Agent(profile, speed=speed)
    try:
        await agent.start()
        await agent.xmpp.wait_online(WAIT)
        yield agent
    finally:
        await asyncio.wait_for(agent.stop(), 15)
        shutil.rmtree(agent.data_dir, ignore_errors=True)
