"""The agent's SQLite: durable settings, one thread, a damaged file moved aside (nothing silently lost)."""

from __future__ import annotations

import threading
from pathlib import Path

from agent.profile.model import StorageConfig
from agent.storage import Database, connect, data_dir


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
    assert data_dir(StorageConfig(), {"XDG_STATE_HOME": str(tmp_path / "x")}) == tmp_path / "x" / "headunit"
    assert (tmp_path / "p").is_dir() and (tmp_path / "s").is_dir()
