"""The ``telemetry`` command: show the rules in force, set or remove one path's rule, or reset.

Changes apply at once and are kept across restarts (``agent.telemetry.overrides``).
There is no confirmation step: the command's default action only shows, every
change is reversible (``reset`` returns to the profile's rules) and the audit
trail records each one with its values.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from agent.commands.forms import Field, FieldValue
from agent.commands.registry import Command, CommandContext, Result
from agent.profile.model import TelemetryConfig, TelemetryRule
from agent.telemetry import RuleError, Telemetry
from agent.telemetry.overrides import MAX_RULES, is_rule_path

ACTIONS = ("show", "set", "remove", "reset")
LONGEST = 86400.0  # s: a heartbeat or minimum interval of at most a day

FIELDS = (
    Field("action", "Action", "list-single", options=ACTIONS, default="show",
          description="show the rules; set or remove one path's rule; reset to the profile's rules"),
    Field("path", "VSS path", "text", max=256, description="e.g. Vehicle.Speed (for set and remove)"),
    Field("every", "Every (s)", "float", max=LONGEST,
          description="set: sample at least this often, seconds above 0"),
    Field("change", "On a change of", "float", min=0,
          description="set: sample when the value moved this much (0: every change)"),
    Field("min_interval", "At most every (s)", "float", min=0, max=LONGEST,
          description="set: never sample more often than this (default 1 s)"),
)
DESCRIPTION = ("The VSS paths sampled for the fleet, and how often. 'set' replaces the whole rule for "
               "its path; changes apply at once and are kept across restarts; 'reset' returns to the "
               "profile's rules.")

Values = Mapping[str, FieldValue]


def telemetry_command(telemetry: Telemetry | None, config: TelemetryConfig) -> Command:
    """The ``telemetry`` command over this car's live rules (``telemetry`` None: telemetry is off)."""

    async def handler(ctx: CommandContext) -> Result:
        action = str(ctx.values.get("action", "show"))
        if telemetry is None:
            return _off(config, action)
        try:
            said = await _act(telemetry, action, ctx.values)
        except RuleError as exc:  # e.g. the rules filled up between the form and now
            return Result(f"Nothing was changed: {exc}.", _rows(telemetry), ok=False)
        hint = _hint(ctx, action)
        return Result(f"{said}{hint} {_summary(telemetry)}", _rows(telemetry))

    return Command("telemetry", "Telemetry rules", FIELDS, handler, description=DESCRIPTION,
                   check=_checker(telemetry))


# -- cross-field checks -------------------------------------------------------------------


def _checker(telemetry: Telemetry | None) -> Callable[[Values], dict[str, str]]:
    def check(values: Values) -> dict[str, str]:
        action = values.get("action", "show")
        if action not in ("set", "remove"):
            return {}
        errors = _path_errors(action, values.get("path"))
        if action == "set":
            errors.update(_set_errors(values))
        if telemetry is None or "path" in errors:
            return errors
        path = str(values["path"])
        if action == "remove" and telemetry.origin(path) is None:
            errors["path"] = f"VSS path: no rule for {path} to remove"
        elif action == "set" and telemetry.origin(path) is None and len(telemetry.rules) >= MAX_RULES:
            errors["path"] = f"VSS path: already {len(telemetry.rules)} rules, the most one car may have"
        return errors

    return check


def _path_errors(action: FieldValue, path: FieldValue | None) -> dict[str, str]:
    if not isinstance(path, str) or not path:
        return {"path": f"VSS path: is required to {action} a rule"}
    if not is_rule_path(path):
        shown = path if len(path) <= 40 else path[:39] + "…"
        return {"path": f"VSS path: {shown!r} is not a path like Vehicle.Speed or Headunit.VehicleMode"}
    return {}


def _set_errors(values: Values) -> dict[str, str]:
    every = values.get("every")
    if every is None and values.get("change") is None:
        return {"every": "set needs Every (s), On a change of, or both"}
    if isinstance(every, (int, float)) and every <= 0:
        return {"every": f"Every (s): {every:g} is not above 0"}
    return {}


# -- the actions ----------------------------------------------------------------------------


async def _act(telemetry: Telemetry, action: str, values: Values) -> str:
    """Do what was asked; the sentence that says what changed."""
    if action == "set":
        rule = _rule(values)
        was = telemetry.origin(rule.path)
        await telemetry.set_rule(rule)
        verb = "Added" if was is None else "Changed"
        return f"{verb} the rule for {rule.path}: {describe(rule)}."
    if action == "remove":
        path = str(values.get("path", ""))
        if not await telemetry.remove_rule(path):
            return f"No rule for {path}: nothing was changed."
        if path in {r.path for r in telemetry.removed_rules}:
            return f"Removed the rule for {path}; 'reset' brings the profile's back."
        return f"Removed the rule for {path}."
    if action == "reset":
        forgotten = await telemetry.reset_rules()
        if not forgotten:
            return "No operator changes to forget: the profile's rules apply."
        return f"Forgot {forgotten} operator change{'s' if forgotten != 1 else ''}: the profile's rules apply."
    return "The telemetry rules in force."


def _rule(values: Values) -> TelemetryRule:
    def number(var: str) -> float | None:
        value = values.get(var)
        return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None

    interval = number("min_interval")
    return TelemetryRule(str(values.get("path", "")), every=number("every"), change=number("change"),
                         min_interval=TelemetryRule.min_interval if interval is None else interval)


def _hint(ctx: CommandContext, action: str) -> str:
    """For a new rule: say when the car has no value for the path (a typo?) yet."""
    path = ctx.values.get("path")
    if action != "set" or not isinstance(path, str) or ctx.agent.state.get(path) is not None:
        return ""
    return f" (this car has no value for {path} yet: it is sampled once it has one)"


def _off(config: TelemetryConfig, action: str) -> Result:
    why = ("Telemetry is off in this car's profile (its [telemetry] section names no service)"
           if config.service is None else "Telemetry is not running on this car")
    if action == "show":
        return Result(f"{why}: no rules are in force.")
    return Result(f"{why}: nothing was changed.", ok=False)


# -- display ------------------------------------------------------------------------------------


def describe(rule: TelemetryRule) -> str:
    """A rule in words, e.g. "every 30 s, on a change of 5, at most every 1 s"."""
    parts = []
    if rule.every is not None:
        parts.append(f"every {rule.every:g} s")
    if rule.change is not None:
        parts.append(f"on a change of {rule.change:g}" if rule.change else "on every change")
    parts.append(f"at most every {rule.min_interval:g} s")
    return ", ".join(parts)


def _rows(telemetry: Telemetry) -> tuple[tuple[str, str], ...]:
    shown = [(r.path, f"{describe(r)} [{telemetry.origin(r.path)}]") for r in telemetry.rules]
    shown += [(r.path, f"off: removed by an operator [profile: {describe(r)}]") for r in telemetry.removed_rules]
    return tuple(shown)


def _summary(telemetry: Telemetry) -> str:
    publisher = telemetry.publisher
    count = len(telemetry.rules)
    return f"{count} rule{'s' if count != 1 else ''} in force, published to {publisher.node} on {publisher.service}."
