"""The agent as a systemd service: its units, the sd_notify protocol, ``headunit status``, polkit.

There is no systemd manager in this container, so the units are checked with
``systemd-analyze verify`` under a throw-away root that holds systemd's own units and
a stub for every program the units start (verify refuses a unit whose ExecStart= is
missing, so the real unit files are verified unchanged), and with ``systemd-analyze
security --offline``. The notify protocol is checked against a datagram socket this
test owns, passed to the agent (a real subprocess) as ``$NOTIFY_SOCKET``, exactly as
systemd passes its own. The polkit rule is checked by a real polkitd on a private
D-Bus, in a mount namespace where the rule and a ``headunit`` user exist.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from agent.app import EXIT_RESTART, Agent
from agent.control import ControlClient, ControlError
from tests.harness.cli import headunit
from agent.errors import ProfileError
from agent.profile import load_profile
from agent.profile.model import ServiceConfig, StorageConfig
from agent.service.debug import MARKER
from agent.service.notify import Notifier, watchdog_interval
from drivers.backoff import Backoff
from tests.harness.agentproc import REPO, AgentProcess, wait_until
from devserver.prosody import AccountFactory, ServerInfo

UNITS = REPO / "systemd"
AGENT_UNIT, KIOSK_UNIT = UNITS / "headunit.service", UNITS / "headunit-kiosk.service"
POLKIT_RULE = REPO / "packaging" / "polkit" / "50-headunit-poweroff.rules"
SYSTEM_UNITS = Path("/usr/lib/systemd/system")
WAIT = 30.0  # generous: only there so a broken agent cannot hang a test
WATCHDOG_USEC = "2000000"  # 2 s: the agent pings every second

needs_systemd_analyze = pytest.mark.skipif(shutil.which("systemd-analyze") is None or not SYSTEM_UNITS.is_dir(),
                                           reason="systemd-analyze (package systemd) is not installed")


# -- the units -------------------------------------------------------------------------------


def unit_entries(path: Path) -> dict[str, list[tuple[str, str]]]:
    """A unit file as {section: [(key, value)]}: keys repeat (DeviceAllow=), lines continue with \\."""
    sections: dict[str, list[tuple[str, str]]] = {}
    current: list[tuple[str, str]] = []
    text = re.sub(r"\\\n", " ", path.read_text())
    for line in text.splitlines():
        line = line.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("["):
            current = sections.setdefault(line.strip("[]"), [])
        else:
            key, _, value = line.partition("=")
            current.append((key.strip(), value.strip()))
    return sections


def values(path: Path, section: str, key: str) -> list[str]:
    return [v for k, v in unit_entries(path).get(section, []) if k == key]


def executables(path: Path) -> set[str]:
    """Every absolute program the unit starts (after the -+@!: prefixes of Exec*= lines)."""
    found = set()
    for key, value in unit_entries(path).get("Service", []):
        if key.startswith("Exec") and value:
            found.add(value.split()[0].lstrip("-+@!:"))
    return found


def verify_root(tmp: Path, units: list[Path]) -> Path:
    """A root holding systemd's units, these units in /etc/systemd/system and a stub for each program."""
    root = tmp / "root"
    shutil.copytree(SYSTEM_UNITS, root / SYSTEM_UNITS.relative_to("/"), symlinks=True)
    installed = root / "etc" / "systemd" / "system"
    installed.mkdir(parents=True)
    for unit in units:
        shutil.copy(unit, installed / unit.name)
        for program in executables(unit):
            stub = root / program.lstrip("/")
            stub.parent.mkdir(parents=True, exist_ok=True)
            stub.write_text("#!/bin/sh\nexit 0\n")
            stub.chmod(0o755)
    return root


def verify(root: Path, *names: str) -> tuple[bool, str]:
    """``systemd-analyze verify`` under ``root``; passes only with exit 0 AND not a word of warning
    (an unknown key is only a warning: a typo must not pass)."""
    result = subprocess.run(["systemd-analyze", f"--root={root}", "--man=no", "--generators=no", "verify",
                             *names], capture_output=True, text=True, timeout=60)
    output = (result.stdout + result.stderr).strip()
    return result.returncode == 0 and not output, output


@needs_systemd_analyze
def test_both_units_pass_systemd_analyze_verify(tmp_path: Path) -> None:
    root = verify_root(tmp_path, [AGENT_UNIT, KIOSK_UNIT])
    assert executables(AGENT_UNIT) >= {"/opt/headunit/venv/bin/headunit"}
    assert executables(KIOSK_UNIT) >= {"/usr/bin/cage", "/bin/sh"}
    ok, output = verify(root, AGENT_UNIT.name, KIOSK_UNIT.name)
    assert ok, output


@needs_systemd_analyze
@pytest.mark.parametrize("breakage", ["missing program", "misspelt key", "bad value"])
def test_verify_refuses_a_broken_unit(tmp_path: Path, breakage: str) -> None:
    text = AGENT_UNIT.read_text()
    broken = {
        "missing program": text.replace("/opt/headunit/venv/bin/headunit run", "/opt/headunit/venv/bin/hedunit run"),
        "misspelt key": text.replace("WatchdogSec=30", "WatchdogSecs=30"),
        "bad value": text.replace("Type=notify", "Type=notifying"),
    }[breakage]
    assert broken != text
    unit = tmp_path / "units" / AGENT_UNIT.name
    unit.parent.mkdir()
    unit.write_text(broken)
    root = verify_root(tmp_path, [AGENT_UNIT])  # the stubs of the real unit, the broken unit in place
    shutil.copy(unit, root / "etc" / "systemd" / "system" / unit.name)
    if breakage == "missing program":
        (root / "opt/headunit/venv/bin/hedunit").unlink(missing_ok=True)
    ok, output = verify(root, unit.name)
    assert not ok, f"{breakage} passed verify"
    assert output, "a refusal says why"


@needs_systemd_analyze
def test_the_agent_unit_is_hardened_and_an_unhardened_one_is_not(tmp_path: Path) -> None:
    def exposure(unit: Path) -> subprocess.CompletedProcess[str]:
        # --threshold: exit non-zero when the exposure (0-100, shown as 0.0-10.0) is above it
        return subprocess.run(["systemd-analyze", "security", "--offline=yes", "--threshold=30", str(unit)],
                              capture_output=True, text=True, timeout=60)

    hardened = exposure(AGENT_UNIT)
    assert hardened.returncode == 0, hardened.stdout[-600:]
    plain = tmp_path / "plain.service"
    plain.write_text("[Service]\nType=notify\nExecStart=/opt/headunit/venv/bin/headunit run /etc/headunit/profile.toml\n"
                     "User=headunit\n")
    assert exposure(plain).returncode != 0, "the same check refuses a unit without hardening"


def test_the_agent_unit_agrees_with_the_agent() -> None:
    """The numbers the unit and the code must share: exit codes, timeouts, the state directory."""
    service = dict(unit_entries(AGENT_UNIT)["Service"])
    assert service["Type"] == "notify" and service["NotifyAccess"] == "main"
    assert service["ExecStart"] == "/opt/headunit/venv/bin/headunit run /etc/headunit/profile.toml"
    assert str(EXIT_RESTART) in service["RestartForceExitStatus"].split()
    assert "2" in service["RestartPreventExitStatus"].split(), "a refused profile (exit 2) is not retried"
    assert _seconds(service["TimeoutStartSec"]) > ServiceConfig().ready_timeout + 10
    assert _seconds(service["WatchdogSec"]) > 2 * ServiceConfig().loop_lag_limit
    environment = values(AGENT_UNIT, "Service", "Environment")
    assert f"HEADUNIT_DATA_DIR=%S/{service['StateDirectory']}" in environment
    assert service["ReadWritePaths"] == f"%S/{service['StateDirectory']}"
    assert service["User"] == "headunit" and service["CapabilityBoundingSet"] == ""
    allowed = {v.split()[0] for v in values(AGENT_UNIT, "Service", "DeviceAllow")}
    assert {"char-ttyAMA", "char-ttyS", "char-ttyUSB", "char-video4linux", "char-alsa",
            "char-gpiochip"} <= allowed
    after = " ".join(values(KIOSK_UNIT, "Unit", "After")).split()
    assert values(KIOSK_UNIT, "Unit", "Requires") == [AGENT_UNIT.name] and AGENT_UNIT.name in after


def _seconds(value: str) -> float:
    number, unit = re.fullmatch(r"(\d+)\s*(min|s)?", value).groups()  # type: ignore[union-attr]
    return float(number) * (60 if unit == "min" else 1)


# -- the polkit rule ----------------------------------------------------------------------------


POLKIT_SCRIPT = """\
mount --bind "$DIR/rules" /etc/polkit-1/rules.d
mount --bind "$DIR/passwd" /etc/passwd
mount --bind "$DIR/group" /etc/group
dbus-daemon --config-file="$DIR/bus.conf" --fork --print-pid > "$DIR/bus.pid"
export DBUS_SYSTEM_BUS_ADDRESS="unix:path=$DIR/bus"
/usr/lib/polkit-1/polkitd --no-debug > "$DIR/polkitd.log" 2>&1 &
polkitd=$!
for i in $(seq 200); do
  dbus-send --system --print-reply --dest=org.freedesktop.DBus /org/freedesktop/DBus \\
    org.freedesktop.DBus.NameHasOwner string:org.freedesktop.PolicyKit1 2>/dev/null | grep -q true && break
  sleep 0.1
done
setpriv --reuid=headunit --regid=headunit --clear-groups sleep 60 & agent=$!
setpriv --reuid=intruder --regid=intruder --clear-groups sleep 60 & other=$!
for action in $ACTIONS; do
  pkcheck --action-id "$action" --process $agent >/dev/null 2>&1; echo "headunit $action $?"
  pkcheck --action-id "$action" --process $other >/dev/null 2>&1; echo "intruder $action $?"
done
kill $agent $other $polkitd $(cat "$DIR/bus.pid")
"""

BUS_CONF = """\
<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <listen>unix:path={dir}/bus</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/><allow own="*"/><allow send_destination="*"/><allow receive_sender="*"/>
  </policy>
</busconfig>
"""


def _polkit_missing() -> str | None:
    if os.geteuid() != 0:
        return "needs root (a mount namespace)"
    for program in ("/usr/lib/polkit-1/polkitd", "pkcheck", "dbus-daemon", "dbus-send", "unshare", "setpriv"):
        if shutil.which(program) is None:
            return f"{program} is not installed"
    if subprocess.run(["getent", "passwd", "polkitd"], capture_output=True).returncode != 0:
        return "polkitd's user does not exist"
    if subprocess.run(["unshare", "-m", "true"], capture_output=True).returncode != 0:
        return "cannot make a mount namespace here"
    return None


@pytest.mark.skipif(_polkit_missing() is not None, reason=str(_polkit_missing()))
def test_polkit_lets_the_headunit_user_and_nobody_else_power_off() -> None:
    actions = ["org.freedesktop.login1.power-off", "org.freedesktop.login1.power-off-multiple-sessions",
               "org.freedesktop.login1.power-off-ignore-inhibit", "org.freedesktop.login1.reboot",
               "org.freedesktop.login1.halt"]
    with tempfile.TemporaryDirectory(prefix="hu-pk-") as folder:
        work = Path(folder)
        work.chmod(0o755)  # polkitd gives up root: it must still reach the bus socket in here
        rules = work / "rules"
        rules.mkdir(mode=0o700)
        shutil.copy(POLKIT_RULE, rules / POLKIT_RULE.name)
        shutil.chown(rules, "polkitd")
        shutil.chown(rules / POLKIT_RULE.name, "polkitd")
        passwd, group = Path("/etc/passwd").read_text(), Path("/etc/group").read_text()
        for name, uid in (("headunit", 64901), ("intruder", 64902)):  # unless installed here already
            if not re.search(rf"^{name}:", passwd, re.M):
                passwd += f"{name}:x:{uid}:{uid}::/nonexistent:/usr/sbin/nologin\n"
            if not re.search(rf"^{name}:", group, re.M):
                group += f"{name}:x:{uid}:\n"
        (work / "passwd").write_text(passwd)
        (work / "group").write_text(group)
        (work / "bus.conf").write_text(BUS_CONF.format(dir=work))
        result = subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c", POLKIT_SCRIPT],
                                env={**os.environ, "DIR": folder, "ACTIONS": " ".join(actions)},
                                capture_output=True, text=True, timeout=120)
        log = (work / "polkitd.log").read_text() if (work / "polkitd.log").exists() else ""
    answers = {tuple(line.split()[:2]): int(line.split()[2]) for line in result.stdout.splitlines()}
    assert len(answers) == 2 * len(actions), result.stdout + result.stderr + log
    for action in actions[:4]:
        assert answers["headunit", action] == 0, f"{action} refused to headunit\n{log}"
        assert answers["intruder", action] != 0, f"{action} granted to another user"
    assert answers["headunit", "org.freedesktop.login1.halt"] != 0, "only what the agent needs"


# -- sd_notify ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Datagram:
    at: float  # time.monotonic() when received
    fields: dict[str, str]


class NotifySocket:
    """The test's stand-in for systemd's notify socket: keeps every datagram, in order."""

    def __init__(self, folder: Path) -> None:
        self.path = folder / "notify.sock"
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(self.path))
        self.sock.settimeout(0.2)
        self.received: list[Datagram] = []
        self._running = True
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        while self._running:
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                return
            fields = dict(line.split("=", 1) for line in data.decode().splitlines() if "=" in line)
            self.received.append(Datagram(time.monotonic(), fields))

    def close(self) -> None:
        self._running = False
        self._thread.join(2)
        self.sock.close()

    def with_field(self, name: str, value: str | None = None) -> list[Datagram]:
        return [d for d in list(self.received) if name in d.fields and (value is None or d.fields[name] == value)]

    def statuses(self) -> list[str]:
        return [d.fields["STATUS"] for d in self.with_field("STATUS")]

    async def wait_for(self, what: Callable[[], object], timeout: float = WAIT) -> None:
        deadline = time.monotonic() + timeout
        while not what():
            if time.monotonic() > deadline:
                raise AssertionError(f"not received within {timeout} s; got {[d.fields for d in self.received]}")
            await asyncio.sleep(0.05)

    def pings_after(self, datagram: Datagram) -> int:
        index = self.received.index(datagram)
        return sum(1 for d in self.received[index + 1:] if d.fields.get("WATCHDOG") == "1")


@pytest.fixture
def notify_socket() -> NotifySocket:  # type: ignore[misc]
    with tempfile.TemporaryDirectory(prefix="hu-ntf-") as folder:  # short: UNIX socket paths are limited
        receiver = NotifySocket(Path(folder))
        yield receiver
        receiver.close()


def write_profile(folder: Path, *, service: str = "", vehicle: str = "") -> Path:
    """A car without a vehicle bus: account from the environment, no dashboard, the given [service]."""
    profile = folder / "car.toml"
    profile.write_text(textwrap.dedent("""\
        [profile]
        name = "Service test car"
        [account]
        jid = "car@localhost"
        password_env = "HEADUNIT_PASSWORD"
        [dashboard]
        enabled = false
        """) + vehicle + service)
    return profile


def closed_port() -> int:
    """A loopback port nothing listens on (bound once, then released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def start_agent(server: ServerInfo, car: tuple[str, str], profile: Path, notify: NotifySocket | None, *,
                speed: float | None = None, env: dict[str, str] | None = None) -> AgentProcess:
    extra = {"NOTIFY_SOCKET": str(notify.path), "WATCHDOG_USEC": WATCHDOG_USEC} if notify else {}
    agent = AgentProcess(server, *car, profile=profile, speed=speed, extra_env={**extra, **(env or {})})
    for variable in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "HEADUNIT_TEST_HOOKS"):
        if variable not in extra and variable not in (env or {}):
            agent.env.pop(variable, None)  # as the test runner may have them: this agent must not
    agent.start()
    return agent


def terminate(agent: AgentProcess) -> int:
    """SIGTERM, as systemctl stop sends; the exit status."""
    assert agent.process is not None
    agent.process.send_signal(signal.SIGTERM)
    try:
        return agent.process.wait(WAIT)
    except subprocess.TimeoutExpired:
        agent.process.kill()
        raise AssertionError(f"the agent did not stop on SIGTERM:\n{agent.tail()}") from None


async def headunit_status(profile: Path, data_dir: str, *args: str) -> tuple[int, str, str]:
    """``headunit status PROFILE ARGS`` as its own process, as an admin would run it."""
    return await headunit("status", str(profile), *args, env={"HEADUNIT_DATA_DIR": data_dir}, timeout=WAIT)


def labelled(out: str) -> dict[str, str]:
    """``headunit status`` lines as {label: text} (labels are the first 12 columns)."""
    return {line[:12].strip(): line[13:] for line in out.splitlines()[1:] if line[:1].strip()}


@pytest.mark.slow
async def test_ready_once_online_then_status_lines_pings_and_stopping(
        prosody_server: ServerInfo, xmpp_account: AccountFactory, notify_socket: NotifySocket) -> None:
    """The demo drive: READY=1 when the session is online, STATUS= follows the drive, pings keep coming,
    ``headunit status`` says healthy, SIGTERM sends STOPPING=1 first."""
    agent = start_agent(prosody_server, xmpp_account("car"), REPO / "profiles" / "demo.toml", notify_socket,
                        speed=20.0)
    try:
        await notify_socket.wait_for(lambda: notify_socket.with_field("READY", "1"))
        ready = notify_socket.with_field("READY", "1")[0]
        assert ready.fields["STATUS"].startswith("online"), ready.fields
        assert ready.fields["MAINPID"] == str(agent.process.pid)  # type: ignore[union-attr]
        await agent.wait_for_line("online as", WAIT)  # logged before READY was sent
        await agent.wait_for_line("ready (online)", WAIT)

        await notify_socket.wait_for(lambda: any("driving" in s for s in notify_socket.statuses()))
        assert any(re.fullmatch(r"online · driving · \d+ samples queued", s) for s in notify_socket.statuses())
        await notify_socket.wait_for(lambda: notify_socket.pings_after(ready) >= 3)

        rc, out, err = await headunit_status(REPO / "profiles" / "demo.toml", agent.data_dir)
        assert rc == 0, out + err
        shown = labelled(out)
        assert shown["health"] == "healthy", out
        assert shown["connection"].startswith("online"), out
        assert shown["CAN"].startswith("demo0 (replay): open"), out
        assert shown["GNSS"].startswith("replay"), out
        assert shown["watchdog"].startswith("fed every 1 s") and "READY sent (online)" in shown["watchdog"], out
        with pytest.raises(ControlError, match="unknown command 'debug.block'"):
            async with ControlClient(Path(agent.data_dir) / "control.sock") as client:
                await client.call("debug.block", seconds=1)  # never there without HEADUNIT_TEST_HOOKS=1

        before = len(notify_socket.received)
        assert terminate(agent) == 0, agent.tail()
        after = notify_socket.received[before:]
        stopping = [d for d in after if d.fields.get("STOPPING") == "1"]
        assert stopping and stopping[0].fields.get("STATUS") == "stopping", [d.fields for d in after]
    finally:
        agent.stop()


async def test_ready_comes_offline_after_the_ready_timeout(
        prosody_server: ServerInfo, xmpp_account: AccountFactory, notify_socket: NotifySocket,
        tmp_path: Path) -> None:
    """No server at the address (a tunnel at boot): READY=1 all the same, once ready_timeout has passed."""
    profile = write_profile(tmp_path, service="[service]\nready_timeout = 2\n")
    agent = start_agent(prosody_server, xmpp_account("car"), profile, notify_socket,
                        env={"HEADUNIT_PORT": str(closed_port())})
    try:
        await notify_socket.wait_for(lambda: notify_socket.with_field("READY", "1"))
        ready = notify_socket.with_field("READY", "1")[0]
        assert ready.fields["STATUS"] == "offline (connection refused) · retrying · ignition off", ready.fields
        await agent.wait_for_line("ready (still offline after 2 s", WAIT)
        assert agent.first_line_time("online as") is None
        await notify_socket.wait_for(lambda: notify_socket.pings_after(ready) >= 2)
        assert terminate(agent) == 0, agent.tail()
        assert notify_socket.with_field("STOPPING", "1")
    finally:
        agent.stop()


async def test_a_blocked_loop_sends_no_pings_and_the_lag_withholds_the_next(
        prosody_server: ServerInfo, xmpp_account: AccountFactory, notify_socket: NotifySocket,
        tmp_path: Path) -> None:
    """debug.block sleeps on the event loop for 3 s (pings are due every second): nothing arrives
    between its two markers; then the lag (over the 1 s limit) keeps the watchdog unfed a moment,
    the agent says so, and the pings come back."""
    profile = write_profile(tmp_path, service="[service]\nready_timeout = 1\nloop_lag_limit = 1\n")
    agent = start_agent(prosody_server, xmpp_account("car"), profile, notify_socket,
                        env={"HEADUNIT_PORT": str(closed_port()), "HEADUNIT_TEST_HOOKS": "1"})
    try:
        await notify_socket.wait_for(lambda: len(notify_socket.with_field("WATCHDOG", "1")) >= 2)
        async with ControlClient(Path(agent.data_dir) / "control.sock") as client:
            assert await client.call("debug.block", seconds=3) == {"blocked": 3}
        await notify_socket.wait_for(lambda: notify_socket.with_field(MARKER, "unblocked"))
        fields = [d.fields for d in notify_socket.received]
        start = fields.index({MARKER: "block 3"})
        end = fields.index({MARKER: "unblocked"})
        assert end > start and not any("WATCHDOG" in f for f in fields[start + 1:end]), fields[start:end + 1]

        await agent.wait_for_line("watchdog not fed", WAIT)
        assert "the event loop was blocked for" in agent.tail(), agent.tail()
        unblocked = notify_socket.with_field(MARKER, "unblocked")[0]
        await notify_socket.wait_for(lambda: notify_socket.pings_after(unblocked) >= 2)
        await agent.wait_for_line("watchdog fed again", WAIT)
    finally:
        agent.stop()


async def test_status_names_a_missing_gnss_receiver_and_still_feeds_the_watchdog(
        prosody_server: ServerInfo, xmpp_account: AccountFactory, notify_socket: NotifySocket,
        tmp_path: Path) -> None:
    """A GNSS serial port that is not there: ``headunit status`` exits 1 and says why; the watchdog is
    still fed (a restart would not bring the receiver back, only drop the session)."""
    port = tmp_path / "ttyGNSS"
    profile = write_profile(tmp_path, vehicle=f'[vehicle.gnss]\nsource = "serial"\nport = "{port}"\n')
    agent = start_agent(prosody_server, xmpp_account("car"), profile, notify_socket)
    try:
        await notify_socket.wait_for(lambda: notify_socket.with_field("READY", "1"))
        await agent.wait_for_line(f"GNSS serial {port} unavailable", WAIT)
        rc, out, err = await headunit_status(profile, agent.data_dir)
        assert rc == 1, out + err
        assert labelled(out)["health"].startswith("UNHEALTHY"), out
        assert f"  - GNSS serial {port} is not connected" in out.splitlines(), out
        assert f"GNSS serial {port} unavailable" in out, "the driver's warning is among the last errors"

        rc, out, _ = await headunit_status(profile, agent.data_dir, "--json")
        status = json.loads(out)
        assert rc == 1 and status["healthy"] is False
        assert status["drivers"]["gnss"] == {**status["drivers"]["gnss"], "connected": False, "running": True}
        assert status["connection"]["online"] is True and status["watchdog"]["state"] == "fed"
        assert any(f"GNSS serial {port} is not connected" in s for s in notify_socket.statuses())
        ready = notify_socket.with_field("READY", "1")[0]
        await notify_socket.wait_for(lambda: notify_socket.pings_after(ready) >= 3)
    finally:
        agent.stop()


MDWE = """\
import ctypes, os, sys
PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN = 65, 1  # linux/prctl.h, Linux >= 6.3
libc = ctypes.CDLL(None, use_errno=True)
if libc.prctl(PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN, 0, 0, 0) != 0:
    sys.exit(f"MDWE unavailable: {os.strerror(ctypes.get_errno())}")
os.execv(sys.argv[1], sys.argv[1:])
"""


def _mdwe_missing() -> str | None:
    probe = subprocess.run([sys.executable, "-c", MDWE, sys.executable, "-c",
                            "import mmap; mmap.mmap(-1, 4096, prot=7)"], capture_output=True, text=True)
    if "MDWE unavailable" in probe.stderr:
        return "this kernel has no PR_SET_MDWE (Linux >= 6.3)"
    return None if probe.returncode != 0 else "MDWE did not refuse a writable-and-executable mapping"


@pytest.mark.skipif(_mdwe_missing() is not None, reason=str(_mdwe_missing()))
async def test_the_agent_runs_without_writable_executable_memory(
        prosody_server: ServerInfo, xmpp_account: AccountFactory, notify_socket: NotifySocket) -> None:
    """What MemoryDenyWriteExecute=yes in the unit enforces, with the same kernel mechanism (MDWE,
    inherited across exec): the demo car comes online, serves its dashboard and answers status."""
    profile = REPO / "profiles" / "demo.toml"
    agent = AgentProcess(prosody_server, *xmpp_account("car"), profile=profile, speed=20.0,
                         extra_env={"NOTIFY_SOCKET": str(notify_socket.path), "WATCHDOG_USEC": WATCHDOG_USEC})
    agent.command = [sys.executable, "-c", MDWE, *agent.command]
    agent.start()
    try:
        await notify_socket.wait_for(lambda: notify_socket.with_field("READY", "1"))
        await agent.wait_for_line("dashboard at", WAIT)
        rc, out, err = await headunit_status(profile, agent.data_dir)
        assert rc == 0 and labelled(out)["health"] == "healthy", out + err
        assert terminate(agent) == 0, agent.tail()
    finally:
        agent.stop()


async def test_without_a_notify_socket_nothing_is_sent_and_nothing_breaks(
        prosody_server: ServerInfo, xmpp_account: AccountFactory, tmp_path: Path) -> None:
    profile = write_profile(tmp_path)
    agent = start_agent(prosody_server, xmpp_account("car"), profile, None)
    try:
        await agent.wait_for_line("online as", WAIT)
        rc, out, err = await headunit_status(profile, agent.data_dir)
        assert rc == 0, out + err
        assert labelled(out)["watchdog"] == "off (not under systemd: no NOTIFY_SOCKET)", out
        assert terminate(agent) == 0, agent.tail()
        assert "cannot notify" not in "\n".join(agent.lines)
    finally:
        agent.stop()
    rc, _, err = await headunit_status(profile, agent.data_dir)
    assert rc == 3 and "no agent is running" in err


# -- the verdict, in this process ------------------------------------------------------------------


def offline_agent(folder: Path, service: str = "") -> Agent:
    """An agent in this process, with no server to reach (the health checks do not need one)."""
    profile = load_profile(write_profile(folder, service=service), environ={
        "HEADUNIT_PASSWORD": "x", "HEADUNIT_HOST": "127.0.0.1", "HEADUNIT_PORT": str(closed_port())})
    state = Path(tempfile.mkdtemp(prefix="hu-svc-"))  # short: UNIX socket paths are limited
    return Agent(dataclasses.replace(profile, storage=StorageConfig(state)))


@pytest.fixture
def under_systemd(monkeypatch: pytest.MonkeyPatch, notify_socket: NotifySocket) -> NotifySocket:
    """This process's environment as systemd would set it, for an agent made in this process."""
    monkeypatch.setenv("NOTIFY_SOCKET", str(notify_socket.path))
    monkeypatch.setenv("WATCHDOG_USEC", WATCHDOG_USEC)
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    return notify_socket


async def crash() -> None:
    raise RuntimeError("the same bug every time")


async def test_a_task_that_keeps_crashing_or_has_ended_starves_the_watchdog(
        tmp_path: Path, under_systemd: NotifySocket) -> None:
    agent = offline_agent(tmp_path)
    await agent.start()
    try:
        await under_systemd.wait_for(lambda: under_systemd.with_field("WATCHDOG", "1"))
        assert agent.health.is_alive() == (True, [])
        agent.supervisor.start("flaky", crash, backoff=Backoff(initial=0.01, cap=0.01, jitter=0))
        await wait_until(lambda: agent.health.skipped >= 1, WAIT)
        alive, reasons = agent.health.is_alive()
        assert not alive and any(r.startswith("task flaky crashed") for r in reasons), reasons
        pings, skipped = len(under_systemd.with_field("WATCHDOG")), agent.health.skipped
        await wait_until(lambda: agent.health.skipped >= skipped + 2, WAIT)  # two more checks, both failed
        assert len(under_systemd.with_field("WATCHDOG")) == pings, "no ping while a task crash-loops"
        assert agent.health.watchdog_json()["state"] == "skipping"

        await agent.supervisor.stop(["stale-sweep"])  # a task that must run until the agent stops
        assert "task stale-sweep has ended" in agent.health.is_alive()[1]
    finally:
        await asyncio.wait_for(agent.stop(), WAIT)
    assert under_systemd.with_field("STOPPING", "1")


async def test_with_watchdog_false_the_health_checks_do_not_hold_back_pings(
        tmp_path: Path, under_systemd: NotifySocket) -> None:
    agent = offline_agent(tmp_path, service="[service]\nwatchdog = false\n")
    await agent.start()
    try:
        agent.supervisor.start("flaky", crash, backoff=Backoff(initial=0.01, cap=0.01, jitter=0))
        await wait_until(lambda: not agent.health.is_alive()[0], WAIT)
        pings = len(under_systemd.with_field("WATCHDOG"))
        await under_systemd.wait_for(lambda: len(under_systemd.with_field("WATCHDOG")) >= pings + 2)
        assert agent.health.skipped == 0
        assert agent.health.watchdog_json()["state"] == "fed without health checks"
    finally:
        await asyncio.wait_for(agent.stop(), WAIT)


# -- the pieces, without an agent ---------------------------------------------------------------


def test_notifier_reaches_an_abstract_socket_and_is_a_no_op_without_one() -> None:
    name = f"hu-test-{os.getpid()}-{time.monotonic_ns()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as receiver:
        receiver.bind(b"\0" + name.encode())
        notifier = Notifier.from_environment({"NOTIFY_SOCKET": f"@{name}"})
        assert notifier.ready(status="online\nSTOPPING=1")  # a newline cannot smuggle in a second field
        receiver.settimeout(5)
        message = receiver.recv(4096).decode()
        notifier.close()
    assert message.splitlines() == ["READY=1", f"MAINPID={os.getpid()}", "STATUS=online STOPPING=1"]
    assert not Notifier.from_environment({}).watchdog(), "outside systemd nothing is sent"


def test_notifier_survives_a_vanished_socket_and_warns_once(tmp_path: Path,
                                                             caplog: pytest.LogCaptureFixture) -> None:
    notifier = Notifier(str(tmp_path / "gone.sock"))
    assert not notifier.watchdog() and not notifier.watchdog() and not notifier.status("x")
    assert notifier.failed == 3
    warnings = [r for r in caplog.records if r.levelname == "WARNING" and "cannot notify" in r.message]
    assert len(warnings) == 1


def test_watchdog_interval_is_half_of_nothing_when_meant_for_another_process() -> None:
    assert watchdog_interval({"WATCHDOG_USEC": "30000000"}) == 30.0
    assert watchdog_interval({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": str(os.getpid())}) == 30.0
    assert watchdog_interval({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"}) is None
    assert watchdog_interval({"WATCHDOG_USEC": "0"}) is None and watchdog_interval({}) is None


def test_the_service_section_of_a_profile(tmp_path: Path) -> None:
    good = write_profile(tmp_path, service="[service]\nready_timeout = 5\nwatchdog = false\nloop_lag_limit = 2.5\n")
    profile = load_profile(good, environ={"HEADUNIT_PASSWORD": "x"})
    assert profile.service == ServiceConfig(ready_timeout=5.0, watchdog=False, loop_lag_limit=2.5)
    assert load_profile(write_profile(tmp_path), environ={"HEADUNIT_PASSWORD": "x"}).service == ServiceConfig()
    for bad, key in (("loop_lag_limit = 0", "service.loop_lag_limit"), ("watchdog = 1", "service.watchdog"),
                     ("ready_timout = 5", "service.ready_timout")):
        with pytest.raises(ProfileError, match=re.escape(key)):
            load_profile(write_profile(tmp_path, service=f"[service]\n{bad}\n"), environ={"HEADUNIT_PASSWORD": "x"})
