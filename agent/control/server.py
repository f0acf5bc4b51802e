"""The running agent's local control API: JSON lines on a UNIX socket only the agent's user can open.

One request per line, ``{"id": 1, "cmd": "contacts.pending", "args": {}}``, one reply
per line, ``{"id": 1, "ok": true, "result": ...}`` or ``{"id": 1, "ok": false,
"error": "..."}``. Whatever a client sends, the agent answers with an error and
carries on. ``headunit contacts`` (and later ``headunit status``) talk to it
through ``ControlClient``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import stat
import tempfile
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, TypedDict

from agent.errors import HeadunitError
from agent.profile.model import Profile
from agent.storage import data_dir

log = logging.getLogger(__name__)

Handler = Callable[[Mapping[str, object]], Awaitable[object]]  # args of the request -> JSON-able result
RequestId = str | int | float | None


class ControlRequest(TypedDict):
    """One line from a client: ``{"id": 1, "cmd": "contacts.pending", "args": {}}``."""

    id: RequestId
    cmd: str
    args: dict[str, object]


class ControlReply(TypedDict, total=False):
    """One line back: ``ok`` with ``result``, or not ``ok`` with ``error``."""

    id: RequestId
    ok: bool
    result: object
    error: str

MAX_LINE = 64 * 1024  # bytes of one request, newline included
MAX_REPLY = 16 * 1024 * 1024  # bytes of one reply a client accepts
HANDLER_TIMEOUT = 30.0  # s a command may take
SUN_PATH_MAX = 107  # bytes of a UNIX socket path on Linux (108 with the NUL)
SOCKET_NAME = "control.sock"


class ControlError(HeadunitError):
    """A control request failed; the message is the agent's (or the transport's) reason."""


class ControlStartError(ControlError):
    """The control socket cannot be opened (another agent owns it, or the path is unusable)."""


class AgentNotRunning(ControlError, ConnectionError):
    """No agent answers on the control socket."""


class _LineTooLong(Exception):
    """A request line longer than MAX_LINE (already skipped)."""


def socket_path(profile: Profile) -> Path:
    """Where the profile's agent listens: ``[control] socket``, else ``<data_dir>/control.sock``."""
    return profile.control.socket or data_dir(profile.storage) / SOCKET_NAME


class ControlServer:
    """Answers JSON-line requests on ``path`` with the given command handlers."""

    def __init__(self, path: Path, handlers: Mapping[str, Handler]) -> None:
        self.path = Path(path)
        self.handlers = dict(handlers)
        self._server: asyncio.Server | None = None
        self._inode: int | None = None
        self._connections: set[asyncio.Task[Any]] = set()

    @property
    def is_serving(self) -> bool:
        return self._server is not None

    async def start(self) -> None:
        """Listen; a stale socket of a killed agent is removed, a live agent's is left alone."""
        if self._server is not None:
            return
        if len(os.fsencode(self.path)) > SUN_PATH_MAX:
            raise ControlStartError(f"control socket path too long for a UNIX socket "
                                    f"({len(os.fsencode(self.path))} > {SUN_PATH_MAX} bytes): {self.path}")
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        await self._clear_stale()
        sock = self._bind_private()
        try:
            self._server = await asyncio.start_unix_server(self._serve, sock=sock, limit=MAX_LINE)
        except BaseException:
            sock.close()
            self._unlink_ours()
            raise
        log.info("control socket listening at %s", self.path)

    async def stop(self) -> None:
        """Stop listening, end open connections, remove the socket file; idempotent."""
        server, self._server = self._server, None
        if server is None:
            return
        server.close()
        for task in list(self._connections):
            task.cancel()
        if self._connections:
            await asyncio.gather(*self._connections, return_exceptions=True)
        await server.wait_closed()
        self._unlink_ours()
        log.info("control socket %s closed", self.path)

    # -- the socket file ---------------------------------------------------------

    async def _clear_stale(self) -> None:
        try:
            mode = os.lstat(self.path).st_mode
        except FileNotFoundError:
            return
        if not stat.S_ISSOCK(mode):
            raise ControlStartError(f"{self.path} exists and is not a socket; not touching it")
        try:
            async with asyncio.timeout(5):
                _, writer = await asyncio.open_unix_connection(self.path)
        except (ConnectionRefusedError, FileNotFoundError):
            log.info("removing the stale control socket %s (its agent did not stop cleanly)", self.path)
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()
            return
        except (OSError, TimeoutError) as exc:
            raise ControlStartError(f"cannot tell whether an agent owns {self.path}: {exc}") from exc
        writer.close()
        raise ControlStartError(f"another agent is running: it answers on {self.path}")

    def _bind_private(self) -> socket.socket:
        """Bind in a private folder, set 0600, then link into place: never reachable with a wider mode."""
        folder = tempfile.mkdtemp(prefix=".ctl", dir=self.path.parent)
        temporary = Path(folder) / "s"
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.bind(os.fspath(temporary))
            os.chmod(temporary, 0o600)
            try:
                os.link(temporary, self.path)  # fails if the path exists: no agent replaces another's
            except FileExistsError as exc:
                raise ControlStartError(f"another agent is running: it answers on {self.path}") from exc
            self._inode = os.lstat(self.path).st_ino
        except BaseException:
            sock.close()
            raise
        finally:
            with contextlib.suppress(OSError):
                temporary.unlink()
            with contextlib.suppress(OSError):
                os.rmdir(folder)
        return sock

    def _unlink_ours(self) -> None:
        """Remove the socket file, only if it is still the one we made."""
        if self._inode is None:
            return
        try:
            if os.lstat(self.path).st_ino == self._inode:
                self.path.unlink()
        except FileNotFoundError:
            pass
        self._inode = None

    # -- connections ---------------------------------------------------------------

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        try:
            while True:
                try:
                    line = await _read_line(reader)
                except _LineTooLong:
                    reply = _error(None, f"request longer than {MAX_LINE} bytes")
                else:
                    if line is None:
                        break
                    if not line.strip():
                        continue
                    reply = await self._answer(line)
                writer.write(reply)
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            self._connections.discard(task)
            writer.close()

    async def _answer(self, line: bytes) -> bytes:
        """One reply line for one request line; never raises (but lets cancellation through)."""
        try:
            request = json.loads(line)
        except (UnicodeDecodeError, ValueError) as exc:
            return _error(None, f"not a JSON line: {exc}")
        if not isinstance(request, dict):
            return _error(None, "expected a JSON object like {\"id\": 1, \"cmd\": \"...\", \"args\": {}}")
        rid = request.get("id")
        if not (rid is None or isinstance(rid, (str, int, float))):
            return _error(None, "id: expected a number or a string")
        cmd, args = request.get("cmd"), request.get("args", {})
        if not isinstance(cmd, str) or cmd not in self.handlers:
            known = ", ".join(sorted(self.handlers))
            return _error(rid, f"unknown command {cmd!r} (known: {known})")
        if not isinstance(args, dict):
            return _error(rid, "args: expected a JSON object")
        return await self._run(ControlRequest(id=rid, cmd=cmd, args=args))

    async def _run(self, request: ControlRequest) -> bytes:
        rid, cmd, args = request["id"], request["cmd"], request["args"]
        try:
            async with asyncio.timeout(HANDLER_TIMEOUT):
                result = await self.handlers[cmd](args)
        except TimeoutError:
            log.warning("control command %s timed out after %.0f s", cmd, HANDLER_TIMEOUT)
            return _error(rid, f"{cmd} did not finish within {HANDLER_TIMEOUT:.0f} s")
        except (HeadunitError, ValueError, LookupError) as exc:
            log.info("control command %s refused: %s", cmd, exc)
            return _error(rid, str(exc))
        except Exception as exc:
            log.exception("control command %s failed (args %r)", cmd, args)
            return _error(rid, f"internal error in {cmd}: {exc!r}")
        try:
            return _encode(ControlReply(id=rid, ok=True, result=result))
        except (TypeError, ValueError) as exc:
            log.error("control command %s returned something that is not JSON: %s", cmd, exc)
            return _error(rid, f"internal error in {cmd}: result is not JSON")


async def _read_line(reader: asyncio.StreamReader) -> bytes | None:
    """The next line, None at the end; an over-long line is skipped and reported as _LineTooLong."""
    try:
        return await reader.readuntil(b"\n")
    except asyncio.IncompleteReadError as exc:
        return exc.partial or None
    except asyncio.LimitOverrunError as exc:
        await _skip_line(reader, exc.consumed)
        raise _LineTooLong from None


async def _skip_line(reader: asyncio.StreamReader, consumed: int) -> None:
    while True:
        await reader.readexactly(consumed)
        try:
            await reader.readuntil(b"\n")
            return
        except asyncio.IncompleteReadError:
            return
        except asyncio.LimitOverrunError as exc:
            consumed = exc.consumed


def _encode(message: ControlReply | ControlRequest) -> bytes:
    return (json.dumps(message, ensure_ascii=False, separators=(",", ":"), allow_nan=False) + "\n").encode()


def _error(rid: RequestId, message: str) -> bytes:
    return _encode(ControlReply(id=rid, ok=False, error=message))


class ControlClient:
    """The CLI's side: ``await ControlClient(path).call("contacts.pending")``."""

    def __init__(self, path: Path, *, timeout: float = HANDLER_TIMEOUT + 5) -> None:
        self.path = Path(path)
        self.timeout = timeout
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._next_id = 0

    async def call(self, cmd: str, **args: object) -> object:
        """Send one command and return its result; ControlError with the agent's reason if it failed."""
        reader, writer = await self._connect()
        self._next_id += 1
        writer.write(_encode(ControlRequest(id=self._next_id, cmd=cmd, args=dict(args))))
        try:
            async with asyncio.timeout(self.timeout):
                await writer.drain()
                line = await reader.readline()
        except TimeoutError as exc:
            raise ControlError(f"the agent did not answer {cmd} within {self.timeout:.0f} s") from exc
        except (ConnectionError, ValueError) as exc:
            raise ControlError(f"the agent's answer to {cmd} was lost: {exc}") from exc
        return self._result(cmd, line)

    def _result(self, cmd: str, line: bytes) -> object:
        if not line:
            raise ControlError(f"the agent closed the connection without answering {cmd}")
        try:
            reply = json.loads(line)
        except ValueError as exc:
            raise ControlError(f"unreadable answer to {cmd}: {exc}") from exc
        if not isinstance(reply, dict) or reply.get("id") != self._next_id:
            raise ControlError(f"unexpected answer to {cmd}: {line[:200]!r}")
        if not reply.get("ok"):
            raise ControlError(str(reply.get("error") or "failed"))
        return reply.get("result")

    async def _connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        if self._reader is not None and self._writer is not None:
            return self._reader, self._writer
        try:
            self._reader, self._writer = await asyncio.open_unix_connection(self.path, limit=MAX_REPLY)
        except FileNotFoundError as exc:
            raise AgentNotRunning(f"no agent is running for this profile (no socket at {self.path})") from exc
        except ConnectionRefusedError as exc:
            raise AgentNotRunning(f"no agent is running for this profile "
                                  f"(nothing answers on {self.path}: left by an agent that was killed?)") from exc
        except PermissionError as exc:
            raise ControlError(f"cannot open {self.path}: permission denied "
                               f"(run as the user the agent runs as)") from exc
        except OSError as exc:
            raise ControlError(f"cannot open {self.path}: {exc}") from exc
        return self._reader, self._writer

    async def close(self) -> None:
        """Close the connection; idempotent."""
        writer, self._writer, self._reader = self._writer, None, None
        if writer is not None:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    async def __aenter__(self) -> ControlClient:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.close()
