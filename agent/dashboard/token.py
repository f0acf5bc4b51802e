"""The dashboard's per-start token, and the files that hand it to the kiosk and to people.

At each start the agent makes a new token and writes it to ``<data_dir>/dashboard.token``
and the page's address (token in the fragment) to ``<data_dir>/dashboard.url``: both
0600, each replaced atomically, so a reader sees the old file or the new one, never
half of one. ``headunit dashboard PROFILE`` prints the second with :func:`read_url`.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import tempfile
from pathlib import Path

from agent.errors import HeadunitError

TOKEN_FILE = "dashboard.token"
URL_FILE = "dashboard.url"


class DashboardNotRunning(HeadunitError, FileNotFoundError):
    """No dashboard address was published: the agent is not running, or never started, on that folder."""


def new_token() -> str:
    """A fresh random token (256 bits, URL-safe)."""
    return secrets.token_urlsafe(32)


def write_private(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` atomically; only the owner may read it (0600)."""
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            os.fchmod(out.fileno(), 0o600)
            out.write(text)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise


def publish(folder: Path, token: str, url: str) -> None:
    """Write the token and the page's address (with the token) into the agent's data folder."""
    write_private(folder / TOKEN_FILE, token + "\n")
    write_private(folder / URL_FILE, url + "\n")


def withdraw(folder: Path) -> None:
    """Remove both files (the agent stops: the token is worth nothing any more); idempotent."""
    for name in (URL_FILE, TOKEN_FILE):
        with contextlib.suppress(FileNotFoundError):
            (folder / name).unlink()


def read_url(folder: Path) -> str:
    """The address the running agent published; DashboardNotRunning if there is none."""
    try:
        url = (folder / URL_FILE).read_text(encoding="utf-8").strip()
    except FileNotFoundError as exc:
        raise DashboardNotRunning(
            f"no dashboard address in {folder / URL_FILE}: the agent is not running "
            "(or its dashboard is disabled)") from exc
    if not url:
        raise DashboardNotRunning(f"{folder / URL_FILE} is empty")
    return url
