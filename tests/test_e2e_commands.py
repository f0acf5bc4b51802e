"""End to end: an operator's client runs commands on the running demo car; restart-agent restarts it."""

from __future__ import annotations

import asyncio
import secrets
import subprocess
import sys

import pytest
from slixmpp.plugins.xep_0004 import Form

from tests.harness.agentproc import DEMO_PROFILE, REPO, AgentProcess
from devserver.clients import close_client, log_in, verified_client
from devserver.prosody import Prosody


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
