"""The agent's storage: durable SQLite settings, one thread, a damaged file kept aside (nothing silently lost),
atomic file replacement, and the sweep of what a cut leaves behind."""

from __future__ import annotations

import hashlib
import logging
import socket
import stat
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.profile.model import StorageConfig
from agent.storage import Database, StorageError, atomic_write, connect, data_dir, sweep_leftovers

REPO = Path(__file__).resolve().parents[1]


def test_databases_are_wal_and_fully_synchronous(tmp_path: Path) -> None:
    conn = connect(tmp_path / "x.db")
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL


def test_a_damaged_database_is_kept_aside_and_a_new_one_started(tmp_path: Path) -> None:
    path = tmp_path / "telemetry.db"
    path.write_bytes(b"SQLite format 3\x00" + b"\xff" * 4000)  # a header, then garbage
    conn = connect(path)
    conn.execute("CREATE TABLE t (x)")
    kept = [p.name for p in tmp_path.iterdir() if ".corrupt-" in p.name]
    assert len(kept) == 1 and kept[0].startswith("telemetry.db.corrupt-")
    assert (tmp_path / kept[0]).read_bytes().endswith(b"\xff" * 100), "the damaged file is kept as it was"


async def test_work_runs_in_the_databases_own_thread(tmp_path: Path) -> None:
    db = Database(tmp_path / "m.db", "CREATE TABLE IF NOT EXISTS t (x INTEGER);")
    threads: set[int] = set()

    def insert(conn: object) -> int:
        threads.add(threading.get_ident())
        db.conn.execute("INSERT INTO t VALUES (1)")
        return int(db.conn.execute("SELECT count(*) FROM t").fetchone()[0])

    assert [await db.run(insert) for _ in range(3)] == [1, 2, 3]
    assert len(threads) == 1 and threading.get_ident() not in threads
    db.close()
    db.close()


def test_data_dir_prefers_the_profile_then_systemd_then_home(tmp_path: Path) -> None:
    assert data_dir(StorageConfig(tmp_path / "p"), {}) == tmp_path / "p"
    assert data_dir(StorageConfig(), {"STATE_DIRECTORY": str(tmp_path / "s")}) == tmp_path / "s"
    assert data_dir(StorageConfig(), {"XDG_STATE_HOME": str(tmp_path / "x")},
                    service_state=tmp_path / "not-installed") == tmp_path / "x" / "headunit"
    service = tmp_path / "var-lib-headunit"
    service.mkdir()  # an installed service's state folder, ours: `headunit status` finds the agent there
    assert data_dir(StorageConfig(), {"XDG_STATE_HOME": str(tmp_path / "x")}, service_state=service) == service
    assert (tmp_path / "p").is_dir() and (tmp_path / "s").is_dir()


# -- power loss: atomic replacement and what a cut leaves behind ---------------------------


def test_atomic_write_replaces_the_file_whole_and_private(tmp_path: Path) -> None:
    target = tmp_path / "dashboard.url"
    target.write_bytes(b"old\n")
    assert atomic_write(target, [b"http://127.0.0.1:8470/", b"#token\n"]) == len(b"http://127.0.0.1:8470/#token\n")
    assert target.read_bytes() == b"http://127.0.0.1:8470/#token\n"
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dashboard.url"], "no temporary left"


def test_a_refused_download_leaves_the_old_file_and_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "map.bin"
    target.write_bytes(b"the old map")
    expected = hashlib.sha256(b"the new map").hexdigest()
    seen: list[Path] = []

    def verify(temporary: Path) -> None:
        seen.append(temporary)
        assert temporary.parent == tmp_path and temporary.name.endswith(".partial"), "same folder"
        if hashlib.sha256(temporary.read_bytes()).hexdigest() != expected:
            raise ValueError("sha-256 does not match")

    with pytest.raises(StorageError, match="map.bin refused.*sha-256 does not match"):
        atomic_write(target, [b"the new", b" mop"], verify)
    assert target.read_bytes() == b"the old map"
    assert [p.name for p in tmp_path.iterdir()] == ["map.bin"]
    atomic_write(target, [b"the new", b" map"], verify)
    assert target.read_bytes() == b"the new map" and len(seen) == 2


def test_a_source_failing_midway_leaves_the_old_file(tmp_path: Path) -> None:
    target = tmp_path / "f"
    target.write_bytes(b"kept")

    def chunks() -> Iterator[bytes]:
        yield b"half"
        raise ConnectionResetError("download cut")

    with pytest.raises(ConnectionResetError):
        atomic_write(target, chunks())
    assert target.read_bytes() == b"kept" and [p.name for p in tmp_path.iterdir()] == ["f"]


def test_a_process_killed_mid_write_leaves_the_old_file_and_start_sweeps_the_rest(tmp_path: Path) -> None:
    """SIGKILL while the new bytes are half written: the old file is whole; the next start removes the half."""
    target = tmp_path / "download.bin"
    target.write_bytes(b"old version")
    writer = textwrap.dedent(f"""
        import sys, time
        from pathlib import Path
        from agent.storage import atomic_write
        def chunks():
            yield b"new version, first half"
            print("half written", flush=True)
            time.sleep(60)
            yield b"second half"
        atomic_write(Path({str(target)!r}), chunks())
    """)
    process = subprocess.Popen([sys.executable, "-c", writer], cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None and process.stdout.readline().strip() == "half written"
    finally:
        process.kill()
        process.wait(10)
    partial = [p for p in tmp_path.iterdir() if p.name.endswith(".partial")]
    assert len(partial) == 1 and b"new version, first half".startswith(partial[0].read_bytes())
    assert target.read_bytes() == b"old version", "the cut left the old file whole"
    assert sweep_leftovers(tmp_path) == [partial[0].name]
    assert [p.name for p in tmp_path.iterdir()] == ["download.bin"]


def test_sweep_removes_only_the_agents_own_leftovers(tmp_path: Path) -> None:
    bundles = tmp_path / "logs" / "bundles"
    bundles.mkdir(parents=True)
    leftovers = [".messages.x.abcd1234.partial", ".dashboard.token.k2j3h4", ".dashboard.url.9f8e7d",
                 "logs/bundles/.bundle-q1w2e3.partial", "logs/bundles/headunit-logs-20250101T000000Z-abc123.tar.gz"]
    kept = ["messages.db", "messages.db-wal", "dashboard.token", "notes.partial", ".profile",
            "logs/headunit.log", "logs/bundles/README"]
    for name in leftovers + kept:
        (tmp_path / name).write_text("x")
    socket_folder = tmp_path / ".ctlab12cd"  # agent/control.py binds here, then links the socket into place
    socket_folder.mkdir()
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(socket_folder / "s"))
    foreign = tmp_path / ".ctl-not-ours"
    foreign.mkdir()
    (foreign / "data").write_text("someone else's")
    removed = sweep_leftovers(tmp_path)
    assert sorted(removed) == sorted(leftovers + [".ctlab12cd"])
    assert not socket_folder.exists() and (foreign / "data").exists()
    for name in kept:
        assert (tmp_path / name).exists(), name
    assert sweep_leftovers(tmp_path) == [], "nothing left the second time"


def test_a_failed_check_is_logged_as_kept_aside(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "audit.db"
    path.write_bytes(b"SQLite format 3\x00" + b"\x01" * 4000)
    with caplog.at_level(logging.ERROR, logger="agent.storage"):
        connect(path).close()
    [record] = [r for r in caplog.records if "kept aside" in r.getMessage()]
    assert "audit.db failed its check" in record.getMessage() and "audit.db.corrupt-" in record.getMessage()
