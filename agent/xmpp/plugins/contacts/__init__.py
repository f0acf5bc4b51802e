"""headunit_contacts: RFC 6121 subscriptions, answered as the contacts policy decides."""

from slixmpp.plugins.base import register_plugin

from agent.xmpp.plugins.contacts.subscriptions import ContactsPlugin

register_plugin(ContactsPlugin)

__all__ = ["ContactsPlugin"]
