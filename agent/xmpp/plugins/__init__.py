"""The agent's own XMPP features, as slixmpp plugins (see :mod:`agent.xmpp.plugins.base`)."""
