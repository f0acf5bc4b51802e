"""The agent's XMPP session: STARTTLS with verification, SCRAM, reconnection, presence.

This is the only package that knows slixmpp. Certificate verification is never
turned off: the server must present a certificate for the account's domain
signed by the profile's CA (or a system CA when the profile names none).
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import slixmpp
from slixmpp.jid import JID

from agent.errors import AgentTimeout
from agent.policies.presence import PresenceUpdate
from agent.profile.model import AccountConfig
from drivers.backoff import Backoff

log = logging.getLogger(__name__)

# SCRAM only: the password never crosses the wire, even inside TLS.
SASL_MECHANISMS = {"SCRAM-SHA-256", "SCRAM-SHA-1"}


def is_operator(jid: str, operators: Sequence[str]) -> bool:
    """True if the bare JID is listed, or its domain is listed as "@domain"."""
    bare = JID(jid).bare.lower()
    domain = JID(jid).domain.lower()
    return any(bare == op.lower() or op.lower() == f"@{domain}" for op in operators)


class XmppSession:
    """One slixmpp client for the car's account, kept online until ``stop()``."""

    def __init__(self, account: AccountConfig, operators: Sequence[str] = (), *,
                 backoff: Backoff | None = None) -> None:
        self.account = account
        self.operators = tuple(operators)
        self._backoff = backoff or Backoff(initial=1.0, cap=60.0)
        self._online = asyncio.Event()
        self._stopping = False
        self._reconnect: asyncio.TimerHandle | None = None
        self._presence: PresenceUpdate | None = None
        self.when_online: list[Callable[[], None]] = []
        self.when_offline: list[Callable[[], None]] = []
        self.last_error: str | None = None
        self.sasl_mechanism: str | None = None
        self.client = self._make_client()

    @property
    def is_online(self) -> bool:
        return self._online.is_set()

    def _make_client(self) -> slixmpp.ClientXMPP:
        jid = f"{self.account.jid}/{self.account.resource}"
        client = slixmpp.ClientXMPP(jid, self.account.password, plugin_config={
            "feature_mechanisms": {"use_mechs": set(SASL_MECHANISMS)},
        })
        client.enable_direct_tls = False
        client.enable_starttls = True
        client.enable_plaintext = False
        if self.account.ca_file is not None:
            client.ca_certs = Path(self.account.ca_file)
        client.register_plugin("xep_0030")
        client.register_plugin("xep_0199")
        client.roster.auto_authorize = None  # we decide, per contact
        client.roster.auto_subscribe = False
        client.add_event_handler("session_start", self._on_session_start)
        client.add_event_handler("disconnected", self._on_disconnected)
        client.add_event_handler("connection_failed", self._on_connection_failed)
        client.add_event_handler("failed_auth", self._on_failed_auth)
        client.add_event_handler("auth_success", self._on_auth_success)
        client.add_event_handler("ssl_invalid_chain", self._on_invalid_chain)
        client.add_event_handler("presence_subscribe", self._on_subscribe)
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
        """Say goodbye (unavailable presence) and disconnect; idempotent."""
        self._stopping = True
        if self._reconnect is not None:
            self._reconnect.cancel()
            self._reconnect = None
        client = self.client
        client.cancel_connection_attempt()
        if self.is_online:
            client.send_presence(ptype="unavailable", pstatus="Agent stopped")
            try:
                async with asyncio.timeout(timeout):
                    await client.disconnect(wait=1.0)
            except TimeoutError:
                client.abort()
        else:
            client.abort()
        self._online.clear()

    def _connect(self) -> None:
        self._reconnect = None
        if self._stopping:
            return
        host, port = self.account.host, self.account.port
        log.info("connecting to %s as %s", f"{host}:{port}" if host else JID(self.account.jid).domain,
                 self.account.jid)
        if host:
            self.client.connect(host, port or 5222)
        else:
            self.client.connect()

    # -- presence ------------------------------------------------------------

    def send_presence_update(self, update: PresenceUpdate) -> None:
        """Send now if online; in any case it is what goes out at the next session start."""
        self._presence = update
        if self.is_online:
            self._send_presence(update)

    def _send_presence(self, update: PresenceUpdate) -> None:
        kwargs: dict[str, Any] = {"pstatus": update.status, "ppriority": update.priority}
        if update.show is not None:
            kwargs["pshow"] = update.show
        self.client.send_presence(**kwargs)

    # -- events --------------------------------------------------------------

    async def _on_session_start(self, _: Any) -> None:
        self._backoff.reset()
        self.last_error = None
        try:
            await self.client.get_roster(timeout=10)
        except (slixmpp.exceptions.IqError, slixmpp.exceptions.IqTimeout) as exc:
            log.warning("roster not loaded: %s", exc)
        if self._presence is not None:
            self._send_presence(self._presence)
        else:
            self.client.send_presence()
        self._online.set()
        log.info("online as %s (SASL %s)", self.client.boundjid, self.sasl_mechanism)
        _call_all(self.when_online)

    def _on_auth_success(self, _: Any) -> None:
        mech = self.client.plugin["feature_mechanisms"].mech
        self.sasl_mechanism = getattr(mech, "name", None)

    def _on_disconnected(self, reason: Any) -> None:
        was_online = self.is_online
        self._online.clear()
        if self._stopping:
            log.info("disconnected")
            return
        if was_online:
            log.warning("disconnected from the server: %s", reason or "connection lost")
            _call_all(self.when_offline)
        if self._reconnect is not None:
            return
        delay = self._backoff.next_delay()
        log.info("reconnecting in %.1f s", delay)
        self._reconnect = asyncio.get_running_loop().call_later(delay, self._connect)

    def _on_connection_failed(self, error: Any) -> None:
        self.last_error = f"connection failed: {error}"
        log.warning("cannot reach the server: %s", error)

    def _on_failed_auth(self, stanza: Any) -> None:
        self.last_error = f"the server refused the credentials of {self.account.jid}"
        log.error("%s (%s)", self.last_error, stanza["condition"] if stanza is not None else "?")

    def _on_invalid_chain(self, exc: ssl.SSLError) -> None:
        self.last_error = f"the server's TLS certificate is not trusted: {exc}"
        log.error("%s (CA file: %s)", self.last_error, self.account.ca_file or "system CAs")
        self.client.abort()

    def _on_subscribe(self, presence: Any) -> None:
        """Operators are approved at once; everyone else waits (the driver decides, later)."""
        who = presence["from"].bare
        if is_operator(who, self.operators):
            log.info("subscription from operator %s approved", who)
            self.client.send_presence_subscription(pto=who, ptype="subscribed")
            if self._presence is not None:
                self.client.send_presence(pto=who, pstatus=self._presence.status,
                                          ppriority=self._presence.priority,
                                          **({"pshow": self._presence.show} if self._presence.show else {}))
        else:
            log.info("subscription request from %s left pending", who)


def _call_all(callbacks: Sequence[Callable[[], None]]) -> None:
    for callback in callbacks:
        try:
            callback()
        except Exception:
            log.exception("callback %r failed", callback)
