"""What is offered to the driver to accept or decline: incoming calls and incoming files.

Calls and file transfer raise an :class:`Offer` here and wait for its decision; the
dashboard (or ``headunit offers``) shows what is waiting and answers. An offer ends
once: accepted, declined, timed out, or withdrawn by whoever raised it (the caller hung
up). Offers are about now, so they are kept in memory only.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

from agent.events import Event
from agent.cabin.errors import AlreadyAnswered, CabinError, PromptNotFound

log = logging.getLogger(__name__)

Kind = Literal["call", "file"]
Decision = Literal["accepted", "declined", "timeout", "withdrawn"]
MEDIA = ("audio", "video")
MAX_PENDING = 16  # offers waiting at once; more are declined at once ("busy")
MAX_NAME = 120  # characters of a file name shown


@dataclass
class Offer:
    """One call or file waiting for the driver."""

    id: str
    kind: Kind
    peer: str  # bare JID of who calls or sends
    at: float  # wall clock, epoch s
    media: tuple[str, ...] = ()  # calls: "audio", "video"
    name: str = ""  # files: the name as shown (cleaned)
    size: int = 0  # files: bytes
    outcome: Decision | None = None
    _done: asyncio.Event = field(default_factory=asyncio.Event, repr=False)

    @property
    def is_open(self) -> bool:
        return self.outcome is None

    async def decision(self, timeout: float) -> Decision:
        """Wait for the driver's answer; "timeout" (and the offer closes) after ``timeout`` seconds."""
        try:
            await asyncio.wait_for(self._done.wait(), timeout)
        except TimeoutError:
            if self.outcome is None:
                self.outcome = "timeout"
                self._done.set()
        assert self.outcome is not None
        return self.outcome

    def as_json(self) -> dict[str, object]:
        data: dict[str, object] = {"id": self.id, "kind": self.kind, "peer": self.peer, "at": self.at}
        if self.kind == "call":
            data["media"] = list(self.media)
        else:
            data.update(name=self.name, size=self.size)
        return data


OfferListener = Callable[[Offer], None]


class Offers:
    """The offers waiting for the driver, and who wants to hear about them."""

    def __init__(self, *, max_pending: int = MAX_PENDING, clock: Callable[[], float] = time.time) -> None:
        self.max_pending = max_pending
        self.clock = clock
        self._open: dict[str, Offer] = {}
        self._events: Event[Offer] = Event("driver offer")
        self._watchers: set[asyncio.Task[None]] = set()

    def offer_call(self, peer: str, media: Sequence[str]) -> Offer:
        """An incoming call from ``peer`` with ``media`` ("audio", "video")."""
        kept = tuple(m for m in MEDIA if m in media)
        if not kept:
            raise CabinError(f"a call offers audio, video or both, not {list(media)!r}")
        return self._add(Offer(self._new_id(), "call", _clean(peer, 300), self.clock(), media=kept))

    def offer_file(self, peer: str, name: str, size: int) -> Offer:
        """An incoming file from ``peer``: its name (shown cleaned) and size in bytes."""
        if size < 0:
            raise CabinError(f"a file cannot have {size} bytes")
        shown = _clean(name, MAX_NAME) or "(no name)"
        return self._add(Offer(self._new_id(), "file", _clean(peer, 300), self.clock(), name=shown, size=size))

    def answer(self, offer_id: str, accept: bool) -> Offer:
        """The driver's answer; PromptNotFound or AlreadyAnswered when it cannot be taken."""
        offer = self._open.get(offer_id)
        if offer is None:
            raise PromptNotFound(f"no offer {offer_id!r} is waiting (answered, timed out or withdrawn)")
        if not offer.is_open:
            raise AlreadyAnswered(f"offer {offer_id} was {offer.outcome} already")
        self._close(offer, "accepted" if accept else "declined")
        return offer

    def withdraw(self, offer: Offer) -> None:
        """Whoever raised the offer gave up (the caller hung up); harmless once it has ended."""
        if offer.is_open:
            self._close(offer, "withdrawn")

    def pending(self) -> list[Offer]:
        """The open offers, oldest first (offers that timed out are dropped here)."""
        for offer in [o for o in self._open.values() if not o.is_open]:
            self._forget(offer)
        return list(self._open.values())

    def listen(self, listener: OfferListener) -> Callable[[], None]:
        """Call ``listener`` with each offer that appears or ends; returns the unsubscribe."""
        return self._events.listen(listener)

    def close(self) -> None:
        """The agent stops: every open offer is withdrawn."""
        for offer in list(self._open.values()):
            self.withdraw(offer)

    # -- inside ----------------------------------------------------------------------

    def _add(self, offer: Offer) -> Offer:
        if len(self.pending()) >= self.max_pending:
            offer.outcome = "declined"
            offer._done.set()
            log.warning("%s offer from %s declined: %d offers already wait for the driver", offer.kind,
                        offer.peer, self.max_pending)
            return offer
        self._open[offer.id] = offer
        log.info("incoming %s from %s (offer %s)%s", offer.kind, offer.peer, offer.id,
                 f": {offer.name} ({offer.size} bytes)" if offer.kind == "file" else f": {'+'.join(offer.media)}")
        self._tell(offer)
        task = asyncio.get_running_loop().create_task(self._expire_when_done(offer), name=f"offer-{offer.id}")
        self._watchers.add(task)  # kept until done: the loop holds only weak references to tasks
        task.add_done_callback(self._watchers.discard)
        return offer

    async def _expire_when_done(self, offer: Offer) -> None:
        """An offer that ends by timeout is closed here too, so listeners hear of it."""
        await offer._done.wait()
        if offer.id in self._open:
            self._forget(offer)

    def _close(self, offer: Offer, outcome: Decision) -> None:
        offer.outcome = outcome
        offer._done.set()
        log.info("%s offer %s from %s: %s", offer.kind, offer.id, offer.peer, outcome)
        self._forget(offer)

    def _forget(self, offer: Offer) -> None:
        if self._open.pop(offer.id, None) is not None:
            self._tell(offer)

    def _tell(self, offer: Offer) -> None:
        self._events.emit(offer)

    def _new_id(self) -> str:
        while (ident := secrets.token_hex(3)) in self._open:
            pass
        return ident


def _clean(text: str, limit: int) -> str:
    """A peer's text made safe to show: no control or format characters, one line, bounded."""
    kept = "".join(" " if unicodedata.category(ch) == "Cc" else ch for ch in str(text)
                   if unicodedata.category(ch) != "Cf")
    kept = " ".join(kept.split())
    return kept if len(kept) <= limit else kept[:limit - 1] + "…"
