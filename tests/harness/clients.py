"""Other people's XMPP clients for the tests: a slixmpp client that verifies TLS, logs in, and closes cleanly."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from pathlib import Path

import slixmpp

from tests.harness.prosody import ServerInfo

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
