"""Reconciliation on assignment (evtime/runtime/restore.py): each of DESIGN section 6's four
cases, a task's local snapshot equal to the group's offsets, behind them, ahead of them or
absent, does what the section says. The changelog and the local state are written by the
checkpoint protocol itself (evtime/runtime/checkpoint.py), in memory."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson

from evtime import App, Sum, Tumbling, WindowResult
from evtime.connectors.local import MemorySink, MemorySource
from evtime.plan import Plan
from evtime.records import ChangelogRecord, RawRecord
from evtime.runtime.changelog import marker_record
from evtime.runtime.checkpoint import Checkpointer
from evtime.runtime.memory import MemoryChangelog, MemoryOffsets
from evtime.runtime.restore import Case, GroupSide, Restored, case_of, reconcile
from evtime.runtime.snapshot import SnapshotMeta
from evtime.runtime.status import WorkerStats
from evtime.runtime.task import PartitionTask
from evtime.state.store import raw_items
from evtime.time import ManualClock

GROUP = ("t",)


def _plan(state_dir: Path) -> Plan:
    app = App("restore", state_dir=state_dir, checkpoint_interval="1h", clock=ManualClock())
    events = app.source("t", MemorySource("t"), key="user", timestamp="ts")

    @app.window(events, Tumbling("10s"), aggregate=Sum("amount"), sink=MemorySink())
    def totals(result: WindowResult) -> Any:
        return result.value

    return app.plan


def _records(start: int, end: int) -> list[RawRecord]:
    return [
        RawRecord(i, None, orjson.dumps({"user": f"u{i % 3}", "amount": i, "ts": 1_000 * i}))
        for i in range(start, end)
    ]


class _Changelog(MemoryChangelog):
    """Notes where each read started."""

    def __init__(self) -> None:
        super().__init__(retain=True)
        self.reads: list[int] = []

    async def read(self, partition: int, start: int) -> list[ChangelogRecord]:
        self.reads.append(start)
        return await super().read(partition, start)


async def _nothing(tasks: Sequence[PartitionTask]) -> None:
    for task in tasks:
        task.take()


async def _run(plan: Plan, changelog: _Changelog, ends: Sequence[int], keep: Path | None) -> None:
    """One run of the task: checkpoints after the records up to each of ``ends``; with
    ``keep``, a copy of the state directory is kept after the first checkpoint."""
    clock = ManualClock()
    task = PartitionTask(plan, GROUP, 0, clock)
    task.epoch = "run-1"
    await changelog.append({0: ([marker_record("run-1", dict(task.offsets))], None)})
    checkpointer = Checkpointer(
        plan, {GROUP: changelog}, MemoryOffsets("g"), _nothing, clock, WorkerStats()
    )
    for n, end in enumerate(ends):
        task.process("t", _records(task.offsets["t"], end))
        await checkpointer.checkpoint([task])
        if n == 0 and keep is not None:
            task.close()
            shutil.copytree(plan.state_dir, keep)
            task = PartitionTask(plan, GROUP, 0, clock)
            task.epoch = "run-1"
    task.close()


def _reconcile(plan: Plan, changelog: _Changelog, committed: int) -> Restored:
    async def go() -> Restored:
        end = (await changelog.end_offsets([0]))[0]
        open_task = lambda: PartitionTask(plan, GROUP, 0, ManualClock())  # noqa: E731
        return await reconcile(GroupSide(open_task, changelog, {"t": committed}, end))

    return asyncio.run(go())


def _state(task: PartitionTask) -> dict[str, list[tuple[bytes, bytes]]]:
    """Every entry of the task's windows and timers (as RocksDB holds them)."""
    state = {
        cf: list(raw_items(task.db._column(cf)))
        for cf in ("totals.windows", "totals.timers")
    }
    assert state["totals.windows"]  # something to compare
    return state


def test_case_of_names_each_case() -> None:
    local = SnapshotMeta({"t": 20}, {})
    assert case_of(local, {"t": 20}, GROUP) is Case.EQUAL
    assert case_of(local, {"t": 30}, GROUP) is Case.BEHIND
    assert case_of(local, {"t": 10}, GROUP) is Case.AHEAD
    assert case_of(local, {}, GROUP) is Case.AHEAD
    assert case_of(None, {"t": 20}, GROUP) is Case.ABSENT
    # A group of topics is behind when one is, even if another is ahead.
    assert case_of(SnapshotMeta({"a": 5, "b": 9}, {}), {"a": 6, "b": 1}, ("a", "b")) is Case.BEHIND


def test_1_a_snapshot_equal_to_the_group_resumes_without_reading_the_changelog(
    tmp_path: Path,
) -> None:
    plan = _plan(tmp_path / "state")
    changelog = _Changelog()
    asyncio.run(_run(plan, changelog, [10, 20], None))
    restored = _reconcile(plan, changelog, 20)
    assert restored.task.offsets == {"t": 20} and restored.applied == 0
    assert changelog.reads == []
    assert restored.case is Case.EQUAL
    restored.task.close()


def test_2_a_snapshot_behind_the_group_replays_the_changelog_from_its_end(
    tmp_path: Path,
) -> None:
    """A crash between the group's commit and the snapshot's write: the local state is
    one checkpoint behind; the changelog's later checkpoint is applied from where the
    local snapshot left the changelog, and the task resumes where the group did."""
    plan = _plan(tmp_path / "state")
    changelog = _Changelog()
    asyncio.run(_run(plan, changelog, [10, 20], tmp_path / "behind"))
    complete = PartitionTask(plan, GROUP, 0, ManualClock())
    expected = _state(complete)
    complete.close()
    shutil.rmtree(plan.state_dir)
    shutil.copytree(tmp_path / "behind", plan.state_dir)
    behind = PartitionTask(plan, GROUP, 0, ManualClock())
    assert behind.offsets == {"t": 10} and behind.snapshot is not None
    first_end = behind.snapshot.changelog_end
    behind.close()

    restored = _reconcile(plan, changelog, 20)
    assert changelog.reads == [first_end] and first_end
    assert restored.applied > 0
    assert restored.task.offsets == {"t": 20}
    assert _state(restored.task) == expected
    assert restored.case is Case.BEHIND
    restored.task.close()


def test_3_a_snapshot_ahead_of_the_group_wins(tmp_path: Path) -> None:
    """A crash between the snapshot and the group's commit (at-least-once): the local state
    is kept as it is, and the changelog is not read."""
    plan = _plan(tmp_path / "state")
    changelog = _Changelog()
    asyncio.run(_run(plan, changelog, [10, 20], None))
    restored = _reconcile(plan, changelog, 10)
    assert restored.task.offsets == {"t": 20} and restored.applied == 0
    assert changelog.reads == []
    assert restored.case is Case.AHEAD
    restored.task.close()


def test_4_no_snapshot_restores_the_committed_checkpoints_from_the_changelog(
    tmp_path: Path,
) -> None:
    """A new machine: the whole changelog is read, and only the checkpoints within the
    group's offsets are applied (the second one was never committed)."""
    plan = _plan(tmp_path / "state")
    changelog = _Changelog()
    asyncio.run(_run(plan, changelog, [10, 20], tmp_path / "first"))
    shutil.rmtree(plan.state_dir)
    shutil.copytree(tmp_path / "first", plan.state_dir)
    first = PartitionTask(plan, GROUP, 0, ManualClock())
    expected = _state(first)
    first.close()
    shutil.rmtree(plan.state_dir)

    restored = _reconcile(plan, changelog, 10)
    assert changelog.reads == [0]
    assert restored.applied > 0 and restored.skipped > 0
    assert restored.task.offsets == {"t": 10}
    assert _state(restored.task) == expected
    assert restored.case is Case.ABSENT
    restored.task.close()
