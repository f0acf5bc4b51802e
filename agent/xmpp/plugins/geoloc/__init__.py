"""headunit_geoloc: the car's position as XEP-0080 user location, through PEP (XEP-0163, XEP-0060)."""

from slixmpp.plugins.base import register_plugin

from agent.xmpp.plugins.geoloc.publisher import NODE, GeolocPlugin, geoloc_element

register_plugin(GeolocPlugin)

__all__ = ["NODE", "GeolocPlugin", "geoloc_element"]
