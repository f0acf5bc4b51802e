"""Remote commands: what a command is, what guards it, and what its handler is given.

A :class:`Command` names its form (:class:`~agent.commands.forms.Field`), its
handler, an optional confirmation step and its interlocks. The handler only
runs on values the form validated and once every interlock agreed; it gets a
:class:`CommandContext` (who asks, what they filled in, the agent's facade)
and returns a :class:`Result`. :class:`Dispatcher` runs the steps (access,
rate limit, form, confirmation, interlocks, handler, audit) without knowing
XMPP; ``agent/xmpp/plugins/commands/`` only translates XEP-0050 stanzas to and from it.
"""

from __future__ import annotations

import logging
import re
import secrets
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol, runtime_checkable

from agent import __version__
from agent.commands import audit as au
from agent.commands.audit import AuditEntry, AuditLog, Decision
from agent.commands.forms import Field, FieldValue, FormView, describe_errors, redacted, validate
from agent.jid import JidError, bare as bare_jid
from agent.vehicle import paths
from agent.vehicle.state import VehicleState

log = logging.getLogger(__name__)

NODE_RE = re.compile(r"^[a-z][a-z0-9-]{0,47}$")


@dataclass(frozen=True)
class Result:
    """What a handler reports: a sentence for the operator, and values for a result form."""

    text: str
    fields: tuple[tuple[str, str], ...] = ()  # (label, value), shown in order
    ok: bool = True


@dataclass
class AgentFacade:
    """The parts of the running agent a command may use; the agent wires the real ones.

    ``restart`` and ``reboot`` must only schedule the act (e.g. ``loop.call_later``), so the
    command's answer still reaches the operator. None means "not available here".
    """

    state: VehicleState
    version: str = __version__
    started: float = field(default_factory=time.monotonic)  # monotonic clock at agent start
    audit: AuditLog | None = None
    restart: Callable[[], None] | None = None
    reboot: Callable[[], None] | None = None
    connection: Callable[[], str] = lambda: "unknown"  # e.g. "online", "resuming"

    def uptime(self) -> float:
        return time.monotonic() - self.started


@dataclass(frozen=True)
class CommandContext:
    """What a handler is given: the requester, the validated values, the agent."""

    requester: str  # full JID
    values: Mapping[str, FieldValue]
    agent: AgentFacade

    @property
    def bare(self) -> str:
        """The requester's bare JID."""
        return _bare(self.requester)


Handler = Callable[[CommandContext], Awaitable[Result]]


class Interlock(Protocol):
    """A condition the car must meet for a command to run; ``check`` returns why not, or None."""

    @property
    def name(self) -> str: ...

    def check(self, state: VehicleState) -> str | None: ...


@runtime_checkable
class AskingInterlock(Protocol):
    """An interlock that must wait for an answer (the driver's, on the dashboard).

    It is asked only once every plain :class:`Interlock` agreed, so the driver is never
    asked about something that would be refused anyway; ``ask`` returns why not, or None.
    """

    @property
    def name(self) -> str: ...

    async def ask(self, requester: str, command: Command) -> str | None: ...


NOT_ASKED = "not asked: another interlock refused first"


@dataclass(frozen=True)
class SpeedIsZero:
    """The vehicle stands still: ``Vehicle.Speed`` is known and 0.

    A stale 0 counts only when the car was switched off (last ignition reading LOCK or
    OFF): a parked car's bus goes quiet, and it cannot drive off without waking it. A
    bus that went quiet at a red light (ignition ON) or while moving is refused.
    """

    @property
    def name(self) -> str:
        return "speed is zero"

    def check(self, state: VehicleState) -> str | None:
        reading = state.get(paths.SPEED)
        if reading is None:
            return "the vehicle speed is unknown"
        if not isinstance(reading.value, (int, float)) or reading.value != 0:
            return (f"the vehicle was last seen moving ({reading.value} km/h) and its speed is no longer"
                    " known" if reading.is_stale else f"the vehicle is moving ({reading.value} km/h)")
        if reading.is_stale:
            ignition = state.get(paths.LOW_VOLTAGE_STATE)  # stale or not: the last one seen
            if ignition is None or ignition.value not in SWITCHED_OFF:
                return "the vehicle speed reading is stale and the ignition was not off"
        return None


SWITCHED_OFF = frozenset({"LOCK", "OFF"})  # Vehicle.LowVoltageSystemState values of a switched-off car


class ModeIs:
    """The vehicle mode (``Headunit.VehicleMode``) is fresh and one of the given ones."""

    def __init__(self, *modes: str) -> None:
        if not modes:
            raise ValueError("ModeIs needs at least one mode")
        self.modes = modes

    @property
    def name(self) -> str:
        return f"mode is {' or '.join(self.modes)}"

    def check(self, state: VehicleState) -> str | None:
        mode = state.value(paths.MODE)
        if mode is None:
            return "the vehicle mode is unknown"
        if mode not in self.modes:
            return f"the vehicle is {mode}, not {' or '.join(self.modes)}"
        return None


@dataclass(frozen=True)
class Command:
    """One remote command: its node name, form, handler, confirmation step and interlocks."""

    name: str  # the XEP-0050 node, e.g. "status"
    title: str
    fields: tuple[Field, ...]
    handler: Handler
    confirm: str | None = None  # a question: the operator must say yes before the handler runs
    interlocks: tuple[Interlock | AskingInterlock, ...] = ()
    description: str = ""
    # Checks across fields, after each field was validated: {var: error}; any error returns the form.
    check: Callable[[Mapping[str, FieldValue]], Mapping[str, str]] | None = None

    def __post_init__(self) -> None:
        if not NODE_RE.fullmatch(self.name):
            raise ValueError(f"command name {self.name!r}: lower-case letters, digits and '-'")
        vars_ = [f.var for f in self.fields]
        if len(set(vars_)) != len(vars_):
            raise ValueError(f"command {self.name}: duplicate field names")


class Registry:
    """The commands the agent offers, by name, in the order they were added."""

    def __init__(self, commands: Sequence[Command] = ()) -> None:
        self._commands: dict[str, Command] = {}
        for command in commands:
            self.add(command)

    def add(self, command: Command) -> None:
        if command.name in self._commands:
            raise ValueError(f"command {command.name} is already registered")
        self._commands[command.name] = command

    def get(self, name: str) -> Command | None:
        return self._commands.get(name)

    def __iter__(self) -> Iterator[Command]:
        return iter(list(self._commands.values()))

    def __len__(self) -> int:
        return len(self._commands)


class RateLimiter:
    """A token bucket per requester: ``burst`` at once, refilled at ``per_minute``.

    The table is bounded: beyond ``max_keys`` requesters the least recently seen is
    forgotten (and starts again with a full bucket), so a flood of JIDs cannot grow it.
    """

    def __init__(self, per_minute: float = 10.0, burst: int = 5, *, max_keys: int = 1024,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = per_minute / 60.0
        self.burst = float(burst)
        self.max_keys = max_keys
        self.clock = clock
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # key -> (tokens, at)

    def allow(self, key: str) -> bool:
        """Take one token for ``key``; False if there is none."""
        now = self.clock()
        tokens, at = self._buckets.pop(key, (self.burst, now))
        tokens = min(self.burst, tokens + (now - at) * self.rate)
        allowed = tokens >= 1.0
        self._buckets[key] = (tokens - 1.0 if allowed else tokens, now)
        while len(self._buckets) > self.max_keys:
            self._buckets.popitem(last=False)
        return allowed


# -- the flow of one execution, without XMPP ----------------------------------------------

SESSION_TIMEOUT = 120.0  # s an unfinished multi-step session is kept
MAX_SESSIONS = 64  # open sessions at once, all requesters together
CONFIRM = Field("confirm", "Confirm", "bool", required=True, default=False)
Submitted = Mapping[str, Sequence[str]]


class Refused(Exception):
    """A request answered with an XMPP error: ``condition`` is the RFC 6120 one."""

    def __init__(self, condition: str, text: str) -> None:
        super().__init__(text)
        self.condition = condition
        self.text = text


@dataclass(frozen=True)
class Reply:
    """The answer to one step: a form to fill in, or the end of the session."""

    sessionid: str
    status: Literal["executing", "completed", "canceled"]
    form: FormView | None = None
    note: str = ""
    note_type: Literal["info", "warn", "error"] = "info"
    has_next: bool = False  # another form follows this one (the confirmation)


@dataclass
class Session:
    """A multi-step execution in progress."""

    id: str
    requester: str  # full JID: only that resource may continue it
    command: Command
    touched: float
    stage: Literal["form", "confirm"] = "form"
    values: dict[str, FieldValue] = field(default_factory=dict)


class Dispatcher:
    """Access, rate limit, forms, confirmation, interlocks, handler and audit, step by step."""

    def __init__(self, registry: Registry, operators: Sequence[str], audit: AuditLog, agent: AgentFacade,
                 *, is_operator: Callable[[str, Sequence[str]], bool],
                 limiter: RateLimiter | None = None, session_timeout: float = SESSION_TIMEOUT,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.registry = registry
        self.operators = tuple(operators)
        self.audit = audit
        self.agent = agent
        self.is_operator = is_operator
        self.limiter = limiter or RateLimiter()
        self.session_timeout = session_timeout
        self.clock = clock
        self.sessions: dict[str, Session] = {}
        self._limited: set[str] = set()  # requesters whose refusal was audited already

    # -- listing ---------------------------------------------------------------

    async def visible(self, requester: str) -> list[Command]:
        """The commands ``requester`` may see: all for an operator, none for anyone else (audited)."""
        if self.is_operator(requester, self.operators):
            return list(self.registry)
        if self.limiter.allow(_bare(requester)):
            await self._record(requester, "", au.FORBIDDEN, "asked for the command list")
        return []

    # -- one step --------------------------------------------------------------

    async def handle(self, requester: str, node: str, action: str, sessionid: str | None,
                     submitted: Submitted | None) -> Reply:
        """Answer one XEP-0050 request; Refused for an error reply."""
        if sessionid:
            return await self._continue(requester, node, action, sessionid, submitted)
        return await self._start(requester, node, action, submitted)

    async def _start(self, requester: str, node: str, action: str, submitted: Submitted | None) -> Reply:
        await self._admit(requester, node)
        command = self.registry.get(node)
        if command is None:
            await self._record(requester, node, au.UNKNOWN, "no such command")
            raise Refused("item-not-found", f"no command {node!r} here")
        if action == "cancel":
            raise Refused("bad-request", "nothing to cancel: no session was given")
        session = self._open(requester, command)
        if submitted is None and command.fields:
            return self._form_reply(session)
        return await self._submit_fields(session, submitted or {})

    async def _continue(self, requester: str, node: str, action: str, sessionid: str,
                        submitted: Submitted | None) -> Reply:
        await self._check_access(requester, node)
        session = self.sessions.get(sessionid)
        if session is None or session.requester != requester or session.command.name != node:
            raise Refused("item-not-found", "no such session here (it may have timed out)")
        session.touched = self.clock()
        if action == "cancel":
            self.sessions.pop(session.id, None)
            await self._record(requester, node, au.CANCELLED, f"cancelled at the {session.stage} step",
                               redacted(session.command.fields, session.values))
            return Reply(session.id, "canceled", note="Cancelled; nothing was done.")
        if action == "prev":
            raise Refused("bad-request", "this command has no previous step")
        if session.stage == "confirm":
            return await self._submit_confirmation(session, submitted or {})
        return await self._submit_fields(session, submitted or {})

    async def _admit(self, requester: str, node: str) -> None:
        """Rate limit, then access: both refusals are audited (a refused streak once)."""
        bare = _bare(requester)
        if not self.limiter.allow(bare):
            if bare not in self._limited:
                if len(self._limited) > 1024:
                    self._limited.clear()
                self._limited.add(bare)
                log.warning("command requests from %s are over the rate limit", bare)
                await self._record(requester, node, au.RATE_LIMITED, "over the rate limit")
            raise Refused("resource-constraint", "too many command requests; wait a minute")
        self._limited.discard(bare)
        await self._check_access(requester, node)

    async def _check_access(self, requester: str, node: str) -> None:
        if not self.is_operator(requester, self.operators):
            log.warning("command %r refused to %s: not an operator", node, requester)
            await self._record(requester, node, au.FORBIDDEN, "not an operator")
            raise Refused("forbidden", "only the fleet's operators may run commands on this car")

    def _open(self, requester: str, command: Command) -> Session:
        if len(self.sessions) >= MAX_SESSIONS:
            oldest = min(self.sessions.values(), key=lambda s: s.touched)
            self.sessions.pop(oldest.id, None)
            log.warning("too many open command sessions: dropped %s's %s", oldest.requester,
                        oldest.command.name)
        session = Session(secrets.token_urlsafe(12), requester, command, self.clock())
        self.sessions[session.id] = session
        return session

    # -- the steps ---------------------------------------------------------------

    async def _submit_fields(self, session: Session, submitted: Submitted) -> Reply:
        command = session.command
        values, errors = validate(command.fields, submitted)
        if not errors and command.check is not None:
            errors = dict(command.check(values))
        if errors:
            await self._record(session.requester, command.name, au.INVALID, describe_errors(errors),
                               redacted(command.fields, values))
            return self._form_reply(session, errors, submitted)
        session.values = values
        if command.confirm is None:
            return await self._run(session)
        session.stage = "confirm"
        return self._confirm_reply(session)

    async def _submit_confirmation(self, session: Session, submitted: Submitted) -> Reply:
        values, errors = validate((CONFIRM,), submitted)
        if errors:
            await self._record(session.requester, session.command.name, au.INVALID,
                               describe_errors(errors), redacted(session.command.fields, session.values))
            return self._confirm_reply(session, errors)
        if values.get("confirm") is not True:
            self.sessions.pop(session.id, None)
            await self._record(session.requester, session.command.name, au.CANCELLED, "not confirmed",
                               redacted(session.command.fields, session.values))
            return Reply(session.id, "completed", note="Not confirmed; nothing was done.")
        return await self._run(session)

    async def _run(self, session: Session) -> Reply:
        """Interlocks, then the handler; the session ends here whatever happens."""
        self.sessions.pop(session.id, None)
        command = session.command
        arguments = redacted(command.fields, session.values)
        decisions = await self.decide_interlocks(command, session.requester)
        refused = [d for d in decisions if not d.ok and d.reason != NOT_ASKED]
        if refused:
            why = "; ".join(f"interlock '{d.name}' refused: {d.reason}" for d in refused)
            await self._record(session.requester, command.name, au.INTERLOCK, why, arguments, decisions)
            return Reply(session.id, "completed", note=f"Not done: {why}.", note_type="error")
        try:
            result = await command.handler(CommandContext(session.requester, session.values, self.agent))
        except Exception as exc:
            log.exception("command %s from %s failed", command.name, session.requester)
            await self._record(session.requester, command.name, au.ERROR, f"{type(exc).__name__}: {exc}",
                               arguments, decisions)
            return Reply(session.id, "completed", note="The command failed; the car's log says why.",
                         note_type="error")
        await self._record(session.requester, command.name, au.OK if result.ok else au.FAILED,
                           result.text[:200], arguments, decisions)
        return Reply(session.id, "completed", _result_form(command, result), result.text,
                     "info" if result.ok else "error")

    async def decide_interlocks(self, command: Command,
                                requester: str = "") -> tuple[Decision, ...]:
        """Ask every plain interlock (all of them, so the audit shows each decision), then,
        only if they all agreed, the asking ones (the driver) in order until one refuses."""
        decisions: list[Decision | None] = []
        for interlock in command.interlocks:
            if isinstance(interlock, AskingInterlock):
                decisions.append(None)
                continue
            try:
                reason = interlock.check(self.agent.state)
            except Exception:
                log.exception("interlock %s of %s failed: counted as a refusal", interlock.name, command.name)
                reason = "the interlock could not be checked"
            decisions.append(Decision(interlock.name, reason is None, reason))
        refused = any(d is not None and not d.ok for d in decisions)
        for i, interlock in enumerate(command.interlocks):
            if decisions[i] is not None:
                continue
            if refused:
                decisions[i] = Decision(interlock.name, False, NOT_ASKED)
                continue
            try:
                assert isinstance(interlock, AskingInterlock)
                answer = await interlock.ask(requester, command)
            except Exception:
                log.exception("interlock %s of %s failed: counted as a refusal", interlock.name, command.name)
                answer = "the interlock could not be checked"
            decisions[i] = Decision(interlock.name, answer is None, answer)
            refused = answer is not None
        return tuple(d for d in decisions if d is not None)

    # -- forms -------------------------------------------------------------------

    def _form_reply(self, session: Session, errors: Mapping[str, str] | None = None,
                    submitted: Submitted | None = None) -> Reply:
        command = session.command
        shown: dict[str, FieldValue] = {f.var: f.default for f in command.fields if f.default is not None}
        for var, raw in (submitted or {}).items():  # the operator's text comes back to be corrected
            if raw and any(f.var == var for f in command.fields):
                shown[var] = raw[0][:1000]
        instructions = describe_errors(errors) if errors else command.description
        form = FormView(command.title, instructions, command.fields, shown, dict(errors or {}))
        return Reply(session.id, "executing", form, has_next=command.confirm is not None)

    def _confirm_reply(self, session: Session, errors: Mapping[str, str] | None = None) -> Reply:
        question = session.command.confirm or ""
        instructions = f"{describe_errors(errors)}\n{question}" if errors else question
        form = FormView(session.command.title, instructions, (CONFIRM,), {"confirm": False},
                        dict(errors or {}))
        return Reply(session.id, "executing", form)

    # -- housekeeping ------------------------------------------------------------

    async def expire(self) -> list[Session]:
        """End sessions idle for longer than the timeout; each is audited as a timeout."""
        limit = self.clock() - self.session_timeout
        expired = [s for s in self.sessions.values() if s.touched < limit]
        for session in expired:
            self.sessions.pop(session.id, None)
            log.info("command %s from %s timed out at the %s step", session.command.name,
                     session.requester, session.stage)
            await self._record(session.requester, session.command.name, au.TIMEOUT,
                               f"no answer at the {session.stage} step",
                               redacted(session.command.fields, session.values))
        return expired

    async def _record(self, requester: str, command: str, result: str, detail: str,
                      arguments: Mapping[str, FieldValue] | None = None,
                      interlocks: tuple[Decision, ...] = ()) -> None:
        entry = AuditEntry(au.now(), requester, command, result, detail, dict(arguments or {}), interlocks)
        try:
            await self.audit.record(entry)
        except Exception:
            log.exception("audit entry not written: %s", entry)


def _result_form(command: Command, result: Result) -> FormView | None:
    if not result.fields:
        return None
    fields = tuple(Field(f"field-{i}", label) for i, (label, _) in enumerate(result.fields))
    values = {f"field-{i}": value for i, (_, value) in enumerate(result.fields)}
    return FormView(command.title, "", fields, values, type="result")


def _bare(requester: str) -> str:
    """The requester's account, for rate limits and the audit (a stanza's sender is always a JID)."""
    try:
        return bare_jid(requester)
    except JidError:
        return requester.lower()
