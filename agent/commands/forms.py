"""Command form fields and their validation, independent of XMPP.

A form arrives as XEP-0004 does it: each field's var with a list of strings.
Every value is checked here, before any handler runs; a bad value becomes an
error message for that field, never an exception that reaches the peer.
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal, Union

Kind = Literal["text", "text-private", "int", "float", "bool", "list-single", "jid"]
FieldValue = Union[str, int, float, bool]

MAX_TEXT = 1000  # characters in one text value
MAX_VALUES = 1  # every kind here takes one value
REDACTED = "(not recorded)"
TRUE = frozenset({"1", "true"})  # XEP-0004 3.3 boolean lexical forms
FALSE = frozenset({"0", "false"})
# A bare or full JID, checked loosely here (no slixmpp in this module): local@domain[/resource].
JID_RE = re.compile(r"^(?:[^@/\s\"&'<>:]{1,1023}@)?[^@/\s]{1,1023}(?:/\S.{0,1022})?$")


class FieldError(ValueError):
    """One submitted value is not acceptable for its field."""


@dataclass(frozen=True)
class Field:
    """One question of a command's form."""

    var: str
    label: str
    kind: Kind = "text"
    required: bool = False
    options: tuple[str, ...] = ()  # list-single: the allowed values
    default: FieldValue | None = None
    min: float | None = None  # int/float: smallest allowed; text: shortest length
    max: float | None = None  # int/float: largest allowed; text: longest length
    description: str = ""

    def parse(self, raw: Sequence[str]) -> FieldValue | None:
        """The typed value of what was submitted (None if left empty); FieldError if unacceptable."""
        values = [v for v in raw if v != ""]
        if len(values) > MAX_VALUES:
            raise FieldError("takes one value")
        if not values:
            if self.required:
                raise FieldError("is required")
            return self.default
        return _PARSERS[self.kind](self, values[0].strip() if self.kind != "text-private" else values[0])


@dataclass(frozen=True)
class FormView:
    """A form to show, or a result to report: what the XMPP layer renders as XEP-0004."""

    title: str
    instructions: str = ""
    fields: tuple[Field, ...] = ()
    values: Mapping[str, FieldValue] = field(default_factory=dict)  # pre-filled or reported values
    errors: Mapping[str, str] = field(default_factory=dict)  # var -> message
    type: Literal["form", "result"] = "form"


def validate(fields: Sequence[Field], submitted: Mapping[str, Sequence[str]]
             ) -> tuple[dict[str, FieldValue], dict[str, str]]:
    """The typed values of the known fields, and the errors (var -> message); unknown vars are ignored."""
    values: dict[str, FieldValue] = {}
    errors: dict[str, str] = {}
    for f in fields:
        try:
            value = f.parse(submitted.get(f.var, ()))
        except FieldError as exc:
            errors[f.var] = f"{f.label}: {exc}"
            continue
        if value is not None:
            values[f.var] = value
    return values, errors


def redacted(fields: Sequence[Field], values: Mapping[str, FieldValue]) -> dict[str, FieldValue]:
    """Values fit for the audit trail: private fields are never written down."""
    private = {f.var for f in fields if f.kind == "text-private"}
    return {var: (REDACTED if var in private else value) for var, value in values.items()}


def describe_errors(errors: Mapping[str, str]) -> str:
    """One line for a form's instructions that names every refused field."""
    return "Please correct: " + "; ".join(errors.values())


# -- one parser per kind ---------------------------------------------------------------


def _text(f: Field, text: str) -> FieldValue:
    if any(unicodedata.category(ch) == "Cc" and ch not in "\n\t" for ch in text):
        raise FieldError("contains control characters")
    longest = int(f.max) if f.max is not None else MAX_TEXT
    if len(text) > min(longest, MAX_TEXT):
        raise FieldError(f"is longer than {min(longest, MAX_TEXT)} characters")
    if f.min is not None and len(text) < f.min:
        raise FieldError(f"is shorter than {int(f.min)} characters")
    return text


def _int(f: Field, text: str) -> FieldValue:
    if not re.fullmatch(r"[+-]?\d{1,18}", text):
        raise FieldError(f"{_shown(text)} is not a whole number")
    return _bounded(f, int(text))


def _float(f: Field, text: str) -> FieldValue:
    try:
        number = float(text)
    except ValueError:
        raise FieldError(f"{_shown(text)} is not a number") from None
    if not math.isfinite(number):
        raise FieldError(f"{_shown(text)} is not a finite number")
    return _bounded(f, number)


def _bool(f: Field, text: str) -> FieldValue:
    lowered = text.lower()
    if lowered in TRUE:
        return True
    if lowered in FALSE:
        return False
    raise FieldError(f"{_shown(text)} is not a yes/no value (true, false, 1, 0)")


def _choice(f: Field, text: str) -> FieldValue:
    if text not in f.options:
        raise FieldError(f"{_shown(text)} is not one of {', '.join(f.options)}")
    return text


def _jid(f: Field, text: str) -> FieldValue:
    if len(text) > 3071 or not JID_RE.fullmatch(text):
        raise FieldError(f"{_shown(text)} is not a JID like name@example.org")
    return text


def _bounded(f: Field, number: int | float) -> int | float:
    if f.min is not None and number < f.min:
        raise FieldError(f"{number} is below the minimum {_number(f.min)}")
    if f.max is not None and number > f.max:
        raise FieldError(f"{number} is above the maximum {_number(f.max)}")
    return number


def _number(bound: float) -> str:
    return str(int(bound)) if float(bound).is_integer() else str(bound)


def _shown(text: str) -> str:
    """A submitted value quoted in an error message, bounded so a hostile value cannot flood it."""
    return repr(text if len(text) <= 40 else text[:39] + "…")


_PARSERS = {"text": _text, "text-private": _text, "int": _int, "float": _float, "bool": _bool,
            "list-single": _choice, "jid": _jid}
