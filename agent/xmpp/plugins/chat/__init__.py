"""headunit_chat: 1:1 chat with receipts, carbons and archive catch-up (XEP-0184, 0280, 0313, 0359)."""

from slixmpp.plugins.base import register_plugin

from agent.xmpp.plugins.chat.chat import NS_RECEIPTS, NS_SID, ChatPlugin, Progress, Seen

register_plugin(ChatPlugin)

__all__ = ["NS_RECEIPTS", "NS_SID", "ChatPlugin", "Progress", "Seen"]
