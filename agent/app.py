"""The agent: builds drivers, state, policies and the XMPP session from a profile; runs and stops them.

Data flows one way: drivers → vehicle state → policies → XMPP. Shutdown runs
in stages with timeouts: stop inputs, flush telemetry, stop policies and
services, say goodbye on XMPP, close the stores and the control socket, then
whatever task is left.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from agent import __version__
from agent.cabin import DriverPrompts, Offers, acknowledgement_sender
from agent.cabin.api import CabinParts, Car, DriverApi
from agent.clock import Clock
from agent.commands.audit import AuditLog
from agent.commands.builtin import builtin_registry
from agent.commands.actions import action_commands, sender_for
from agent.commands.driver import DriverConfirms, message_driver_command
from agent.commands.media import camera_factory, logs_command, photo_command
from agent.commands.registry import AgentFacade, Registry
from agent.commands.telemetry import telemetry_command
from agent.control import SOCKET_NAME, ControlServer, ControlStartError
from agent.control.handlers import cabin_handlers
from agent.errors import AgentStartError, AgentTimeout
from agent.logbook import Logbook, LogbookError
from agent.messages import MessageStore
from agent.policies.contacts import SubscriptionPolicy
from agent.policies.location import ACCESS_MODELS, LocationPolicy
from agent.policies.presence import PresencePolicy
from agent.profile.model import GpioConfig, Profile
from agent.service import Health, status_handlers
from agent.service.view import Watched
from agent.policies.power import MARKER as POWER_MARKER, IgnitionShutdown
from agent.storage import data_dir, sweep_leftovers
from agent.stages import Stage, run_stages
from agent.supervisor import Supervisor
from agent.telemetry import Telemetry, node_name
from agent.vehicle import paths
from agent.vehicle.can_feed import CanFeed
from agent.vehicle.gnss_feed import GnssFeed
from agent.vehicle.mode_tracker import ModeTracker
from agent.vehicle.mode import VehicleMode
from agent.vehicle.state import StateEvent, VehicleState
from agent.xmpp.client import XmppSession
from agent.xmpp.plugins.chat import ChatPlugin
from agent.xmpp.plugins.commands import CommandsPlugin
from agent.xmpp.plugins.contacts import ContactsPlugin
from agent.xmpp.plugins.geoloc import GeolocPlugin
from agent.xmpp.plugins.telemetry import TelemetryPlugin
from agent.xmpp.plugins.upload import UploadPlugin
from drivers.errors import DriverError

if TYPE_CHECKING:
    from agent.dashboard import Dashboard
    from drivers.gpio import GpioBoard

log = logging.getLogger(__name__)

INPUT_TASKS = ["wait-for-online", "can", "obd", "gnss"]
# The stop's stages and their timeouts (s); each stage's steps have shorter timeouts of their own.
STOP_STAGES = {"inputs": 4.0, "driver": 3.0, "queues": 6.0, "services": 3.0, "goodbye": 4.0, "stores": 4.0}
EXIT_RESTART = 75  # EX_TEMPFAIL: the unit's Restart=on-failure brings the agent back


class Agent:
    """One car, one process."""

    def __init__(self, profile: Profile, *, speed: float | None = None) -> None:
        self.profile = profile
        self.clock = Clock(speed if speed is not None else profile.simulation.speed)
        self.state = VehicleState(clock=self.clock.now)
        self.supervisor = Supervisor()
        self.data_dir = data_dir(profile.storage)
        self.xmpp = XmppSession(profile.account, session=profile.session, operators=profile.fleet.operators)
        self.contacts = self.xmpp.enable(  # before connecting: it must see the requests the server re-sends at login
            ContactsPlugin, policy=SubscriptionPolicy.from_profile(profile.contacts, profile.fleet.operators))
        self.messages = MessageStore(self.data_dir / "messages.db")
        self.chat = self.xmpp.enable(ChatPlugin, store=self.messages)
        self.location = self._location() if profile.location.enabled else None
        self.telemetry = self._telemetry() if profile.telemetry.service else None
        vehicle = profile.vehicle
        self.can = CanFeed(self.state, vehicle.can, vehicle.obd, clock=self.clock.now,
                           speed=self.clock.speed) if vehicle.can else None
        self.gnss = GnssFeed(self.state, vehicle.gnss, speed=self.clock.speed) if vehicle.gnss else None
        self.audit = AuditLog.in_dir(self.data_dir)
        self.prompts = DriverPrompts.in_dir(self.data_dir, on_acknowledged=acknowledgement_sender(self.chat))
        self.offers = Offers()  # incoming calls and files waiting for the driver
        self.gpio: GpioBoard | None = None
        self.started_at: float | None = None
        self.online_at: float | None = None
        self.health = Health(self._watched())  # READY / STATUS / WATCHDOG / STOPPING to systemd, `headunit status`
        self.logbook = Logbook.in_dir(self.data_dir, redact=(profile.account.password,))
        self.uploader = self.xmpp.enable(UploadPlugin, ca_file=profile.account.ca_file)
        self.can_sender = sender_for(profile.vehicle.can, self.can.port if self.can is not None else None)
        self.commands = self.xmpp.enable(CommandsPlugin, registry=self._registry(), operators=profile.fleet.operators,
                                         audit=self.audit,
                                         agent=AgentFacade(self.state, audit=self.audit,
                                                           restart=self._schedule_restart,
                                                           connection=lambda: self.xmpp.connection().detail))
        self.exit_code = 0
        self.stop_timeouts = dict(STOP_STAGES)  # a test may shorten one
        self._stop_requested: asyncio.Event | None = None
        self.mode = ModeTracker(self.state, profile.policies.mode, self.clock)
        self.presence = PresencePolicy(self.state, profile.policies.presence, self.xmpp,
                                       moving_speed=profile.policies.mode.moving_speed)
        self.power = IgnitionShutdown(self.state, profile.power, self.presence, self.offers,  # ignition off
                                      telemetry=self.telemetry, is_online=lambda: self.xmpp.is_online,
                                      marker=self.data_dir / POWER_MARKER)
        self.cabin = DriverApi(self._cabin_parts())  # the driver's API: the dashboard and the control socket
        self.control = ControlServer(profile.control.socket or self.data_dir / SOCKET_NAME,
                                     {**cabin_handlers(self.cabin), **status_handlers(self.health)})
        self.dashboard: Dashboard | None = None
        if profile.dashboard.enabled:  # imported only then: the web server costs memory a headless car saves
            from agent.dashboard import Dashboard

            self.dashboard = Dashboard(self.cabin, profile.dashboard, self.data_dir)
        self._unsubscribe: list[Callable[[], None]] = []
        self._unsubscribe += [self.xmpp.online.listen(self._on_online), self.xmpp.offline.listen(self._on_offline)]

    def _telemetry(self) -> Telemetry:
        """The telemetry pipeline, publishing to the car's node on the fleet's PubSub service."""
        config = self.profile.telemetry
        assert config.service is not None
        publisher = self.xmpp.enable(TelemetryPlugin, service=config.service,
                                     node=node_name(config.node, self.profile.account.jid),
                                     members=self.profile.fleet.operators)
        return Telemetry(self.state, config, publisher, self.data_dir, self.clock,
                         lambda: self.xmpp.wait_online(3600))

    def _location(self) -> LocationPolicy:
        """The location policy, publishing through the car's PEP geoloc node (XEP-0080, XEP-0163)."""
        config = self.profile.location
        publisher = self.xmpp.enable(GeolocPlugin, access_model=ACCESS_MODELS[config.access],
                                     operators=self.profile.fleet.operators, precision=config.precision)
        return LocationPolicy(self.state, config, self.clock, publisher)

    def _cabin_parts(self) -> CabinParts:
        profile = self.profile
        car = Car(profile.account.jid, profile.name, moving_speed=profile.policies.mode.moving_speed,
                  quick_replies=tuple(profile.dashboard.quick_replies))
        telemetry = self.telemetry
        return CabinParts(car=car, state=self.state, link=self.xmpp, chat=self.chat, messages=self.messages,
                          presence=self.presence, contacts=self.contacts, prompts=self.prompts, offers=self.offers,
                          power=self.power,
                          telemetry_pending=None if telemetry is None else lambda: telemetry.pending,
                          telemetry_changed=None if telemetry is None else telemetry.queue.changed)

    def _watched(self) -> Watched:
        profile, telemetry = self.profile, self.telemetry

        async def outbox() -> int:
            return len(await self.messages.unacked())

        return Watched(name=profile.name, file=profile.file, config=profile.service, supervisor=self.supervisor,
                       link=self.xmpp, state=self.state, outbox=outbox,
                       telemetry_pending=None if telemetry is None else lambda: telemetry.pending,
                       telemetry_changed=None if telemetry is None else telemetry.queue.changed,
                       can=self.can, gnss=self.gnss, gpio=profile.vehicle.gpio,
                       gpio_up=lambda: self.gpio is not None, started_at=lambda: self.started_at)

    def _registry(self) -> Registry:
        """The commands operators may run: the agent's own, then the profile's vehicle actions."""
        registry = builtin_registry()
        registry.add(telemetry_command(self.telemetry, self.profile.telemetry))
        registry.add(message_driver_command(self.prompts))
        registry.add(photo_command(camera_factory(self.profile.camera), self.uploader))
        registry.add(logs_command(self.logbook, self.uploader, extra=self._status_text))
        vehicle = self.profile.vehicle
        for command in action_commands(vehicle.can, vehicle.actions, self.can_sender,
                                       lambda action: DriverConfirms(self.prompts, action.driver_timeout)):
            try:
                registry.add(command)
            except ValueError as exc:
                raise AgentStartError(f"vehicle action {command.name}: {exc}") from exc
        return registry

    async def start(self) -> None:
        self.started_at = time.monotonic()
        log.info("starting %s (%s)", self.profile.name, self.profile.file)
        if self.profile.vehicle.gpio is not None:
            self._start_gpio(self.profile.vehicle.gpio)
        self.supervisor.start("stale-sweep", self._sweep_stale)
        try:
            await self.control.start()
        except ControlStartError as exc:
            raise AgentStartError(f"cannot serve the local control socket: {exc}") from exc
        sweep_leftovers(self.data_dir)  # only now: no other agent uses this folder (it would answer above)
        await self.health.start()
        if self.dashboard is not None:  # logs "dashboard at http://127.0.0.1:8470/ (token in ...)"
            await self.dashboard.start()
        try:  # only now: a second agent on this folder was refused above, before touching its log
            self.logbook.install()
        except LogbookError as exc:
            log.warning("the agent's own log file is not kept (the logs command has less to send): %s", exc)
        if self.can_sender is not None:
            await self.can_sender.start()
        self.mode.start()
        self.presence.start()
        self._unsubscribe.append(self.state.listen(self._on_mode, [paths.MODE]))
        self._unsubscribe.append(self.contacts.changed.listen(self.xmpp.contact_changed))  # operators' presence
        self.power.start()
        if self.location is not None:
            self.location.start()
        if self.telemetry is not None:
            self.telemetry.start()
            self.supervisor.start("telemetry", self.telemetry.run)
        self.xmpp.start()
        wait = self.profile.simulation.wait_for_online
        if wait > 0:
            self.supervisor.start("wait-for-online", lambda: self._start_inputs_when_online(wait),
                                  restart=False)
        else:
            self._start_inputs()

    def _start_inputs(self) -> None:
        if self.can is not None:
            self.supervisor.start("can", self.can.port.run)
            if self.can.obd is not None:
                self.supervisor.start("obd", self.can.obd.run)
        if self.gnss is not None:
            self.supervisor.start("gnss", self.gnss.source.run)

    async def _start_inputs_when_online(self, timeout: float) -> None:
        try:
            await self.xmpp.wait_online(timeout)
        except AgentTimeout as exc:
            log.warning("starting the replay offline: %s", exc)
        else:
            log.info("online: starting the replay")
        self._start_inputs()

    async def stop(self) -> None:
        """Stop in stages (:data:`STOP_STAGES`); each has its own timeout, so a stuck part cannot hold the rest."""
        log.info("stopping")
        self.health.stopping()  # STOPPING=1 to systemd at once
        reports = await run_stages(self._stop_stages())
        slow = [r.name for r in reports if r.overran]
        log.info("stopped%s", f" (stages that overran: {', '.join(slow)})" if slow else "")
        self.logbook.uninstall()

    def _stop_stages(self) -> list[Stage]:
        """inputs → the driver → queues → services → goodbye → stores (docs: README, "Stopping")."""
        timeouts = self.stop_timeouts
        telemetry, dashboard = self.telemetry, self.dashboard

        async def stop_inputs() -> None:
            await self.supervisor.stop(INPUT_TASKS, timeout=2.0)

        async def flush() -> None:
            if telemetry is not None and self.xmpp.is_online and not await telemetry.flush(timeout=3.0):
                log.warning("%d telemetry samples still queued; they go out at the next start", telemetry.pending)

        async def stop_telemetry() -> None:
            if telemetry is not None:
                await self.supervisor.stop(["telemetry"], timeout=2.0)
                await telemetry.stop()

        def unsubscribe() -> None:
            for undo in self._unsubscribe:
                undo()
            self._unsubscribe.clear()

        return [
            Stage("inputs", timeouts["inputs"], [
                ("ignition-off sequence", self.power.stop),  # first: no power-off runs into the stages below
                ("CAN sender", self.can_sender.stop if self.can_sender is not None else _nothing),
                ("input tasks", stop_inputs),
                ("GPIO", self.gpio.stop if self.gpio is not None else _nothing)]),
            Stage("driver", timeouts["driver"], [
                ("offers withdrawn", self.offers.close),
                ("command sessions", self.commands.stop),
                ("dashboard", dashboard.stop if dashboard is not None else _nothing)]),
            Stage("queues", timeouts["queues"], [("telemetry flush", flush), ("telemetry", stop_telemetry)]),
            Stage("services", timeouts["services"], [
                ("presence", self.presence.stop), ("mode", self.mode.stop), ("listeners", unsubscribe),
                ("chat", self.chat.stop),
                ("location", self.location.stop if self.location is not None else _nothing)]),
            Stage("goodbye", timeouts["goodbye"], [("XMPP session", self.xmpp.stop)]),
            Stage("stores", timeouts["stores"], [
                ("contacts", self.contacts.stop), ("messages", self.messages.close),
                ("control socket", self.control.stop), ("audit", self.audit.close),
                ("driver prompts", self.prompts.close), ("health", self.health.stop),
                ("remaining tasks", lambda: self.supervisor.stop(timeout=1.0))]),
        ]

    async def run(self, stop: asyncio.Event) -> None:
        self._stop_requested = stop
        try:
            await self.start()
            await stop.wait()
        finally:
            await self.stop()  # also after a failed start: every stage is safe on what never started

    def _start_gpio(self, config: GpioConfig) -> None:
        from drivers.gpio import GpioBoard, LedPattern

        board = GpioBoard(
            pin_factory=config.pin_factory, ignition_pin=config.ignition_pin,
            ignition_active_high=config.ignition_active_high, ignition_bounce=config.ignition_bounce,
            led_pin=config.led_pin, button_pin=config.button_pin,
            on_ignition=self._on_ignition, on_button=self._on_button,
        )
        try:
            board.start(asyncio.get_running_loop())
        except DriverError as exc:
            log.error("GPIO unavailable, carrying on without it: %s", exc)
            return
        self.gpio = board
        board.set_led(LedPattern.BLINK_SLOW)

    def _on_ignition(self, is_on: bool) -> None:
        self.state.update(paths.LOW_VOLTAGE_STATE, "ON" if is_on else "OFF", "gpio")

    def _on_button(self, is_pressed: bool) -> None:
        self.state.update(paths.DRIVER_BUTTON, is_pressed, "gpio")

    def _schedule_restart(self) -> None:
        """An operator's restart-agent: answer first, then stop with EXIT_RESTART (systemd starts us again)."""
        def restart() -> None:
            log.warning("restarting on an operator's request")
            self.exit_code = EXIT_RESTART
            if self._stop_requested is not None:
                self._stop_requested.set()

        asyncio.get_running_loop().call_later(1.0, restart)

    def _status_text(self) -> dict[str, str]:
        """What the logs bundle carries besides the logs: the agent and its state now."""
        lines = [f"profile: {self.profile.name} ({self.profile.file.name})", f"agent: {__version__}",
                 f"connection: {self.xmpp.connection().detail}"]
        if self.started_at is not None:
            lines.append(f"uptime: {time.monotonic() - self.started_at:.0f} s")
        if self.telemetry is not None:
            lines.append(f"telemetry queued: {self.telemetry.pending}")
        lines += [f"{path} = {r.value!r}{' (stale)' if r.is_stale else ''}"
                  for path, r in sorted(self.state.snapshot().items())]
        return {"status.txt": "\n".join(lines) + "\n"}

    def _on_mode(self, event: StateEvent) -> None:
        """XEP-0352: with the ignition off nobody looks at the dashboard; the server may hold back."""
        self.xmpp.set_active(event.new.value != VehicleMode.OFF.value)

    def _on_online(self, _: None) -> None:
        if self.online_at is None and self.started_at is not None:
            self.online_at = time.monotonic()
            log.info("online %.2f s after start", self.online_at - self.started_at)
        self._set_led("ON")

    def _on_offline(self, _: None) -> None:
        self._set_led("BLINK_SLOW")

    def _set_led(self, name: str) -> None:
        if self.gpio is not None:
            from drivers.gpio import LedPattern

            self.gpio.set_led(LedPattern[name])

    async def _sweep_stale(self) -> None:
        """Mark values stale when their source has gone quiet (vehicle time): one timer for the earliest
        expiry, none while nothing can go stale, brought forward only by a reading that expires sooner."""
        state, clock = self.state, self.clock
        armed = math.inf  # vehicle time the sweep waits for
        sooner = asyncio.Event()

        def on_event(event: StateEvent) -> None:  # O(1): called for every value while driving
            due = state.expires_at(event.new)
            if due is not None and due < armed:
                sooner.set()

        unsubscribe = state.listen(on_event)
        try:
            while True:
                due = state.next_expiry()
                armed = math.inf if due is None else due
                sooner.clear()
                if due is None:
                    await sooner.wait()
                    continue
                try:
                    async with asyncio.timeout(clock.real_delay(due - clock.now()) + 0.001):
                        await sooner.wait()
                except TimeoutError:
                    state.expire()
        finally:
            unsubscribe()


def _nothing() -> None:
    """A step for a part this profile does not have."""
