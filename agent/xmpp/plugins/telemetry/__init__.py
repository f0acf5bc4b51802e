"""headunit_telemetry: telemetry batches to the fleet's PubSub node (XEP-0060)."""

from slixmpp.plugins.base import register_plugin

from agent.xmpp.plugins.telemetry.publisher import TelemetryPlugin

register_plugin(TelemetryPlugin)

__all__ = ["TelemetryPlugin"]
