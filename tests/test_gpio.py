"""GpioBoard on gpiozero's real MockFactory: edges, loop bridge, bounce, LED, errors, lifecycle."""

from __future__ import annotations

import asyncio
import importlib.util
import logging
import threading
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from gpiozero import LED, Button, Device, DigitalInputDevice
from gpiozero.exc import PinFixedPull, PinInvalidPin
from gpiozero.pins.mock import MockFactory, MockPin

from drivers.errors import DriverInitError, UnknownBackend
from drivers.gpio import BLINK_TIMES, GpioBoard, LedPattern

IGNITION, BUTTON, STATUS_LED = 22, 23, 24
TIMEOUT = 5.0  # only to avoid hanging; nothing is asserted about time


@dataclass
class Recorder:
    """Collects callback values and the thread each one ran in."""

    values: list[bool] = field(default_factory=list)
    threads: list[int] = field(default_factory=list)
    raises: bool = False

    def __call__(self, value: bool) -> None:
        self.values.append(value)
        self.threads.append(threading.get_ident())
        if self.raises:
            raise RuntimeError(f"listener failed on {value}")


class HeldPin(MockPin):  # type: ignore[misc]  # gpiozero is not type-checked (follow_imports = skip)
    """A mock input whose line an outside circuit holds, overriding the internal pull.

    Models the ignition divider: with the key on, the line reads high whatever pull
    the driver configures.
    """

    held: bool | None = None

    def _set_pull(self, value: str) -> None:
        super()._set_pull(value)
        if self.held is not None:
            self._change_state(self.held)


async def wait_until(predicate: Callable[[], bool], what: str) -> None:
    """Poll *predicate* from the loop until true; fail with *what* after a generous timeout."""
    async def poll() -> None:
        while not predicate():
            await asyncio.sleep(0.005)
    try:
        await asyncio.wait_for(poll(), TIMEOUT)
    except TimeoutError:
        pytest.fail(f"timed out waiting for {what}")


def mock_board(ignition: Recorder | None = None, button: Recorder | None = None,
               **options: Any) -> GpioBoard:
    """A board on a fresh MockFactory making plain MockPins, all three lines configured."""
    settings: dict[str, Any] = dict(
        pin_factory="mock", ignition_pin=IGNITION, button_pin=BUTTON, led_pin=STATUS_LED,
        ignition_bounce=0.01, on_ignition=ignition, on_button=button)
    settings.update(options)
    board = GpioBoard(**settings)
    board.factory.pin_class = MockPin  # ignore GPIOZERO_MOCK_PIN_CLASS from the environment
    return board


@pytest.fixture
def ignition() -> Recorder:
    return Recorder()


@pytest.fixture
def button() -> Recorder:
    return Recorder()


@pytest.fixture
async def board(ignition: Recorder, button: Recorder) -> AsyncIterator[GpioBoard]:
    board = mock_board(ignition, button)
    board.start(asyncio.get_running_loop())
    await wait_until(lambda: ignition.values == [False], "the initial ignition state")
    yield board
    board.stop()


# -- ignition ---------------------------------------------------------------


async def test_ignition_active_high_follows_the_line(board: GpioBoard, ignition: Recorder) -> None:
    """Active-high wiring: pulled down, high means on, low means off."""
    pin = board.factory.pin(IGNITION)
    assert pin.pull == "down"

    pin.drive_high()
    await wait_until(lambda: len(ignition.values) == 2, "ignition on")
    assert ignition.values == [False, True]
    assert board.is_ignition_on is True

    pin.drive_low()
    await wait_until(lambda: len(ignition.values) == 3, "ignition off")
    assert ignition.values == [False, True, False]
    assert board.is_ignition_on is False


async def test_ignition_active_low_is_inverted() -> None:
    """Active-low wiring: pulled up, low means on, high means off."""
    ignition = Recorder()
    board = mock_board(ignition, ignition_active_high=False)
    board.start(asyncio.get_running_loop())
    try:
        pin = board.factory.pin(IGNITION)
        assert pin.pull == "up"
        await wait_until(lambda: ignition.values == [False], "initial off")

        pin.drive_low()
        await wait_until(lambda: len(ignition.values) == 2, "ignition on")
        assert ignition.values == [False, True]
        assert board.is_ignition_on is True

        pin.drive_high()
        await wait_until(lambda: len(ignition.values) == 3, "ignition off")
        assert ignition.values == [False, True, False]
    finally:
        board.stop()


async def test_initial_on_state_is_delivered_once_without_an_edge() -> None:
    """A key already on at start() is reported once, without waiting for an edge."""
    ignition = Recorder()
    board = mock_board(ignition, ignition_bounce=0.02)
    held = board.factory.pin(IGNITION, pin_class=HeldPin)
    held.held = True
    board.start(asyncio.get_running_loop())
    try:
        await wait_until(lambda: bool(ignition.values), "the initial ignition state")
        await asyncio.sleep(0.1)  # room for a wrong second delivery to show up
        assert ignition.values == [True]
        assert board.is_ignition_on is True
    finally:
        board.stop()


async def test_no_ignition_pin_means_unknown() -> None:
    """Without an ignition pin the state is None and nothing is delivered."""
    ignition = Recorder()
    board = mock_board(ignition, ignition_pin=None)
    assert board.is_ignition_on is None
    board.start(asyncio.get_running_loop())
    try:
        await asyncio.sleep(0.05)
        assert board.is_ignition_on is None
        assert ignition.values == []
    finally:
        board.stop()


async def test_callbacks_run_in_the_loop_thread(
        board: GpioBoard, ignition: Recorder, button: Recorder) -> None:
    """Edges raised on another thread still reach the callbacks in the loop thread."""
    loop_thread = threading.get_ident()
    edge_threads: list[int] = []

    def drive_from_elsewhere() -> None:
        edge_threads.append(threading.get_ident())
        board.factory.pin(IGNITION).drive_high()
        board.factory.pin(BUTTON).drive_low()

    await asyncio.to_thread(drive_from_elsewhere)
    await wait_until(lambda: len(ignition.values) == 2 and len(button.values) == 1, "both edges")
    assert edge_threads and edge_threads[0] != loop_thread
    assert ignition.threads == [loop_thread, loop_thread]
    assert button.threads == [loop_thread]


async def test_chatter_inside_the_bounce_window_settles_to_the_final_level() -> None:
    """Toggles faster than the bounce window yield one delivery of the final level, or none."""
    ignition = Recorder()
    board = mock_board(ignition, ignition_bounce=0.05)
    board.start(asyncio.get_running_loop())
    try:
        pin = board.factory.pin(IGNITION)
        await wait_until(lambda: ignition.values == [False], "initial off")

        # All edges are queued before the loop runs again: well inside the window.
        for level in (True, False, True, False, True):
            pin.drive_high() if level else pin.drive_low()
        await wait_until(lambda: len(ignition.values) == 2, "the settled level")
        assert ignition.values == [False, True]

        for level in (False, True, False, True):  # a glitch that ends where it began
            pin.drive_high() if level else pin.drive_low()
        await asyncio.sleep(0.3)  # several windows: a spurious delivery would be here by now
        assert ignition.values == [False, True]
        assert board.is_ignition_on is True

        pin.drive_low()
        await wait_until(lambda: len(ignition.values) == 3, "ignition off after chatter")
        assert ignition.values == [False, True, False]
    finally:
        board.stop()


async def test_chatter_from_another_thread_ends_consistent(
        board: GpioBoard, ignition: Recorder) -> None:
    """However the chatter interleaves with the loop, the last delivery matches the line."""
    pin = board.factory.pin(IGNITION)

    def chatter() -> None:
        for _ in range(50):
            pin.drive_high()
            pin.drive_low()
        pin.drive_high()

    await asyncio.to_thread(chatter)
    await wait_until(lambda: ignition.values[-1] is True, "the final level")
    await asyncio.sleep(0.1)
    assert ignition.values[-1] is True and board.is_ignition_on is True
    # Only changes are delivered: never the same level twice in a row.
    assert all(a != b for a, b in zip(ignition.values, ignition.values[1:]))


# -- button -------------------------------------------------------------------


async def test_button_press_and_release(board: GpioBoard, button: Recorder) -> None:
    """The button is pulled up: low is a press, high again a release."""
    pin = board.factory.pin(BUTTON)
    assert pin.pull == "up"
    assert button.values == []

    pin.drive_low()
    await wait_until(lambda: len(button.values) == 1, "the press")
    pin.drive_high()
    await wait_until(lambda: len(button.values) == 2, "the release")
    assert button.values == [True, False]


# -- LED ----------------------------------------------------------------------


async def test_led_on_and_off(board: GpioBoard) -> None:
    """ON drives the pin high, OFF drives it low."""
    pin = board.factory.pin(STATUS_LED)
    assert pin.state is False

    board.set_led(LedPattern.ON)
    assert pin.state is True and board.led_pattern is LedPattern.ON
    board.set_led(LedPattern.OFF)
    assert pin.state is False and board.led_pattern is LedPattern.OFF


@pytest.mark.parametrize("pattern", [LedPattern.BLINK_SLOW, LedPattern.BLINK_FAST])
async def test_led_blinks_then_stops(board: GpioBoard, pattern: LedPattern) -> None:
    """BLINK_* toggles the pin; OFF stops the blinking and leaves it low."""
    pin = board.factory.pin(STATUS_LED)
    pin.clear_states()
    board.set_led(pattern)
    await wait_until(lambda: len(pin.states) >= 3, "two LED transitions")
    levels = [s.state for s in pin.states[:3]]
    assert levels == [False, True, False]

    board.set_led(LedPattern.OFF)
    assert pin.state is False
    seen = len(pin.states)
    await asyncio.sleep(2.5 * sum(BLINK_TIMES[LedPattern.BLINK_FAST]))
    assert len(pin.states) == seen, "the LED kept blinking after OFF"


async def test_led_pattern_set_before_start_is_shown_at_start() -> None:
    """A pattern chosen before start() is applied as soon as the LED opens."""
    board = mock_board()
    board.set_led(LedPattern.ON)
    board.start(asyncio.get_running_loop())
    try:
        assert board.factory.pin(STATUS_LED).state is True
    finally:
        board.stop()


async def test_set_led_without_an_led_is_remembered_only() -> None:
    """A board without an LED accepts patterns and does nothing with them."""
    board = mock_board(led_pin=None)
    board.start(asyncio.get_running_loop())
    try:
        board.set_led(LedPattern.BLINK_FAST)
        assert board.led_pattern is LedPattern.BLINK_FAST
        assert f"GPIO{STATUS_LED}" not in {info.name for info in board.factory.pins}
    finally:
        board.stop()


# -- errors -------------------------------------------------------------------


async def test_invalid_pin_raises_init_error_naming_it() -> None:
    """A pin the board does not have fails start() with the pin in the message."""
    board = mock_board(ignition_pin="GPIO99")
    with pytest.raises(DriverInitError, match="GPIO99") as caught:
        board.start(asyncio.get_running_loop())
    assert isinstance(caught.value.__cause__, PinInvalidPin)
    assert board.is_ignition_on is None


async def test_pin_the_factory_refuses_raises_init_error() -> None:
    """GPIO2 has a fixed pull-up, so an active-high (pull-down) ignition on it is refused."""
    board = mock_board(ignition_pin="GPIO2", ignition_active_high=True)
    with pytest.raises(DriverInitError, match="GPIO2") as caught:
        board.start(asyncio.get_running_loop())
    assert isinstance(caught.value.__cause__, PinFixedPull)


async def test_failed_start_releases_what_it_opened() -> None:
    """When the button fails to open, the ignition pin opened before it is released again."""
    board = mock_board(button_pin="GPIO99")
    factory = board.factory
    with pytest.raises(DriverInitError, match="button"):
        board.start(asyncio.get_running_loop())
    DigitalInputDevice(IGNITION, pin_factory=factory).close()  # GPIOPinInUse if still held
    with pytest.raises(DriverInitError, match="GPIO99"):  # a retry fails the same way
        board.start(asyncio.get_running_loop())


async def test_unknown_factory_raises_unknown_backend() -> None:
    """A factory name outside the registry fails start() with UnknownBackend, an init error."""
    board = GpioBoard(pin_factory="bogus", ignition_pin=IGNITION)
    with pytest.raises(UnknownBackend, match="bogus") as caught:
        board.start(asyncio.get_running_loop())
    assert isinstance(caught.value, DriverInitError)
    assert board.is_ignition_on is None
    board.stop()


async def test_unimportable_factory_raises_unknown_backend() -> None:
    """A known factory whose library is missing fails start() with UnknownBackend."""
    if importlib.util.find_spec("lgpio") is not None:
        pytest.skip("lgpio is installed here")
    board = GpioBoard(pin_factory="lgpio", ignition_pin=IGNITION)
    with pytest.raises(UnknownBackend, match="lgpio"):
        board.start(asyncio.get_running_loop())


async def test_default_factory_is_gpiozeros_and_global_is_untouched(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """pin_factory=None takes gpiozero's default (here chosen by its env var) privately."""
    monkeypatch.setenv("GPIOZERO_PIN_FACTORY", "mock")
    monkeypatch.delenv("GPIOZERO_MOCK_PIN_CLASS", raising=False)
    global_before = Device.pin_factory
    board = GpioBoard(ignition_pin=IGNITION)
    board.start(asyncio.get_running_loop())
    try:
        assert isinstance(board.factory, MockFactory)
        assert board.factory is not global_before
        assert Device.pin_factory is global_before
    finally:
        board.stop()


async def test_raising_callback_does_not_stop_later_ones(
        caplog: pytest.LogCaptureFixture) -> None:
    """Listeners that raise are logged and counted; later edges still arrive."""
    ignition, button = Recorder(raises=True), Recorder(raises=True)
    board = mock_board(ignition, button)
    board.start(asyncio.get_running_loop())
    try:
        with caplog.at_level(logging.ERROR, logger="drivers.gpio"):
            await wait_until(lambda: ignition.values == [False], "initial off")
            board.factory.pin(IGNITION).drive_high()
            await wait_until(lambda: len(ignition.values) == 2, "ignition on")
            board.factory.pin(BUTTON).drive_low()
            board.factory.pin(BUTTON).drive_high()
            await wait_until(lambda: len(button.values) == 2, "press and release")
        assert ignition.values == [False, True]
        assert button.values == [True, False]
        assert board.callback_errors == 4
        messages = [r.getMessage() for r in caplog.records]
        assert any("on_ignition(True)" in m for m in messages)
        assert any("on_button(False)" in m for m in messages)
    finally:
        board.stop()


# -- lifecycle ----------------------------------------------------------------


async def test_start_twice_is_refused(board: GpioBoard) -> None:
    """A second start() would leak the first run's devices, so it is an error."""
    with pytest.raises(DriverInitError, match="already started"):
        board.start(asyncio.get_running_loop())


async def test_stop_twice_releases_pins_and_restart_works(
        board: GpioBoard, ignition: Recorder) -> None:
    """stop() is idempotent, frees every pin, and the board can start again."""
    old_factory = board.factory
    board.stop()
    board.stop()
    assert board.is_ignition_on is None

    # Each line is free for a new owner: gpiozero raises GPIOPinInUse otherwise.
    for device in (DigitalInputDevice(IGNITION, pin_factory=old_factory),
                   Button(BUTTON, pin_factory=old_factory),
                   LED(STATUS_LED, pin_factory=old_factory)):
        device.close()

    board.start(asyncio.get_running_loop())
    assert board.factory is not old_factory
    await wait_until(lambda: ignition.values == [False, False], "the initial state again")
    board.factory.pin(IGNITION).drive_high()
    await wait_until(lambda: ignition.values[-1] is True, "an edge after restart")


async def test_edges_queued_before_stop_are_dropped(board: GpioBoard, ignition: Recorder) -> None:
    """An edge already on its way to the loop is not delivered once stop() has run."""
    board.factory.pin(IGNITION).drive_high()  # queued with call_soon_threadsafe, not yet run
    board.stop()
    await asyncio.sleep(0.1)
    assert ignition.values == [False]


async def test_edges_queued_before_a_restart_do_not_leak_into_it(
        board: GpioBoard, button: Recorder) -> None:
    """A press queued by the old run is not delivered by a run started right after stop()."""
    board.factory.pin(BUTTON).drive_low()  # queued, not yet run
    board.stop()
    board.start(asyncio.get_running_loop())
    await asyncio.sleep(0.1)
    assert button.values == []
    board.factory.pin(BUTTON).drive_low()
    await wait_until(lambda: button.values == [True], "a press in the new run")
