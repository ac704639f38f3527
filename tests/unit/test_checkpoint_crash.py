"""The checkpoint protocol (evtime/runtime/checkpoint.py) and the reconciliation on
assignment (evtime/runtime/restore.py) together, at-least-once, under random crashes: a
run stopped before the changelog append, between it and the snapshot, between the
snapshot and the group's commit, or not at all; restarted on its local state, on no
state (a new machine) or on a stale copy of it (behind the group). Whatever happens, the
results are an undisturbed run's (replays repeat outputs identically) and the final
state is the same."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from evtime import App, Sum, Tumbling, WindowResult
from evtime.connectors.local import MemorySink, MemorySource
from evtime.io import ChangelogBatch, TopicPartition
from evtime.plan import Plan
from evtime.records import Output, RawRecord
from evtime.runtime.changelog import marker_record
from evtime.runtime.checkpoint import Checkpointer
from evtime.runtime.memory import MemoryChangelog, MemoryOffsets
from evtime.runtime.restore import GroupSide, reconcile
from evtime.runtime.status import WorkerStats
from evtime.runtime.task import PartitionTask
from evtime.state.store import raw_items
from evtime.time import ManualClock

GROUP = ("t",)
TOTAL = 400
STEP = 25


class Crash(Exception):
    """The process dies here."""


def _plan(state_dir: Path) -> Plan:
    app = App("crash", state_dir=state_dir, checkpoint_interval="1h", clock=ManualClock())
    events = app.source("t", MemorySource("t"), key="user", timestamp="ts")

    @app.window(events, Tumbling("5s"), aggregate=Sum("amount"), sink=MemorySink())
    def totals(result: WindowResult) -> Any:
        return result.value

    return app.plan


RECORDS = [
    RawRecord(i, None, orjson.dumps({"user": f"u{i % 4}", "amount": i % 7, "ts": 1_000 * i}))
    for i in range(TOTAL)
]


class _Changelog(MemoryChangelog):
    def __init__(self) -> None:
        super().__init__(retain=True)
        self.crash: str | None = None

    async def append(
        self,
        batches: dict[int, ChangelogBatch],
        producer: object | None = None,
        epochs: dict[int, str] | None = None,
    ) -> dict[int, int]:
        if self.crash == "before append":
            raise Crash
        ends = await super().append(batches, producer, epochs)
        if self.crash == "before snapshot":
            raise Crash
        return ends


class _Offsets(MemoryOffsets):
    def __init__(self) -> None:
        super().__init__("g")
        self.crash = False

    async def commit(self, offsets: dict[TopicPartition, int]) -> None:
        if self.crash:
            raise Crash
        await super().commit(offsets)


class _Run:
    """One partition task driven like the worker drives it, checkpoint after checkpoint."""

    def __init__(self, plan: Plan) -> None:
        self.plan = plan
        self.changelog = _Changelog()
        self.offsets = _Offsets()
        self.outputs: dict[str | None, list[Output]] = {}
        self.runs = 0
        self.task = PartitionTask(plan, GROUP, 0, ManualClock())

    async def _deliver(self, tasks: Sequence[PartitionTask]) -> None:
        for task in tasks:
            for batch in task.take()[0].values():
                for out in batch:
                    self.outputs.setdefault(out.id, []).append(out)

    async def open(self) -> None:
        """Reconcile a (re)started task, as an assignment does; append its epoch marker."""
        committed = {t: o for (t, _), o in self.offsets.committed.items()}
        end = (await self.changelog.end_offsets([0]))[0]
        reopen = lambda: PartitionTask(self.plan, GROUP, 0, ManualClock())  # noqa: E731
        side = GroupSide(reopen, self.changelog, committed, end)
        self.task = (await reconcile(side)).task
        self.runs += 1
        self.task.epoch = f"run-{self.runs}"
        marker = marker_record(self.task.epoch, dict(self.task.offsets))
        await self.changelog.append({0: ([marker], None)})

    async def until(self, end: int, crash: str | None) -> None:
        """Process up to ``end`` a step at a time, checkpointing after each step; with
        ``crash``, the last checkpoint dies at that point."""
        checkpointer = Checkpointer(
            self.plan, {GROUP: self.changelog}, self.offsets, self._deliver, ManualClock(),
            WorkerStats(),
        )
        while self.task.offsets["t"] < end:
            start = self.task.offsets["t"]
            self.task.process("t", RECORDS[start : min(start + STEP, end)])
            last = self.task.offsets["t"] >= end
            self.changelog.crash = crash if last and crash != "before commit" else None
            self.offsets.crash = last and crash == "before commit"
            try:
                await checkpointer.checkpoint([self.task])
            except Crash:
                break  # what was not snapshotted is lost with the process
        self.changelog.crash = None
        self.offsets.crash = False
        self.task.close()


def _state(plan: Plan) -> dict[str, list[tuple[bytes, bytes]]]:
    task = PartitionTask(plan, GROUP, 0, ManualClock())
    try:
        return {
            cf: list(raw_items(task.db._column(cf)))
            for cf in ("totals.windows", "totals.timers")
        }
    finally:
        task.close()


def _reference(tmp: Path) -> tuple[dict[str | None, Any], dict[str, list[tuple[bytes, bytes]]]]:
    run = _Run(_plan(tmp / "reference"))
    run.task.close()

    async def go() -> None:
        await run.open()
        await run.until(TOTAL, None)

    asyncio.run(go())
    return {i: outs[-1].value for i, outs in run.outputs.items()}, _state(run.plan)


CRASHES = st.sampled_from([None, "before append", "before snapshot", "before commit"])
DISKS = st.sampled_from(["kept", "lost", "stale"])


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    runs=st.lists(
        st.tuples(st.integers(1, TOTAL), CRASHES, DISKS), min_size=1, max_size=5
    )
)
def test_any_crash_and_restart_gives_the_undisturbed_results(
    tmp_path_factory: Any, runs: list[tuple[int, str | None, str]]
) -> None:
    tmp = tmp_path_factory.mktemp("crash")
    expected_outputs, expected_state = _reference(tmp)
    plan = _plan(tmp / "state")
    stale = tmp / "stale"
    run = _Run(plan)
    run.task.close()

    async def go() -> None:
        await run.open()
        for end, crash, disk in sorted(runs, key=lambda run: run[0]):
            await run.until(end, crash)
            if disk == "lost":
                shutil.rmtree(plan.state_dir, ignore_errors=True)
            elif disk == "stale" and stale.exists():
                shutil.rmtree(plan.state_dir, ignore_errors=True)
                shutil.copytree(stale, plan.state_dir)
            elif plan.state_dir.exists():
                shutil.rmtree(stale, ignore_errors=True)
                shutil.copytree(plan.state_dir, stale)
            await run.open()
        await run.until(TOTAL, None)

    asyncio.run(go())
    for key, outs in run.outputs.items():
        # A replay repeats an output identically (what it had emitted before the crash).
        assert all(o.value == outs[-1].value for o in outs if key is not None)
    assert {i: outs[-1].value for i, outs in run.outputs.items()} == expected_outputs
    assert _state(plan) == expected_state
