"""The agent's XMPP session on a real Prosody: verified TLS (STARTTLS, Direct TLS, pins), SCRAM, refusals, restart."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import hashlib
from pathlib import Path

import pytest
from slixmpp import JID

from agent.policies.contacts import SubscriptionPolicy
from agent.policies.presence import PresenceUpdate
from agent.profile.model import AccountConfig, ContactsConfig
from agent.xmpp.client import XmppSession
from agent.xmpp.plugins.contacts import ContactsPlugin
from agent.xmpp.pinning import spki_sha256
from drivers.backoff import Backoff
from devserver.clients import Watcher, close_client, log_in, verified_client
from devserver.pki import make_pki
from devserver.prosody import AccountFactory, Prosody, ServerInfo


def account(server: ServerInfo, jid: str, password: str, ca: Path | None = None) -> AccountConfig:
    return AccountConfig(jid=jid, password=password, host=server.host, port=server.port,
                         ca_file=ca or server.ca_file)


async def test_connects_with_verified_starttls_and_scram(prosody_server: ServerInfo, xmpp_account: AccountFactory) -> None:
    jid, password = xmpp_account("car")
    session = XmppSession(account(prosody_server, jid, password))
    session.start()
    try:
        await session.wait_online(20)
        assert session.sasl_mechanism is not None and session.sasl_mechanism.startswith("SCRAM-")
        assert session.client.is_connected() and str(session.client.boundjid) == f"{jid}/headunit"
    finally:
        await session.stop()
    assert not session.is_online


async def test_a_server_certificate_from_another_ca_is_refused(prosody_server: ServerInfo,
                                                               xmpp_account: AccountFactory, tmp_path: Path) -> None:
    jid, password = xmpp_account("car")
    other_ca = make_pki(tmp_path / "other").ca_cert
    session = XmppSession(account(prosody_server, jid, password, other_ca), backoff=Backoff(0.05, 0.1))
    session.start()
    try:
        with pytest.raises(TimeoutError, match="not trusted"):
            await session.wait_online(3)
        assert session.last_error is not None and "certificate" in session.last_error
    finally:
        await session.stop()


async def test_wrong_credentials_are_reported_and_never_online(prosody_server: ServerInfo,
                                                               xmpp_account: AccountFactory) -> None:
    jid, _ = xmpp_account("car")
    session = XmppSession(account(prosody_server, jid, "not the password"), backoff=Backoff(0.05, 0.1))
    session.start()
    try:
        with pytest.raises(TimeoutError, match="refused the credentials"):
            await session.wait_online(3)
    finally:
        await session.stop()


async def test_after_a_server_restart_the_session_comes_back_with_the_current_presence(tmp_path: Path) -> None:
    with Prosody(tmp_path / "server") as server:
        info = server.server_info()
        car = server.register("car", "car-password")
        operator = server.register("operator", "op-password")
        session = XmppSession(account(info, car, "car-password"), backoff=Backoff(initial=0.2, cap=1.0))
        session.enable(ContactsPlugin, policy=SubscriptionPolicy.from_profile(ContactsConfig(), [operator]))
        session.send_presence_update(PresenceUpdate("dnd", "Driving · 50 km/h", 0))
        session.start()
        watcher = Watcher(operator, "op-password", info, car)
        try:
            await session.wait_online(20)
            await watcher.start()
            await watcher.wait_for(lambda: any(p.show == "dnd" for p in watcher.seen), timeout=10)
            await watcher.stop()
            server.restart()
            session.send_presence_update(PresenceUpdate(None, "Parked", 0))  # while the link is down
            await session.wait_online(30)
            watcher.seen.clear()
            await watcher.start()
            await watcher.wait_for(lambda: any(p.status == "Parked" for p in watcher.seen), timeout=10)
            assert [p.show for p in watcher.seen if p.type == "available"][-1] == ""
        finally:
            await session.stop()
            await watcher.stop()


async def test_direct_tls_xep_0368(prosody_server: ServerInfo, xmpp_account: AccountFactory) -> None:
    jid, password = xmpp_account("car")
    config = AccountConfig(jid=jid, password=password, host=prosody_server.host,
                           port=prosody_server.direct_tls_port, ca_file=prosody_server.ca_file, tls="direct")
    session = XmppSession(config)
    session.start()
    try:
        await session.wait_online(20)
        assert session.client.is_connected()
    finally:
        await session.stop()


async def test_a_pinned_key_is_accepted_and_any_other_refused(prosody: Prosody, xmpp_account: AccountFactory) -> None:
    server = prosody.server_info()
    jid, password = xmpp_account("car")
    right = spki_sha256(prosody.pki.cert.read_text())
    wrong = base64.b64encode(hashlib.sha256(b"another key").digest()).decode()
    good = XmppSession(dataclasses.replace(account(server, jid, password), pin_sha256=(wrong, right)))
    good.start()
    try:
        await good.wait_online(20)
    finally:
        await good.stop()
    bad = XmppSession(dataclasses.replace(account(server, jid, password), pin_sha256=(wrong,)),
                      backoff=Backoff(0.05, 0.1))
    bad.start()
    try:
        with pytest.raises(TimeoutError, match="not one of the pinned keys"):
            await bad.wait_online(3)
    finally:
        await bad.stop()


async def test_scram_sha_1_is_accepted_when_the_server_has_no_sha_256(tmp_path: Path) -> None:
    with Prosody(tmp_path / "server", password_hash="SHA-1") as server:
        info = server.server_info()
        session = XmppSession(account(info, server.register("car", "pw"), "pw"))
        session.start()
        try:
            await session.wait_online(20)
            assert session.sasl_mechanism == "SCRAM-SHA-1"
        finally:
            await session.stop()


def test_plain_is_only_offered_to_the_library_when_the_profile_allows_it(prosody_server: ServerInfo) -> None:
    strict = XmppSession(account(prosody_server, "car@localhost", "pw"))
    lenient = XmppSession(dataclasses.replace(account(prosody_server, "car@localhost", "pw"), allow_plain=True))
    assert strict.client.plugin["feature_mechanisms"].use_mechs == {"SCRAM-SHA-256", "SCRAM-SHA-1"}
    assert lenient.client.plugin["feature_mechanisms"].use_mechs == {"SCRAM-SHA-256", "SCRAM-SHA-1", "PLAIN"}
    assert not strict.client.plugin["feature_mechanisms"].unencrypted_plain, "never PLAIN outside TLS"
    assert not strict.client.enable_plaintext


async def test_disco_and_caps_describe_the_car(prosody_server: ServerInfo, xmpp_account: AccountFactory) -> None:
    car, car_pw = xmpp_account("car")
    peer, peer_pw = xmpp_account("peer")
    session = XmppSession(account(prosody_server, car, car_pw))
    session.start()
    other = verified_client(peer, peer_pw, prosody_server, plugins=["xep_0030"])
    try:
        await session.wait_online(20)
        await log_in(other, prosody_server)
        info = await other.plugin["xep_0030"].get_info(jid=JID(f"{car}/headunit"), timeout=10)
        identities = {(c, t) for c, t, _, _ in info["disco_info"]["identities"]}
        features = set(info["disco_info"]["features"])
    finally:
        await session.stop()
        await close_client(other)
    assert ("client", "bot") in identities
    assert {"urn:xmpp:ping", "http://jabber.org/protocol/caps", "http://jabber.org/protocol/disco#info"} <= features


async def test_client_state_indication_follows_set_active(prosody_server: ServerInfo,
                                                         xmpp_account: AccountFactory) -> None:
    jid, password = xmpp_account("car")
    session = XmppSession(account(prosody_server, jid, password))
    sent = record_raw(session)
    session.start()
    try:
        await session.wait_online(20)
        async with asyncio.timeout(10):  # negotiated after the session starts
            while not session.client.plugin["xep_0352"].enabled:
                await asyncio.sleep(0.02)
        session.set_active(False)  # the agent does this when the ignition goes off
        session.set_active(False)  # no repeat
        session.set_active(True)
        await asyncio.sleep(0.2)
    finally:
        await session.stop()
    assert [state for state in sent if state in ("active", "inactive")] == ["inactive", "active"]


def record_raw(session: XmppSession) -> list[str]:
    """What the client writes on the stream (slixmpp sends CSI raw, past the stanza filters)."""
    sent: list[str] = []
    write = session.client.send_raw

    def send_raw(data: str | bytes) -> None:
        text = data.decode() if isinstance(data, bytes) else data
        sent.extend(state for state in ("inactive", "active") if text.startswith(f"<{state} "))
        write(data)

    session.client.send_raw = send_raw  # type: ignore[method-assign]  # a spy on the stream
    return sent


async def test_a_car_that_starts_with_the_ignition_off_says_inactive_once_csi_is_negotiated(
        prosody_server: ServerInfo, xmpp_account: AccountFactory) -> None:
    jid, password = xmpp_account("car")
    session = XmppSession(account(prosody_server, jid, password))
    sent = record_raw(session)
    session.set_active(False)  # before connecting
    session.start()
    try:
        await session.wait_online(20)
        async with asyncio.timeout(10):
            while "inactive" not in sent:
                await asyncio.sleep(0.02)
    finally:
        await session.stop()
    assert sent.count("inactive") == 1 and "active" not in sent
