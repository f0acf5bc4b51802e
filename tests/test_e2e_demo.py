"""End to end: the demo car replays its drive on a real Prosody; an operator watches its presence."""

from __future__ import annotations

import json
import re
import secrets
from pathlib import Path

import pytest

from agent.profile import load_profile
from devserver.clients import Watcher
from tests.harness.agentproc import DEMO_PROFILE, AgentProcess
from devserver.prosody import Prosody

SPEED = 5.0  # fast enough for the suite; slow enough that a busy machine does not stall values stale
EXPECTED = Path(DEMO_PROFILE).parent / "demo" / "expected_modes.json"


def expected_shows() -> tuple[list[str], float]:
    """The shows the operator must see, from the drive's generated mode timeline and the profile's rules."""
    profile = load_profile(DEMO_PROFILE, environ={"HEADUNIT_PASSWORD": "x", "HEADUNIT_CA_FILE": __file__})
    timeline = json.loads(EXPECTED.read_text())
    shows: list[str] = []
    for entry in timeline["transitions"]:
        show = profile.policies.presence.rules[entry["mode"]].show or ""
        if not shows or shows[-1] != show:
            shows.append(show)
    return shows, float(timeline["duration"])


@pytest.mark.slow
async def test_the_operator_sees_the_demo_drive_in_the_cars_presence(prosody: Prosody) -> None:
    car = f"car-{secrets.token_hex(3)}"
    car_password = secrets.token_urlsafe(12)
    car_jid = prosody.register(car, car_password)
    operator_password = secrets.token_urlsafe(12)
    operator_jid = prosody.register("operator", operator_password)  # the demo profile's operator
    server = prosody.server_info()
    shows, duration = expected_shows()
    assert "dnd" in shows and shows[-1] == "xa", "the drive must include driving and end switched off"

    watcher = Watcher(operator_jid, operator_password, server, car_jid)
    await watcher.start()  # subscribes while the car is offline; the agent approves at login
    agent = AgentProcess(server, car_jid, car_password, speed=SPEED)
    agent.start()
    try:
        await agent.wait_for_line("online as", timeout=30)
        await watcher.wait_for(lambda: watcher.shows()[-len(shows):] == shows,
                               timeout=duration / SPEED + 60)
    except TimeoutError:
        pytest.fail(f"operator saw {watcher.shows()}, expected {shows}\n{agent.tail()}")
    finally:
        returncode = agent.stop()
    await watcher.wait_for(lambda: watcher.shows()[-1] == "unavailable", timeout=10)
    await watcher.stop()

    assert returncode == 0, agent.tail()
    seen = watcher.shows()
    if seen[0] == "unavailable":  # the server's answer to the subscription while the car was offline
        seen = seen[1:]
    assert seen == [*shows, "unavailable"], "the operator saw exactly the drive, then goodbye"
    # The operator gets each presence twice: everyone's (no place, no speed), then its own, directed,
    # with both; what an operator's client settles on is the second. Everyone's never says where.
    public = [p for p, q in zip(watcher.seen, watcher.seen[1:])
              if q.type == p.type and q.show == p.show and q.status.startswith(p.status + " · ")]
    assert public and all("km/h" not in p.status and " · " not in p.status for p in public), [
        p.status for p in public]
    settled = [p for p in watcher.seen if p not in public]
    driving = [p for p in settled if p.show == "dnd"]
    assert all(re.fullmatch(r"Driving · \d+ km/h( · .+ \w+bound)?", p.status) for p in driving), [
        p.status for p in driving]
    assert any(" · " in p.status.split(" km/h")[-1] for p in driving), "a road name from the places file"
    assert any(p.status.startswith("Parked · ") for p in settled), "parked on a named street"
    assert len({p.status for p in driving}) > 1, "the status text follows the speed"
    interval = load_profile(DEMO_PROFILE, environ={"HEADUNIT_PASSWORD": "x", "HEADUNIT_CA_FILE": __file__}
                            ).policies.presence.min_text_interval
    text_only = [(a, b) for a, b in zip(settled, settled[1:])
                 if a.type == b.type == "available" and a.show == b.show and a.status != b.status]
    assert text_only, "the drive produced text-only updates (the speed)"
    assert all(b.at - a.at >= interval - 1.0 for a, b in text_only), (
        "text-only presence updates are rate-limited", [round(b.at - a.at, 1) for a, b in text_only])
    assert "stopped" in agent.tail(5)
