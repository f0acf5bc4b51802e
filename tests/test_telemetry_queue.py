"""The durable telemetry queue: batches survive restarts and SIGKILL with the same ids, nothing lost or doubled."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from agent.telemetry.queue import QueueError, Sample, TelemetryQueue

REPO = Path(__file__).resolve().parents[1]
T0 = 1776471120.123456


def samples(first: int, count: int, path: str = "Vehicle.Speed") -> list[Sample]:
    return [Sample(path, float(i) + 0.5, T0 + i) for i in range(first, first + count)]


class WallClock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


# -- the queue's contract ------------------------------------------------------------


async def test_a_batch_is_handed_out_again_until_acked_then_the_next_samples_follow(tmp_path: Path) -> None:
    queue = TelemetryQueue(tmp_path / "t.db")
    assert await queue.next_batch(10) is None
    recorded = samples(0, 7)
    assert list(await queue.record(recorded)) == [1, 2, 3, 4, 5, 6, 7]
    first = await queue.next_batch(3)
    again = await queue.next_batch(5)
    assert first is not None and again == first, "an unacknowledged batch is handed out again, unchanged"
    assert first.samples == tuple(recorded[:3]) and first.seqs == (1, 2, 3)
    await queue.ack(first.id)
    second = await queue.next_batch(3)
    assert second is not None and second.seqs == (4, 5, 6) and second.id != first.id
    assert queue.pending() == 4 and queue.stats.acked_seq == 3 and queue.stats.in_flight == 3
    queue.close()


async def test_values_and_timestamps_come_back_exactly_with_their_types(tmp_path: Path) -> None:
    queue = TelemetryQueue(tmp_path / "t.db")
    odd: list[bool | int | float | str] = [True, False, 0, -3, 2**64, 2.5, -0.0, float("inf"), "P", "",
                                           "고속도로 \"x\"\n"]
    recorded = [Sample(f"Vehicle.V{i}", v, T0 + i / 7) for i, v in enumerate(odd)]
    await queue.record(recorded)
    batch = await queue.next_batch(100)
    assert batch is not None and batch.samples == tuple(recorded)
    assert [type(s.value) for s in batch.samples] == [type(v) for v in odd]
    queue.close()


async def test_a_bad_sample_is_dropped_and_the_others_recorded(tmp_path: Path) -> None:
    queue = TelemetryQueue(tmp_path / "t.db")
    mixed = [Sample("Vehicle.Speed", 1.0, T0), Sample("Vehicle Speed", 2.0, T0), Sample("Vehicle.Speed", [3], T0),  # type: ignore[arg-type]
             Sample("Vehicle.Speed", 4.0, float("nan")), Sample("Vehicle.Speed", 5.0, T0 + 1)]
    assert list(await queue.record(mixed)) == [1, 2]
    batch = await queue.next_batch(10)
    assert batch is not None and [s.value for s in batch.samples] == [1.0, 5.0]
    queue.close()


async def test_a_restart_gives_back_the_same_batch_and_never_reuses_an_id(tmp_path: Path) -> None:
    path = tmp_path / "t.db"
    queue = TelemetryQueue(path)
    await queue.record(samples(0, 10))
    acked = await queue.next_batch(4)
    assert acked is not None
    await queue.ack(acked.id)
    reserved = await queue.next_batch(4)
    queue.close()

    queue = TelemetryQueue(path)
    assert queue.pending() == 6 and queue.stats.in_flight == 4 and queue.stats.acked_seq == 4
    assert await queue.next_batch(50) == reserved, "same id, same samples, same order after a restart"
    assert reserved is not None
    await queue.ack(reserved.id)
    rest = await queue.next_batch(50)
    assert rest is not None and rest.seqs == (9, 10)
    assert len({acked.id, reserved.id, rest.id}) == 3
    queue.close()


async def test_ack_of_a_foreign_batch_is_refused_and_a_second_ack_is_harmless(tmp_path: Path) -> None:
    queue = TelemetryQueue(tmp_path / "t.db")
    await queue.record(samples(0, 2))
    batch = await queue.next_batch(5)
    assert batch is not None
    for foreign in ("nothing", "zzzzzz-000001", f"{queue.store}-000099", f"{queue.store}-abc"):
        with pytest.raises(QueueError):
            await queue.ack(foreign)
    assert queue.pending() == 2, "a refused ack acknowledges nothing"
    await queue.ack(batch.id)
    await queue.ack(batch.id)
    assert queue.pending() == 0 and queue.stats.acked_seq == 2
    queue.close()


async def test_acknowledged_samples_stay_for_the_retention_then_go(tmp_path: Path) -> None:
    wall = WallClock()
    path = tmp_path / "t.db"
    queue = TelemetryQueue(path, retention=100.0, wall=wall)
    await queue.record(samples(0, 5))
    batch = await queue.next_batch(3)
    assert batch is not None
    await queue.ack(batch.id)
    wall.now += 99
    assert await queue.prune() == 0
    wall.now += 2
    assert await queue.prune() == 3
    assert queue.db.conn.execute("SELECT count(*) FROM samples").fetchone()[0] == 2
    queue.close()

    queue = TelemetryQueue(path, retention=100.0, wall=wall)
    assert queue.pending() == 2 and queue.stats.acked_seq == 3 and queue.stats.last_seq == 5
    await queue.record(samples(5, 1))
    later = await queue.next_batch(10)
    assert later is not None and later.seqs == (4, 5, 6) and later.id != batch.id
    assert later.id == queue.batch_id(2), "the batch counter goes on after the rows went"
    queue.close()


async def test_a_new_store_after_a_damaged_file_never_repeats_a_batch_id(tmp_path: Path) -> None:
    path = tmp_path / "t.db"
    queue = TelemetryQueue(path)
    await queue.record(samples(0, 1))
    old = await queue.next_batch(1)
    queue.close()
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    path.write_bytes(b"SQLite format 3\x00" + b"\xff" * 4000)
    queue = TelemetryQueue(path)
    await queue.record(samples(0, 1))
    new = await queue.next_batch(1)
    assert old is not None and new is not None
    assert new.id != old.id and new.id.endswith("-000001") and old.id.endswith("-000001")
    queue.close()


async def test_listeners_hear_of_every_change_and_a_failing_one_is_contained(tmp_path: Path) -> None:
    queue = TelemetryQueue(tmp_path / "t.db")
    heard: list[int] = []

    def broken(_: object) -> None:
        raise RuntimeError("listener bug")

    queue.changed.listen(broken)
    queue.changed.listen(lambda _: heard.append(queue.pending()))
    await queue.record(samples(0, 3))
    batch = await queue.next_batch(2)
    assert batch is not None
    await queue.ack(batch.id)
    assert heard == [3, 3, 1]
    queue.close()


# -- SIGKILL at random instants ------------------------------------------------------

CHILD = """
import asyncio, random, sys
from pathlib import Path
from agent.telemetry.queue import Sample, TelemetryQueue

async def main(db: str, seed: int) -> None:
    rng = random.Random(seed)
    queue = TelemetryQueue(Path(db))
    print("open", flush=True)
    while True:
        count = rng.randint(1, 12)
        seqs = await queue.record([Sample("Vehicle.Speed", seed * 10**6 + i, 1776471120.001 + i / 8)
                                   for i in range(count)])
        print("R", seqs.start, seqs.stop - 1, seed, flush=True)
        if rng.random() < 0.8:
            batch = await queue.next_batch(rng.randint(1, 25))
            if batch is not None:
                print("B", batch.id, *batch.seqs, flush=True)
                if rng.random() < 0.7:
                    await queue.ack(batch.id)
                    print("A", batch.id, flush=True)

asyncio.run(main(sys.argv[1], int(sys.argv[2])))
"""


@dataclass
class CrashLog:
    """What the killed processes said they had done (each line printed after the step returned)."""

    recorded: dict[int, int] = field(default_factory=dict)  # seq → value
    batch_of: dict[int, str] = field(default_factory=dict)  # seq → batch id it was handed out under
    acked: set[str] = field(default_factory=set)
    batch_seqs: dict[str, tuple[int, ...]] = field(default_factory=dict)

    def read(self, output: str) -> int:
        """Take the complete lines of one run; return how many steps it reported."""
        lines = output.split("\n")[:-1]  # the last one may be cut by the kill
        steps = 0
        for line in lines:
            kind, *rest = line.split()
            if kind == "R":
                first, last, seed = map(int, rest)
                counts = range(last - first + 1)
                self.recorded.update({first + i: seed * 10**6 + i for i in counts})
            elif kind == "B":
                batch_id, seqs = rest[0], tuple(map(int, rest[1:]))
                assert self.batch_seqs.setdefault(batch_id, seqs) == seqs, f"batch {batch_id} changed its samples"
                for seq in seqs:
                    assert self.batch_of.setdefault(seq, batch_id) == batch_id, f"seq {seq} in two batches"
            elif kind == "A":
                self.acked.add(rest[0])
            steps += kind != "open"
        return steps


def check_invariants(queue: TelemetryQueue, log: CrashLog) -> None:
    rows = queue.db.conn.execute(
        "SELECT s.seq, s.value, s.batch, b.acked_at IS NOT NULL FROM samples s"
        " LEFT JOIN batches b ON s.batch = b.counter ORDER BY s.seq").fetchall()
    seqs = [r[0] for r in rows]
    assert seqs == list(range(1, len(seqs) + 1)), "every committed seq exactly once, no gaps"
    assert queue.stats.last_seq == len(seqs)
    for seq, value in log.recorded.items():
        assert rows[seq - 1][1] == value, f"seq {seq} holds another sample"
    for seq, batch_id in log.batch_of.items():
        assert queue.batch_id(rows[seq - 1][2]) == batch_id, f"seq {seq} moved out of batch {batch_id}"
    states = [bool(r[3]) for r in rows]
    acked_count = states.count(True)
    assert states == [True] * acked_count + [False] * (len(rows) - acked_count), "acknowledged = a prefix"
    assert acked_count + queue.pending() == len(rows) and queue.stats.acked_seq == acked_count
    for batch_id in log.acked:
        assert all(states[s - 1] for s in log.batch_seqs[batch_id]), f"acked batch {batch_id} forgotten"
    in_flight = {r[2] for r in rows if r[2] is not None and not r[3]}
    assert len(in_flight) <= 1, "at most one batch in flight"


@pytest.mark.slow
async def test_sigkill_at_random_instants_loses_nothing_and_keeps_batch_ids(tmp_path: Path) -> None:
    rng = random.Random(20260421)
    db = tmp_path / "telemetry.db"
    log = CrashLog()
    kills = steps = 0
    for run in range(24):
        out = tmp_path / f"run{run}.out"
        with out.open("w") as sink:
            child = subprocess.Popen([sys.executable, "-c", CHILD, str(db), str(run + 1)], cwd=REPO,
                                     stdout=sink, stderr=subprocess.PIPE, env={**os.environ, "PYTHONPATH": str(REPO)})
        deadline = time.monotonic() + 20
        while not out.read_text().startswith("open") and child.poll() is None and time.monotonic() < deadline:
            time.sleep(0.005)
        assert child.poll() is None, f"child died on its own: {child.stderr.read().decode() if child.stderr else ''}"
        time.sleep(rng.uniform(0.0, 0.12))
        child.send_signal(signal.SIGKILL)
        child.wait()
        if child.stderr:
            child.stderr.close()
        kills += child.returncode == -signal.SIGKILL
        steps += log.read(out.read_text())
        queue = TelemetryQueue(db)
        check_invariants(queue, log)
        queue.close()
    assert kills == 24 and steps > 100, f"the kills must land while the queue works ({steps} steps)"

    queue = TelemetryQueue(db)
    acked_before, last = queue.stats.acked_seq, queue.stats.last_seq
    delivered: list[int] = []
    ids: list[str] = []
    while (batch := await queue.next_batch(50)) is not None:
        assert batch.id not in log.acked and batch.id not in ids
        delivered += batch.seqs
        ids.append(batch.id)
        await queue.ack(batch.id)
    assert delivered == list(range(acked_before + 1, last + 1)), "the rest, each once, in order"
    assert max(log.recorded) <= last and queue.pending() == 0
    queue.close()
