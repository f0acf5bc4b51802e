"""A private Prosody 0.12 run as a child process, for tests and ``make run``.

Everything lives under one folder (config, data, pidfile, log), listens on
loopback only, and never touches the system service or ``/etc/prosody``.
"""

from __future__ import annotations

import atexit
import collections
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO, Self, TypeAlias

from devserver.pki import Pki, make_pki

HOST = "127.0.0.1"
START_TIMEOUT = 20.0
STOP_TIMEOUT = 10.0
TAIL_LINES = 40

# What a modern client expects; XEP-0363 uploads are a component (see _config_text).
DEFAULT_MODULES: tuple[str, ...] = (
    "roster", "saslauth", "tls", "disco", "carbons", "pep", "private", "blocklist",
    "vcard4", "vcard_legacy", "version", "uptime", "time", "ping", "register",
    "admin_adhoc", "smacks", "mam", "csi_simple", "limits",
)  # fmt: skip

# Relaxed for tests that push data, but present so mod_limits runs as in production.
DEFAULT_LIMITS: Mapping[str, Mapping[str, str]] = {"c2s": {"rate": "1mb/s", "burst": "4s"}}

# XEP-0363: the largest file the upload component takes (tests upload a few MB).
UPLOAD_SIZE_LIMIT = 16 * 1024 * 1024

USERNAME_PATTERN = re.compile(r"^[a-z0-9._-]{1,64}$")

LuaValue: TypeAlias = "str | int | bool | Sequence[LuaValue] | Mapping[str, LuaValue]"

# The ``xmpp_account`` fixture: ``factory(prefix="user") -> (jid, password)``.
AccountFactory: TypeAlias = Callable[..., tuple[str, str]]


class ProsodyError(RuntimeError):
    """Base class of the harness's Prosody errors."""


class ProsodyStartError(ProsodyError):
    """Prosody did not come up (bad config, port taken, TLS broken, timeout)."""


class ProsodyRegisterError(ProsodyError):
    """prosodyctl could not create an account."""


@dataclass(frozen=True)
class ServerInfo:
    """Where a client finds the server and the CA it must trust."""

    host: str
    port: int
    domain: str
    ca_file: Path
    direct_tls_port: int
    http_port: int
    https_port: int = 0  # serves XEP-0363 uploads as https://<domain>:<https_port>/ (0: none)


def free_port(host: str = HOST, exclude: Iterable[int] = ()) -> int:
    """A TCP port the kernel says is free on ``host`` right now (racy, fine for tests)."""
    excluded = set(exclude)
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind((host, 0))
            port: int = sock.getsockname()[1]
        if port not in excluded:
            return port
    raise ProsodyStartError(f"no free TCP port on {host}")


def lua(value: LuaValue) -> str:
    """Render a Python value as a Lua literal for Prosody's config file."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
        return f'"{escaped}"'
    if isinstance(value, Mapping):
        return "{ " + "; ".join(f"[{lua(k)}] = {lua(v)}" for k, v in value.items()) + " }"
    return "{ " + ", ".join(lua(item) for item in value) + " }"


class Prosody:
    """One private Prosody: writes its config, starts, stops and registers users."""

    def __init__(
        self,
        folder: Path,
        domain: str = "localhost",
        c2s_port: int | None = None,
        http_port: int | None = None,
        modules: Sequence[str] = DEFAULT_MODULES,
        *,
        direct_tls_port: int | None = None,
        pki: Pki | None = None,
        limits: Mapping[str, Mapping[str, str]] = DEFAULT_LIMITS,
        password_hash: str = "SHA-256",
        log_level: str = "info",
        console: IO[str] | None = None,
        admins: Sequence[str] = ("fleet",),
        https_port: int | None = None,
        upload: bool = False,
    ) -> None:
        self.folder = Path(folder).resolve()
        self.domain = domain
        self.modules = tuple(modules)
        self.limits = limits
        self.password_hash = password_hash
        self.log_level = log_level
        # Server admins (user names): the fleet's account, owner of every PubSub node; in
        # Prosody 0.12 only admins create nodes, so the fleet provisions each car's node.
        self.admins = tuple(admins)
        self.pki = pki or make_pki(self.folder / "pki", (domain,))
        self.c2s_port = c2s_port or free_port()
        self.direct_tls_port = direct_tls_port or free_port(exclude={self.c2s_port})
        self.http_port = http_port or free_port(exclude={self.c2s_port, self.direct_tls_port})
        self.https_port = https_port or free_port(
            exclude={self.c2s_port, self.direct_tls_port, self.http_port}
        )
        # XEP-0363 upload component ``upload.<domain>``, served on https_port (which is
        # bound only then: Prosody opens HTTP ports once an HTTP module is loaded).
        self.upload = upload
        self._console = console
        self._process: subprocess.Popen[str] | None = None
        self._pump: threading.Thread | None = None
        self._output: collections.deque[str] = collections.deque(maxlen=TAIL_LINES)

    # -- paths and info ---------------------------------------------------

    @property
    def config_path(self) -> Path:
        """The generated ``prosody.cfg.lua``."""
        return self.folder / "prosody.cfg.lua"

    @property
    def data_path(self) -> Path:
        """Prosody's storage (accounts, rosters, archives)."""
        return self.folder / "data"

    @property
    def log_path(self) -> Path:
        """Prosody's log file, at ``log_level``."""
        return self.folder / "prosody.log"

    @property
    def pidfile(self) -> Path:
        """The pidfile Prosody writes and locks while it runs."""
        return self.folder / "prosody.pid"

    @property
    def pid(self) -> int | None:
        """Process id of the running Prosody, or None."""
        return self._process.pid if self.is_running and self._process else None

    @property
    def is_running(self) -> bool:
        """True while the child process we started is alive."""
        return self._process is not None and self._process.poll() is None

    def server_info(self) -> ServerInfo:
        """Host, ports, domain and CA file a client needs."""
        return ServerInfo(
            HOST, self.c2s_port, self.domain, self.pki.ca_cert, self.direct_tls_port,
            self.http_port, self.https_port,
        )  # fmt: skip

    @property
    def upload_host(self) -> str | None:
        """The HTTP File Upload service (XEP-0363), or None when disabled."""
        return f"upload.{self.domain}" if self.upload else None

    @property
    def pubsub_host(self) -> str:
        """The PubSub service (XEP-0060) for telemetry."""
        return f"pubsub.{self.domain}"

    def jid(self, user: str) -> str:
        """The bare JID of ``user`` on this server."""
        return f"{user}@{self.domain}"

    # -- config -----------------------------------------------------------

    def write_config(self) -> Path:
        """Create the folder layout and (re)write the config; return its path."""
        self.folder.mkdir(parents=True, exist_ok=True)
        # Prosody and prosodyctl run as us (as root only with run_as_root), so
        # our own umask-default modes are enough; 0o750 keeps data private.
        self.data_path.mkdir(mode=0o750, exist_ok=True)
        tmp = self.config_path.with_suffix(".tmp")
        tmp.write_text(self._config_text())
        tmp.replace(self.config_path)
        return self.config_path

    def _global_options(self) -> dict[str, LuaValue]:
        """Options of the global section, in the order they are written."""
        loopback = [HOST]
        return {
            "run_as_root": os.geteuid() == 0,
            "pidfile": str(self.pidfile),
            "data_path": str(self.data_path),
            "certificates": str(self.pki.folder),
            "log": [
                {"levels": {"min": self.log_level}, "to": "file", "filename": str(self.log_path)},
                {"levels": {"min": "warn"}, "to": "console"},
            ],
            "interfaces": loopback,
            "local_interfaces": loopback,
            "c2s_ports": [self.c2s_port],
            "c2s_direct_tls_ports": [self.direct_tls_port],
            "http_ports": [self.http_port],
            "http_interfaces": loopback,
            "https_ports": [self.https_port],
            "https_interfaces": loopback,
            # The server certificate covers the domain, the name upload URLs use.
            "https_certificate": str(self.pki.cert),
            "c2s_require_encryption": True,
            "allow_unencrypted_plain_auth": False,
            "authentication": "internal_hashed",
            # 0.12 stores one SCRAM hash per account and offers only that SCRAM-*
            # mechanism (plus PLAIN, over TLS only); its default is SHA-1.
            "password_hash": self.password_hash,
            "storage": "internal",
            "allow_registration": False,
            "admins": [self.jid(user) for user in self.admins],
            "modules_enabled": list(self.modules),
            "modules_disabled": ["s2s"],
            "limits": {name: dict(limit) for name, limit in self.limits.items()},
            # XEP-0313: archive every chat message, so a car that was offline catches up.
            "default_archive_policy": True,
            "archive_expires_after": "1w",
        }

    def _config_text(self) -> str:
        """The whole ``prosody.cfg.lua``."""
        lines = [
            "-- Generated by tests/harness/prosody.py; rewritten on every start.",
            "-- A private Prosody on loopback only: not the system service.",
        ]
        lines += [f"{key} = {lua(value)}" for key, value in self._global_options().items()]
        lines += [
            "",
            f"VirtualHost {lua(self.domain)}",
            f"\tssl = {lua({'certificate': str(self.pki.cert), 'key': str(self.pki.key)})}",
            "",
            "-- XEP-0060 PubSub service: the fleet's telemetry nodes live here.",
            f"Component {lua(self.pubsub_host)} \"pubsub\"",
            "\tpubsub_max_items = 100000",
            "",
        ]
        return "\n".join(lines + self._upload_lines())

    def _upload_lines(self) -> list[str]:
        """The XEP-0363 component, or nothing when ``upload`` is off.

        Its HTTP routes are bound to the domain's name (``http_host``) and its URLs
        are ``https://<domain>:<https_port>/file_share/<slot>/<name>``, so the
        domain's certificate verifies them; see mod_http_file_share.
        """
        if not self.upload_host:
            return []
        return [
            "-- XEP-0363 HTTP File Upload: photos and log bundles from the car.",
            f"Component {lua(self.upload_host)} \"http_file_share\"",
            f"\thttp_host = {lua(self.domain)}",
            f"\thttp_external_url = {lua(f'https://{self.domain}:{self.https_port}/')}",
            f"\thttp_file_share_size_limit = {UPLOAD_SIZE_LIMIT}",
            "",
        ]

    # -- lifecycle --------------------------------------------------------

    def start(self, timeout: float = START_TIMEOUT) -> None:
        """Write the config, start Prosody and wait until STARTTLS on c2s verifies."""
        if self.is_running:
            return
        self._refuse_stale_instance()
        self._check_ports_free()
        self.write_config()
        self._spawn()
        try:
            self._wait_until_ready(timeout)
        except BaseException:
            self.stop()
            raise
        atexit.register(self.stop)

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        """SIGTERM, then SIGKILL after ``timeout``; safe to call twice."""
        process, self._process = self._process, None
        if process is None:
            return
        atexit.unregister(self.stop)
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if self._pump is not None:
            self._pump.join(timeout)
            self._pump = None
        if process.stdout is not None:
            process.stdout.close()

    def restart(self, timeout: float = START_TIMEOUT) -> None:
        """Stop and start again on the same ports, keeping data and accounts."""
        self.stop()
        self.start(timeout)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _refuse_stale_instance(self) -> None:
        """Fail clearly if a Prosody we no longer own still holds our pidfile."""
        pid = read_pidfile(self.pidfile)
        if pid is not None and is_prosody_for(pid, self.config_path):
            raise ProsodyStartError(
                f"another Prosody (pid {pid}) already runs from {self.folder}; "
                f"stop it first (kill {pid})"
            )

    def _check_ports_free(self) -> None:
        """Fail fast and clearly when one of our ports is taken (Prosody would just log it)."""
        for port in (self.c2s_port, self.direct_tls_port, self.http_port, self.https_port):
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                try:
                    sock.bind((HOST, port))
                except OSError as exc:
                    raise ProsodyStartError(f"port {HOST}:{port} is not available: {exc}") from exc

    def _spawn(self) -> None:
        """Start ``prosody -F`` in its own session, pumping its console output."""
        binary = shutil.which("prosody")
        if binary is None:
            raise ProsodyStartError("prosody not found on PATH (Debian package 'prosody')")
        self._output.clear()
        self._process = subprocess.Popen(
            [binary, "-F", "--config", str(self.config_path)],
            cwd=self.folder,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            errors="replace",
            # Its own session: a terminal Ctrl-C goes to our child command, and
            # we stop Prosody afterwards in order.
            start_new_session=True,
        )
        self._pump = threading.Thread(
            target=self._pump_output, args=(self._process,), name="prosody-console", daemon=True
        )
        self._pump.start()

    def _pump_output(self, process: subprocess.Popen[str]) -> None:
        """Copy Prosody's console (warnings and worse) to our stderr, keeping a tail."""
        assert process.stdout is not None
        for line in process.stdout:
            self._output.append(line.rstrip("\n"))
            if "Received SIGTERM" in line:
                continue  # that is us stopping it, not news
            console = self._console or sys.stderr
            try:
                console.write(f"prosody[{process.pid}]: {line}")
                console.flush()
            except (OSError, ValueError):
                pass  # our stderr went away (interpreter shutdown): keep draining the pipe

    def _wait_until_ready(self, timeout: float) -> None:
        """Poll until c2s accepts and STARTTLS verifies against our CA, or fail with the log."""
        deadline = time.monotonic() + timeout
        context = self.pki.client_context()
        last_error: Exception | None = None
        while time.monotonic() < deadline:
            if self._process is None or self._process.poll() is not None:
                code = self._process.returncode if self._process else None
                raise ProsodyStartError(f"prosody exited with code {code}{self._tail()}")
            try:
                probe_starttls(HOST, self.c2s_port, self.domain, context, timeout=2.0)
                return
            except (OSError, ProsodyError) as exc:
                last_error = exc
                time.sleep(0.1)
        raise ProsodyStartError(
            f"prosody not ready on {HOST}:{self.c2s_port} after {timeout:.0f}s "
            f"(last error: {last_error}){self._tail()}"
        )

    def _tail(self) -> str:
        """The last lines of Prosody's console output and log file, for error messages."""
        parts = []
        if self._output:
            parts.append("console:\n  " + "\n  ".join(self._output))
        try:
            lines = self.log_path.read_text(errors="replace").splitlines()[-TAIL_LINES:]
        except OSError:
            lines = []
        if lines:
            parts.append(f"{self.log_path}:\n  " + "\n  ".join(lines))
        return ("\n" + "\n".join(parts)) if parts else ""

    # -- accounts ---------------------------------------------------------

    def register(self, user: str, password: str, timeout: float = 30.0) -> str:
        """Create ``user`` (or reset its password) with prosodyctl; return the bare JID."""
        if not USERNAME_PATTERN.match(user):
            raise ValueError(f"invalid username {user!r}: use 1-64 of a-z 0-9 . _ -")
        if not password or "\n" in password:
            raise ValueError("password must be non-empty and on one line")
        if not self.config_path.exists():
            self.write_config()
        binary = shutil.which("prosodyctl")
        if binary is None:
            raise ProsodyRegisterError("prosodyctl not found on PATH (Debian package 'prosody')")
        # The password goes through stdin (asked twice), never on the command line.
        command = [binary, "--config", str(self.config_path), "register", user, self.domain]
        try:
            done = subprocess.run(
                command, input=f"{password}\n{password}\n", capture_output=True, text=True,
                cwd=self.folder, timeout=timeout, check=False,
            )  # fmt: skip
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise ProsodyRegisterError(f"cannot run prosodyctl register {user}: {exc}") from exc
        if done.returncode != 0:
            output = (done.stdout + done.stderr).strip()
            raise ProsodyRegisterError(
                f"prosodyctl register {user} {self.domain} failed ({done.returncode}): {output}"
            )
        return self.jid(user)


def probe_starttls(
    host: str, port: int, domain: str, context: ssl.SSLContext, timeout: float
) -> None:
    """Open an XMPP c2s stream, negotiate STARTTLS and verify the certificate."""
    with socket.create_connection((host, port), timeout=timeout) as raw:
        raw.sendall(
            f"<?xml version='1.0'?><stream:stream to='{domain}' version='1.0' "
            "xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>".encode()
        )
        _read_until(raw, b"</stream:features>")
        raw.sendall(b"<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>")
        if b"<proceed" not in _read_until(raw, b"/>"):
            raise ProsodyError(f"{host}:{port} refused STARTTLS")
        with context.wrap_socket(raw, server_hostname=domain) as tls:
            tls.sendall(b"</stream:stream>")


def _read_until(sock: socket.socket, marker: bytes, limit: int = 65536) -> bytes:
    """Read from ``sock`` until ``marker`` appears; raise on EOF or oversize."""
    data = b""
    while marker not in data:
        chunk = sock.recv(4096)
        if not chunk:
            raise ProsodyError(f"stream closed before {marker!r}: {data[-200:]!r}")
        data += chunk
        if len(data) > limit:
            raise ProsodyError(f"no {marker!r} in the first {limit} bytes")
    return data


def read_pidfile(path: Path) -> int | None:
    """The pid in ``path``, or None when missing or garbled."""
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def is_prosody_for(pid: int, config_path: Path) -> bool:
    """True when ``pid`` is a live Prosody started with ``config_path`` (not a reused pid)."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return str(config_path).encode() in argv
