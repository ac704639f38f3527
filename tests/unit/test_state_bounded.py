"""Window state stays bounded: a closed window leaves nothing behind, in memory or in RocksDB.

Long streams over many keys run through real partition tasks (MemorySource
with 4 partitions, RocksDB state). Windows must close while the stream runs,
so that the live state at any time is about one window's worth of keys (more
with allowed lateness), never "every key of every window so far"; once the
last window closed, no window entry is left in the operators or in RocksDB.
RocksDB is counted by iterating the column family, which does not return keys
removed by range deletions (how fixed windows are dropped).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from evtime import App, Count, EmitKind, ManualClock, Session, Tumbling, WindowResult
from evtime.connectors.local import MemorySink, MemorySource
from evtime.runtime.local import LocalRunner
from evtime.runtime.task import task_path
from evtime.state import TaskDB
from evtime.state.windowed import WindowStore

pytestmark = pytest.mark.slow

PARTITIONS = 4


@dataclass
class Tally:
    """What the result function saw (results are not kept: a million of them would be)."""

    finals: int = 0
    updates: int = 0
    total: int = 0

    def __call__(self, result: WindowResult) -> None:
        if result.kind is EmitKind.FINAL:
            self.finals += 1
        else:
            self.updates += 1
        self.total += result.value


def build(
    state_dir: Path,
    values: Iterator[dict[str, Any]],
    assigner: Any,
    tally: Tally,
    dead: MemorySink,
    *,
    allowed_lateness: int | str = 0,
) -> App:
    app = App(
        "bounded",
        state_dir=state_dir,
        checkpoint_interval="1h",  # checkpoints only when the test asks (or on backlog)
        dead_letter=dead,
        clock=ManualClock(0),
    )
    source = MemorySource.of("events", values, partitions=PARTITIONS, key="user")
    events = app.source("events", source, key="user", timestamp="ts")
    app.window(
        events,
        assigner,
        aggregate=Count(),
        sink=MemorySink(),
        allowed_lateness=allowed_lateness,
        name="w",
    )(tally)
    return app


def live(runner: LocalRunner) -> int:
    """Live windows of every task (walks RocksDB)."""
    ops: list[Any] = [op for task in runner.tasks for op in task.operators]
    return sum(op.live_windows() for op in ops)


def persisted(runner: LocalRunner) -> int:
    """Window entries in RocksDB, every task (call after a checkpoint)."""
    ops: list[Any] = [op for task in runner.tasks for op in task.operators]
    return sum(op._store.count_persisted() for op in ops)


def persisted_on_disk(app: App, store: str) -> int:
    """Keys of ``store`` in every task's RocksDB, reopened after the runner closed."""
    total = 0
    for partition in range(PARTITIONS):
        db = TaskDB(task_path(app.plan, ("events",), partition), [])
        try:
            if store.endswith(".windows"):
                total += WindowStore(db, store).count_persisted()
            else:
                total += db.store(store).count_persisted()
        finally:
            db.close()
    return total


CHECKPOINT_EVERY = 8
"""Steps between checkpoints (a step reads up to 2,000 records of each partition): windows
reach RocksDB before they close, so closing them must delete them there too."""


async def run_to_middle(runner: LocalRunner, fraction: float) -> None:
    """Step until every partition consumed ``fraction`` of its records, then checkpoint."""
    runner.open()
    source = runner.plan.sources["events"].connector
    targets = [int(len(source.read(t.partition, 0, 10**9)) * fraction) for t in runner.tasks]
    steps = 0
    while any(t.offsets["events"] < n for t, n in zip(runner.tasks, targets, strict=True)):
        await runner.step()
        steps += 1
        if steps % CHECKPOINT_EVERY == 0:
            await runner.checkpoint()
    await runner.checkpoint()


async def run_to_end(runner: LocalRunner) -> None:
    steps = 0
    while not runner.finished:
        await runner.step()
        steps += 1
        if steps % CHECKPOINT_EVERY == 0:
            await runner.checkpoint()
    await runner.checkpoint()


async def test_tumbling_window_state_is_removed_when_windows_close(tmp_path: Path) -> None:
    # 1,000,000 events, 100,000 keys, one event every 10 ms: a 1000 s window holds 100,000
    # consecutive events, so every key has one entry in each of the 10 windows.
    n, keys, size = 1_000_000, 100_000, 1_000_000
    started = time.perf_counter()
    values = ({"user": f"k{i % keys}", "ts": i * 10} for i in range(n))
    tally = Tally()
    dead = MemorySink()
    app = build(tmp_path, values, Tumbling(size), tally, dead)
    runner: LocalRunner = app.runner()

    await run_to_middle(runner, 0.5)
    windows_so_far = 5 * keys  # the middle of the stream is the end of the 5th window
    in_the_middle = live(runner)
    assert in_the_middle <= 2 * keys, (
        f"{in_the_middle} live windows in the middle of the stream: closed windows were kept "
        f"(every window so far would be {windows_so_far})"
    )
    assert persisted(runner) <= 2 * keys
    assert tally.finals >= 3 * keys, "windows closed while the stream ran"

    await run_to_end(runner)
    assert tally.finals == n, "one window per key and window, each emitted once"
    assert tally.total == n
    assert tally.updates == 0
    assert live(runner) == 0
    assert persisted(runner) == 0
    assert dead.dead == []
    await runner.close()
    assert persisted_on_disk(app, "w.windows") == 0
    assert time.perf_counter() - started < 120, "keep this test fast"


async def test_session_window_state_is_removed_when_sessions_close(tmp_path: Path) -> None:
    # Bursts of 5 events of a key, 10 ms apart; a key's next burst comes 250 s later and the
    # gap is 100 s: 8 sessions per key, about 2,000 open at any time.
    n, keys, burst = 200_000, 5_000, 5
    values = ({"user": f"k{(i // burst) % keys}", "ts": i * 10} for i in range(n))
    tally = Tally()
    dead = MemorySink()
    app = build(tmp_path, values, Session("100s"), tally, dead)
    runner: LocalRunner = app.runner()

    await run_to_middle(runner, 0.5)
    sessions_so_far = n // 2 // burst
    in_the_middle = live(runner)
    assert in_the_middle <= keys // 2, (
        f"{in_the_middle} live sessions in the middle: closed sessions were kept "
        f"({sessions_so_far} sessions so far)"
    )
    assert tally.finals >= sessions_so_far // 2

    await run_to_end(runner)
    assert tally.finals == n // burst
    assert tally.total == n
    assert live(runner) == 0
    assert persisted(runner) == 0
    await runner.close()
    assert persisted_on_disk(app, "w.sessions") == 0


async def test_window_state_with_allowed_lateness_is_removed_after_the_lateness(
    tmp_path: Path,
) -> None:
    # 100 s windows, 300 s of allowed lateness: a window's state lives for 4 windows' time.
    # Every 997th event is 250 s late (within the lateness: an update), every 1009th is
    # 1000 s late (past it: a dead letter, and no state comes back).
    n, keys, size = 300_000, 10_000, 100_000

    def values() -> Iterator[dict[str, Any]]:
        for i in range(n):
            ts = i * 10
            if i % 997 == 0 and i:
                ts -= 250_000
            elif i % 1009 == 0 and i:
                ts -= 1_000_000
            yield {"user": f"k{i % keys}", "ts": ts}

    # From i = 25,000 on, a record 250 s late lands in a window that has its key: an update
    # (before, in a window of negative times that never had entries: a first, final result).
    within = sum(1 for i in range(25_000, n) if i % 997 == 0)
    beyond = sum(1 for i in range(1, n) if i % 1009 == 0 and i % 997 != 0)
    tally = Tally()
    dead = MemorySink()
    app = build(tmp_path, values(), Tumbling(size), tally, dead, allowed_lateness="300s")
    runner: LocalRunner = app.runner()

    await run_to_middle(runner, 0.5)
    in_the_middle = live(runner)
    windows_so_far = 15 * keys
    assert in_the_middle > 2 * keys, "fired windows are kept for the allowed lateness"
    assert in_the_middle <= 5 * keys + keys // 10, (
        f"{in_the_middle} live windows in the middle: windows past their lateness were kept "
        f"({windows_so_far} windows so far)"
    )
    assert tally.finals >= 10 * keys

    await run_to_end(runner)
    assert tally.updates == within, "each record late within the lateness updated its window"
    assert len(dead.dead) == beyond, "each record late beyond the lateness is a dead letter"
    assert {d.reason.value for d in dead.dead} == {"late"}
    assert live(runner) == 0
    assert persisted(runner) == 0
    await runner.close()
    assert persisted_on_disk(app, "w.windows") == 0


async def test_sum_windows_leave_no_state_after_a_restart_mid_stream(tmp_path: Path) -> None:
    # The windows persisted at a checkpoint are dropped by the restored run when they close.
    n, keys = 60_000, 3_000

    def values() -> Iterator[dict[str, Any]]:
        return ({"user": f"k{i % keys}", "ts": i * 10, "amount": 1} for i in range(n))

    tally = Tally()
    dead = MemorySink()
    app = build(tmp_path, values(), Tumbling("60s"), tally, dead)
    runner: LocalRunner = app.runner()
    await run_to_middle(runner, 0.3)
    assert persisted(runner) > 0
    runner.abandon()

    app = build(tmp_path, values(), Tumbling("60s"), tally, dead)  # a restart rebuilds it
    runner = app.runner()
    await run_to_end(runner)
    assert tally.total >= n
    assert live(runner) == 0
    assert persisted(runner) == 0
    await runner.close()
    assert persisted_on_disk(app, "w.windows") == 0
