"""headunit_upload: files shared by HTTP upload (XEP-0363), streamed from disk over verified TLS."""

from slixmpp.plugins.base import register_plugin

from agent.xmpp.plugins.upload.upload import (
    FileTooLarge,
    NoUploadService,
    PutFailed,
    Slot,
    SlotRefused,
    UploadError,
    UploadPlugin,
    UploadService,
    UploadTimeout,
)

register_plugin(UploadPlugin)

__all__ = ["FileTooLarge", "NoUploadService", "PutFailed", "Slot", "SlotRefused", "UploadError", "UploadPlugin",
           "UploadService", "UploadTimeout"]
