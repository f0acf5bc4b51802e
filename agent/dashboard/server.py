"""The dashboard's web server (:mod:`agent.dashboard.web`) in the agent process, on loopback by default.

``/`` is the page, ``/static/...`` its files (nothing outside ``static/``), ``/healthz``
answers ``ok`` for the kiosk unit to wait on, and ``/ws`` is the WebSocket of
:mod:`agent.dashboard.hub`, upgraded only for the per-start token and a page of this
server's own origin (docs/dashboard-protocol.md). Every response carries a strict
Content-Security-Policy and may not be framed.
"""

from __future__ import annotations

import errno
import hmac
import ipaddress
import logging
from pathlib import Path

from agent.cabin.api import DriverApi
from agent.dashboard.hub import MAX_FRAME, Hub
from agent.dashboard.limits import LogLimiter
from agent.dashboard.web import Request, Response, Upgrade, WebServer, static_file
from agent.dashboard.token import URL_FILE, new_token, publish, withdraw
from agent.errors import AgentStartError
from agent.profile.model import DashboardConfig

log = logging.getLogger(__name__)

STATIC = Path(__file__).resolve().parent / "static"
SECURITY_HEADERS = {
    "Content-Security-Policy": ("default-src 'self'; connect-src 'self'; img-src 'self' data:; "
                                "style-src 'self'; script-src 'self'"),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}
HEARTBEAT = 30.0  # s between WebSocket pings: a page that vanished is noticed
SHUTDOWN_TIMEOUT = 2.0  # s for handlers still running at stop


class DashboardStartError(AgentStartError):
    """The dashboard cannot listen (the port is taken, the address is not this machine's)."""


class Dashboard:
    """The touchscreen's web UI: serves the page and its WebSocket while the agent runs."""

    def __init__(self, api: DriverApi, config: DashboardConfig, data_dir: Path, *,
                 static_dir: Path | None = None) -> None:
        self.config = config
        self.data_dir = data_dir  # where the address and this start's token are published
        self.static_dir = static_dir or STATIC
        self.hub = Hub(api, config)
        self._token = ""
        self._server: WebServer | None = None
        self._port: int | None = None
        self._refusals = LogLimiter(log)

    @property
    def port(self) -> int:
        """The port listened on (the one picked, with port 0 in the profile)."""
        return self._port if self._port is not None else self.config.port

    @property
    def address(self) -> str:
        """The page's address without the token, as it is logged."""
        return f"http://{_url_host(self.config.host)}:{self.port}/"

    @property
    def url(self) -> str:
        """The page's address with this start's token in the fragment (never sent to a server)."""
        return f"{self.address}#token={self._token}"

    @property
    def clients(self) -> int:
        """How many pages are connected."""
        return self.hub.clients

    # -- lifecycle -------------------------------------------------------------------

    async def start(self) -> None:
        """Listen, publish the token and the address, follow the agent; DashboardStartError if it cannot."""
        if self._server is not None:
            return
        if not self.config.allow_remote and not ipaddress.ip_address(self.config.host).is_loopback:
            raise DashboardStartError(f"dashboard: {self.config.host} is not a loopback address; "
                                      "listening there needs allow_remote = true")
        self._token = new_token()
        server = WebServer(self._route, headers=SECURITY_HEADERS)  # and no-store, unless a file says no-cache
        try:
            await server.start(self.config.host, self.config.port)
        except OSError as exc:
            raise DashboardStartError(f"dashboard: cannot listen on {self.config.host}:{self.config.port}: "
                                      f"{_reason(exc)}") from exc
        self._server = server
        self._port = server.port
        try:
            publish(self.data_dir, self._token, self.url)
        except OSError as exc:
            raise DashboardStartError(f"dashboard: cannot write its address into {self.data_dir}: "
                                      f"{exc.strerror or exc}") from exc
        self.hub.start()
        log.info("dashboard at %s (token in %s)", self.address, self.data_dir / URL_FILE)

    async def stop(self) -> None:
        """Withdraw the token, close every page ("going away"), stop listening; idempotent."""
        server, self._server = self._server, None
        if server is None:
            return
        withdraw(self.data_dir)
        await self.hub.stop()
        await server.stop(SHUTDOWN_TIMEOUT)
        log.info("dashboard closed")

    # -- HTTP ------------------------------------------------------------------------

    async def _route(self, request: Request) -> Response | Upgrade:
        if request.path == "/":
            page = static_file(self.static_dir, "index.html")
            return page or Response.text(404, "the dashboard page is not installed\n")
        if request.path == "/healthz":
            return Response.text(200, "ok\n")
        if request.path == "/ws":
            return self._websocket(request)
        if request.path.startswith("/static/"):
            found = static_file(self.static_dir, request.path.removeprefix("/static/"))
            if found is not None:
                found.headers["Cache-Control"] = "no-cache"  # revalidated; the page itself is no-store
                return found
        return Response.text(404, "not found\n")

    def _websocket(self, request: Request) -> Response | Upgrade:
        """Upgrade only for this start's token and this server's own origin; else 403, no upgrade."""
        peer = request.remote or "?"
        problem = self._refusal(request)
        if problem is not None:
            self._refusals.warning("dashboard: WebSocket from %s refused: %s", peer, problem)
            return Response.text(403, f"dashboard: {problem}\n")
        if not request.is_websocket_upgrade:
            return Response.text(400, "dashboard: expected a WebSocket upgrade\n")
        return Upgrade(lambda ws: self.hub.serve(ws, peer), max_message=4 * MAX_FRAME, heartbeat=HEARTBEAT)

    def _refusal(self, request: Request) -> str | None:
        """Why this upgrade is refused, or None."""
        given = request.query.get("token", "")
        if not given:
            return "no token"
        if not hmac.compare_digest(given.encode(), self._token.encode()):
            return "wrong token"
        host = _host_name(request.host)
        if not self.config.allow_remote and not _is_local_name(host):
            return f"Host {request.host[:80]!r} is not this machine"  # DNS rebinding
        origin = request.headers.get("origin")
        if origin is not None and origin.lower() != f"http://{request.host}".lower():
            return f"foreign origin {origin[:80]!r}"
        return None


def _host_name(host: str) -> str:
    """The name part of a Host header: "127.0.0.1:8470" → "127.0.0.1", "[::1]:8470" → "[::1]"."""
    if host.startswith("["):
        return host[: host.find("]") + 1] if "]" in host else host
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def _is_local_name(host: str) -> bool:
    """An IP address, or localhost: what a kiosk or an SSH tunnel uses (never a DNS name)."""
    if host.lower() == "localhost":
        return True
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return True


def _url_host(host: str) -> str:
    """The host as a browser on this machine reaches it: any-address means loopback; IPv6 in brackets."""
    address = ipaddress.ip_address(host)
    if address.is_unspecified:
        address = ipaddress.ip_address("::1" if address.version == 6 else "127.0.0.1")
    return f"[{address}]" if address.version == 6 else str(address)


def _reason(exc: OSError) -> str:
    if exc.errno == errno.EADDRINUSE:
        return "address in use"
    if exc.errno == errno.EADDRNOTAVAIL:
        return "not an address of this machine"
    return exc.strerror or str(exc)
