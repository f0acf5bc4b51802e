"""End to end: an operator's ordinary XMPP client runs the car's commands on the running demo agent.

One agent process on the demo profile, against a Prosody that offers XEP-0363 uploads:
``photo`` and ``logs`` answer with URLs the test downloads over verified TLS;
``message-driver`` waits for the driver, who acknowledges with ``headunit driver``, and the
operator gets the acknowledgement by chat; a ``telemetry`` rule set by the operator is still
there after ``restart-agent`` brought the agent back on the same data folder.
"""

from __future__ import annotations

import asyncio
import io
import json
import secrets
import ssl
import subprocess
import sys
import tarfile
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import slixmpp
from slixmpp.plugins.xep_0004 import Form

from tests.harness.agentproc import DEMO_PROFILE, REPO, AgentProcess
from devserver.clients import close_client, log_in, verified_client
from devserver.prosody import Prosody, ServerInfo

DEMO_JPEGS = {p.read_bytes() for p in (REPO / "profiles" / "demo" / "camera").glob("*.jpg")}
WAIT = 30


def submit(**values: str) -> Form:
    form = Form()
    form["type"] = "submit"
    for var, value in values.items():
        form.add_field(var=var, value=value)
    return form


class Operator:
    """The demo profile's operator on a stock slixmpp client: commands and chat."""

    def __init__(self, client: slixmpp.ClientXMPP, car: str) -> None:
        self.client = client
        self.car = car
        self.chat: asyncio.Queue[str] = asyncio.Queue()
        client.add_event_handler("message", self._on_message)

    def _on_message(self, msg: Any) -> None:
        if msg["type"] in ("chat", "normal") and msg["body"]:
            self.chat.put_nowait(str(msg["body"]))

    async def run(self, node: str, **values: str) -> Any:
        """Start ``node``; if it answers with a form, submit ``values`` into it."""
        adhoc = self.client.plugin["xep_0050"]
        async with asyncio.timeout(WAIT):
            first = await adhoc.send_command(self.car, node)
            if first["command"]["status"] != "executing":
                return first
            return await adhoc.send_command(self.car, node, action="complete",
                                            sessionid=first["command"]["sessionid"], payload=submit(**values))


def note(reply: Any) -> str:
    return " ".join(text for _, text in reply["command"]["notes"])


def result_fields(reply: Any) -> dict[str, str]:
    return {str(f["label"]): str(f["value"]) for f in reply["command"]["form"].get_fields().values()}


async def download(url: str, ca_file: Path) -> bytes:
    context = ssl.create_default_context(cafile=str(ca_file))
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=context)) as session:
        async with session.get(url) as response:
            assert response.status == 200, f"GET {url} -> {response.status}"
            return await response.read()


def headunit(agent: AgentProcess, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "agent", *args], cwd=REPO, env=agent.env,
                          capture_output=True, text=True, timeout=30)


@pytest.mark.slow
async def test_an_operator_runs_photo_logs_message_driver_and_a_lasting_telemetry_change(
        upload_prosody: Prosody) -> None:
    server: ServerInfo = upload_prosody.server_info()
    car_password, operator_password = secrets.token_urlsafe(12), secrets.token_urlsafe(12)
    car = upload_prosody.register(f"car-{secrets.token_hex(3)}", car_password)
    operator_jid = upload_prosody.register("operator", operator_password)  # the demo profile's operator
    agent = AgentProcess(server, car, car_password, speed=10.0)
    client = verified_client(operator_jid, operator_password, server,
                             plugins=["xep_0030", "xep_0004", "xep_0050"])
    operator = Operator(client, f"{car}/headunit")
    agent.start()
    try:
        await agent.wait_for_line("after start", timeout=60)  # "online 0.4 s after start"
        await log_in(client, server)

        photo = await operator.run("photo")
        assert photo["command"]["status"] == "completed", note(photo)
        url = result_fields(photo)["URL"]
        assert url.startswith("https://") and url.endswith(".jpg"), url
        assert await download(url, server.ca_file) in DEMO_JPEGS

        logs = await operator.run("logs")
        assert logs["command"]["status"] == "completed", note(logs)
        bundle = await download(result_fields(logs)["URL"], server.ca_file)
        with tarfile.open(fileobj=io.BytesIO(bundle), mode="r:gz") as tar:
            names = tar.getnames()
            log_text = b"".join(tar.extractfile(m).read() for m in tar.getmembers()  # type: ignore[union-attr]
                                if m.name.endswith((".log", ".log.1", ".log.2", ".log.3")))
            status = tar.extractfile([m for m in tar.getmembers() if m.name.endswith("status.txt")][0])
            status_text = status.read().decode() if status is not None else ""
        assert b"after start" in log_text, names
        assert car_password.encode() not in bundle and car_password not in status_text
        assert "connection: online" in status_text, status_text

        sent = await operator.run("message-driver", text="Please call the depot", ack="true")
        assert "waiting for their acknowledgement" in note(sent), note(sent)
        listed = await asyncio.to_thread(headunit, agent, "driver", str(DEMO_PROFILE), "--json")
        assert listed.returncode == 0, listed.stderr
        waiting = json.loads(listed.stdout)
        notices = [n for n in waiting["notices"] if n["text"] == "Please call the depot"]
        assert len(notices) == 1 and notices[0]["sender"] == operator_jid, waiting
        acked = await asyncio.to_thread(headunit, agent, "driver", str(DEMO_PROFILE), "ack",
                                        str(notices[0]["id"]))
        assert acked.returncode == 0, acked.stderr
        async with asyncio.timeout(WAIT):
            body = await operator.chat.get()
        assert body.startswith("The driver acknowledged your message: “Please call the depot”"), body

        changed = await operator.run("telemetry", action="set", path="Vehicle.Exterior.AirTemperature",
                                     every="20", change="0.5")
        assert changed["command"]["status"] == "completed", note(changed)
        restart = await operator.run("restart-agent", confirm="true")
        assert "restarts now" in note(restart)
        assert agent.process is not None
        assert await asyncio.to_thread(agent.process.wait, 30) == 75
    finally:
        await close_client(client)
        agent.stop()

    again = AgentProcess(server, car, car_password, speed=10.0, data_dir=agent.data_dir)  # the same car
    client = verified_client(operator_jid, operator_password, server, plugins=["xep_0030", "xep_0004", "xep_0050"])
    operator = Operator(client, f"{car}/headunit")
    again.start()
    try:
        await again.wait_for_line("after start", timeout=60)
        await log_in(client, server)
        shown = await operator.run("telemetry", action="show")
        rules = result_fields(shown)
        assert "Vehicle.Exterior.AirTemperature" in rules, rules
        assert "[operator]" in rules["Vehicle.Exterior.AirTemperature"], rules
    finally:
        await close_client(client)
        again.stop()
