"""The agent's XMPP session: verified TLS, SCRAM, stream management, dead-link detection, reconnection.

This package is the only code that knows slixmpp. Certificate verification is
never turned off: the server must present a certificate for the account's
domain signed by the profile's CA (or a system CA), and, if the profile pins
keys, one of those keys. A dropped link is resumed with XEP-0198 when the
server still has the session; otherwise a fresh session starts and the
services re-send what the server never acknowledged. Reconnection waits a
capped, fully jittered exponential delay, so a fleet coming back from the same
outage does not hammer the server in lockstep.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import slixmpp
from slixmpp.jid import JID

from agent.errors import AgentTimeout
from agent.link import ConnectionStatus, LinkState
from agent.events import Event
from agent.policies.presence import PresenceUpdate
from agent.profile.model import AccountConfig, SessionConfig
from agent.jid import is_operator
from agent.xmpp import surface
from agent.xmpp.liveness import LinkMonitor
from agent.xmpp.plugins.base import P, enable
from drivers.backoff import Backoff

log = logging.getLogger(__name__)

SCRAM = ("SCRAM-SHA-256", "SCRAM-SHA-1")  # slixmpp prefers the stronger one the server offers
CAPS_NODE = "https://github.com/headunit/headunit"
FEATURES_CHANGED = "headunit_features_changed"  # a plugin added or removed a disco feature: caps are redone


class HeadunitClient(slixmpp.ClientXMPP):
    """slixmpp's client, noting when bytes last came in and stanzas last went out."""

    def __init__(self, jid: str, password: str, **kwargs: Any) -> None:
        super().__init__(jid, password, **kwargs)
        self.last_received = time.monotonic()
        self.last_sent = 0.0
        self.on_unanswered: Callable[[], None] | None = None  # the first send after the last data in

    def data_received(self, data: bytes | str) -> None:
        self.last_received = time.monotonic()
        super().data_received(data)

    def send(self, data: Any, use_filters: bool = True) -> None:
        if self.transport is not None:
            answered = self.last_sent <= self.last_received
            self.last_sent = time.monotonic()
            if answered and self.on_unanswered is not None:
                self.on_unanswered()
        if not use_filters and not self._session_started and self.transport is not None:
            # XEP-0198 re-sends the unacknowledged stanzas on <resumed/> before the session
            # counts as started; slixmpp would queue them behind what was written while
            # offline, out of order. They go first, as the stream had them.
            self.waiting_queue.put_nowait((data, use_filters))
            return
        super().send(data, use_filters)


class XmppSession:
    """One client for the car's account, kept online until ``stop()``."""

    def __init__(self, account: AccountConfig, *, session: SessionConfig | None = None,
                 backoff: Backoff | None = None, operators: Sequence[str] = ()) -> None:
        self.account = account
        self.operators = tuple(operators)  # they get the detailed status, as directed presence
        self.config = session or SessionConfig()
        self._backoff = backoff or Backoff(self.config.reconnect_initial, self.config.reconnect_cap,
                                           jitter=1.0)
        self._online = asyncio.Event()
        self._stopping = False
        self._reconnect: asyncio.TimerHandle | None = None
        self._monitor: asyncio.Task[None] | None = None
        self._presence: PresenceUpdate | None = None
        self._sent_presence: PresenceUpdate | None = None
        self._active = True
        self.online: Event[None] = Event("xmpp online")  # a fresh session or a resumed one
        self.offline: Event[None] = Event("xmpp offline")  # the link dropped (not at stop)
        self.fresh_session: Event[None] = Event("xmpp fresh session")  # before ``online``; not on resumption
        self.last_error: str | None = None
        self.sasl_mechanism: str | None = None
        self.resumptions = 0
        self.fresh_sessions = 0
        self.dead_links = 0
        self.client = self._make_client()

    @property
    def is_online(self) -> bool:
        return self._online.is_set()

    @property
    def is_resumable(self) -> bool:
        """Stream management is on with resumption: a dropped link can be resumed."""
        return bool(self.client.plugin["xep_0198"].sm_id) and "stream_management" in self.client.features

    @property
    def jid(self) -> str:
        return self.account.jid

    def enable(self, plugin: type[P], **config: object) -> P:
        """Enable one of the agent's plugins on this session's client (:mod:`agent.xmpp.plugins`)."""
        return enable(self.client, plugin, **config)

    def connection(self) -> ConnectionStatus:
        """Where the link stands now; the one place its state and its line for people are worked out."""
        online, resumable, error = self.is_online, self.is_resumable, self.last_error
        state: LinkState
        if online:
            state, detail = "online", "online (stream resumable)" if resumable else "online"
        elif resumable:
            state, detail = "resuming", f"resuming ({error})" if error else "resuming"
        elif error:
            state, detail = "offline", f"offline ({error})"
        else:
            state, detail = "connecting", "connecting"
        return ConnectionStatus(state, detail, online, resumable, self.resumptions, self.fresh_sessions, error)

    def _make_client(self) -> HeadunitClient:
        mechs = set(SCRAM) | ({"PLAIN"} if self.account.allow_plain else set())
        client = HeadunitClient(f"{self.account.jid}/{self.account.resource}", self.account.password,
                                plugin_config={"feature_mechanisms": {"use_mechs": mechs},
                                               "xep_0198": {"allow_resume": self.config.resume}})
        direct = self.account.tls == "direct"
        client.enable_direct_tls = direct
        client.enable_starttls = not direct
        client.enable_plaintext = False
        if self.account.ca_file is not None:
            client.ca_certs = Path(self.account.ca_file)
        for plugin in ("xep_0030", "xep_0115", "xep_0199", "xep_0198", "xep_0352"):
            client.register_plugin(plugin)
        client.plugin["xep_0030"].add_identity(category="client", itype="bot", name="headunit")
        client.plugin["xep_0115"].caps_node = CAPS_NODE
        roster: Any = client.roster  # slixmpp types it bool, but None is its "leave it to the application"
        roster.auto_authorize = None  # the contacts policy decides, per contact
        client.roster.auto_subscribe = False
        handlers: dict[str, Callable[..., Any]] = {
            "session_start": self._on_session_start, "session_resumed": self._on_resumed,
            "disconnected": self._on_disconnected, "connection_failed": self._on_connection_failed,
            "failed_all_auth": self._on_failed_auth, "auth_success": self._on_auth_success,
            "ssl_invalid_chain": self._on_invalid_chain, "ssl_cert": self._on_certificate,
            "csi_enabled": self._on_csi_enabled, FEATURES_CHANGED: self._on_features_changed,
        }
        for event, handler in handlers.items():
            client.add_event_handler(event, handler)
        return client

    # -- lifecycle -----------------------------------------------------------

    def start(self) -> None:
        """Begin connecting; returns at once (the car works offline too)."""
        self._stopping = False
        self._connect()

    async def wait_online(self, timeout: float) -> None:
        try:
            async with asyncio.timeout(timeout):  # not wait_for: on 3.11 it can swallow a cancel
                await self._online.wait()
        except TimeoutError as exc:
            raise AgentTimeout(
                f"not online as {self.account.jid} after {timeout:.0f} s: {self.last_error or 'no answer'}"
            ) from exc

    async def stop(self, timeout: float = 3.0) -> None:
        """Say goodbye (unavailable presence), close the stream for good; idempotent.

        The server has ``timeout`` seconds to close its side; the link is dropped after it,
        and also when the stop is cancelled (the agent's stop stage overran).
        """
        self._stopping = True
        self._cancel_reconnect()
        self._stop_monitor()
        client = self.client
        client.cancel_connection_attempt()
        try:
            if self.is_online:
                client.send_presence(ptype="unavailable", pstatus="Agent stopped")
                client.end_session_on_disconnect = True  # a deliberate end: no resumption
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(timeout):
                        await client.disconnect(wait=min(1.0, timeout))
        finally:
            client.abort()
            self._online.clear()
            filters = getattr(client, "_run_out_filters", None)  # slixmpp only cancels it when collected
            if filters is not None and not filters.done():
                filters.cancel()

    def _connect(self) -> None:
        self._reconnect = None
        if self._stopping:
            return
        host, port = self.account.host, self.account.port
        where = f"{host}:{port}" if host else JID(self.account.jid).domain
        log.info("connecting to %s as %s (%s)", where, self.account.jid, self.account.tls)
        if host:
            self.client.connect(host, port or (5223 if self.account.tls == "direct" else 5222))
        else:
            self.client.connect()

    def _schedule_reconnect(self) -> None:
        if self._stopping or self._reconnect is not None:
            return
        delay = self._backoff.next_delay()
        log.info("reconnecting in %.1f s", delay)
        self._reconnect = asyncio.get_running_loop().call_later(delay, self._connect)

    def _cancel_reconnect(self) -> None:
        if self._reconnect is not None:
            self._reconnect.cancel()
            self._reconnect = None

    # -- presence and client state -------------------------------------------

    def send_presence_update(self, update: PresenceUpdate) -> None:
        """Send now if online; otherwise it goes out as soon as the session is back."""
        self._presence = update
        if self.is_online:
            self._send_presence(update)

    def _send_presence(self, update: PresenceUpdate) -> None:
        """Everyone sees ``status``; then each operator who follows the car gets its own, more detailed one."""
        self.client.send_presence(**_presence_arguments(update))
        self._sent_presence = update
        if update.operators_status is not None and update.show != "unavailable":
            for operator in self.following_operators():
                self._send_directed(operator, update)

    def _send_directed(self, jid: str, update: PresenceUpdate) -> None:
        arguments = _presence_arguments(update)
        arguments["pstatus"] = update.for_operators
        self.client.send_presence(pto=jid, **arguments)

    def following_operators(self) -> list[str]:
        """Operators in the roster allowed to see the car's presence (subscription from or both)."""
        if not self.operators:
            return []
        roster = self.client.client_roster
        return [str(jid) for jid in list(roster) if roster[jid]["from"] and is_operator(str(jid), self.operators)]

    def contact_changed(self, jid: str) -> None:
        """A contact's subscription changed: an operator who now follows the car gets the detailed status."""
        update = self._sent_presence
        if (update is None or update.operators_status is None or update.show == "unavailable"
                or not self.is_online or jid not in self.following_operators()):
            return
        self._send_directed(jid, update)

    def set_active(self, is_active: bool) -> None:
        """XEP-0352: tell the server whether anyone is looking (it may hold back non-urgent traffic)."""
        if is_active == self._active:
            return
        self._active = is_active
        if self.is_online:
            self._send_client_state()

    def _send_client_state(self) -> None:
        csi = surface.client_state(self.client)  # sends nothing if the server did not offer CSI
        (csi.send_active if self._active else csi.send_inactive)()

    # -- session events --------------------------------------------------------

    async def _on_session_start(self, _: Any) -> None:
        """A fresh session (first login, or the server had forgotten ours)."""
        self.fresh_sessions += 1
        self._came_online()
        try:
            await self.client.get_roster(timeout=10)
        except (slixmpp.exceptions.IqError, slixmpp.exceptions.IqTimeout) as exc:
            log.warning("roster not loaded: %s", exc)
        await self._update_caps()  # before the first presence: it carries them
        if self._presence is not None:
            self._send_presence(self._presence)
        else:
            self.client.send_presence()
        log.info("online as %s (SASL %s, %s)", self.client.boundjid, self.sasl_mechanism,
                 "stream management on" if "stream_management" in self.client.features else "no resumption")
        self.fresh_session.emit(None)
        self.online.emit(None)

    def _on_resumed(self, _: Any) -> None:
        """The server kept our session: nothing was lost, only catch up on presence."""
        self.resumptions += 1
        self._came_online()
        if self._presence is not None and self._presence != self._sent_presence:
            self._send_presence(self._presence)
        log.info("session resumed (%d so far)", self.resumptions)
        self.online.emit(None)

    async def _update_caps(self) -> bool:
        """XEP-0115: hash our disco#info as it is now, for every available presence; True if it changed."""
        caps, me = surface.caps(self.client), self.client.boundjid.full
        before = await caps.get_verstring(me)
        await caps.update_caps(jid=me, broadcast=False)
        after = await caps.get_verstring(me)
        if after != before:
            log.debug("entity capabilities: %s", after)
        return after != before

    async def _on_features_changed(self, _: Any) -> None:
        """A feature came or went: contacts learn the new caps with the same presence sent again."""
        if self.client.boundjid.resource and await self._update_caps() and self.is_online \
                and self._sent_presence is not None:
            self._send_presence(self._sent_presence)

    def _came_online(self) -> None:
        self._backoff.reset()
        self.last_error = None
        self._online.set()
        self._start_monitor()

    def _on_csi_enabled(self, _: Any) -> None:
        """The server takes client states (negotiated after the session started): say ours if idle."""
        if not self._active:
            self._send_client_state()

    def _on_auth_success(self, _: Any) -> None:
        mech = self.client.plugin["feature_mechanisms"].mech
        self.sasl_mechanism = getattr(mech, "name", None)

    def _on_disconnected(self, reason: Any) -> None:
        was_online = self.is_online
        self._online.clear()
        self._stop_monitor()
        if self._stopping:
            log.info("disconnected")
            return
        if was_online:
            log.warning("disconnected from the server: %s", reason or "connection lost")
            self.offline.emit(None)
        self._schedule_reconnect()

    def _on_connection_failed(self, error: Any) -> None:
        """slixmpp would retry on its own schedule, the same for every car: use ours, jittered."""
        self.last_error = f"connection failed: {error}"
        log.warning("cannot reach the server: %s", error)
        self.client.cancel_connection_attempt()
        self._schedule_reconnect()

    def _on_failed_auth(self, _: Any) -> None:
        self.last_error = f"the server refused the credentials of {self.account.jid}"
        log.error("%s", self.last_error)

    def _on_invalid_chain(self, exc: ssl.SSLError) -> None:
        self.last_error = f"the server's TLS certificate is not trusted: {exc}"
        log.error("%s (CA file: %s)", self.last_error, self.account.ca_file or "system CAs")
        self.client.abort()

    def _on_certificate(self, pem: str) -> None:
        if not self.account.pin_sha256:
            return
        from agent.xmpp.pinning import pin_matches, spki_sha256  # pyasn1: ~3 MB a car without pins never needs

        if pin_matches(pem, self.account.pin_sha256):
            return
        self.last_error = (f"the server's key {spki_sha256(pem)} is not one of the pinned keys "
                           f"({', '.join(self.account.pin_sha256)})")
        log.error("%s", self.last_error)
        self.client.abort()

    # -- dead links ------------------------------------------------------------

    def _start_monitor(self) -> None:
        self._stop_monitor()
        client = self.client
        monitor = LinkMonitor(
            last_received=lambda: client.last_received, last_sent=lambda: client.last_sent,
            send_probe=self._probe, ping_interval=self.config.ping_interval,
            ping_timeout=self.config.ping_timeout)
        client.on_unanswered = monitor.poke
        self._monitor = asyncio.create_task(self._watch(monitor), name="xmpp-link-monitor")

    def _stop_monitor(self) -> None:
        self.client.on_unanswered = None
        if self._monitor is not None and self._monitor is not asyncio.current_task():
            self._monitor.cancel()
        self._monitor = None

    async def _watch(self, monitor: LinkMonitor) -> None:
        await monitor.run()
        self.dead_links += 1
        self.last_error = f"no answer from the server for {self.config.ping_timeout:.0f} s"
        self.client.abort()  # no stream close: the server keeps the session for resumption

    def _probe(self) -> None:
        server = JID(JID(self.account.jid).domain)
        probe = self.client.plugin["xep_0199"].send_ping(server, timeout=self.config.ping_timeout)
        probe.add_done_callback(_ignore_result)


def _presence_arguments(update: PresenceUpdate) -> dict[str, Any]:
    """slixmpp's send_presence arguments; show "unavailable" makes the car appear offline."""
    if update.show == "unavailable":
        return {"ptype": "unavailable", "pstatus": update.status}
    arguments: dict[str, Any] = {"pstatus": update.status, "ppriority": update.priority}
    if update.show is not None:
        arguments["pshow"] = update.show
    return arguments


def _ignore_result(future: asyncio.Future[Any]) -> None:
    """The monitor judges the link by any incoming data; the ping's own outcome does not matter."""
    if not future.cancelled():
        future.exception()

