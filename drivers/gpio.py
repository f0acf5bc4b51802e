"""GPIO through gpiozero: ignition sense input, status LED and driver button.

gpiozero reports edges on its own threads; this driver hands them to the agent's
event loop through one bridge (``loop.call_soon_threadsafe``) so ``on_ignition``
and ``on_button`` always run in the loop thread.
"""

from __future__ import annotations

import asyncio
import enum
import importlib
import logging
from collections.abc import Callable
from typing import Any

from gpiozero import LED, Device, DigitalInputDevice

from drivers.errors import DriverInitError, DriverOperationError, UnknownBackend

log = logging.getLogger(__name__)

Pin = int | str
BoolCallback = Callable[[bool], None]

# Pin factories by profile name, imported only when chosen (python-can's BACKENDS).
PIN_FACTORIES: dict[str, tuple[str, str]] = {
    "mock": ("gpiozero.pins.mock", "MockFactory"),
    "lgpio": ("gpiozero.pins.lgpio", "LGPIOFactory"),
    "rpigpio": ("gpiozero.pins.rpigpio", "RPiGPIOFactory"),
    "pigpio": ("gpiozero.pins.pigpio", "PiGPIOFactory"),
    "native": ("gpiozero.pins.native", "NativeFactory"),
}

# A mechanical push button chatters for a few milliseconds.
BUTTON_BOUNCE = 0.02


class LedPattern(enum.Enum):
    """What the status LED shows."""

    OFF = "off"
    ON = "on"
    BLINK_SLOW = "blink_slow"  # connecting
    BLINK_FAST = "blink_fast"  # error


# (on_time, off_time) in seconds for the blinking patterns.
BLINK_TIMES: dict[LedPattern, tuple[float, float]] = {
    LedPattern.BLINK_SLOW: (0.5, 0.5),
    LedPattern.BLINK_FAST: (0.1, 0.1),
}


def make_pin_factory(name: str | None) -> Any:
    """Build the gpiozero pin factory called *name*, or gpiozero's default for None.

    The default honours ``GPIOZERO_PIN_FACTORY`` and gpiozero's fallback order,
    but unlike a bare device it never installs itself as ``Device.pin_factory``.
    """
    if name is None:
        try:
            return Device._default_pin_factory()
        except Exception as e:
            raise DriverInitError(f"no usable default gpiozero pin factory: {e}") from e
    module_name, class_name = _factory_entry(name)
    try:
        factory_class = getattr(importlib.import_module(module_name), class_name)
    except (ImportError, AttributeError) as e:
        raise UnknownBackend(f"gpio pin factory {name!r} cannot be imported: {e}") from e
    try:
        return factory_class()
    except Exception as e:
        raise DriverInitError(f"gpio pin factory {name!r} failed to open: {e}") from e


def _factory_entry(name: str) -> tuple[str, str]:
    """Look *name* up in the registry; an unknown name is a typed error."""
    try:
        return PIN_FACTORIES[name]
    except KeyError:
        known = ", ".join(sorted(PIN_FACTORIES))
        raise UnknownBackend(f"unknown gpio pin factory {name!r} (known: {known})") from None


class GpioBoard:
    """The board's few GPIO lines: ignition sense in, status LED out, driver button in.

    Any pin left as None is simply absent. Callbacks run in the event loop given
    to :meth:`start`; a callback that raises is logged and counted, and later
    edges are still delivered.
    """

    def __init__(
        self,
        *,
        pin_factory: str | None = None,
        ignition_pin: Pin | None = None,
        ignition_active_high: bool = True,
        ignition_bounce: float = 0.05,
        led_pin: Pin | None = None,
        button_pin: Pin | None = None,
        on_ignition: BoolCallback | None = None,
        on_button: BoolCallback | None = None,
    ) -> None:
        self._factory_name = pin_factory
        self._ignition_pin = ignition_pin
        self._ignition_active_high = ignition_active_high
        self._ignition_bounce = ignition_bounce
        self._led_pin = led_pin
        self._button_pin = button_pin
        self._on_ignition = on_ignition
        self._on_button = on_button
        self._factory: Any = None
        self._ignition: Any = None
        self._button: Any = None
        self._led: Any = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._epoch = 0  # bumped by stop(): work queued by an older run is dropped
        self._settle: asyncio.TimerHandle | None = None
        self._last_ignition: bool | None = None
        self._led_pattern = LedPattern.OFF
        self.callback_errors = 0

    # -- lifecycle -----------------------------------------------------------

    @property
    def factory(self) -> Any:
        """The gpiozero pin factory in use, created on first use and closed by stop()."""
        if self._factory is None:
            self._factory = make_pin_factory(self._factory_name)
        return self._factory

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        """Open the factory and devices, then deliver the initial ignition state to *loop*.

        Raises UnknownBackend for a bad factory name and DriverInitError naming the pin
        a device could not open on; nothing is left open after a failure.
        """
        if self._loop is not None:
            raise DriverInitError("GpioBoard is already started")
        self._loop = loop
        try:
            self._open_devices()
            self._apply_led()
        except BaseException:
            self.stop()
            raise
        if self._ignition is not None:
            self._to_loop(self._settle_ignition)

    def stop(self) -> None:
        """Close every device and the pin factory; safe to call twice."""
        self._epoch += 1
        self._loop = None
        if self._settle is not None:
            self._settle.cancel()
            self._settle = None
        for name in ("_led", "_button", "_ignition"):
            self._close_device(name)
        self._last_ignition = None
        self._close_factory()

    def _open_devices(self) -> None:
        """Create each configured gpiozero device on our own factory, naming the pin on failure."""
        factory = self.factory
        if self._ignition_pin is not None:
            # Pull towards "off" so a disconnected sense wire reads as ignition off.
            self._ignition = self._open(
                "ignition input", DigitalInputDevice, self._ignition_pin, factory,
                pull_up=not self._ignition_active_high, bounce_time=self._ignition_bounce or None)
            self._ignition.when_activated = self._ignition_edge
            self._ignition.when_deactivated = self._ignition_edge
        if self._button_pin is not None:
            # A Button's pull-up and bounce, without gpiozero's Button: its hold thread wakes ten
            # times a second for when_held, which the agent does not use (a parked car stays asleep).
            self._button = self._open(
                "button", DigitalInputDevice, self._button_pin, factory, pull_up=True, bounce_time=BUTTON_BOUNCE)
            self._button.when_activated = self._button_pressed
            self._button.when_deactivated = self._button_released
        if self._led_pin is not None:
            self._led = self._open("status LED", LED, self._led_pin, factory, initial_value=False)

    @staticmethod
    def _open(role: str, device_class: Any, pin: Pin, factory: Any, **options: Any) -> Any:
        """Build one device; any gpiozero refusal becomes a DriverInitError naming role and pin."""
        try:
            return device_class(pin, pin_factory=factory, **options)
        except Exception as e:
            raise DriverInitError(
                f"cannot open {role} on pin {pin!r}: {type(e).__name__}: {e}") from e

    def _close_device(self, attr: str) -> None:
        """Close one device if open; a failing close is logged so the others still close."""
        device = getattr(self, attr)
        setattr(self, attr, None)
        if device is None:
            return
        try:
            device.close()
        except Exception:
            log.exception("gpio: closing %r failed", device)

    def _close_factory(self) -> None:
        """Release the factory's handles (lgpio's gpiochip); the next start() opens a new one."""
        factory, self._factory = self._factory, None
        if factory is None:
            return
        try:
            factory.close()
        except Exception:
            log.exception("gpio: closing pin factory %r failed", factory)

    # -- ignition --------------------------------------------------------------

    @property
    def is_ignition_on(self) -> bool | None:
        """Ignition level read now; None without an ignition pin or when not started."""
        if self._ignition is None:
            return None
        return bool(self._ignition.is_active)

    def _ignition_edge(self) -> None:
        """gpiozero thread: any ignition edge asks the loop to re-read once it settles."""
        self._to_loop(self._restart_settle)

    def _restart_settle(self) -> None:
        """Loop thread: (re)arm the settle timer, so chatter yields one reading of the final level.

        Re-reading the level, rather than trusting edge order, keeps the final state
        right even on backends whose bounce filter drops the last edge (RPi.GPIO).
        """
        if self._settle is not None:
            self._settle.cancel()
        assert self._loop is not None
        self._settle = self._loop.call_later(self._ignition_bounce, self._settle_ignition)

    def _settle_ignition(self) -> None:
        """Loop thread: deliver the ignition level if it differs from the last one delivered."""
        self._settle = None
        if self._ignition is None:
            return
        value = bool(self._ignition.is_active)
        if value == self._last_ignition:
            return
        self._last_ignition = value
        self._call(self._on_ignition, "on_ignition", value)

    # -- button --------------------------------------------------------------

    def _button_pressed(self) -> None:
        """gpiozero thread: forward a press."""
        self._to_loop(lambda: self._call(self._on_button, "on_button", True))

    def _button_released(self) -> None:
        """gpiozero thread: forward a release."""
        self._to_loop(lambda: self._call(self._on_button, "on_button", False))

    # -- LED -----------------------------------------------------------------

    @property
    def led_pattern(self) -> LedPattern:
        """The pattern last asked for (shown once started, if there is an LED)."""
        return self._led_pattern

    def set_led(self, pattern: LedPattern) -> None:
        """Show *pattern* on the status LED; remembered if not started, ignored without an LED."""
        if pattern == self._led_pattern:
            return  # restarting a blink would visibly reset its phase
        self._led_pattern = pattern
        self._apply_led()

    def _apply_led(self) -> None:
        """Drive the LED to the remembered pattern."""
        led = self._led
        if led is None:
            return
        pattern = self._led_pattern
        try:
            if pattern in BLINK_TIMES:
                on_time, off_time = BLINK_TIMES[pattern]
                led.blink(on_time=on_time, off_time=off_time, background=True)
            elif pattern is LedPattern.ON:
                led.on()
            else:
                led.off()
        except Exception as e:
            raise DriverOperationError(
                f"status LED on pin {self._led_pin!r}: cannot show {pattern.name}: {e}") from e

    # -- the one thread -> loop bridge -----------------------------------------

    def _to_loop(self, work: Callable[[], None]) -> None:
        """Any thread: run *work* in the loop thread, unless stop() comes first."""
        loop, epoch = self._loop, self._epoch
        if loop is None:
            return
        try:
            loop.call_soon_threadsafe(self._run_current, epoch, work)
        except RuntimeError:  # loop closed under us during shutdown
            log.debug("gpio: event loop closed, dropping an edge")

    def _run_current(self, epoch: int, work: Callable[[], None]) -> None:
        """Loop thread: run *work* only if it was queued by the current run."""
        if epoch == self._epoch and self._loop is not None:
            work()

    def _call(self, callback: BoolCallback | None, name: str, value: bool) -> None:
        """Loop thread: call a user callback; an exception is logged and counted, never raised."""
        if callback is None:
            return
        try:
            callback(value)
        except Exception:
            self.callback_errors += 1
            log.exception("gpio: %s(%s) raised (%d callback errors so far)",
                          name, value, self.callback_errors)
