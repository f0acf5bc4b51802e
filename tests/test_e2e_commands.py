"""End to end: an operator's client runs commands on the running demo car; restart-agent restarts it."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import pytest
import slixmpp
from slixmpp.plugins.xep_0004 import Form

from tests.harness.agentproc import DEMO_PROFILE, REPO, AgentProcess
from devserver.clients import close_client, log_in, verified_client
from devserver.prosody import Prosody, ServerInfo, free_port


def submit(**values: str) -> Form:
    form = Form()
    form["type"] = "submit"
    for var, value in values.items():
        form.add_field(var=var, value=value)
    return form


@pytest.mark.slow
async def test_an_operator_runs_status_and_restarts_the_car_and_the_audit_has_it(prosody: Prosody) -> None:
    car_password = secrets.token_urlsafe(12)
    car = prosody.register(f"car-{secrets.token_hex(3)}", car_password)
    operator_password = secrets.token_urlsafe(12)
    operator = prosody.register("operator", operator_password)  # the demo profile's operator
    server = prosody.server_info()
    agent = AgentProcess(server, car, car_password, speed=10.0)
    client = verified_client(operator, operator_password, server, plugins=["xep_0030", "xep_0050"])
    agent.start()
    try:
        await agent.wait_for_line("vehicle mode: idling → driving", timeout=60)
        await log_in(client, server)
        full = f"{car}/headunit"
        commands = await client.plugin["xep_0050"].get_commands(full, timeout=20)
        nodes = {item[1] for item in commands["disco_items"]["items"]}
        assert {"status", "locate", "restart-agent"} <= nodes
        status = await client.plugin["xep_0050"].send_command(full, "status", timeout=20)
        text = str(status["command"])
        assert status["command"]["status"] == "completed" and "driving" in text, text
        first = await client.plugin["xep_0050"].send_command(full, "restart-agent", timeout=20)
        await client.plugin["xep_0050"].send_command(
            full, "restart-agent", action="complete", sessionid=first["command"]["sessionid"],
            payload=submit(confirm="true"), timeout=20)
        assert agent.process is not None
        returncode = await asyncio.to_thread(agent.process.wait, 30)
    finally:
        await close_client(client)
        agent.stop()
    assert returncode == 75, "exits for the service manager to start it again"
    audit = subprocess.run([sys.executable, "-m", "agent", "audit", str(DEMO_PROFILE), "--json"], cwd=REPO,
                           env=agent.env, capture_output=True, text=True, timeout=30)
    assert audit.returncode == 0, audit.stderr
    assert '"status"' in audit.stdout and '"restart-agent"' in audit.stdout and operator in audit.stdout


@pytest.mark.slow
async def test_restart_agent_under_the_demo_wrapper_brings_the_car_back_online(tmp_path: Path) -> None:
    """Tried: `make run`'s wrapper (devserver run --restart-on 75 -- headunit run the demo) and an operator's
    restart-agent. Kept: the wrapper and its Prosody stay up, the agent comes back and the operator sees the
    car go offline and come back online, as on a car whose systemd unit restarts it."""
    port = free_port()
    folder = tmp_path / "run"
    state = Path(tempfile.mkdtemp(prefix="hu-make-run-"))  # short: the control socket's path is limited
    env = {**os.environ, "HEADUNIT_DATA_DIR": str(state), "HEADUNIT_DASHBOARD_PORT": "0", "PYTHONUNBUFFERED": "1"}
    command = [sys.executable, "-m", "devserver", "run", "--folder", str(folder), "--port", str(port),
               "--direct-tls-port", str(free_port()), "--http-port", str(free_port()), "--account", "car",
               "--account", "operator", "--restart-on", "75", "--restart-delay", "0.2", "--",
               sys.executable, "-m", "agent", "run", str(DEMO_PROFILE), "--speed", "10"]
    wrapper = subprocess.Popen(command, cwd=REPO, env=env, text=True, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT)
    lines: list[str] = []
    pump = threading.Thread(target=lambda: lines.extend(wrapper.stdout or ()), daemon=True)
    pump.start()

    async def said(text: str, times: int = 1) -> None:
        async with asyncio.timeout(60):
            while sum(text in line for line in lines) < times:
                if wrapper.poll() is not None:
                    raise AssertionError(f"the wrapper exited with {wrapper.returncode}:\n{''.join(lines[-40:])}")
                await asyncio.sleep(0.05)

    client: slixmpp.ClientXMPP | None = None
    try:
        await said("online as")
        info = json.loads((folder / "demo" / "server.json").read_text())
        server = ServerInfo(info["host"], info["port"], info["domain"], Path(info["ca_file"]),
                            info["direct_tls_port"], info["http_port"])
        operator = info["accounts"]["operator"]
        car = info["accounts"]["car"]["jid"]
        client = verified_client(operator["jid"], Path(operator["password_file"]).read_text().strip(), server,
                                 plugins=["xep_0030", "xep_0050"])
        shown: list[str] = []
        client.add_event_handler("presence", lambda p: shown.append(p["type"]) if p["from"].bare == car else None)
        await log_in(client, server)
        client.send_presence_subscription(pto=car, ptype="subscribe")
        full = f"{car}/headunit"
        first = await client.plugin["xep_0050"].send_command(full, "restart-agent", timeout=20)
        await client.plugin["xep_0050"].send_command(
            full, "restart-agent", action="complete", sessionid=first["command"]["sessionid"],
            payload=submit(confirm="true"), timeout=20)
        await said("a restart was asked for")
        await said("online as", times=2)
        async with asyncio.timeout(30):
            while "unavailable" not in shown or shown[-1] == "unavailable":
                await asyncio.sleep(0.05)
        assert wrapper.poll() is None, "the wrapper keeps running, and its Prosody with it"
        status = await client.plugin["xep_0050"].send_command(full, "status", timeout=20)
        assert status["command"]["status"] == "completed"  # the restarted agent answers commands
    finally:
        if client is not None:
            await close_client(client)
        wrapper.send_signal(signal.SIGINT)
        returncode = await asyncio.to_thread(wrapper.wait, 30)
        pump.join(5)
        shutil.rmtree(state, ignore_errors=True)
    assert returncode == 0, "".join(lines[-40:])
    assert "Prosody stopped" in "".join(lines)
