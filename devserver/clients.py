"""Other people's XMPP clients for the tests: a slixmpp client that verifies TLS, logs in, and closes cleanly."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import slixmpp

from devserver.prosody import ServerInfo

WAIT = 20.0  # generous: only there so a broken server cannot hang a test


def verified_client(jid: str, password: str, server: ServerInfo, *, resource: str = "test",
                    plugins: Sequence[str] = ()) -> slixmpp.ClientXMPP:
    """A client that trusts only the server's CA, over STARTTLS (no plaintext, no Direct TLS)."""
    client = slixmpp.ClientXMPP(f"{jid}/{resource}", password)
    client.enable_direct_tls = False
    client.enable_plaintext = False
    client.ca_certs = Path(server.ca_file)
    for plugin in plugins:
        client.register_plugin(plugin)
    return client


async def log_in(client: slixmpp.ClientXMPP, server: ServerInfo, *, port: int | None = None,
                 presence: bool = True) -> None:
    """Connect to the server (or ``port`` on its host, e.g. a proxy), wait for the session, be available."""
    online = asyncio.Event()
    client.add_event_handler("session_start", lambda _: online.set())
    client.connect(server.host, port or server.port)
    async with asyncio.timeout(WAIT):
        await online.wait()
    if presence:
        client.send_presence()


async def close_client(client: slixmpp.ClientXMPP) -> None:
    """Close the stream, and end slixmpp's send task (it only cancels it in ``__del__``)."""
    client.cancel_connection_attempt()
    if client.transport is not None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(WAIT):
                await client.disconnect(wait=1.0)
    client.abort()
    task = client._run_out_filters
    if task is not None:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


@dataclass
class SeenPresence:
    at: float
    type: str
    show: str
    status: str


@dataclass
class Watcher:
    """An operator's client (slixmpp, as any script would be) recording a contact's presence."""

    jid: str
    password: str
    server: ServerInfo
    contact: str
    seen: list[SeenPresence] = field(default_factory=list)
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    async def start(self) -> None:
        client = verified_client(self.jid, self.password, self.server, resource="watcher")
        client.add_event_handler("presence", self._on_presence)
        await log_in(client, self.server)
        client.send_presence_subscription(pto=self.contact, ptype="subscribe")
        self.client = client

    def _on_presence(self, presence: slixmpp.Presence) -> None:
        if presence["from"].bare != self.contact or presence["type"] not in (
                "available", "unavailable", "dnd", "away", "xa", "chat"):
            return
        kind = "unavailable" if presence["type"] == "unavailable" else "available"
        self.seen.append(SeenPresence(time.monotonic(), kind, presence["show"] or "", presence["status"]))
        self.changed.set()

    def shows(self) -> list[str]:
        """The sequence of shows ("" = available, "unavailable"), consecutive repeats folded."""
        out: list[str] = []
        for p in self.seen:
            show = "unavailable" if p.type == "unavailable" else p.show
            if not out or out[-1] != show:
                out.append(show)
        return out

    async def wait_for(self, predicate: Callable[[], bool], timeout: float) -> None:
        async with asyncio.timeout(timeout):
            while not predicate():
                self.changed.clear()
                await self.changed.wait()

    async def stop(self) -> None:
        await close_client(self.client)
