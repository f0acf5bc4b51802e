"""The typed surface of slixmpp the agent uses where slixmpp itself has no annotations.

slixmpp 1.17 ships ``py.typed`` and types most of its core, but several of the plugins we
call (XEP-0004 forms, XEP-0060 PubSub, XEP-0352 CSI, the roster's removal) are unannotated,
so mypy would see ``Any``. These Protocols name exactly the calls we make, with the types
slixmpp really takes and returns; :func:`plugin` hands out a plugin as one of them.
Everything returning ``Awaitable[Iq]`` is slixmpp's ``iq.send()``: awaiting it gives the
result IQ or raises ``IqError`` / ``IqTimeout``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Iterable
from typing import Any, Protocol, cast
from xml.etree.ElementTree import Element

import slixmpp
from slixmpp.jid import JID
from slixmpp.plugins.xep_0004 import Form
from slixmpp.stanza import Iq

class Forms(Protocol):
    """xep_0004."""

    def make_form(self, ftype: str = "form", title: str = "", instructions: str = "") -> Form: ...


class Pubsub(Protocol):
    """xep_0060: the calls the telemetry and location plugins make."""

    def create_node(self, jid: str, node: str, config: Form | None = None, ntype: str | None = None,
                    ifrom: str | None = None, callback: None = None, timeout: float | None = None) -> Awaitable[Iq]: ...

    def set_node_config(self, jid: str, node: str, config: Form, ifrom: str | None = None,
                        callback: None = None, timeout: float | None = None) -> Awaitable[Iq]: ...

    def get_node_affiliations(self, jid: str, node: str, ifrom: str | None = None, callback: None = None,
                              timeout: float | None = None) -> Awaitable[Iq]: ...

    def modify_affiliations(self, jid: str, node: str, affiliations: Iterable[tuple[str, str]] | None = None,
                            ifrom: str | None = None, callback: None = None,
                            timeout: float | None = None) -> Awaitable[Iq]: ...

    def publish(self, jid: str, node: str, id: str | None = None, payload: Element | None = None,
                options: Form | None = None, ifrom: str | None = None, callback: None = None,
                timeout: float | None = None) -> Awaitable[Iq]: ...


class ClientState(Protocol):
    """xep_0352: both send nothing if the server did not offer CSI."""

    def send_active(self) -> None: ...

    def send_inactive(self) -> None: ...


class FormApi(Protocol):
    """What we call on a :class:`~slixmpp.plugins.xep_0004.Form`."""

    def add_field(self, var: str = "", ftype: str | None = None, label: str = "", desc: str = "",
                  required: bool = False, value: Any = None, options: list[dict[str, str]] | None = None,
                  **kwargs: Any) -> Any: ...


def plugins(client: slixmpp.BaseXMPP) -> Any:
    """The client's plugin manager: slixmpp types it as a TypedDict of its own plugins only."""
    return client.plugin


def pubsub(client: slixmpp.BaseXMPP) -> Pubsub:
    return cast(Pubsub, plugins(client)["xep_0060"])


def forms(client: slixmpp.BaseXMPP) -> Forms:
    return cast(Forms, plugins(client)["xep_0004"])


def client_state(client: slixmpp.BaseXMPP) -> ClientState:
    return cast(ClientState, plugins(client)["xep_0352"])


def new_form() -> Form:
    """An empty XEP-0004 form (slixmpp's ``Form()`` constructor is unannotated)."""
    make: Any = Form
    return cast(Form, make())


def form_api(form: Form) -> FormApi:
    return cast(FormApi, form)


def send(iq: Iq, timeout: float) -> Awaitable[Iq]:
    """``iq.send(timeout=...)``, typed."""
    sender: Any = iq.send
    return cast(Awaitable[Iq], sender(timeout=timeout))


class Caps(Protocol):
    """xep_0115 (entity capabilities): its verification string for a JID, and recomputing ours."""

    def update_caps(self, jid: JID | str | None = None, node: str | None = None, preserve: bool = False,
                    broadcast: bool = True) -> Awaitable[None]: ...

    def get_verstring(self, jid: JID | str | None = None) -> Awaitable[str | None]: ...


def caps(client: slixmpp.BaseXMPP) -> Caps:
    return cast(Caps, plugins(client)["xep_0115"])
