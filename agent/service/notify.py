"""sd_notify(3) without libsystemd: tell the service manager we are ready, alive, stopping.

systemd gives a ``Type=notify`` service ``$NOTIFY_SOCKET``, a UNIX datagram socket
(a path, or ``@name`` for the abstract namespace), and with ``WatchdogSec=`` also
``$WATCHDOG_USEC`` (and ``$WATCHDOG_PID``). A message is one datagram of
newline-separated ``VARIABLE=value`` lines. Outside systemd (no ``$NOTIFY_SOCKET``)
every call is a no-op, and a failure to send is logged once and never raised: the
car must not stop because its service manager went away.
"""

from __future__ import annotations

import errno
import logging
import os
import socket
from collections.abc import Mapping

log = logging.getLogger(__name__)

MAX_STATUS = 200  # characters of a STATUS= line (systemctl status shows one line)


def watchdog_interval(environ: Mapping[str, str] | None = None, pid: int | None = None) -> float | None:
    """Seconds within which systemd wants WATCHDOG=1 (``$WATCHDOG_USEC``), or None when off.

    ``$WATCHDOG_PID`` names the process meant; another process's watchdog is not ours.
    """
    env = os.environ if environ is None else environ
    raw, owner = env.get("WATCHDOG_USEC", "").strip(), env.get("WATCHDOG_PID", "").strip()
    if not raw.isdecimal() or int(raw) == 0:
        return None
    if owner and owner != str(os.getpid() if pid is None else pid):
        return None
    return int(raw) / 1_000_000


class Notifier:
    """Sends sd_notify messages to ``address``; with None (not under systemd) it sends nothing."""

    def __init__(self, address: str | None) -> None:
        self.address = address or None
        self._socket: socket.socket | None = None
        self._warned = False
        self.sent = 0  # messages delivered to the socket
        self.failed = 0  # messages lost (logged once)

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] | None = None) -> Notifier:
        """The notifier systemd asks for through ``$NOTIFY_SOCKET`` (none outside a notify service)."""
        env = os.environ if environ is None else environ
        return cls(env.get("NOTIFY_SOCKET", "").strip() or None)

    @property
    def is_enabled(self) -> bool:
        return self.address is not None

    def notify(self, **fields: object) -> bool:
        """Send one message, e.g. ``notify(READY=1, STATUS="online")``; True if it was delivered."""
        if self.address is None or not fields:
            return False
        message = "\n".join(f"{name}={_one_line(value)}" for name, value in fields.items()).encode()
        try:
            self._sock().sendto(message, socket.MSG_DONTWAIT, _sockaddr(self.address))
        except OSError as exc:
            self._lost(exc, message)
            return False
        self.sent += 1
        return True

    def ready(self, status: str | None = None) -> bool:
        """READY=1 (with our pid as MAINPID, so a wrapper in between cannot confuse systemd)."""
        extra = {} if status is None else {"STATUS": status}
        return self.notify(READY=1, MAINPID=os.getpid(), **extra)

    def status(self, text: str) -> bool:
        """STATUS=: the one line ``systemctl status`` shows."""
        return self.notify(STATUS=text[:MAX_STATUS])

    def watchdog(self) -> bool:
        """WATCHDOG=1: we are alive; without it within WatchdogSec= systemd kills and restarts us."""
        return self.notify(WATCHDOG=1)

    def stopping(self, status: str | None = None) -> bool:
        """STOPPING=1: the stop has begun (systemd shows "deactivating")."""
        extra = {} if status is None else {"STATUS": status}
        return self.notify(STOPPING=1, **extra)

    def extend_timeout(self, seconds: float) -> bool:
        """EXTEND_TIMEOUT_USEC=: give the current start or stop this much more time from now."""
        return self.notify(EXTEND_TIMEOUT_USEC=max(0, int(seconds * 1_000_000)))

    def close(self) -> None:
        """Close the socket; idempotent (a later message opens it again)."""
        sock, self._socket = self._socket, None
        if sock is not None:
            sock.close()

    def _sock(self) -> socket.socket:
        if self._socket is None:
            self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        return self._socket

    def _lost(self, exc: OSError, message: bytes) -> None:
        """Log the first loss as a warning, later ones at debug: systemd gone must not flood the journal."""
        self.failed += 1
        if exc.errno in (errno.EAGAIN, errno.EWOULDBLOCK):
            reason = "the service manager's queue is full"
        else:
            reason = str(exc)
        if not self._warned:
            self._warned = True
            log.warning("cannot notify the service manager at %s (%s); carrying on without it "
                        "(further failures are logged at debug level)", self.address, reason)
        else:
            log.debug("notify %r to %s lost: %s", message[:60], self.address, reason)


def _sockaddr(address: str) -> str | bytes:
    """``@name`` is Linux's abstract namespace: a leading NUL byte instead of the @."""
    if address.startswith("@"):
        return b"\0" + address[1:].encode()
    return address


def _one_line(value: object) -> str:
    """A value on one line: a newline would start another assignment."""
    return " ".join(str(value).splitlines())
