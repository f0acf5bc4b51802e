"""What the page may ask of the agent: one handler per request type of docs/dashboard-protocol.md.

A thin adapter over the driver's API (:mod:`agent.cabin.api`): each handler hands the
request's fields to the API, which checks them with the same rules as the control
socket's and answers with the same JSON. ``id`` is the request's own number, so the
thing a request is about is named by its kind: ``notice``, ``question``, ``call``, ``file``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping

from agent.cabin.api import DriverApi
from agent.cabin.offers import Kind
from agent.errors import HeadunitError

PAGE = 50  # messages of a conversation per "earlier messages" page

Handler = Callable[[DriverApi, Mapping[str, object]], Awaitable[object]]


class RequestError(HeadunitError, ValueError):
    """The page's request has no handler (an unknown type)."""


async def handle(api: DriverApi, request: Mapping[str, object]) -> object:
    """Do one request; returns its ``value``, raises for a refusal."""
    kind = request.get("type")
    handler = HANDLERS.get(kind) if isinstance(kind, str) else None
    if handler is None:
        raise RequestError(f"unknown request type {str(kind)[:40]!r}")
    return await handler(api, request)


async def chat_send(api: DriverApi, request: Mapping[str, object]) -> object:
    return await api.chat.send(request.get("to"), request.get("body"))


async def chat_thread(api: DriverApi, request: Mapping[str, object]) -> object:
    return await api.chat.thread(request.get("peer"), PAGE, request.get("before"))


async def contacts_approve(api: DriverApi, request: Mapping[str, object]) -> object:
    return api.contacts.approve(request.get("jid"))


async def contacts_refuse(api: DriverApi, request: Mapping[str, object]) -> object:
    return api.contacts.refuse(request.get("jid"))


async def notice_ack(api: DriverApi, request: Mapping[str, object]) -> object:
    return await api.prompts.acknowledge(request.get("notice"))


async def question_answer(api: DriverApi, request: Mapping[str, object]) -> object:
    return api.prompts.answer(request.get("question"), request.get("accept"))


async def presence_set(api: DriverApi, request: Mapping[str, object]) -> object:
    return api.presence.set(request.get("show"), request.get("status"))


async def presence_auto(api: DriverApi, request: Mapping[str, object]) -> object:
    return api.presence.auto()


def answer_offer(kind: Kind, accept: bool) -> Handler:
    """call.answer / call.decline (field ``call``), file.accept / file.decline (``file``): that kind only."""

    async def answer(api: DriverApi, request: Mapping[str, object]) -> object:
        return api.offers.answer(request.get(kind), accept, kind)

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
