"""The harness itself: the throw-away PKI, the private Prosody and the devserver CLI.

Everything here talks to the real thing: openssl-made certificates checked by
Python's ssl, a Prosody child process, slixmpp clients over STARTTLS.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import signal
import socket
import ssl
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import psutil
import pytest
from slixmpp import ClientXMPP

from devserver.pki import Pki, make_pki
from devserver.prosody import (
    HOST,
    AccountFactory,
    Prosody,
    ProsodyStartError,
    ServerInfo,
    free_port,
    is_prosody_for,
    lua,
    probe_starttls,
)

REPO = Path(__file__).resolve().parents[1]
WAIT = 15.0  # generous: only there so a broken server cannot hang the suite


# -- helpers ---------------------------------------------------------------


@contextlib.asynccontextmanager
async def tls_server(pki: Pki) -> AsyncIterator[int]:
    """A TLS server with the PKI's server certificate that greets with b"hello"."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(pki.cert, pki.key)

    async def greet(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"hello")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(greet, HOST, 0, ssl=context)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        await server.wait_closed()


async def tls_greeting(port: int, context: ssl.SSLContext, server_hostname: str) -> bytes:
    """Connect with ``context`` checking ``server_hostname`` and read the greeting."""
    reader, writer = await asyncio.wait_for(
        asyncio.open_connection(HOST, port, ssl=context, server_hostname=server_hostname), WAIT
    )
    try:
        return await asyncio.wait_for(reader.readexactly(5), WAIT)
    finally:
        writer.close()


def san_of(cert: Path) -> str:
    """The subjectAltName extension of ``cert`` as openssl prints it."""
    return subprocess.run(
        ["openssl", "x509", "-in", str(cert), "-noout", "-ext", "subjectAltName"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip


class Client:
    """A slixmpp ClientXMPP on STARTTLS only, recording the events a login goes through."""

    EVENTS = (
        "session_start", "auth_success", "failed_auth", "failed_all_auth", "no_auth",
        "ssl_invalid_chain", "connection_failed", "disconnected",
    )  # fmt: skip

    def __init__(self, jid: str, password: str, server: ServerInfo, ca_file: Path) -> None:
        self.server = server
        self.xmpp = ClientXMPP(jid, password)
        self.xmpp.ca_certs = Path(ca_file)
        self.xmpp.enable_direct_tls = False
        self.xmpp.enable_starttls = True
        self.xmpp.enable_plaintext = False
        self.seen: list[str] = []
        self._queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        for name in self.EVENTS:
            self.xmpp.add_event_handler(name, functools.partial(self._record, name))

    def _record(self, name: str, data: Any = None) -> None:
        self.seen.append(name)
        self._queue.put_nowait((name, data))

    def connect(self) -> None:
        """Start connecting to the server's c2s port (not via DNS)."""
        self.xmpp.connect(self.server.host, self.server.port)

    async def wait_for(self, name: str, timeout: float = WAIT) -> Any:
        """Consume recorded events until ``name`` arrives; return its data."""
        async with asyncio.timeout(timeout):
            while True:
                event, data = await self._queue.get()
                if event == name:
                    return data

    @property
    def mechanism(self) -> str | None:
        """The SASL mechanism slixmpp chose last."""
        mech = self.xmpp.plugin["feature_mechanisms"].mech
        return None if mech is None else str(mech.name)

    @property
    def offered(self) -> set[str]:
        """The SASL mechanisms the server offered."""
        return set(self.xmpp.plugin["feature_mechanisms"].mech_list)

    async def close(self) -> None:
        """Stop reconnecting, close the stream, and end slixmpp's send task."""
        self.xmpp.cancel_connection_attempt()
        if self.xmpp.transport is not None:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self.xmpp.disconnect(wait=1.0), WAIT)
        self.xmpp.abort()
        # slixmpp only cancels its outgoing-filter task in __del__; end it with the test.
        task = self.xmpp._run_out_filters
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)


@contextlib.asynccontextmanager
async def client(
    jid: str, password: str, server: ServerInfo, ca_file: Path
) -> AsyncIterator[Client]:
    """A connecting Client, closed on exit."""
    probe = Client(jid, password, server, ca_file)
    probe.connect()
    try:
        yield probe
    finally:
        await probe.close()


def listening_ports(pid: int) -> set[tuple[str, int]]:
    """(address, port) of every TCP socket ``pid`` listens on."""
    return {
        (conn.laddr.ip, conn.laddr.port)
        for conn in psutil.Process(pid).net_connections(kind="inet")
        if conn.status == psutil.CONN_LISTEN
    }


def port_accepts(port: int) -> bool:
    """True when something accepts TCP connections on HOST:port."""
    try:
        socket.create_connection((HOST, port), timeout=2).close()
    except OSError:
        return False
    return True


# -- PKI -------------------------------------------------------------------


@pytest.mark.timeout(30)
async def test_server_cert_verifies_for_localhost_and_loopback_ip(pki: Pki) -> None:
    """Python's ssl, trusting only our CA with hostname checks on, accepts the cert."""
    async with tls_server(pki) as port:
        assert await tls_greeting(port, pki.client_context(), "localhost") == b"hello"
        assert await tls_greeting(port, pki.client_context(), "127.0.0.1") == b"hello"


@pytest.mark.timeout(30)
async def test_wrong_hostname_is_refused(pki: Pki) -> None:
    """The same cert presented for another name fails hostname verification."""
    async with tls_server(pki) as port:
        with pytest.raises(ssl.SSLCertVerificationError, match="[Hh]ostname mismatch"):
            await tls_greeting(port, pki.client_context(), "example.org")


@pytest.mark.timeout(30)
async def test_another_ca_is_refused(pki: Pki, tmp_path: Path) -> None:
    """A client trusting a different throw-away CA rejects our server cert."""
    other = make_pki(tmp_path / "other")
    assert other.ca_cert.read_bytes() != pki.ca_cert.read_bytes()
    async with tls_server(pki) as port:
        with pytest.raises(ssl.SSLCertVerificationError, match="unable to get local issuer"):
            await tls_greeting(port, other.client_context(), "localhost")


def test_make_pki_layout_and_key_modes(pki: Pki) -> None:
    """Files carry the names Prosody looks up; private keys are owner-only."""
    assert pki.cert.name == "localhost.crt" and pki.key.name == "localhost.key"
    assert pki.ca_cert.name == "ca.pem" and pki.ca_key.name == "ca.key"
    assert (pki.key.stat().st_mode & 0o777, pki.ca_key.stat().st_mode & 0o777) == (0o600, 0o600)
    assert "DNS:localhost" in san_of(pki.cert) and "IP Address:127.0.0.1" in san_of(pki.cert)


def test_make_pki_reuses_valid_files(tmp_path: Path) -> None:
    """A second call keeps every byte; a lost server cert is reissued by the same CA."""
    first = make_pki(tmp_path)
    files = {path: path.read_bytes() for path in tmp_path.iterdir()}
    make_pki(tmp_path)
    assert {path: path.read_bytes() for path in tmp_path.iterdir()} == files

    first.cert.unlink()
    second = make_pki(tmp_path)
    assert second.ca_cert.read_bytes() == files[first.ca_cert]
    assert second.cert.read_bytes() != files[first.cert]
    ssl.create_default_context(cafile=str(second.ca_cert))  # still a loadable CA


def test_make_pki_reissues_for_new_hostnames_and_replaces_garbage(tmp_path: Path) -> None:
    """Asking for more names reissues the cert; an unreadable CA is regenerated."""
    make_pki(tmp_path)
    wider = make_pki(tmp_path, ("localhost", "car.example"))
    assert "DNS:car.example" in san_of(wider.cert)

    wider.ca_cert.write_text("not a certificate\n")
    fresh = make_pki(tmp_path)
    verify = subprocess.run(
        ["openssl", "verify", "-CAfile", str(fresh.ca_cert), str(fresh.cert)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert verify.returncode == 0, verify.stderr


def test_make_pki_needs_a_hostname(tmp_path: Path) -> None:
    """An empty hostname list is a clear error, not an unusable certificate."""
    with pytest.raises(ValueError, match="hostname"):
        make_pki(tmp_path, ())


# -- Prosody, session server -------------------------------------------------


def test_prosody_listens_on_loopback_only_and_no_s2s(prosody: Prosody) -> None:
    """Only our c2s and direct-TLS ports are bound, on 127.0.0.1 (no 5269, no 5280)."""
    assert prosody.pid is not None
    assert listening_ports(prosody.pid) == {
        (HOST, prosody.c2s_port),
        (HOST, prosody.direct_tls_port),
    }


def test_config_is_self_contained(prosody: Prosody) -> None:
    """The generated config points at our folder, never /etc or /var."""
    text = prosody.config_path.read_text()
    assert "/etc/" not in text and "/var/" not in text
    for needle in (str(prosody.data_path), str(prosody.pidfile), str(prosody.log_path)):
        assert lua(needle) in text
    assert 'modules_disabled = { "s2s" }' in text
    assert "c2s_require_encryption = true" in text
    assert prosody.pidfile.read_text().strip() == str(prosody.pid)


@pytest.mark.timeout(30)
def test_direct_tls_port_verifies(prosody: Prosody, pki: Pki) -> None:
    """The direct TLS port presents our certificate for the domain (via SNI)."""
    context = pki.client_context()
    with socket.create_connection((HOST, prosody.direct_tls_port), timeout=WAIT) as raw:
        with context.wrap_socket(raw, server_hostname=prosody.domain) as tls:
            peer = tls.getpeercert()
    assert peer is not None and ("DNS", "localhost") in peer["subjectAltName"]


@pytest.mark.timeout(30)
async def test_client_logs_in_with_scram_over_verified_starttls(
    prosody_server: ServerInfo, xmpp_account: AccountFactory
) -> None:
    """A slixmpp client verifying our CA gets a session, authenticated with SCRAM."""
    jid, password = xmpp_account("car")
    async with client(jid, password, prosody_server, prosody_server.ca_file) as probe:
        await probe.wait_for("session_start")
        assert probe.xmpp.transport is not None
        tls = probe.xmpp.transport.get_extra_info("ssl_object")
        print("SASL mechanisms offered:", sorted(probe.offered), "used:", probe.mechanism)
        assert probe.mechanism == "SCRAM-SHA-256"
        assert probe.offered == {"SCRAM-SHA-256", "PLAIN"}
        assert tls is not None and tls.version() in ("TLSv1.2", "TLSv1.3")
        assert str(probe.xmpp.boundjid.bare) == jid
        assert "failed_auth" not in probe.seen


@pytest.mark.timeout(30)
async def test_client_trusting_another_ca_is_refused(
    prosody_server: ServerInfo, xmpp_account: AccountFactory, tmp_path: Path
) -> None:
    """Verification is on: with someone else's CA the STARTTLS handshake fails."""
    other = make_pki(tmp_path / "other")
    jid, password = xmpp_account("car")
    async with client(jid, password, prosody_server, other.ca_cert) as probe:
        error = await probe.wait_for("ssl_invalid_chain")
        assert isinstance(error, ssl.SSLCertVerificationError)
        assert "session_start" not in probe.seen and "auth_success" not in probe.seen


@pytest.mark.timeout(30)
async def test_wrong_password_fails_authentication(
    prosody_server: ServerInfo, xmpp_account: AccountFactory
) -> None:
    """A wrong password is refused for every mechanism and no session starts."""
    jid, _ = xmpp_account("car")
    async with client(jid, "wrong-password", prosody_server, prosody_server.ca_file) as probe:
        failure = await probe.wait_for("failed_auth")
        await probe.wait_for("failed_all_auth")
        assert failure["condition"] == "not-authorized"
        assert "session_start" not in probe.seen and "auth_success" not in probe.seen


@pytest.mark.timeout(30)
async def test_register_again_resets_the_password(
    prosody: Prosody, prosody_server: ServerInfo
) -> None:
    """Registering an existing user sets the new password (devserver relies on this)."""
    user = f"again-{os.getpid()}"
    prosody.register(user, "first-password")
    jid = prosody.register(user, "second-password")
    async with client(jid, "second-password", prosody_server, prosody_server.ca_file) as probe:
        await probe.wait_for("session_start")
    async with client(jid, "first-password", prosody_server, prosody_server.ca_file) as probe:
        await probe.wait_for("failed_all_auth")
        assert "session_start" not in probe.seen


@pytest.mark.parametrize("user", ["", "Upper", "with space", "a@b", "a/b", "x" * 65])
def test_register_rejects_bad_usernames(prosody: Prosody, user: str) -> None:
    """Usernames prosodyctl would mangle are refused before calling it."""
    with pytest.raises(ValueError, match="invalid username"):
        prosody.register(user, "password")


# -- Prosody, own instances ---------------------------------------------------


@pytest.mark.timeout(60)
async def test_restart_keeps_accounts_and_client_reconnects(pki: Pki, tmp_path: Path) -> None:
    """After a restart on the same ports the same account logs in again."""
    server = Prosody(tmp_path / "prosody", pki=pki)
    await asyncio.to_thread(server.start)
    try:
        jid = server.register("restart-user", "restart-password")
        async with client(jid, "restart-password", server.server_info(), pki.ca_cert) as probe:
            await probe.wait_for("session_start")
            first_pid = server.pid
            await asyncio.to_thread(server.restart)
            await probe.wait_for("disconnected")
            probe.connect()
            await probe.wait_for("session_start")
            assert probe.seen.count("session_start") == 2
        assert server.pid is not None and server.pid != first_pid
    finally:
        await asyncio.to_thread(server.stop)
    server.stop()  # twice is fine
    assert not server.is_running and not server.pidfile.exists()
    assert not port_accepts(server.c2s_port)


@pytest.mark.timeout(60)
async def test_sha1_password_hash_offers_scram_sha1(pki: Pki, tmp_path: Path) -> None:
    """With Prosody's own default hash, clients log in with SCRAM-SHA-1 instead."""
    server = Prosody(tmp_path, pki=pki, password_hash="SHA-1")
    await asyncio.to_thread(server.start)
    try:
        jid = server.register("sha1-user", "sha1-password")
        async with client(jid, "sha1-password", server.server_info(), pki.ca_cert) as probe:
            await probe.wait_for("session_start")
            assert probe.offered == {"SCRAM-SHA-1", "PLAIN"}
            assert probe.mechanism == "SCRAM-SHA-1"
    finally:
        await asyncio.to_thread(server.stop)


@pytest.mark.timeout(60)
def test_start_failure_reports_prosody_output(tmp_path: Path) -> None:
    """A Prosody whose TLS cannot verify is not 'ready'; the error carries its log."""
    wrong = make_pki(tmp_path / "pki", ("example.org",))
    server = Prosody(tmp_path / "prosody", pki=wrong, modules=("no_such_module", "tls"))
    with pytest.raises(ProsodyStartError) as caught:
        server.start(timeout=3.0)
    message = str(caught.value)
    assert "Hostname mismatch" in message or "doesn't match" in message
    assert "no_such_module" in message
    assert not server.is_running and not port_accepts(server.c2s_port)


def test_port_in_use_is_reported(tmp_path: Path, pki: Pki) -> None:
    """A taken port fails fast with the port in the message."""
    with socket.socket() as taken:
        taken.bind((HOST, 0))
        taken.listen()
        port = taken.getsockname()[1]
        server = Prosody(tmp_path, pki=pki, c2s_port=port)
        with pytest.raises(ProsodyStartError, match=f"{HOST}:{port}"):
            server.start()
    assert not server.is_running


def test_second_instance_on_same_folder_is_refused(tmp_path: Path, pki: Pki) -> None:
    """Two Prosodies never share one data folder."""
    with Prosody(tmp_path, pki=pki) as first:
        with pytest.raises(ProsodyStartError, match=f"pid {first.pid}"):
            Prosody(tmp_path, pki=pki).start()
        assert first.is_running


# -- devserver ----------------------------------------------------------------

CHILD_LOGIN = """
import asyncio, os, sys
from pathlib import Path
from slixmpp import ClientXMPP

async def main():
    env = os.environ
    car_password = Path(env["HEADUNIT_DEMO_CAR_PASSWORD_FILE"]).read_text().strip()
    agent = (env["HEADUNIT_JID"], env["HEADUNIT_PASSWORD"], env["HEADUNIT_PORT"])
    if agent != (env["HEADUNIT_DEMO_CAR_JID"], car_password, env["HEADUNIT_DEMO_XMPP_PORT"]):
        return 8
    password = Path(env["HEADUNIT_DEMO_OPERATOR_PASSWORD_FILE"]).read_text().strip()
    xmpp = ClientXMPP(env["HEADUNIT_DEMO_OPERATOR_JID"], password)
    xmpp.ca_certs = Path(env["HEADUNIT_DEMO_XMPP_CA_FILE"])
    xmpp.enable_direct_tls, xmpp.enable_plaintext = False, False
    started = asyncio.get_running_loop().create_future()
    xmpp.add_event_handler("session_start", lambda _: started.set_result(True))
    xmpp.add_event_handler("failed_all_auth", lambda _: started.set_result(False))
    xmpp.connect(env["HEADUNIT_DEMO_XMPP_HOST"], int(env["HEADUNIT_DEMO_XMPP_PORT"]))
    ok = await asyncio.wait_for(started, 15)
    await xmpp.disconnect()
    return 7 if ok else 1

sys.exit(asyncio.run(main()))
"""

CHILD_WAIT = """
import sys, time
print("child ready", flush=True)
time.sleep(60)
"""


def devserver_args(folder: Path) -> list[str]:
    """Command line for the devserver on free ports under ``folder``."""
    c2s, tls, http = free_port(), free_port(), free_port()
    return [
        "--folder", str(folder), "--port", str(c2s), "--direct-tls-port", str(tls),
        "--http-port", str(http), "--account", "car", "--account", "operator",
    ]  # fmt: skip


def devserver(action: str, *args: str) -> list[str]:
    """``python -m devserver ACTION ARGS``."""
    return [sys.executable, "-m", "devserver", action, *args]


@pytest.mark.timeout(60)
def test_devserver_run_gives_the_command_a_working_server(tmp_path: Path) -> None:
    """`run -- CMD`: CMD gets the car's HEADUNIT_* and logs in as operator; its status returns."""
    args = devserver_args(tmp_path)
    done = subprocess.run(
        devserver("run", *args, "--", sys.executable, "-c", CHILD_LOGIN),
        cwd=REPO, capture_output=True, text=True, timeout=45, check=False,
    )  # fmt: skip
    assert done.returncode == 7, done.stdout + done.stderr
    assert "operator@localhost" in done.stdout and str(tmp_path / "pki" / "ca.pem") in done.stdout
    for name in ("car", "operator"):
        path = tmp_path / "demo" / f"{name}.password"
        assert path.stat().st_mode & 0o777 == 0o600 and len(path.read_text().strip()) >= 16
    assert not (tmp_path / "prosody" / "prosody.pid").exists()
    assert not port_accepts(int(args[3]))


@pytest.mark.timeout(60)
def test_devserver_setup_is_idempotent(tmp_path: Path) -> None:
    """A second setup reuses the CA and the passwords."""
    args = devserver_args(tmp_path)
    subprocess.run(devserver("setup", *args), cwd=REPO, capture_output=True, check=True, timeout=30)
    kept = {p: p.read_bytes() for p in [*tmp_path.glob("demo/*.password"), tmp_path / "pki/ca.pem"]}
    subprocess.run(devserver("setup", *args), cwd=REPO, capture_output=True, check=True, timeout=30)
    assert len(kept) == 3
    assert {p: p.read_bytes() for p in kept} == kept


@pytest.mark.timeout(60)
async def test_devserver_sigterm_stops_prosody(tmp_path: Path) -> None:
    """`run` without a command serves until SIGTERM, then stops Prosody and exits 0."""
    args = devserver_args(tmp_path)
    process = await asyncio.create_subprocess_exec(
        *devserver("run", *args), cwd=REPO, stdout=asyncio.subprocess.PIPE
    )
    try:
        lines = await asyncio.wait_for(read_until(process, "Press Ctrl-C"), WAIT)
        context = make_pki(tmp_path / "pki").client_context()  # reuses the devserver's CA
        probe_starttls(HOST, int(args[3]), "localhost", context, timeout=5)
        process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(process.wait(), WAIT) == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    pid = int(lines.split("running (pid ")[1].split(")")[0])
    assert not is_prosody_for(pid, tmp_path / "prosody" / "prosody.cfg.lua")
    assert not port_accepts(int(args[3]))


@pytest.mark.timeout(60)
async def test_devserver_forwards_sigint_to_the_command(tmp_path: Path) -> None:
    """Without a terminal, SIGINT is passed to CMD; its status comes back, Prosody stops."""
    args = devserver_args(tmp_path)
    process = await asyncio.create_subprocess_exec(
        *devserver("run", *args, "--", sys.executable, "-c", CHILD_WAIT),
        cwd=REPO, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        await asyncio.wait_for(read_until(process, "child ready"), WAIT)
        process.send_signal(signal.SIGINT)
        code = await asyncio.wait_for(process.wait(), WAIT)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert code == 128 + signal.SIGINT
    assert not port_accepts(int(args[3]))


async def read_until(process: asyncio.subprocess.Process, marker: str) -> str:
    """Read ``process`` stdout until a line contains ``marker``; return all of it."""
    assert process.stdout is not None
    text = ""
    while marker not in text:
        line = await process.stdout.readline()
        if not line:
            raise AssertionError(f"stdout ended before {marker!r}: {text}")
        text += line.decode()
    return text
