"""The derived vehicle mode and its hysteresis, on vehicle time (no sleeping)."""

from __future__ import annotations

from agent.vehicle.mode import ModeInputs, ModeMachine, ModeSettings, VehicleMode as M

ON = dict(ignition=True)


def run(machine: ModeMachine, steps: list[tuple[float, ModeInputs]]) -> list[tuple[float, M]]:
    """Feed inputs at the given times, following the machine's own deadlines in between."""
    out: list[tuple[float, M]] = []
    for i, (t, inputs) in enumerate(steps):
        end = steps[i + 1][0] if i + 1 < len(steps) else t + 1000
        now = t
        while True:
            mode, due = machine.step(inputs, now)
            if not out or out[-1][1] is not mode:
                out.append((now, mode))
            if due is None or due >= end:
                break
            now = due
    return out


def test_a_full_drive_goes_off_parked_idling_driving_parked_off() -> None:
    s = ModeSettings()
    machine = ModeMachine(s)
    timeline = run(machine, [
        (0, ModeInputs(ignition=False)),
        (10, ModeInputs(ignition=True, speed=0, engine_rpm=0)),
        (20, ModeInputs(ignition=True, speed=0, engine_rpm=800, parking_signal=True)),
        (30, ModeInputs(ignition=True, speed=20, engine_rpm=1500, parking_signal=False)),
        (100, ModeInputs(ignition=True, speed=0, engine_rpm=800, parking_signal=False)),  # red light
        (140, ModeInputs(ignition=True, speed=30, engine_rpm=1500, parking_signal=False)),
        (200, ModeInputs(ignition=True, speed=0, engine_rpm=0, parking_signal=True)),  # gear P, engine off
        (220, ModeInputs(ignition=False)),
    ])
    assert timeline == [(0, M.OFF), (10, M.PARKED), (20, M.IDLING), (30 + s.drive_after, M.DRIVING),
                        (200 + s.park_after, M.PARKED), (220 + s.off_after, M.OFF)]


def test_a_red_light_stop_stays_driving_but_a_long_stop_becomes_idling() -> None:
    s = ModeSettings(stop_grace=120)
    machine = ModeMachine(s, initial=M.DRIVING)
    assert run(machine, [(0, ModeInputs(ignition=True, speed=0, engine_rpm=800)),
                         (119, ModeInputs(ignition=True, speed=25, engine_rpm=1200))]) == [(0, M.DRIVING)]
    machine = ModeMachine(s, initial=M.DRIVING)
    assert run(machine, [(0, ModeInputs(ignition=True, speed=0, engine_rpm=800))]) == [
        (0, M.DRIVING), (120, M.IDLING)]
    machine = ModeMachine(s, initial=M.DRIVING)  # engine stopped by start-stop: parked after the grace
    assert run(machine, [(0, ModeInputs(ignition=True, speed=0, engine_rpm=0))]) == [
        (0, M.DRIVING), (120, M.PARKED)]


def test_shifting_to_park_with_the_engine_running_ends_the_drive_as_idling_without_a_parked_blip() -> None:
    machine = ModeMachine(ModeSettings(park_after=3), initial=M.DRIVING)
    assert run(machine, [(0, ModeInputs(ignition=True, speed=0, engine_rpm=800, parking_signal=True)),
                         (10, ModeInputs(ignition=True, speed=0, engine_rpm=0, parking_signal=True))]) == [
        (0, M.DRIVING), (3, M.IDLING), (10, M.PARKED)]


def test_brief_movement_does_not_start_a_drive() -> None:
    machine = ModeMachine(ModeSettings(drive_after=2), initial=M.PARKED)
    assert run(machine, [(0, ModeInputs(ignition=True, speed=5, engine_rpm=900)),
                         (1.5, ModeInputs(ignition=True, speed=0, engine_rpm=900))]) == [(0, M.IDLING)]


def test_a_flicker_of_ignition_off_does_not_switch_off() -> None:
    machine = ModeMachine(ModeSettings(off_after=3), initial=M.PARKED)
    assert run(machine, [(0, ModeInputs(ignition=False)), (2, ModeInputs(ignition=True, speed=0))]) == [
        (0, M.PARKED)]


def test_without_an_ignition_signal_fresh_data_means_powered_and_silence_means_off() -> None:
    machine = ModeMachine(ModeSettings(off_after=3))
    assert run(machine, [(0, ModeInputs(speed=0, engine_rpm=750)),
                         (10, ModeInputs())]) == [(0, M.IDLING), (13, M.OFF)]


def test_deadline_is_reported_so_the_caller_can_schedule() -> None:
    machine = ModeMachine(ModeSettings(drive_after=2), initial=M.PARKED)
    mode, due = machine.step(ModeInputs(ignition=True, speed=40, engine_rpm=2000), 50.0)
    assert (mode, due) == (M.IDLING, 52.0)
    assert machine.step(ModeInputs(ignition=True, speed=40, engine_rpm=2000), 52.0) == (M.DRIVING, None)


def test_the_demo_drives_generator_agrees_with_the_mode_machine() -> None:
    """The generator re-implements the rules (it is standalone); its committed timeline must be current."""
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "profiles" / "demo" / "generate_drive.py"
    result = subprocess.run([sys.executable, str(script), "--check"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
