"""Where the telemetry goes: a publisher the sender hands batches to, and what can go wrong there.

The XMPP side (:class:`agent.xmpp.plugins.telemetry.TelemetryPlugin`, a PubSub node on the
fleet's server) implements :class:`Publisher`; the telemetry package knows only this
Protocol, so it does not depend on the XMPP code. A publish returns once the service
stored the item (the acknowledgement), or raises :class:`PublishError`.
"""

from __future__ import annotations

from typing import Protocol
from xml.etree.ElementTree import Element

from agent.errors import HeadunitError
from agent.jid import bare as bare_jid


class Publisher(Protocol):
    @property
    def service(self) -> str:
        """The JID of the PubSub service, for people."""

    @property
    def node(self) -> str:
        """The node's name on it."""

    async def ensure_node(self) -> None:
        """Make sure the node exists and may be published to; NodeSetupError if not."""

    async def publish(self, item_id: str, payload: Element, timeout: float) -> None:
        """Publish one item; returns once the service acknowledged it, else PublishError."""


class PubsubError(HeadunitError):
    """Base class of the telemetry node's errors."""


class NodeSetupError(PubsubError):
    """The node is missing and cannot be created, or the service did not answer."""


class PublishError(PubsubError):
    """The service refused an item; ``condition`` is the XMPP error condition ("" on timeout)."""

    def __init__(self, message: str, condition: str = "") -> None:
        super().__init__(message)
        self.condition = condition


class PublishTimeout(PublishError, TimeoutError):
    """No answer from the service in time: the item may or may not be stored."""


def node_name(template: str, car_jid: str) -> str:
    """The telemetry node of a car: ``{jid}`` in the template is the car's bare JID."""
    return template.replace("{jid}", bare_jid(car_jid))
