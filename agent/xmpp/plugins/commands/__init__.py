"""headunit_commands: the agent's commands as XEP-0050 ad-hoc commands with XEP-0004 forms."""

from slixmpp.plugins.base import register_plugin

from agent.xmpp.plugins.commands.commands import CommandsPlugin

register_plugin(CommandsPlugin)

__all__ = ["CommandsPlugin"]
