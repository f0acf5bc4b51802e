"""The ``headunit_commands`` plugin: XEP-0050 ad-hoc commands with XEP-0004 forms, the XMPP door to commands.

Built on slixmpp's xep_0050 plugin for its stanzas, its routing of command
IQs (the "command" event) and its disco feature, but not on its session
handling: that one lets any JID continue anyone's session, hands later steps
no sender to check, and on timeout sends a *client* cancel to the requester
while keeping the session in memory. Here every step goes through
:class:`agent.commands.registry.Dispatcher`, which checks who asks at each
step, rate-limits, validates, audits, and ends idle sessions. The commands'
disco items are answered per requester: operators see them, no one else does.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from typing import Any, ClassVar, cast

from slixmpp.exceptions import XMPPError
from slixmpp.jid import JID, InvalidJID
from slixmpp.plugins.xep_0004 import Form
from slixmpp.types import ErrorConditions

from agent.commands.audit import AuditLog
from agent.commands.forms import Field, FieldValue, FormView
from agent.commands.registry import AgentFacade, Dispatcher, RateLimiter, Refused, Registry, Reply
from agent.jid import is_operator
from agent.xmpp import surface
from agent.xmpp.plugins.base import HeadunitPlugin

log = logging.getLogger(__name__)

COMMANDS = "http://jabber.org/protocol/commands"
DATA = "jabber:x:data"
SWEEP_EVERY = 10.0  # s between looks for timed-out sessions
MAX_FIELDS = 64  # fields read from one submitted form
MAX_VALUES = 16  # values read from one field
WAIT_CONDITIONS = frozenset({"resource-constraint"})  # error type "wait": try again later
KINDS = {"text": "text-single", "text-private": "text-private", "int": "text-single",
         "float": "text-single", "bool": "boolean", "list-single": "list-single", "jid": "jid-single"}


class CommandsPlugin(HeadunitPlugin):
    """Offers the registry's commands at the car's full JID to the profile's operators.

    Configuration: ``registry`` (the :class:`~agent.commands.registry.Registry`), ``operators``,
    ``audit`` (the :class:`~agent.commands.audit.AuditLog`), ``agent`` (the
    :class:`~agent.commands.registry.AgentFacade` commands act through), ``limiter`` (a
    :class:`~agent.commands.registry.RateLimiter`; None: the dispatcher's default),
    ``session_timeout`` (s an idle session lives), ``sweep_every`` (s between looks for them).
    Pending sessions are dropped when the plugin ends.
    """

    name = "headunit_commands"
    description = "headunit: the agent's commands as ad-hoc commands with data forms (XEP-0050, XEP-0004)"
    dependencies: ClassVar[set[str]] = {"xep_0030", "xep_0004", "xep_0050"}
    default_config: ClassVar[dict[str, object]] = {"registry": None, "operators": (), "audit": None, "agent": None,
                                                    "limiter": None, "session_timeout": 120.0,
                                                    "sweep_every": SWEEP_EVERY}

    def plugin_init(self) -> None:
        config = self.config
        registry, audit, agent, limiter = config["registry"], config["audit"], config["agent"], config["limiter"]
        if not isinstance(registry, Registry) or not isinstance(audit, AuditLog) or not isinstance(agent, AgentFacade):
            raise ValueError("the commands plugin needs a Registry, an AuditLog and an AgentFacade "
                             "(registry, audit, agent)")
        if limiter is not None and not isinstance(limiter, RateLimiter):
            raise ValueError(f"limiter must be a RateLimiter or None, not {limiter!r}")
        operators: Sequence[str] = config["operators"]
        self.dispatcher = Dispatcher(registry, operators, audit, agent, is_operator=is_operator,
                                     limiter=limiter, session_timeout=float(config["session_timeout"]))
        self._sweep_every = float(config["sweep_every"])
        self._opened = asyncio.Event()
        self._bound: set[JID] = set()  # full JIDs whose disco node handlers are ours
        self.xmpp.del_event_handler("command", self.xmpp.plugin["xep_0050"]._handle_command_all)
        self.on("command", self._on_command)
        # Not slixmpp's session_bind hook: BasePlugin calls that one before plugin_init.
        self.on("session_bind", self._on_bind)
        if self.xmpp.session_bind_event.is_set():
            self._on_bind(self.xmpp.boundjid)
        self.spawn(self._sweep(), "adhoc-sweeper")

    def plugin_end(self) -> None:
        """Stop answering commands and the commands' disco; pending sessions are dropped."""
        disco = self.xmpp.plugin["xep_0030"]
        for jid in self._bound:
            disco.del_node_handler("get_items", jid, COMMANDS)
            for command in self.dispatcher.registry:
                disco.del_node_handler("get_info", jid, command.name)
        self._bound.clear()
        self.dispatcher.sessions.clear()
        super().plugin_end()

    def _on_bind(self, jid: Any) -> None:
        """Answer disco for the commands at this (possibly new) full JID ourselves."""
        full = JID(str(jid))
        if full in self._bound:
            return
        self._bound.add(full)
        disco = self.xmpp.plugin["xep_0030"]
        disco.set_node_handler("get_items", full, COMMANDS, self._disco_items)
        for command in self.dispatcher.registry:
            disco.set_node_handler("get_info", full, command.name, self._disco_info)

    async def _sweep(self) -> None:
        """End idle sessions when the oldest is due (at most every ``sweep_every`` s); asleep while none is open."""
        dispatcher = self.dispatcher
        while True:
            self._opened.clear()
            if not dispatcher.sessions:
                await self._opened.wait()
                continue
            oldest = min(session.touched for session in dispatcher.sessions.values())
            due = oldest + dispatcher.session_timeout - dispatcher.clock()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(due, self._sweep_every) + 0.01):
                    await self._opened.wait()  # a new session may be due sooner: look again
                continue
            try:
                await dispatcher.expire()
            except Exception:
                log.exception("ending timed-out command sessions failed")

    # -- disco -----------------------------------------------------------------------

    async def _disco_items(self, jid: JID, node: str, ifrom: JID, iq: Any) -> Any:
        """The commands node's items: every command for an operator, nothing for anyone else."""
        reply = iq.reply()
        reply["disco_items"]["node"] = COMMANDS
        for command in await self.dispatcher.visible(str(ifrom)):
            reply["disco_items"].add_item(jid=str(jid), node=command.name, name=command.title)
        return reply

    def _disco_info(self, jid: JID, node: str, ifrom: JID, iq: Any) -> Any:
        """A command node's identity, for operators only (others learn nothing of it)."""
        command = self.dispatcher.registry.get(node)
        if command is None or not is_operator(str(ifrom), self.dispatcher.operators):
            raise XMPPError("item-not-found")
        reply = iq.reply()
        info = reply["disco_info"]
        info["node"] = node
        info.add_identity("automation", "command-node", name=command.title)
        info.add_feature(COMMANDS)
        info.add_feature(DATA)
        return reply

    # -- commands --------------------------------------------------------------------

    async def _on_command(self, iq: Any) -> None:
        """One XEP-0050 request: hand it to the dispatcher, send back its reply or error."""
        try:
            requester = str(iq["from"])
            command = iq["command"]
            node, action, sessionid = str(command["node"]), str(command["action"]), command["sessionid"]
            submitted = read_form(command.xml)
        except (InvalidJID, ValueError) as exc:
            log.warning("unreadable command request dropped: %s", exc)
            raise XMPPError("bad-request", text="unreadable command request") from exc
        try:
            reply = await self.dispatcher.handle(requester, node, action, sessionid or None, submitted)
        except Refused as exc:
            raise XMPPError(cast(ErrorConditions, exc.condition), text=exc.text,
                            etype="wait" if exc.condition in WAIT_CONDITIONS else "cancel") from exc
        except Exception as exc:
            log.exception("command %r from %s failed", node, requester)
            raise XMPPError("internal-server-error", text="the command failed") from exc
        self._opened.set()  # the sweeper looks at the sessions again
        send_reply(iq, node, reply)


def read_form(command_xml: Any) -> dict[str, list[str]] | None:
    """The submitted values of the command's data form, var -> strings; None if there is no form."""
    x = command_xml.find(f"{{{DATA}}}x")
    if x is None:
        return None
    if x.get("type") == "cancel":
        return {}
    submitted: dict[str, list[str]] = {}
    for field in x.findall(f"{{{DATA}}}field")[:MAX_FIELDS]:
        var = field.get("var")
        if var:
            submitted[var] = [v.text or "" for v in field.findall(f"{{{DATA}}}value")[:MAX_VALUES]]
    return submitted


def send_reply(iq: Any, node: str, reply: Reply) -> None:
    """The dispatcher's reply as an XEP-0050 result IQ."""
    out = iq.reply()
    command = out["command"]
    command["node"] = node
    command["sessionid"] = reply.sessionid
    command["status"] = reply.status
    if reply.status == "executing":
        command["actions"] = ["next"] if reply.has_next else ["complete"]
    if reply.note:
        command["notes"] = [(reply.note_type, reply.note)]
    if reply.form is not None:
        command.append(render_form(reply.form))
    out.send()


def render_form(view: FormView) -> Form:
    """A form or result as XEP-0004: typed fields, options, errors in instructions and descriptions."""
    form = surface.new_form()
    form["type"] = view.type
    form["title"] = view.title
    if view.instructions:
        form["instructions"] = view.instructions
    for field in view.fields:
        _add_field(form, field, view.values.get(field.var), view.errors.get(field.var), view.type)
    return form


def _add_field(form: Form, field: Field, value: FieldValue | None, error: str | None, form_type: str) -> None:
    kind = KINDS[field.kind]
    if form_type == "result":
        kind = "text-multi" if isinstance(value, str) and "\n" in value else "text-single"
    desc = f"Error: {error}" if error else field.description or _hint(field)
    options = [{"label": o, "value": o} for o in field.options] if field.kind == "list-single" else None
    added = surface.form_api(form).add_field(var=field.var, ftype=kind, label=field.label, desc=desc,
                                             required=field.required and form_type == "form", options=options)
    if value is not None:
        added["value"] = value if isinstance(value, bool) else str(value)


def _hint(field: Field) -> str:
    if field.kind not in ("int", "float") or (field.min is None and field.max is None):
        return ""
    low = "" if field.min is None else f"{field.min:g}"
    high = "" if field.max is None else f"{field.max:g}"
    return f"a {'whole ' if field.kind == 'int' else ''}number from {low or '…'} to {high or '…'}"
