"""The control socket's commands: a thin JSON adapter over the driver's API (:mod:`agent.cabin.api`).

Each handler takes the request's ``args`` as another process sent them and hands the
values to the API, which checks them (the same rules as the dashboard's) and answers.
``headunit contacts``, ``driver``, ``state``, ``chat``, ``presence`` and ``offers`` talk
to these; ``headunit status`` to :func:`agent.service.status_handlers`.
"""

from __future__ import annotations

from collections.abc import Mapping

from agent.cabin import views
from agent.cabin.api import ContactsApi, DriverApi, PromptsApi
from agent.control.server import Handler


def contacts_handlers(contacts: ContactsApi) -> dict[str, Handler]:
    """``contacts.list``, ``.pending``, ``.approve``, ``.refuse``, ``.remove`` (field ``jid``)."""

    async def roster(_: Mapping[str, object]) -> object:
        return [contact.as_json() for contact in contacts.roster()]

    async def pending(_: Mapping[str, object]) -> object:
        return [request.as_json() for request in contacts.pending()]

    async def approve(args: Mapping[str, object]) -> object:
        return contacts.approve(args.get("jid"))

    async def refuse(args: Mapping[str, object]) -> object:
        return contacts.refuse(args.get("jid"))

    async def remove(args: Mapping[str, object]) -> object:
        return await contacts.remove(args.get("jid"))

    return {"contacts.list": roster, "contacts.pending": pending, "contacts.approve": approve,
            "contacts.refuse": refuse, "contacts.remove": remove}


def driver_handlers(prompts: PromptsApi) -> dict[str, Handler]:
    """``driver.pending``, ``.notices`` (``limit``), ``.ack`` (``id``: a notice), ``.answer`` (``id``, ``accept``)."""

    async def pending(_: Mapping[str, object]) -> object:
        return prompts.pending().as_json()

    async def notices(args: Mapping[str, object]) -> object:
        return await prompts.recent(args.get("limit"))

    async def ack(args: Mapping[str, object]) -> object:
        return await prompts.acknowledge(args.get("id"))

    async def answer(args: Mapping[str, object]) -> object:
        return prompts.answer(args.get("id"), args.get("accept"))

    return {"driver.pending": pending, "driver.notices": notices, "driver.ack": ack, "driver.answer": answer}


def cabin_handlers(api: DriverApi) -> dict[str, Handler]:
    """Every driver command: ``state``, ``chat.*``, ``presence.*``, ``offers.*``, ``contacts.*``, ``driver.*``."""

    async def state(_: Mapping[str, object]) -> object:
        return await api.state()

    async def threads(args: Mapping[str, object]) -> object:
        return await api.chat.threads(args.get("limit"))

    async def show(args: Mapping[str, object]) -> object:
        return await api.chat.thread(args.get("peer"), args.get("limit"), args.get("before"))

    async def send(args: Mapping[str, object]) -> object:
        return await api.chat.send(args.get("to"), args.get("body"))

    async def presence(_: Mapping[str, object]) -> object:
        return api.presence.get()

    async def presence_set(args: Mapping[str, object]) -> object:
        return api.presence.set(args.get("show"), args.get("status"))

    async def presence_auto(_: Mapping[str, object]) -> object:
        return api.presence.auto()

    async def offers(_: Mapping[str, object]) -> object:
        return [views.offer_json(offer) for offer in api.offers.pending()]

    async def answer(args: Mapping[str, object]) -> object:
        return api.offers.answer(args.get("id"), args.get("accept"))

    return {"state": state, "chat.threads": threads, "chat.show": show, "chat.send": send,
            "presence.get": presence, "presence.set": presence_set, "presence.auto": presence_auto,
            "offers.pending": offers, "offers.answer": answer,
            **contacts_handlers(api.contacts), **driver_handlers(api.prompts)}
