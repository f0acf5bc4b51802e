"""What the service code looks at: a narrow view of the running agent, wired by the agent.

:class:`agent.service.health.Health` and ``headunit status`` read these, never the whole
agent: the profile's name and service settings, the task supervisor, the XMPP link, the
vehicle state, the drivers the profile asks for, and the queue depths.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from agent.events import Event
from agent.profile.model import GpioConfig, ServiceConfig
from agent.supervisor import Supervisor
from agent.vehicle.can_feed import CanFeed
from agent.vehicle.gnss_feed import GnssFeed
from agent.vehicle.state import VehicleState
from agent.link import ConnectionStatus


class Link(Protocol):
    @property
    def online(self) -> Event[None]: ...

    @property
    def offline(self) -> Event[None]: ...

    def connection(self) -> ConnectionStatus: ...


@dataclass(frozen=True)
class Watched:
    """The parts of one agent its health depends on."""

    name: str  # the profile's
    file: Path  # the profile's
    config: ServiceConfig
    supervisor: Supervisor
    link: Link
    state: VehicleState
    outbox: Callable[[], Awaitable[int]]  # chat messages the server is not known to have
    telemetry_pending: Callable[[], int] | None = None  # None: no telemetry
    telemetry_changed: Event[Any] | None = None  # the queue moved: a sample recorded, batched or acknowledged
    can: CanFeed | None = None
    gnss: GnssFeed | None = None
    gpio: GpioConfig | None = None  # the profile's GPIO, if it asks for one
    gpio_up: Callable[[], bool] = lambda: False  # the GPIO board opened
    started_at: Callable[[], float | None] = lambda: None  # monotonic clock of the agent's start
