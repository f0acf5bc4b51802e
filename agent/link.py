"""The XMPP link's status as everyone shows it: the dashboard, ``headunit state`` and ``status``, operators.

The session (:meth:`agent.xmpp.client.XmppSession.connection`) is the one place that
works it out; everyone else reads a :class:`ConnectionStatus`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

LinkState = Literal["online", "resuming", "offline", "connecting"]


@dataclass(frozen=True, slots=True)
class ConnectionStatus:
    """The XMPP link as everyone shows it (dashboard, ``headunit state`` and ``status``, operators)."""

    state: LinkState  # resuming: link lost, the stream can be resumed; offline: the last attempt failed
    detail: str  # one line for people: "online (stream resumable)", "offline (connection refused)"
    is_online: bool
    is_resumable: bool
    resumptions: int
    fresh_sessions: int
    last_error: str | None

    def as_json(self) -> dict[str, object]:
        return {"state": self.state, "detail": self.detail, "online": self.is_online,
                "resumable": self.is_resumable, "resumed": self.resumptions, "sessions": self.fresh_sessions,
                "last_error": self.last_error}
