"""The profile loader on ``[[vehicle.actions]]`` and the ``[vehicle.can]`` write keys: good actions keep
their frames, defaults and interlocks; each kind of mistake is one ProfileError naming the key. Real
files in tmp_path, no mocks; the demo profile loads with its three actions."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from agent.errors import ProfileError
from agent.profile import load_profile
from agent.profile.actions import parse_frame
from agent.profile.model import CanAction, CanFrame, Profile

PROFILES = Path(__file__).resolve().parent.parent / "profiles"
HEADER = '[profile]\nname = "Test car"\n\n[account]\njid = "car@localhost"\npassword = "secret"\n\n'
WRITING = '[vehicle.can]\ninterface = "virtual"\nwrite = true\n\n'
LOCK = '[[vehicle.actions]]\nname = "lock"\nframes = ["2F0#0100000000000000"]\n'


def load(tmp_path: Path, text: str) -> Profile:
    path = tmp_path / "car.toml"
    path.write_text(HEADER + text, encoding="utf-8")
    return load_profile(path, environ={})


def test_demo_profile_has_three_actions_and_writes_on_its_own_channel() -> None:
    """Tried: the demo profile (local-only: no run/ needed). Kept: lock, unlock, flash-lights with
    their frames and interlocks; writing on, on the virtual channel "demo-actions"."""
    profile = load_profile(PROFILES / "demo.toml", local_only=True)
    can = profile.vehicle.can
    assert can is not None and (can.write, can.write_interface, can.write_channel) == (True, "virtual",
                                                                                      "demo-actions")
    lock, unlock, flash = profile.vehicle.actions
    assert [a.name for a in profile.vehicle.actions] == ["lock", "unlock", "flash-lights"]
    assert lock.frames == (CanFrame(0x2F0, bytes([1, 0, 0, 0, 0, 0, 0, 0])),)
    assert (lock.speed_zero, lock.modes, lock.driver_confirms) == (True, ("parked", "off"), False)
    assert unlock.confirm and unlock.driver_confirms and unlock.driver_timeout == 30.0
    assert len(flash.frames) == 2 and flash.gap == 0.5


def test_an_action_keeps_its_keys_and_the_safe_defaults(tmp_path: Path) -> None:
    """Tried: a bare action and a full one. Kept: the bare one gets title = name, gap 0.05, speed_zero on,
    no modes, no driver; the full one keeps every key, an extended frame and an empty-data frame."""
    profile = load(tmp_path, WRITING + LOCK + '[[vehicle.actions]]\nname = "horn-2"\ntitle = "Sound the horn"\n'
                   'frames = ["18FF2F00#AABB", "123#"]\ngap = 0\nconfirm = "Sound it?"\nspeed_zero = false\n'
                   'modes = ["idling"]\ndriver_confirms = true\ndriver_timeout = 12.5\n')
    bare, full = profile.vehicle.actions
    assert bare == CanAction("lock", "lock", (CanFrame(0x2F0, bytes([1, 0, 0, 0, 0, 0, 0, 0])),))
    assert (bare.gap, bare.speed_zero, bare.modes, bare.driver_confirms, bare.confirm) == (0.05, True, (), False,
                                                                                          None)
    assert full == CanAction("horn-2", "Sound the horn", (CanFrame(0x18FF2F00, b"\xaa\xbb", True),
                                                          CanFrame(0x123, b"")),
                             gap=0.0, confirm="Sound it?", speed_zero=False, modes=("idling",),
                             driver_confirms=True, driver_timeout=12.5)


def test_writing_is_off_unless_the_profile_says_so(tmp_path: Path) -> None:
    """Tried: a CAN section without write keys. Kept: write false, no write interface or channel."""
    profile = load(tmp_path, '[vehicle.can]\ninterface = "virtual"\n')
    can = profile.vehicle.can
    assert can is not None and (can.write, can.write_interface, can.write_channel) == (False, None, None)


def test_a_replay_may_write_to_another_interface(tmp_path: Path) -> None:
    """Tried: a replay with write_interface and write_channel. Kept: both."""
    (tmp_path / "drive.log").write_text("(0.0) vcan0 100#00\n", encoding="utf-8")
    profile = load(tmp_path, '[vehicle.can]\ninterface = "replay"\nreplay_file = "drive.log"\nwrite = true\n'
                   'write_interface = "virtual"\nwrite_channel = "out"\n')
    can = profile.vehicle.can
    assert can is not None and (can.write, can.write_interface, can.write_channel) == (True, "virtual", "out")


@pytest.mark.parametrize(("text", "frame"), [
    ("2F0#01", CanFrame(0x2F0, b"\x01")), ("7ff#", CanFrame(0x7FF, b"")),
    ("1FFFFFFF#0102030405060708", CanFrame(0x1FFFFFFF, bytes(range(1, 9)), True)),
    ("00000001#00", CanFrame(1, b"\x00", True)),
])
def test_candump_frames_parse(text: str, frame: CanFrame) -> None:
    assert parse_frame(text) == frame


@dataclass
class Mistake:
    text: str  # after the [profile] and [account] header
    key: str  # the exact key path the error must name
    expected: str  # a part of what the error says was expected


def action(extra: str, frames: str = '["2F0#01"]') -> str:
    return WRITING + f'[[vehicle.actions]]\nname = "lock"\nframes = {frames}\n{extra}'


MISTAKES: dict[str, Mistake] = {
    "name missing": Mistake(WRITING + '[[vehicle.actions]]\nframes = ["2F0#01"]\n', "vehicle.actions[0].name",
                            "the key is required"),
    "name upper case": Mistake(WRITING + '[[vehicle.actions]]\nname = "Lock"\nframes = ["2F0#01"]\n',
                               "vehicle.actions[0].name", "a command name: lower-case letters"),
    "name of a built-in command": Mistake(WRITING + '[[vehicle.actions]]\nname = "status"\nframes = ["2F0#01"]\n',
                                          "vehicle.actions[0].name", "a name not used by the agent's own commands"),
    "name twice": Mistake(WRITING + LOCK + LOCK, "vehicle.actions[1].name", "a name no other action has"),
    "frames missing": Mistake(WRITING + '[[vehicle.actions]]\nname = "lock"\n', "vehicle.actions[0].frames",
                              "the key is required"),
    "frames not an array": Mistake(action("", '"2F0#01"'), "vehicle.actions[0].frames", "an array"),
    "no frames": Mistake(action("", "[]"), "vehicle.actions[0].frames", "1..16 frames"),
    "too many frames": Mistake(action("", "[" + ", ".join(['"2F0#01"'] * 17) + "]"), "vehicle.actions[0].frames",
                               "at most 16 frames"),
    "frame id of 2 digits": Mistake(action("", '["2F#01"]'), "vehicle.actions[0].frames[0]", "candump notation"),
    "frame with half a byte": Mistake(action("", '["2F0#01", "2F0#010"]'), "vehicle.actions[0].frames[1]",
                                      "candump notation"),
    "frame of 9 bytes": Mistake(action("", '["2F0#010203040506070809"]'), "vehicle.actions[0].frames[0]",
                                "0-8 bytes"),
    "standard id above 0x7FF": Mistake(action("", '["FFF#01"]'), "vehicle.actions[0].frames[0]",
                                       "candump notation"),
    "extended id above 29 bits": Mistake(action("", '["3FFFFFFF#01"]'), "vehicle.actions[0].frames[0]",
                                         "candump notation"),
    "frame as a number": Mistake(action("", "[0x2F0]"), "vehicle.actions[0].frames[0]", "candump notation"),
    "negative gap": Mistake(action("gap = -1\n"), "vehicle.actions[0].gap", "a number >= 0"),
    "empty confirm": Mistake(action('confirm = ""\n'), "vehicle.actions[0].confirm", "a yes/no question"),
    "speed_zero not a bool": Mistake(action('speed_zero = "yes"\n'), "vehicle.actions[0].speed_zero",
                                     "true or false"),
    "unknown mode": Mistake(action('modes = ["parked", "moving"]\n'), "vehicle.actions[0].modes[1]",
                            "a vehicle mode: off, parked, idling, driving"),
    "driver_confirms not a bool": Mistake(action("driver_confirms = 1\n"), "vehicle.actions[0].driver_confirms",
                                          "true or false"),
    "zero driver timeout": Mistake(action("driver_timeout = 0\n"), "vehicle.actions[0].driver_timeout",
                                   "a number > 0"),
    "unknown key": Mistake(action("interlocks = []\n"), "vehicle.actions[0].interlocks",
                           "a known key (allowed here: name, title, frames"),
    "title not a string": Mistake(action("title = 3\n"), "vehicle.actions[0].title", "a non-empty string"),
    "actions without a CAN section": Mistake(LOCK, "vehicle.actions", "a [vehicle.can] section as well"),
    "actions not tables": Mistake('[vehicle]\nactions = ["lock"]\n', "vehicle.actions[0]", "a table"),
    "write not a bool": Mistake('[vehicle.can]\ninterface = "virtual"\nwrite = "yes"\n', "vehicle.can.write",
                                "true or false"),
    "write_interface unknown": Mistake('[vehicle.can]\ninterface = "virtual"\nwrite = true\n'
                                       'write_interface = "socketcam"\n', "vehicle.can.write_interface", "one of "),
    "write_interface replay": Mistake('[vehicle.can]\ninterface = "virtual"\nwrite = true\n'
                                      'write_interface = "replay"\n', "vehicle.can.write_interface", "one of "),
    "writing to a replay": Mistake('[vehicle.can]\ninterface = "replay"\nreplay_file = "drive.log"\nwrite = true\n',
                                   "vehicle.can.write_interface", "a replay cannot be written to"),
    "empty write_channel": Mistake('[vehicle.can]\ninterface = "virtual"\nwrite = true\nwrite_channel = ""\n',
                                   "vehicle.can.write_channel", "a non-empty string"),
}


@pytest.mark.parametrize("mistake", MISTAKES.values(), ids=MISTAKES.keys())
def test_mistakes_are_refused_naming_the_key(tmp_path: Path, mistake: Mistake) -> None:
    """Tried: one profile with one mistake. Kept: one ProfileError naming file, key path, expectation."""
    (tmp_path / "drive.log").write_text("(0.0) vcan0 100#00\n", encoding="utf-8")
    path = tmp_path / "car.toml"
    path.write_text(HEADER + mistake.text, encoding="utf-8")
    with pytest.raises(ProfileError) as caught:
        load_profile(path, environ={})
    error = caught.value
    assert (error.file, error.key) == (str(path), mistake.key)
    assert mistake.expected in error.expected
    assert str(error).startswith(f"{path}: {mistake.key}: expected ")


@pytest.mark.parametrize(("key", "value"), [("gap", 11), ("driver_timeout", 301)])
def test_action_waits_are_bounded(tmp_path: Path, key: str, value: int) -> None:
    """A gap of an hour would hold the sender (and every other action) for an hour."""
    text = ('[profile]\nname = "t"\n[account]\njid = "car@x.example"\npassword = "p"\n'
            '[vehicle.can]\ninterface = "virtual"\nwrite = true\n'
            f'[[vehicle.actions]]\nname = "lock"\nframes = ["2F0#01"]\n{key} = {value}\n')
    (tmp_path / "p.toml").write_text(text)
    with pytest.raises(ProfileError, match=rf"vehicle\.actions\[0\]\.{key}"):
        load_profile(tmp_path / "p.toml", environ={})
