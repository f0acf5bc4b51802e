"""The agent as a whole: CLI, lifecycle, a failing driver that does not take the rest down."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from agent.app import Agent
from agent.profile.model import GnssConfig
from agent.vehicle import paths
from tests.harness.agentproc import REPO, AgentProcess, demo_profile, wait_until
from tests.harness.tcpproxy import TcpProxy
from devserver.prosody import AccountFactory, ServerInfo


def headunit(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "agent", *args], capture_output=True, text=True,
                          cwd=REPO, env=env, timeout=60)


def test_help_explains_the_commands() -> None:
    result = headunit("--help")
    assert result.returncode == 0
    assert "run" in result.stdout and "check" in result.stdout and "examples:" in result.stdout


def test_check_accepts_a_good_profile_and_refuses_a_bad_one_with_file_and_key(tmp_path: Path) -> None:
    env = {"HEADUNIT_PASSWORD": "x", "PATH": "/usr/bin:/bin"}
    good = headunit("check", str(REPO / "profiles" / "example-socketcan.toml"), env=env)
    assert good.returncode == 0 and "OK" in good.stdout, good.stderr
    bad = tmp_path / "car.toml"
    bad.write_text('[profile]\nname = "x"\n[account]\njid = "car@example.org"\npassword = "p"\nport = 99999\n')
    refused = headunit("check", str(bad), env=env)
    assert refused.returncode == 2
    assert "car.toml" in refused.stderr and "account.port" in refused.stderr and "99999" in refused.stderr


async def test_the_agent_fills_the_state_from_can_and_gnss_and_stops_in_order(
        prosody_server: ServerInfo, xmpp_account: AccountFactory) -> None:
    jid, password = xmpp_account("car")
    agent = Agent(demo_profile(prosody_server, jid, password), speed=20.0)
    await agent.start()
    try:
        await agent.xmpp.wait_online(20)
        await wait_until(lambda: agent.state.value(paths.LATITUDE) is not None
                         and agent.state.value(paths.SPEED) is not None, timeout=30)
        latitude = agent.state.get(paths.LATITUDE)
        assert latitude is not None and latitude.source == "gnss" and 37.0 < float(latitude.value) < 38.0
        assert agent.state.get(paths.SPEED).source == "can"  # type: ignore[union-attr]
        assert agent.gpio is not None, "the demo's mock GPIO is up"
    finally:
        await asyncio.wait_for(agent.stop(), 15)
    assert not agent.xmpp.is_online
    assert not any(agent.supervisor.is_running(n) for n in ("can", "gnss", "stale-sweep"))


async def test_a_gnss_receiver_that_is_missing_does_not_stop_the_can_bus(
        prosody_server: ServerInfo, xmpp_account: AccountFactory, tmp_path: Path) -> None:
    jid, password = xmpp_account("car")
    profile = demo_profile(prosody_server, jid, password)
    missing = GnssConfig(source="serial", port=str(tmp_path / "ttyGNSS"), baudrate=9600)
    profile = dataclasses.replace(profile, vehicle=dataclasses.replace(profile.vehicle, gnss=missing))
    agent = Agent(profile, speed=20.0)
    await agent.start()
    try:
        await wait_until(lambda: agent.state.value(paths.SPEED) is not None, timeout=30)
        assert agent.gnss is not None and not agent.gnss.source.is_connected
        assert agent.state.value(paths.LATITUDE) is None
        assert agent.supervisor.is_running("gnss"), "still retrying the receiver"
    finally:
        await asyncio.wait_for(agent.stop(), 15)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
async def test_the_process_stops_cleanly_on_sigterm_and_sigint(
        prosody_server: ServerInfo, xmpp_account: AccountFactory, signum: signal.Signals) -> None:
    jid, password = xmpp_account("car")
    agent = AgentProcess(prosody_server, jid, password, speed=5.0)
    agent.start()
    try:
        await agent.wait_for_line("CAN demo0 open", timeout=30)
    finally:
        assert agent.process is not None
        agent.process.send_signal(signum)
        returncode = agent.process.wait(15)
    assert returncode == 0, agent.tail()
    await asyncio.sleep(0.2)
    assert f"{signum.name} received, stopping" in "\n".join(agent.lines)
    assert agent.tail(1).endswith("stopped"), agent.tail()


async def test_a_second_agent_on_the_same_state_folder_is_refused_clearly(
        prosody_server: ServerInfo, xmpp_account: AccountFactory) -> None:
    jid, password = xmpp_account("car")
    first = AgentProcess(prosody_server, jid, password, speed=5.0)
    first.start()
    try:
        await first.wait_for_line("online as", timeout=30)
        second = AgentProcess(prosody_server, jid, password, speed=5.0, data_dir=first.data_dir)
        second.start()
        assert second.process is not None
        returncode = second.process.wait(30)
        await asyncio.sleep(0.2)
        assert returncode == 1
        assert "cannot serve the local control socket" in "\n".join(second.lines), second.tail()
        assert first.process is not None and first.process.poll() is None, "the first agent keeps running"
    finally:
        assert first.stop() == 0


async def test_a_server_that_never_answers_the_goodbye_does_not_keep_the_stores_open(
        prosody_server: ServerInfo, xmpp_account: AccountFactory, caplog: pytest.LogCaptureFixture) -> None:
    """The link stalls just before the stop: the goodbye stage overruns, the stores are closed anyway."""
    jid, password = xmpp_account("car")
    async with TcpProxy(prosody_server.host, prosody_server.port) as proxy:
        profile = demo_profile(dataclasses.replace(prosody_server, port=proxy.port), jid, password)
        agent = Agent(profile, speed=20.0)
        agent.stop_timeouts["goodbye"] = 0.3  # below the second slixmpp gives the server to close its stream
        await agent.start()
        try:
            await agent.xmpp.wait_online(20)
            socket_file = agent.control.path
            assert socket_file.exists()
            proxy.stall(True)  # from now on the server hears nothing and says nothing
        finally:
            with caplog.at_level(logging.INFO, logger="agent"):
                await agent.stop()
    said = [r.getMessage() for r in caplog.records]
    assert any("stage 'goodbye' did not finish within 0.3 s" in line for line in said), said
    assert "stopped (stages that overran: goodbye)" in said
    assert not socket_file.exists() and not agent.control.is_serving  # the stores stage ran after it
    assert not agent.xmpp.is_online
    with pytest.raises(RuntimeError):  # the message store's worker is shut down: closed
        await agent.messages.threads()


async def test_a_cancelled_stop_is_not_swallowed(prosody_server: ServerInfo, xmpp_account: AccountFactory) -> None:
    jid, password = xmpp_account("car")
    agent = Agent(demo_profile(prosody_server, jid, password), speed=20.0)
    await agent.start()
    await agent.xmpp.wait_online(20)
    stopping = asyncio.create_task(agent.stop())
    await asyncio.sleep(0)  # the stop is under way, in its first stage
    stopping.cancel()
    with pytest.raises(asyncio.CancelledError):
        await stopping
    assert stopping.cancelled()
    await asyncio.wait_for(agent.stop(), 20)  # and a stop after it still finishes the job
    assert not agent.control.is_serving
