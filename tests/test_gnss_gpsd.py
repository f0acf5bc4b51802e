"""GpsdSource against Debian's real gpsd fed NMEA through a pty, and against scripted bad reports.

gpsd runs in the foreground on a free loopback port, with its control socket
and pid file in the test's tmp dir, read-only on the pty (-b), off the system
D-Bus, and in its own IPC namespace when ``unshare`` allows (gpsd exports
shared-memory segments that would otherwise outlive it).
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import subprocess
import tty
from collections.abc import AsyncIterator, Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from drivers.backoff import Backoff
from drivers.errors import DriverInitError
from drivers.gnss import Fix, create_source
from drivers.gnss.gpsd import GpsdSource
from tests.nmea_sentences import ddmm, line

GPSD = shutil.which("gpsd") or ("/usr/sbin/gpsd" if os.path.exists("/usr/sbin/gpsd") else None)
START = datetime(2025, 6, 1, 8, 0, 0, tzinfo=timezone.utc)




def lat_of(second: int) -> float:
    return -33.85 - second * 0.0001  # southern and western: signs must survive gpsd


def lon_of(second: int) -> float:
    return -70.65 + second * 0.0001




def epoch(second: int) -> bytes:
    t = START + timedelta(seconds=second)
    where = f"{ddmm(lat_of(second), 2, 'NS')},{ddmm(lon_of(second), 3, 'EW')}"
    return b"".join(
        [
            line(f"GPRMC,{t:%H%M%S}.00,A,{where},20.0,45.0,{t:%d%m%y},,,A"),
            line(f"GPGGA,{t:%H%M%S}.00,{where},1,07,0.9,512.5,M,30.0,M,,"),
            line("GPGSA,A,3,01,02,03,04,05,06,07,,,,,,1.8,0.9,1.5"),
            line("GPGSV,2,1,08,01,40,083,46,02,17,308,41,03,07,344,39,04,22,228,45"),
            line("GPGSV,2,2,08,05,40,083,46,06,17,308,41,07,07,344,39,08,22,228,45"),
        ]
    )


def second_of(fix: Fix) -> int:
    assert fix.time is not None
    return round((fix.time - START).total_seconds())


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def wait_until(predicate: Callable[[], bool], what: str, timeout: float = 20.0) -> None:
    async def poll() -> None:
        while not predicate():
            await asyncio.sleep(0.01)

    try:
        await asyncio.wait_for(poll(), timeout)
    except TimeoutError:
        pytest.fail(f"timed out waiting for {what}")


def _can_unshare_ipc() -> bool:
    if shutil.which("unshare") is None:
        return False
    return subprocess.run(["unshare", "--ipc", "true"], capture_output=True).returncode == 0


class Gpsd:
    """One foreground gpsd on a loopback port, reading ``device``; its log goes to tmp."""

    def __init__(self, device: str, port: int, workdir: Path) -> None:
        assert GPSD is not None
        prefix = ["unshare", "--ipc"] if _can_unshare_ipc() else []
        self.argv = prefix + [
            GPSD, "-N", "-n", "-b", "-D", "1",
            "-S", str(port),
            "-F", str(workdir / "gpsd.sock"),
            "-P", str(workdir / "gpsd.pid"),
            device,
        ]  # fmt: skip
        self.log = workdir / "gpsd.log"
        # keep gpsd off any system D-Bus: it would broadcast every fix there
        self.env = {**os.environ, "DBUS_SYSTEM_BUS_ADDRESS": f"unix:path={workdir / 'no-dbus'}"}
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                self.argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=self.env
            )

    async def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            await wait_until(lambda: proc.poll() is not None, "gpsd to exit", timeout=10)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


class Receiver:
    """The pty master plays a receiver writing an epoch every 50 ms, one second later each time."""

    def __init__(self) -> None:
        self.master, slave = os.openpty()
        tty.setraw(self.master)
        os.set_blocking(self.master, False)
        self.slave_path = os.ttyname(slave)
        os.close(slave)
        self.second = 0
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._talk())

    async def _talk(self) -> None:
        while True:
            try:
                os.write(self.master, epoch(self.second))
            except BlockingIOError:  # gpsd is down and nobody drains the pty
                pass
            self.second += 1
            await asyncio.sleep(0.05)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        os.close(self.master)


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    made = Receiver()
    made.start()
    yield made
    await made.close()


@pytest.fixture
async def gpsd(receiver: Receiver, tmp_path: Path) -> AsyncIterator[Gpsd]:
    if GPSD is None:
        pytest.skip("gpsd binary not installed (Debian package gpsd)")
    daemon = Gpsd(receiver.slave_path, free_port(), tmp_path)
    daemon.start()
    yield daemon
    await daemon.stop()


async def test_fixes_through_real_gpsd_and_reconnect_after_restart(gpsd: Gpsd, receiver: Receiver) -> None:
    port = int(gpsd.argv[gpsd.argv.index("-S") + 1])
    fixes: list[Fix] = []
    backoff = Backoff(initial=0.05, cap=0.2)
    source = create_source("gpsd", fixes.append, host="127.0.0.1", port=port, backoff=backoff)
    runner = asyncio.create_task(source.run())
    try:
        # 1. gpsd turns the pty's NMEA into TPV/SKY; the source turns those into fixes
        await wait_until(lambda: sum(f.fix_type == "THREE_D" for f in fixes) >= 3, "3D fixes via gpsd")
        assert source.is_connected
        for fix in fixes:
            assert fix.latitude == pytest.approx(lat_of(second_of(fix)), abs=1e-6)
            assert fix.longitude == pytest.approx(lon_of(second_of(fix)), abs=1e-6)
            assert fix.speed == pytest.approx(20.0 * 1.852, abs=0.01)
            assert fix.course == pytest.approx(45.0)
        three_d = [f for f in fixes if f.fix_type == "THREE_D"]
        assert three_d[-1].altitude == pytest.approx(512.5)
        await wait_until(lambda: fixes[-1].satellites_in_view == 8, "SKY data carried into fixes")
        assert (fixes[-1].hdop, fixes[-1].pdop, fixes[-1].vdop) == (0.9, 1.8, 1.5)
        epochs = [(f.time, f.fix_type) for f in fixes]  # gpsd may upgrade an epoch from 2D to 3D
        assert len(epochs) == len(set(epochs)), "one fix per epoch and mode"
        assert source.stats.unsupported == 0, "gpsd's VERSION/DEVICES/WATCH are not bad input"

        # 2. gpsd goes away: disconnected, retried with backoff; gpsd comes back: fixes again
        await gpsd.stop()
        await wait_until(lambda: not source.is_connected, "the source to notice gpsd is gone")
        await wait_until(lambda: backoff.attempts >= 3, "reconnect attempts")
        assert not runner.done()
        last_second = second_of(fixes[-1])
        gpsd.start()
        await wait_until(lambda: second_of(fixes[-1]) > last_second + 3, "fixes after gpsd restarted")
        assert source.is_connected
    finally:
        await source.stop()
    assert runner.exception() is None
    after = [f for f in fixes if second_of(f) > last_second]
    for fix in after:
        assert fix.latitude == pytest.approx(lat_of(second_of(fix)), abs=1e-6)
    assert source.stats.parse_error == 0 and source.stats.callback_errors == 0


# -- scripted reports from a loopback server ------------------------------------------


def tpv(second: int, mode: int = 3, **extra: object) -> bytes:
    t = START + timedelta(seconds=second)
    report: dict[str, object] = {
        "class": "TPV", "mode": mode, "time": t.strftime("%Y-%m-%dT%H:%M:%S.000Z"),
        "lat": lat_of(second), "lon": lon_of(second), "altMSL": 100.0, "speed": 10.0, "track": 90.0,
    }  # fmt: skip
    report.update(extra)
    return json.dumps(report).encode() + b"\r\n"


async def test_malformed_reports_are_counted_and_skipped() -> None:
    """A loopback server answers ?WATCH with junk between good reports; only good ones become fixes."""
    watch_requests: list[bytes] = []
    script = [
        b'{"class":"VERSION","release":"3.22","proto_major":3,"proto_minor":14}\r\n',
        tpv(0),
        b"{not json at all\r\n",
        b"\xff\xfe\x00binary\r\n",
        b"[1, 2, 3]\r\n",
        tpv(1, mode=1),
        tpv(2, lat="north"),
        tpv(3, time="2006-01-01T00:00:00Z"),
        tpv(4, lat=None),
        b'{"class":"SKY","hdop":1.1,"pdop":2.2,"vdop":1.9,"satellites":['
        b'{"PRN":1,"used":true},{"PRN":2,"used":false},{"PRN":3,"used":true}]}\r\n',
        tpv(5),
        tpv(5),  # the same epoch again
        tpv(6, lat=95.0),
        tpv(7, mode=2, altMSL=None),
        b'{"class":"FROM_THE_FUTURE"}\r\n',
    ]

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        watch_requests.append(await reader.readline())
        for item in script:
            writer.write(item)
        await writer.drain()
        await reader.read()  # until the client goes
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    fixes: list[Fix] = []
    source = GpsdSource(fixes.append, port=port, backoff=Backoff(initial=0.05, cap=0.2))
    runner = asyncio.create_task(source.run())
    try:
        await wait_until(lambda: source.stats.sentences >= len(script), "every scripted report")
    finally:
        await source.stop()
        server.close()
        await server.wait_closed()
    assert runner.exception() is None
    assert watch_requests == [b'?WATCH={"enable":true,"json":true}\n']
    assert [second_of(f) for f in fixes] == [0, 5, 7]
    assert [f.fix_type for f in fixes] == ["THREE_D", "THREE_D", "TWO_D"]
    assert fixes[0].latitude == pytest.approx(lat_of(0)) and fixes[0].speed == pytest.approx(36.0)
    assert (fixes[1].satellites_in_view, fixes[1].satellites_used, fixes[1].hdop) == (3, 2, 1.1)
    assert fixes[2].altitude is None
    stats = source.stats
    assert (stats.parse_error, stats.invalid_fix, stats.rollover, stats.empty_fields) == (5, 1, 1, 1)
    assert stats.unsupported == 1  # FROM_THE_FUTURE; VERSION is accepted quietly
    assert stats.sentences == stats.accepted + stats.skipped() == len(script)


async def test_unreachable_gpsd_is_retried_not_fatal() -> None:
    port = free_port()  # nothing listens here
    backoff = Backoff(initial=0.01, cap=0.05)
    source = GpsdSource(lambda fix: None, port=port, backoff=backoff)
    runner = asyncio.create_task(source.run())
    try:
        await wait_until(lambda: backoff.attempts >= 3, "retries")
        assert not source.is_connected and not runner.done()
    finally:
        await source.stop()
    assert runner.exception() is None


def test_bad_port_is_refused() -> None:
    with pytest.raises(DriverInitError, match="port"):
        GpsdSource(lambda fix: None, port=70000)
