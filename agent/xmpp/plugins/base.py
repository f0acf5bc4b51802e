"""The base of the agent's own slixmpp plugins: slixmpp's model, plus owned tasks and an async stop.

A feature is a :class:`slixmpp.plugins.base.BasePlugin` subclass, as in slixmpp's own
``plugins/xep_NNNN/``: a ``name`` (``headunit_<feature>``), a ``description`` naming its
XEPs, ``dependencies`` on slixmpp's plugins, ``default_config`` (the configuration keys it
takes, with their defaults), ``plugin_init`` to hook into the stream, ``plugin_end`` to
unhook. What this base adds:

- :meth:`on` adds an event handler that :meth:`plugin_end` removes again;
- :meth:`spawn` starts a task the plugin owns: cancelled at ``plugin_end``, awaited by
  :meth:`stop`, never left unreferenced;
- :meth:`stop`, for the agent's staged stop: disable the plugin and wait for its tasks
  (a cancellation of the stop itself propagates).

Enable one with :meth:`agent.xmpp.client.XmppSession.enable`, which registers the class
and returns the typed instance.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

import slixmpp
from slixmpp.plugins.base import BasePlugin, register_plugin

from agent.xmpp import surface

log = logging.getLogger(__name__)

P = TypeVar("P", bound="HeadunitPlugin")


def enable(client: slixmpp.BaseXMPP, plugin: type[P], **config: object) -> P:
    """Register ``plugin`` with slixmpp, enable it on ``client`` with ``config``; the typed instance."""
    register_plugin(plugin)
    client.register_plugin(plugin.name, dict(config))
    found = surface.plugins(client)[plugin.name]
    if not isinstance(found, plugin):
        raise TypeError(f"plugin {plugin.name} is {type(found).__name__}, not {plugin.__name__}")
    return found


class HeadunitPlugin(BasePlugin):
    """Base of every ``headunit_*`` plugin."""

    def _init(self) -> None:
        self._handlers: list[tuple[str, Callable[..., Any]]] = []
        self._tasks: set[asyncio.Task[Any]] = set()
        self._ended = False
        initialise: Any = super()._init
        initialise()

    # -- for subclasses ---------------------------------------------------------------------

    def on(self, event: str, handler: Callable[..., Any]) -> None:
        """``xmpp.add_event_handler(event, handler)``, undone by ``plugin_end``."""
        self.xmpp.add_event_handler(event, handler)
        self._handlers.append((event, handler))

    def spawn(self, work: Coroutine[Any, Any, Any], name: str) -> asyncio.Task[Any]:
        """A task this plugin owns until it ends (logged if it fails)."""
        task = asyncio.get_running_loop().create_task(work, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._forget)
        return task

    @property
    def session_started(self) -> bool:
        """A session is up (fresh or resumed): stanzas may be sent."""
        return bool(self.xmpp.is_connected() and (self.xmpp.sessionstarted or self.xmpp._session_started))

    # -- slixmpp's hooks --------------------------------------------------------------------

    def plugin_end(self) -> None:
        """Unhook every handler added with :meth:`on` and cancel the plugin's tasks; idempotent."""
        self._ended = True
        for event, handler in self._handlers:
            self.xmpp.del_event_handler(event, handler)
        self._handlers.clear()
        for task in list(self._tasks):
            task.cancel()

    # -- the agent's stop ---------------------------------------------------------------------

    async def stop(self) -> None:
        """Disable the plugin (``plugin_end``) and wait for its tasks to end; idempotent."""
        manager = surface.plugins(self.xmpp)
        if manager.enabled(self.name):
            manager.disable(self.name)
        elif not self._ended:
            self.plugin_end()
        tasks = list(self._tasks)
        if tasks:
            await asyncio.wait(tasks)  # a cancel of stop() itself still propagates

    def _forget(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("%s: task %s failed", self.name, task.get_name(), exc_info=task.exception())
