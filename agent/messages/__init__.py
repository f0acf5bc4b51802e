"""1:1 messages: the local store the dashboard reads (the XMPP side is ``agent.xmpp.plugins.chat``)."""

from agent.messages.store import MessageError, MessageStore, State, StoredMessage

__all__ = ["MessageError", "MessageStore", "State", "StoredMessage"]
