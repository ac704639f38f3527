"""A task's snapshot metadata (evtime/runtime/snapshot.py) is written exactly as earlier
versions wrote it, and state directories written by them restore."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson

from evtime import App, Sum, Tumbling, WindowResult
from evtime.connectors.local import MemorySink, MemorySource
from evtime.plan import Plan
from evtime.records import RawRecord
from evtime.runtime.snapshot import SnapshotMeta
from evtime.runtime.task import PartitionTask
from evtime.state import codec
from evtime.state.store import META_CF, TaskDB
from evtime.time import ManualClock

GROUP = ("t",)


def _plan(state_dir: Path) -> Plan:
    app = App("meta", state_dir=state_dir, checkpoint_interval="1h", clock=ManualClock())
    events = app.source("t", MemorySource("t"), key="user", timestamp="ts")

    @app.window(events, Tumbling("10s"), aggregate=Sum("amount"), sink=MemorySink())
    def totals(result: WindowResult) -> Any:
        return result.value

    return app.plan


def _records(n: int) -> list[RawRecord]:
    return [
        RawRecord(i, None, orjson.dumps({"user": f"u{i % 3}", "amount": i, "ts": 1_000 * i}))
        for i in range(n)
    ]


def test_a_snapshot_writes_the_same_metadata_entries_as_before(tmp_path: Path) -> None:
    task = PartitionTask(_plan(tmp_path), GROUP, 0, ManualClock())
    task.process("t", _records(30))
    watermarks = task.tracker.snapshot()
    task.apply_snapshot(task.prepare_snapshot(), 17)
    meta = task.db._column(META_CF)
    # What the worker's checkpoint wrote before SnapshotMeta, key by key.
    before = {
        "offsets": {"t": 30},
        "watermarks": watermarks,
        "counters": {"records_in": 30},
        "changelog_end": 17,
    }
    for key, value in before.items():
        assert meta[key.encode()] == codec.dumps(value)
    assert task.snapshot == SnapshotMeta({"t": 30}, watermarks, 17, None, 30)
    task.close()


def test_a_state_directory_written_before_restores(tmp_path: Path) -> None:
    plan = _plan(tmp_path)
    task = PartitionTask(plan, GROUP, 0, ManualClock())
    task.process("t", _records(30))
    watermarks = task.tracker.snapshot()
    task.close()
    # The metadata as the embedded runner wrote it (no changelog end).
    db = TaskDB(tmp_path / "meta" / "t" / "0", [])
    db.commit({"offsets": {"t": 30}, "watermarks": watermarks, "counters": {"records_in": 30}})
    db.close()
    restored = PartitionTask(plan, GROUP, 0, ManualClock())
    assert restored.restored and restored.offsets == {"t": 30} and restored.records_in == 30
    assert restored.snapshot == SnapshotMeta({"t": 30}, watermarks, None, None, 30)
    assert restored.watermark == task.watermark
    restored.close()
