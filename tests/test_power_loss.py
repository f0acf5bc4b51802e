"""Power loss: the agent is cut (SIGKILL) at random moments of a busy drive, again and again, on one data folder.

After each cut the databases are checked as the next start finds them (a copy of the
files, without the dead process's shared memory), and everything the agent had
acknowledged must still be there: telemetry samples the fleet's service stored are on
its node, chat messages the car sent a receipt for are in its store, the commands an
operator saw completed are in the audit trail. At the end one clean run delivers what
the cuts left queued: the fleet has every acknowledged sample, once, in order.

SIGKILL loses what the process had not handed to the kernel; a real power cut also
loses what the kernel had not written, which ``synchronous=FULL`` (fsync at each
commit) and :func:`agent.storage.atomic_write` (fsync, rename, fsync the folder) cover
and which cannot be simulated here.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import secrets
import shutil
import socket
import sqlite3
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import slixmpp

from agent.app import Agent
from agent.profile.model import TelemetryConfig
from agent.telemetry.queue import Sample, _sample
from agent.telemetry.publisher import node_name
from tests.harness.agentproc import AgentProcess, demo_profile
from devserver.clients import close_client, log_in, verified_client
from devserver.fleet import FleetReceiver
from devserver.prosody import Prosody, ServerInfo

DATABASES = ("messages.db", "telemetry.db", "telemetry-rules.db", "audit.db", "cabin.db")
SEED = int(os.environ.get("HEADUNIT_CUT_SEED", "6"))  # another seed, another set of moments
RUNS = 50
SPEED = 60.0  # the demo drive (about 6 minutes) in 6 s; each run replays it from its start
WAIT = 30.0  # generous: only so a broken agent cannot hang the test


# -- what a restart finds -----------------------------------------------------------------------


@dataclass
class Found:
    """The databases as a restart finds them."""

    integrity: dict[str, str]
    samples: list[Sample]  # every committed sample, in order
    acked: dict[str, list[Sample]]  # batch id -> its samples, for the batches the fleet acknowledged
    bodies: list[str]  # incoming chat messages
    audited: list[str]  # commands in the audit trail


def as_found_after_a_cut(data_dir: Path, into: Path) -> Found:
    """Copy each database and its WAL (not the dead process's shared memory), then open the copies."""
    shutil.rmtree(into, ignore_errors=True)
    into.mkdir()
    for name in DATABASES:
        for suffix in ("", "-wal"):
            if (data_dir / f"{name}{suffix}").exists():
                shutil.copy2(data_dir / f"{name}{suffix}", into / f"{name}{suffix}")
    integrity = {name: check(into / name) for name in DATABASES if (into / name).exists()}
    return Found(integrity, *telemetry(into / "telemetry.db"),
                 column(into / "messages.db", "SELECT body FROM messages WHERE direction = 'in'"),
                 column(into / "audit.db", "SELECT command FROM audit"))


def check(path: Path) -> str:
    with sqlite3.connect(path) as db:
        return "; ".join(row[0] for row in db.execute("PRAGMA integrity_check"))


def telemetry(path: Path) -> tuple[list[Sample], dict[str, list[Sample]]]:
    if not path.exists():
        return [], {}
    with sqlite3.connect(path) as db:
        if not db.execute("SELECT name FROM sqlite_master WHERE name = 'batches'").fetchone():
            return [], {}
        store = db.execute("SELECT value FROM meta WHERE key = 'store'").fetchone()
        samples = [_sample(*r) for r in db.execute(
            "SELECT path, kind, value, timestamp FROM samples ORDER BY seq")]
        acked = {f"{store[0]}-{counter:06d}": [_sample(*r) for r in db.execute(
            "SELECT path, kind, value, timestamp FROM samples WHERE batch = ? ORDER BY seq", (counter,))]
            for (counter,) in db.execute("SELECT counter FROM batches WHERE acked_at IS NOT NULL")}
    return samples, acked


def acknowledged(path: Path) -> tuple[list[Sample], int]:
    """Every committed sample, and how many of them (a prefix) the fleet acknowledged.

    What the last clean stop recorded after its flush waits for the next start, by design.
    """
    with sqlite3.connect(path) as db:
        rows = db.execute("SELECT path, kind, value, timestamp, acked_at IS NOT NULL FROM samples"
                          " LEFT JOIN batches ON batch = counter ORDER BY seq").fetchall()
    flags = [bool(row[4]) for row in rows]
    assert flags == sorted(flags, reverse=True), "acknowledged samples are a prefix of the queue"
    return [_sample(*row[:4]) for row in rows], sum(flags)


def column(path: Path, sql: str) -> list[str]:
    if not path.exists():
        return []
    with sqlite3.connect(path) as db:
        try:
            return [row[0] for row in db.execute(sql)]
        except sqlite3.OperationalError:  # cut before its schema was written
            return []


def to_ms(sample: Sample) -> Sample:
    """Timestamps travel to the millisecond (agent/telemetry/codec.py)."""
    return Sample(sample.path, sample.value, round(sample.timestamp * 1000) / 1000)


# -- the operator: messages with receipts, commands ------------------------------------------


class Operator:
    """The demo profile's operator: chats with the car (asking for receipts) and runs its commands."""

    def __init__(self, jid: str, password: str, server: ServerInfo, car: str) -> None:
        self.car = car
        self.server = server
        self.client = verified_client(jid, password, server, plugins=["xep_0030", "xep_0050", "xep_0184"])
        self.client.plugin["xep_0184"].auto_request = False
        self.client.add_event_handler("receipt_received", self._on_receipt)
        self._receipts: dict[str, asyncio.Future[None]] = {}

    async def start(self) -> None:
        await log_in(self.client, self.server)

    async def stop(self) -> None:
        await close_client(self.client)

    async def message(self, body: str) -> bool:
        """Send ``body``; True once the car's receipt says it kept it."""
        msg = self.client.make_message(mto=self.car, mbody=body, mtype="chat")
        msg["id"] = self.client.new_id()
        msg["request_receipt"] = True
        done = self._receipts[msg["id"]] = asyncio.get_running_loop().create_future()
        msg.send()
        try:
            await asyncio.wait_for(done, 10)
        except TimeoutError:
            return False
        return True

    async def status(self) -> bool:
        """Run the ``status`` command; True once it completed (the car audits before it answers)."""
        try:
            reply = await self.client.plugin["xep_0050"].send_command(f"{self.car}/headunit", "status",
                                                                      timeout=10)
        except (slixmpp.exceptions.IqError, slixmpp.exceptions.IqTimeout):
            return False
        return bool(reply["command"]["status"] == "completed")

    def _on_receipt(self, msg: Any) -> None:
        done = self._receipts.pop(msg["receipt"], None)
        if done is not None and not done.done():
            done.set_result(None)


# -- the cuts ---------------------------------------------------------------------------------


@dataclass
class Kept:
    """What the agent acknowledged to someone before a cut: it must survive every later cut."""

    bodies: list[str] = field(default_factory=list)
    commands: int = 0
    samples: list[Sample] = field(default_factory=list)


async def one_run(agent: AgentProcess, rng: random.Random, operator: Operator, kept: Kept, run: int) -> str:
    """Start, maybe chat or run a command, cut at a random moment; say when the cut came."""
    agent.start()
    if rng.random() < 0.2:
        await asyncio.sleep(rng.uniform(0.05, 0.8))  # while it starts: opening and checking the databases
        return "starting"
    await agent.wait_for_line("online as", WAIT)
    if run % 3 == 0:
        body = f"cut {run}: {secrets.token_hex(4)}"
        if await operator.message(body):
            kept.bodies.append(body)
    if run % 7 == 0 and await operator.status():
        kept.commands += 1
    await asyncio.sleep(rng.uniform(0.0, 1.5))
    return "running"


def cut(agent: AgentProcess) -> None:
    assert agent.process is not None
    agent.process.kill()  # the power goes: no flush, no goodbye, no closing
    agent.process.wait(10)
    agent.stop()  # reaps the output reader


@pytest.mark.slow
@pytest.mark.timeout(400)
async def test_cuts_at_random_moments_lose_nothing_acknowledged(prosody: Prosody, tmp_path: Path) -> None:
    rng = random.Random(SEED)
    server = prosody.server_info()
    car_password = secrets.token_urlsafe(12)
    car = prosody.register(f"car-{secrets.token_hex(3)}", car_password)
    fleet_password = secrets.token_urlsafe(12)
    fleet = prosody.register("fleet", fleet_password)
    operator_password = secrets.token_urlsafe(12)
    operator_jid = prosody.register("operator", operator_password)  # the demo profile's operator
    receiver = FleetReceiver(fleet, fleet_password, server, prosody.pubsub_host,
                             node_name(TelemetryConfig().node, car))
    await receiver.connect()
    await receiver.provision(car)
    await receiver.subscribe()
    operator = Operator(operator_jid, operator_password, server, car)
    await operator.start()
    data_dir = tempfile.mkdtemp(prefix="hu-cut-")  # short: the control socket's path is limited
    kept = Kept()
    moments: dict[str, int] = {}
    try:
        for run in range(RUNS):
            agent = AgentProcess(server, car, car_password, speed=SPEED, data_dir=data_dir)
            try:
                moment = await one_run(agent, rng, operator, kept, run)
            finally:
                cut(agent)
            moments[moment] = moments.get(moment, 0) + 1
            output = "\n".join(agent.lines)
            assert "kept aside" not in output and "failed its check" not in output, (
                f"run {run}: the start found a damaged database\n{agent.tail()}")
            found = as_found_after_a_cut(Path(data_dir), tmp_path / "found")
            await assert_kept(found, kept, receiver, run)
            kept.samples = found.samples

        final = AgentProcess(server, car, car_password, speed=SPEED, data_dir=data_dir)
        final.start()
        try:
            await final.wait_for_line("online as", WAIT)
            await asyncio.sleep(2.0)  # a little more drive, then a clean stop flushes the queue
        finally:
            assert final.stop() == 0, final.tail()
        assert "kept aside" not in "\n".join(final.lines)
    finally:
        await operator.stop()
    samples, acked = acknowledged(Path(data_dir) / "telemetry.db")
    await receiver.catch_up()
    await receiver.stop()
    assert moments.get("starting", 0) >= 5 and moments.get("running", 0) >= 30, moments
    assert samples[:len(kept.samples)] == kept.samples and len(samples) > 100
    assert acked >= len(kept.samples), "the clean run delivered everything the cuts left queued"
    assert receiver.samples == [to_ms(s) for s in samples[:acked]], (
        "the fleet has every acknowledged sample exactly once, in order, with its original timestamp")
    assert kept.bodies and kept.commands, "the test did chat and run commands between the cuts"
    leftovers = [p.name for p in Path(data_dir).iterdir() if p.name.endswith(".partial") or ".corrupt-" in p.name]
    assert leftovers == []


async def assert_kept(found: Found, kept: Kept, receiver: FleetReceiver, run: int) -> None:
    bad = {name: result for name, result in found.integrity.items() if result != "ok"}
    assert not bad, f"run {run}: integrity_check failed: {bad}"
    assert found.samples[:len(kept.samples)] == kept.samples, f"run {run}: committed samples were lost or changed"
    await receiver.catch_up()
    missing = [batch for batch in found.acked if batch not in receiver.batches]
    assert not missing, f"run {run}: acknowledged batches not on the fleet's node: {missing}"
    for batch, samples in found.acked.items():
        assert list(receiver.batches[batch].samples) == [to_ms(s) for s in samples], (
            f"run {run}: batch {batch} on the node differs from the car's")
    for body in kept.bodies:
        assert found.bodies.count(body) == 1, f"run {run}: message {body!r} kept {found.bodies.count(body)} times"
    assert found.audited.count("status") >= kept.commands, f"run {run}: completed commands missing from the audit"


# -- the start checks and sweeps ----------------------------------------------------------------


def damage(path: Path) -> None:
    """A real database with rows, then one of its pages overwritten: what a failing SD card does."""
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE IF NOT EXISTS filler (x)")
        db.executemany("INSERT INTO filler VALUES (?)", [(os.urandom(200),) for _ in range(100)])
    db.close()
    with path.open("r+b") as out:
        out.seek(4096)  # page 2: the table's b-tree page, header and cells
        out.write(b"\x0d" + os.urandom(4095))


async def test_every_database_is_checked_at_start_and_leftovers_of_cut_writes_swept(
        prosody_server: ServerInfo, xmpp_account: Any, caplog: pytest.LogCaptureFixture) -> None:
    jid, password = xmpp_account("car")
    profile = demo_profile(prosody_server, jid, password)
    assert profile.storage.data_dir is not None
    folder = profile.storage.data_dir
    for name in DATABASES:
        damage(folder / name)
    (folder / "logs" / "bundles").mkdir(parents=True)
    leftovers = [".dashboard.token.a1b2c3", ".map.bin.0badf00d.partial",
                 "logs/bundles/headunit-logs-20250101T000000Z-abcdef.tar.gz"]
    for name in leftovers:
        (folder / name).write_text("cut short")
    socket_folder = folder / ".ctlq1w2e3"
    socket_folder.mkdir()
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(socket_folder / "s"))
    caplog.set_level(logging.INFO)
    agent = Agent(profile)
    try:
        await agent.start()
    finally:
        await agent.stop()
    kept_aside = [r.getMessage() for r in caplog.records if "kept aside" in r.getMessage()]
    for name in DATABASES:
        assert any(f"{name} failed its check" in m for m in kept_aside), (name, kept_aside)
        assert any(p.name.startswith(f"{name}.corrupt-") for p in folder.iterdir()), name
        assert check(folder / name) == "ok", f"{name}: a new database replaces the damaged one"
    for name in leftovers:
        assert not (folder / name).exists(), name
    assert not socket_folder.exists()
    assert any("leftovers of writes cut short" in r.getMessage() for r in caplog.records)
