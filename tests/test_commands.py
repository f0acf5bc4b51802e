"""Command forms, interlocks, rate limit and audit, without XMPP."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest

from agent.commands.audit import AuditLog, read_file_tail
from agent.commands.builtin import builtin_registry
from agent.commands.forms import Field, FieldValue, validate
from agent.commands.registry import (
    NOT_ASKED,
    AgentFacade,
    Command,
    CommandContext,
    Dispatcher,
    ModeIs,
    RateLimiter,
    Refused,
    Registry,
    Result,
    SpeedIsZero,
)
from agent.vehicle import paths
from agent.vehicle.state import VehicleState

OPERATOR = "ops@fleet.example/laptop"


def is_operator(jid: str, operators: object) -> bool:
    return jid.split("/")[0].endswith("@fleet.example")


@pytest.fixture
def audit(tmp_path: Path) -> Iterator[AuditLog]:
    log = AuditLog(tmp_path / "audit.db")
    yield log
    log.close()


def test_fields_parse_and_refuse() -> None:
    form = (Field("n", "Count", "int", required=True, min=1, max=10), Field("on", "On", "bool"),
            Field("who", "Who", "jid"), Field("x", "Speed", "float", max=5.5),
            Field("pick", "Pick", "list-single", options=("a", "b")))
    values, errors = validate(form, {"n": ["3"], "on": ["true"], "who": ["a@b.example"], "x": ["5.5"],
                                     "pick": ["b"], "extra": ["ignored"]})
    assert values == {"n": 3, "on": True, "who": "a@b.example", "x": 5.5, "pick": "b"} and errors == {}
    values, errors = validate(form, {"n": ["11"], "on": ["maybe"], "who": ["not a jid"], "x": ["nan"],
                                     "pick": ["c"]})
    assert values == {} and set(errors) == {"n", "on", "who", "x", "pick"}
    assert "above the maximum 10" in errors["n"]
    _, errors = validate(form, {})
    assert errors == {"n": "Count: is required"}


def test_interlocks_say_why() -> None:
    state = VehicleState()
    assert SpeedIsZero().check(state) == "the vehicle speed is unknown"
    state.update(paths.SPEED, 12.0, "can")
    state.update(paths.MODE, "driving", "mode")
    assert "moving" in (SpeedIsZero().check(state) or "")
    assert "driving, not parked" in (ModeIs("parked").check(state) or "")
    state.update(paths.SPEED, 0, "can")
    state.update(paths.MODE, "parked", "mode")
    assert SpeedIsZero().check(state) is None and ModeIs("parked").check(state) is None


def test_rate_limiter_burst_then_refill() -> None:
    now = [0.0]
    limiter = RateLimiter(per_minute=10, burst=5, clock=lambda: now[0])
    assert [limiter.allow("a") for _ in range(6)] == [True] * 5 + [False]
    assert limiter.allow("b")  # per requester
    now[0] += 6.0  # one token back
    assert limiter.allow("a") and not limiter.allow("a")


async def test_dispatcher_rate_limits_and_audits_once(audit: AuditLog) -> None:
    desk = Dispatcher(builtin_registry(), ["@fleet.example"], audit, AgentFacade(VehicleState()),
                      is_operator=is_operator, limiter=RateLimiter(per_minute=1, burst=2))
    for _ in range(2):
        reply = await desk.handle(OPERATOR, "status", "execute", None, None)
        assert reply.status == "completed"
    for _ in range(3):
        with pytest.raises(Refused) as refused:
            await desk.handle(OPERATOR, "status", "execute", None, None)
        assert refused.value.condition == "resource-constraint"
    assert [e.result for e in await audit.tail(10)] == ["ok", "ok", "rate-limited"]


async def test_private_values_never_reach_the_audit(audit: AuditLog, tmp_path: Path) -> None:
    from agent.commands.registry import Command, Registry, Result

    async def handler(ctx: object) -> Result:
        return Result("done")

    registry = Registry([Command("login", "Log in", (Field("user", "User", required=True),
                                                     Field("pw", "Password", "text-private")), handler)])
    desk = Dispatcher(registry, [], audit, AgentFacade(VehicleState()), is_operator=is_operator)
    reply = await desk.handle(OPERATOR, "login", "execute", None, {"user": ["ann"], "pw": ["s3cret"]})
    assert reply.status == "completed"
    entries = read_file_tail(tmp_path / "audit.db", 5)
    assert entries[-1].arguments == {"user": "ann", "pw": "(not recorded)"}
    assert "s3cret" not in (tmp_path / "audit.db").read_bytes().decode("latin-1")


async def test_headunit_audit_prints_the_tail(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    from agent.cli import main

    monkeypatch.setenv("HEADUNIT_DATA_DIR", str(tmp_path))
    log = AuditLog(tmp_path / "audit.db")
    desk = Dispatcher(builtin_registry(), [], log, AgentFacade(VehicleState()), is_operator=is_operator)
    await desk.handle(OPERATOR, "status", "execute", None, None)
    with pytest.raises(Refused):
        await desk.handle("mallory@evil.example/x", "status", "execute", None, None)
    log.close()
    assert main(["audit", "profiles/demo.toml", "-n", "5"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2
    assert "ops@fleet.example/laptop  status  ok" in lines[0]
    assert "mallory@evil.example/x  status  forbidden" in lines[1]


class Asker:
    """An asking interlock (like the driver's confirmation) that records whether it was asked."""

    def __init__(self, answer: str | None) -> None:
        self.answer = answer
        self.asked: list[tuple[str, str]] = []

    @property
    def name(self) -> str:
        return "driver confirms"

    async def ask(self, requester: str, command: Command) -> str | None:
        self.asked.append((requester, command.name))
        return self.answer


async def done(ctx: CommandContext) -> Result:
    return Result("done")


def guarded(asker: Asker) -> Registry:
    return Registry([Command("open", "Open", (), done, interlocks=(asker, SpeedIsZero()))])


async def test_asking_interlock_is_asked_only_when_the_others_agree(audit: AuditLog) -> None:
    state = VehicleState()
    state.update(paths.SPEED, 30.0, "can")
    asker = Asker(None)
    desk = Dispatcher(guarded(asker), ["@fleet.example"], audit, AgentFacade(state), is_operator=is_operator)
    reply = await desk.handle(OPERATOR, "open", "execute", None, None)
    assert "speed is zero" in reply.note and "driver" not in reply.note, reply.note
    assert asker.asked == [], "the driver is not bothered with what is refused anyway"
    state.update(paths.SPEED, 0, "can")
    reply = await desk.handle(OPERATOR, "open", "execute", None, None)
    assert reply.note == "done" and asker.asked == [(OPERATOR, "open")]
    entries = await audit.tail(2)
    assert [(d.name, d.ok) for d in entries[0].interlocks] == [("driver confirms", False), ("speed is zero", False)]
    assert entries[0].interlocks[0].reason == NOT_ASKED
    assert [(d.name, d.ok) for d in entries[1].interlocks] == [("driver confirms", True), ("speed is zero", True)]


async def test_asking_interlock_refusal_is_named(audit: AuditLog) -> None:
    state = VehicleState()
    state.update(paths.SPEED, 0, "can")
    desk = Dispatcher(guarded(Asker("the driver declined")), ["@fleet.example"], audit, AgentFacade(state),
                      is_operator=is_operator)
    reply = await desk.handle(OPERATOR, "open", "execute", None, None)
    assert reply.note == "Not done: interlock 'driver confirms' refused: the driver declined."
    assert (await audit.tail(1))[0].result == "interlock"


async def test_cross_field_check_returns_the_form(audit: AuditLog) -> None:
    def needs_one(values: Mapping[str, FieldValue]) -> dict[str, str]:
        return {} if values.get("a") or values.get("b") else {"a": "A or B: give one of them"}

    command = Command("pick", "Pick", (Field("a", "A"), Field("b", "B")), done, check=needs_one)
    desk = Dispatcher(Registry([command]), ["@fleet.example"], audit, AgentFacade(VehicleState()),
                      is_operator=is_operator)
    first = await desk.handle(OPERATOR, "pick", "execute", None, None)
    again = await desk.handle(OPERATOR, "pick", "complete", first.sessionid, {"a": [""], "b": [""]})
    assert again.status == "executing" and again.form is not None
    assert again.form.errors == {"a": "A or B: give one of them"}
    finished = await desk.handle(OPERATOR, "pick", "complete", first.sessionid, {"b": ["x"]})
    assert finished.status == "completed" and finished.note == "done"


@pytest.mark.parametrize(("speed", "ignition", "refusal"), [
    (0.0, "LOCK", None),  # switched off standing still: its bus sleeps, it cannot drive off unseen
    (0.0, "OFF", None),
    (0.0, "ON", "stale and the ignition was not off"),  # the bus went quiet at a red light
    (0.0, None, "stale and the ignition was not off"),
    (40.0, "LOCK", "last seen moving (40.0 km/h)"),  # the bus died while moving
])
def test_a_stale_speed_counts_as_zero_only_when_the_car_was_switched_off(
        speed: float, ignition: str | None, refusal: str | None) -> None:
    now = [0.0]
    state = VehicleState(clock=lambda: now[0])
    state.set_stale_after("can", 2.0)
    state.update(paths.SPEED, speed, "can")
    if ignition is not None:
        state.update(paths.LOW_VOLTAGE_STATE, ignition, "can")
    now[0] = 10.0
    assert set(state.expire()) >= {paths.SPEED}
    reason = SpeedIsZero().check(state)
    if refusal is None:
        assert reason is None
    else:
        assert reason is not None and refusal in reason, reason
