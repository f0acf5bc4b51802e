"""What the page may ask of the agent: one handler per request type of docs/dashboard-protocol.md.

Every field is checked here before an agent API sees it; a bad one raises
:class:`RequestError` with a sentence the page can show. The agent's own refusals
(``ContactsError``, ``MessageError``, ``CabinError``, ``ValueError``) pass through
to the hub, which answers them the same way. ``id`` is the request's own number, so the
thing a request is about is named by its kind: ``notice``, ``question``, ``call``, ``file``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any

from agent.dashboard import frames
from agent.errors import HeadunitError
from agent.messages.store import MAX_JID_CHARS
from agent.policies.presence import MAX_STATUS, OVERRIDE_SHOWS
from agent.headless import chat_allowed
from agent.xmpp.contacts import bare_jid

if TYPE_CHECKING:
    from agent.app import Agent

MAX_ID = 64  # characters of a prompt or offer id

Handler = Callable[["Agent", Mapping[str, Any]], Awaitable[Any]]


class RequestError(HeadunitError, ValueError):
    """The page's request cannot be done as asked (unknown type, missing or wrong field)."""


async def handle(agent: Agent, request: Mapping[str, Any]) -> Any:
    """Do one request; returns its ``value``, raises for a refusal."""
    kind = request.get("type")
    handler = HANDLERS.get(kind) if isinstance(kind, str) else None
    if handler is None:
        raise RequestError(f"unknown request type {str(kind)[:40]!r}")
    return await handler(agent, request)


# -- fields --------------------------------------------------------------------------


def text(request: Mapping[str, Any], key: str, limit: int) -> str:
    """A required non-empty string field of at most ``limit`` characters."""
    value = request.get(key)
    if not isinstance(value, str) or not value.strip():
        raise RequestError(f"{key}: expected a non-empty text")
    if len(value) > limit:
        raise RequestError(f"{key}: at most {limit} characters")
    return value


def integer(request: Mapping[str, Any], key: str, *, required: bool = True) -> int | None:
    """An integer field (JSON booleans are not integers)."""
    value = request.get(key)
    if value is None and not required:
        return None
    if not isinstance(value, int) or isinstance(value, bool):
        raise RequestError(f"{key}: expected an integer")
    return value


def flag(request: Mapping[str, Any], key: str) -> bool:
    value = request.get(key)
    if not isinstance(value, bool):
        raise RequestError(f"{key}: expected true or false")
    return value


def jid(request: Mapping[str, Any], key: str) -> str:
    return bare_jid(text(request, key, MAX_JID_CHARS))


# -- handlers ------------------------------------------------------------------------


async def chat_send(agent: Agent, request: Mapping[str, Any]) -> Any:
    """Queue a message; while moving only one of the profile's quick replies."""
    to, body = jid(request, "to"), text(request, "body", 10_000)
    refusal = chat_allowed(agent, body)  # the same rule as `headunit chat send`
    if refusal is not None:
        raise RequestError(refusal)
    return frames.message(await agent.chat.send(to, body.strip()))


async def chat_thread(agent: Agent, request: Mapping[str, Any]) -> Any:
    """Older messages of one conversation, 50 at a time."""
    found = await agent.messages.thread(jid(request, "peer"), 50,
                                        before=integer(request, "before", required=False))
    return [frames.message(m) for m in found]


async def contacts_approve(agent: Agent, request: Mapping[str, Any]) -> Any:
    who = jid(request, "jid")
    agent.contacts.approve(who)
    return {"jid": who}


async def contacts_refuse(agent: Agent, request: Mapping[str, Any]) -> Any:
    who = jid(request, "jid")
    agent.contacts.refuse(who)
    return {"jid": who}


async def notice_ack(agent: Agent, request: Mapping[str, Any]) -> Any:
    """The driver read an operator's message; its sender is told by chat."""
    notice_id = integer(request, "notice")
    assert notice_id is not None
    notice = await agent.prompts.acknowledge(notice_id)
    return {"id": notice.id}


async def question_answer(agent: Agent, request: Mapping[str, Any]) -> Any:
    accept = flag(request, "accept")
    question = agent.prompts.answer(text(request, "question", MAX_ID), accept)
    return {"id": question.id, "accepted": accept}


async def presence_set(agent: Agent, request: Mapping[str, Any]) -> Any:
    """The driver's presence override (until presence.auto)."""
    show = request.get("show")
    if show not in OVERRIDE_SHOWS:
        raise RequestError(f"show: one of {', '.join(OVERRIDE_SHOWS)}")
    status = request.get("status")
    if status is not None and (not isinstance(status, str) or len(status) > MAX_STATUS):
        raise RequestError(f"status: a text of at most {MAX_STATUS} characters")
    update = agent.presence.override(str(show), status)
    return {"show": update.show or "available", "status": update.status}


async def presence_auto(agent: Agent, request: Mapping[str, Any]) -> Any:
    agent.presence.automatic()
    return None


def answer_offer(kind: str, accept: bool) -> Handler:
    """call.answer / call.decline (field ``call``), file.accept / file.decline (``file``): that kind only."""

    async def answer(agent: Agent, request: Mapping[str, Any]) -> Any:
        offer_id = text(request, kind, MAX_ID)
        if not any(o.id == offer_id and o.kind == kind for o in agent.offers.pending()):
            raise RequestError(f"no {kind} offer {offer_id[:MAX_ID]!r} is waiting")
        offer = agent.offers.answer(offer_id, accept)
        return {"id": offer.id, "outcome": offer.outcome}

    return answer


HANDLERS: dict[str, Handler] = {
    "chat.send": chat_send,
    "chat.thread": chat_thread,
    "contacts.approve": contacts_approve,
    "contacts.refuse": contacts_refuse,
    "notice.ack": notice_ack,
    "question.answer": question_answer,
    "presence.set": presence_set,
    "presence.auto": presence_auto,
    "call.answer": answer_offer("call", True),
    "call.decline": answer_offer("call", False),
    "file.accept": answer_offer("file", True),
    "file.decline": answer_offer("file", False),
}
