"""The driver's API: everything the driver sees and does, whichever door they use.

The dashboard's WebSocket (:mod:`agent.dashboard.requests`) and the local control socket
(:mod:`agent.control.handlers`, behind ``headunit state/chat/presence/offers/driver/contacts``)
are thin JSON adapters over :class:`DriverApi`: each action takes the values as they came
(``object``), checks them once with :mod:`agent.cabin.fields`, acts, and answers with the
same JSON (:mod:`agent.cabin.views`) for both doors. A refusal is an exception whose message
the door shows as is: :class:`~agent.cabin.fields.InputError` for a malformed request,
the agent's own errors (not online, nothing pending, already answered) otherwise.

The API has one section per subject (``chat``, ``presence``, ``contacts``, ``prompts``,
``offers``), each usable alone; incoming calls and files reach the driver as offers.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from agent.cabin import fields, views
from agent.cabin.errors import CabinError
from agent.cabin.offers import Kind, Offer, Offers
from agent.cabin.prompts import DriverPrompts, Pending, PromptEvent
from agent.events import Event, Unsubscribe
from agent.messages.store import MessageStore, StoredMessage
from agent.policies.presence import PresencePolicy
from agent.vehicle import paths
from agent.vehicle.mode import VehicleMode
from agent.vehicle.state import Reading, StateEvent, VehicleState
from agent.link import ConnectionStatus
from agent.policies.contacts import Contact, PendingRequest

DRIVING = "typing is disabled while driving"
THREADS = (20, 200)  # default and most conversations listed
MESSAGES = (20, 500)  # default and most messages of a conversation at once
NOTICES = (20, 100)  # default and most recent operators' messages listed


class LinkPort(Protocol):
    """The XMPP session, as far as the driver is concerned."""

    @property
    def online(self) -> Event[None]: ...

    @property
    def offline(self) -> Event[None]: ...

    def connection(self) -> ConnectionStatus: ...


class ChatPort(Protocol):
    @property
    def new_message(self) -> Event[StoredMessage]: ...

    @property
    def progress(self) -> Event[StoredMessage]: ...

    async def send(self, peer: str, body: str) -> StoredMessage: ...


class ContactsPort(Protocol):
    @property
    def changed(self) -> Event[str]: ...

    @property
    def request_pending(self) -> Event[PendingRequest]: ...

    def contacts(self) -> list[Contact]: ...

    def pending(self) -> list[PendingRequest]: ...

    def approve(self, jid: str) -> None: ...

    def refuse(self, jid: str) -> None: ...

    async def remove(self, jid: str) -> None: ...


class PowerPort(Protocol):
    def as_json(self) -> dict[str, object]: ...


@dataclass(frozen=True)
class Car:
    """Who the car is, and the profile's rules for the driver."""

    jid: str
    name: str
    moving_speed: float = 3.0  # km/h at which the vehicle counts as moving even outside "driving"
    quick_replies: tuple[str, ...] = ()  # what may be sent while moving


class Driving:
    """THE rule for what the driver may do while the vehicle moves."""

    def __init__(self, state: VehicleState, car: Car) -> None:
        self.state = state
        self.car = car

    def is_moving(self) -> bool:
        """Mode driving, or a fresh ``Vehicle.Speed`` at or above the profile's moving speed."""
        speed = self.state.value(paths.SPEED)
        return self.state.value(paths.MODE) == VehicleMode.DRIVING.value or (
            isinstance(speed, (int, float)) and not isinstance(speed, bool) and speed >= self.car.moving_speed)

    def chat_refusal(self, body: str) -> str | None:
        """None if the driver may send ``body`` now; else why not (while moving: quick replies only)."""
        if not self.is_moving():
            return None
        return None if body.strip() in {r.strip() for r in self.car.quick_replies} else DRIVING


class ChatApi:
    """Conversations: read them, and send (queued while offline)."""

    def __init__(self, chat: ChatPort, messages: MessageStore, driving: Driving) -> None:
        self._chat = chat
        self._messages = messages
        self._driving = driving

    @property
    def events(self) -> tuple[Event[StoredMessage], Event[StoredMessage]]:
        """(a new message either way, one of ours moved on)."""
        return self._chat.new_message, self._chat.progress

    async def send(self, to: object, body: object) -> views.MessageJson:
        """Queue a message (it goes out when online); while moving only one of the quick replies."""
        peer, text = fields.person("to", to), fields.chat_body("body", body)
        refusal = self._driving.chat_refusal(text)
        if refusal is not None:
            raise CabinError(refusal)
        return views.message_json(await self._chat.send(peer, text))

    async def threads(self, limit: object = None) -> list[views.MessageJson]:
        """The latest message of each conversation, the most recent first."""
        most = fields.count("limit", limit, *THREADS)
        return [views.message_json(m) for m in (await self._messages.threads())[:most]]

    async def thread(self, peer: object, limit: object = None, before: object = None) -> list[views.MessageJson]:
        """The latest messages with ``peer`` (older than message ``before`` when given), oldest first."""
        who = fields.person("peer", peer)
        most = fields.count("limit", limit, *MESSAGES)
        older = None if before is None else fields.count("before", before, 0, 2**63 - 1, least=0)
        return [views.message_json(m) for m in await self._messages.thread(who, most, before=older)]

    async def recent(self, threads: int, per_thread: int) -> list[StoredMessage]:
        """What a screen shows first: the latest messages of the latest conversations."""
        return await self._messages.recent_threads(threads, per_thread)

    async def outbox(self) -> int:
        """Messages the server is not known to have yet."""
        return len(await self._messages.unacked())


class PresenceApi:
    """What the car shows its contacts; the driver may override the vehicle's choice."""

    def __init__(self, policy: PresencePolicy) -> None:
        self.policy = policy

    @property
    def changed(self) -> Event[None]:
        return self.policy.changed

    def get(self) -> views.PresenceJson:
        return views.presence_json(self.policy)

    def set(self, show: object, status: object = None) -> views.PresenceJson:
        """The driver's override, until :meth:`auto`."""
        self.policy.override(fields.presence_show("show", show), fields.status_text("status", status))
        return self.get()

    def auto(self) -> views.PresenceJson:
        """Follow the vehicle again."""
        self.policy.automatic()
        return self.get()


class ContactsApi:
    """The car's contacts, and the subscription requests waiting for the driver."""

    def __init__(self, contacts: ContactsPort) -> None:
        self._contacts = contacts

    @property
    def events(self) -> tuple[Event[str], Event[PendingRequest]]:
        """(a contact changed, a request waits)."""
        return self._contacts.changed, self._contacts.request_pending

    def roster(self) -> list[Contact]:
        return self._contacts.contacts()

    def pending(self) -> list[PendingRequest]:
        return self._contacts.pending()

    def approve(self, jid: object) -> views.Json:
        who = fields.person("jid", jid)
        self._contacts.approve(who)
        return {"jid": who, "approved": True}

    def refuse(self, jid: object) -> views.Json:
        who = fields.person("jid", jid)
        self._contacts.refuse(who)
        return {"jid": who, "refused": True}

    async def remove(self, jid: object) -> views.Json:
        who = fields.person("jid", jid)
        await self._contacts.remove(who)
        return {"jid": who, "removed": True}


class PromptsApi:
    """Operators' messages to acknowledge and questions to answer."""

    def __init__(self, prompts: DriverPrompts) -> None:
        self._prompts = prompts

    def listen(self, listener: Callable[[PromptEvent], None]) -> Unsubscribe:
        return self._prompts.listen(listener)

    def pending(self) -> Pending:
        return self._prompts.pending()

    async def recent(self, limit: object = None) -> list[views.Json]:
        """The operators' recent messages, newest first."""
        most = fields.count("limit", limit, *NOTICES, least=0)
        return [n.as_json() for n in await self._prompts.recent(most)]

    async def acknowledge(self, notice: object) -> views.Json:
        """The driver read an operator's message; its sender is told by chat."""
        return (await self._prompts.acknowledge(fields.number("notice", notice))).as_json()

    def answer(self, question: object, accept: object) -> views.Json:
        yes = fields.flag("accept", accept)
        answered = self._prompts.answer(fields.short_id("question", question), yes)
        return {**answered.as_json(), "accepted": yes}


class OffersApi:
    """Calls and files waiting for the driver's yes or no."""

    def __init__(self, offers: Offers) -> None:
        self._offers = offers

    def listen(self, listener: Callable[[Offer], None]) -> Unsubscribe:
        return self._offers.listen(listener)

    def pending(self) -> list[Offer]:
        return self._offers.pending()

    def answer(self, offer: object, accept: object, kind: Kind | None = None) -> views.Json:
        """Take or decline a call or a file; with ``kind``, only an offer of that kind."""
        ident, yes = fields.short_id(kind or "offer", offer), fields.flag("accept", accept)
        other = next((o.kind for o in self.pending() if o.id == ident and o.kind != kind), None)
        if kind is not None and other is not None:
            raise CabinError(f"offer {ident} is a {other}, not a {kind}")
        answered = self._offers.answer(ident, yes)  # PromptNotFound when no offer has that id
        return {**views.offer_json(answered), "outcome": answered.outcome}


@dataclass(frozen=True)
class CabinParts:
    """What the API works on; the agent wires the real ones."""

    car: Car
    state: VehicleState
    link: LinkPort
    chat: ChatPort
    messages: MessageStore
    presence: PresencePolicy
    contacts: ContactsPort
    prompts: DriverPrompts
    offers: Offers
    power: PowerPort
    telemetry_pending: Callable[[], int] | None = None  # samples not yet acknowledged; None: no telemetry
    telemetry_changed: Event[Any] | None = None  # the telemetry queue moved (recorded, batched, acknowledged)


class DriverApi:
    """The one driver-side API: the vehicle and the link to read, and one section per subject."""

    def __init__(self, parts: CabinParts) -> None:
        self.car = parts.car
        self.driving = Driving(parts.state, parts.car)
        self.chat = ChatApi(parts.chat, parts.messages, self.driving)
        self.presence = PresenceApi(parts.presence)
        self.contacts = ContactsApi(parts.contacts)
        self.prompts = PromptsApi(parts.prompts)
        self.offers = OffersApi(parts.offers)
        self._state = parts.state
        self._link = parts.link
        self._power = parts.power
        self._telemetry_pending = parts.telemetry_pending
        self._telemetry_changed = parts.telemetry_changed

    # -- the vehicle ---------------------------------------------------------------------------

    def listen_vehicle(self, listener: Callable[[StateEvent], None]) -> Unsubscribe:
        return self._state.listen(listener)

    def readings(self) -> dict[str, Reading]:
        return self._state.snapshot()

    def reading(self, path: str) -> Reading | None:
        return self._state.get(path)

    # -- the link -------------------------------------------------------------------------------

    @property
    def link_events(self) -> tuple[Event[None], Event[None]]:
        """(online, offline)."""
        return self._link.online, self._link.offline

    def connection(self) -> ConnectionStatus:
        return self._link.connection()

    @property
    def count_events(self) -> list[Event[Any]]:
        """What changes the counts the driver sees: the telemetry queue, and the chat outbox (its messages)."""
        return [*([self._telemetry_changed] if self._telemetry_changed is not None else []), *self.chat.events]

    def telemetry_queued(self) -> int | None:
        """Samples the fleet has not acknowledged yet; None without telemetry."""
        return self._telemetry_pending() if self._telemetry_pending is not None else None

    async def connection_json(self) -> views.ConnectionJson:
        return views.connection_json(self.connection(), self.telemetry_queued(), await self.chat.outbox())

    # -- everything at once -------------------------------------------------------------------

    async def state(self) -> views.StateJson:
        """Everything ``headunit state`` shows."""
        mode = self._state.value(paths.MODE)
        return {"car": self.car.jid, "name": self.car.name, "mode": None if mode is None else str(mode),
                "moving": self.driving.is_moving(), "vehicle": views.vehicle_json(self.readings().values()),
                "connection": await self.connection_json(), "presence": self.presence.get(),
                "power": self._power.as_json()}
