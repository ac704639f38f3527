"""The changelog restore rule: only checkpoints a later run (or the group) committed to."""

from __future__ import annotations

from evtime.records import ChangelogRecord
from evtime.runtime.changelog import (
    META_KEY,
    marker_record,
    meta_record,
    plan_restore,
    state_record,
    within,
)
from evtime.state.store import Change


class Log:
    """Builds a changelog partition the way the worker writes it."""

    def __init__(self) -> None:
        self.records: list[ChangelogRecord] = []

    def _add(self, key: bytes, value: bytes | None, ckpt: dict[str, int] | None) -> None:
        self.records.append(ChangelogRecord(len(self.records), key, value, ckpt))

    def marker(self, start: int) -> None:
        key, value = marker_record(f"e{len(self.records)}", {"t": start})
        self._add(key, value, None)

    def checkpoint(self, offset: int, **state: int | None) -> None:
        ckpt = {"t": offset}
        for k, v in state.items():
            key, value = state_record(
                Change("w.windows", k.encode(), None if v is None else str(v).encode())
            )
            self._add(key, value, ckpt)
        key, value = meta_record(ckpt, {"version": 1, "watermark": offset, "partitions": []})
        self._add(key, value, ckpt)


def state_of(plan_changes: list[Change]) -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for c in plan_changes:
        out[c.key.decode()] = None if c.value is None else c.value.decode()
    return {k: v for k, v in out.items() if v is not None}


def test_checkpoints_within_the_group_commit_are_applied_in_order() -> None:
    log = Log()
    log.marker(0)
    log.checkpoint(100, a=1, b=2)
    log.checkpoint(200, a=3, b=None)
    plan = plan_restore(log.records, {"t": 200})
    assert state_of(plan.changes) == {"a": "3"}
    assert plan.offsets == {"t": 200}
    assert plan.skipped == 0


def test_a_checkpoint_the_group_never_committed_is_skipped() -> None:
    log = Log()
    log.marker(0)
    log.checkpoint(100, a=1)
    log.checkpoint(200, a=2)  # written to the changelog, then the worker died
    plan = plan_restore(log.records, {"t": 100})
    assert state_of(plan.changes) == {"a": "1"}
    assert plan.offsets == {"t": 100}
    assert plan.skipped == 2


def test_garbage_of_a_crashed_run_stays_skipped_after_later_commits() -> None:
    # Run 1 wrote checkpoint 200 but crashed before committing it; run 2 resumed at 100,
    # reprocessed, and committed 300. The garbage of run 1 must not count twice.
    log = Log()
    log.marker(0)
    log.checkpoint(100, a=1)
    log.checkpoint(200, a=99, g=99)
    log.marker(100)
    log.checkpoint(300, a=5)
    plan = plan_restore(log.records, {"t": 300})
    assert state_of(plan.changes) == {"a": "5"}
    assert plan.offsets == {"t": 300}


def test_a_run_that_resumed_from_local_state_ahead_of_the_group_keeps_that_checkpoint() -> None:
    # Run 1 wrote checkpoint 200 to the changelog and RocksDB, then died before the group
    # commit; run 2 on the same machine resumed from its database at 200.
    log = Log()
    log.marker(0)
    log.checkpoint(100, a=1)
    log.checkpoint(200, a=2)
    log.marker(200)
    log.checkpoint(250, b=7)
    plan = plan_restore(log.records, {"t": 250})
    assert state_of(plan.changes) == {"a": "2", "b": "7"}
    assert plan.offsets == {"t": 250}


def test_a_partial_read_uses_the_next_marker_as_the_bound() -> None:
    log = Log()
    log.marker(0)
    log.checkpoint(100, a=1)
    log.checkpoint(200, a=2)
    log.marker(100)
    # A database at checkpoint 100 replays from there on.
    tail = log.records[4:]
    plan = plan_restore(tail, {"t": 100})
    assert state_of(plan.changes) == {}
    assert plan.offsets is None


def test_within_compares_every_topic() -> None:
    assert within({"a": 1, "b": 2}, {"a": 1, "b": 3})
    assert not within({"a": 1, "b": 4}, {"a": 1, "b": 3})
    assert not within({"c": 1}, {})
    assert META_KEY.startswith(b"\x00")


def test_a_zombie_checkpoint_after_the_next_owners_marker_is_skipped() -> None:
    """A previous owner that lost the partition without knowing it (stuck beyond the
    rebalance timeout) appends a checkpoint after the new owner's marker: its records name
    the old epoch and are skipped, even where the group's commit covers their offsets."""
    log = Log()
    key, value = marker_record("old", {"t": 0})
    log.records.append(ChangelogRecord(0, key, value, None))
    for k, v, o in ((b"a", b"1", 100),):
        ck, cv = state_record(Change("w.windows", k, v))
        log.records.append(ChangelogRecord(len(log.records), ck, cv, {"t": o}, "old"))
    key, value = marker_record("new", {"t": 100})
    log.records.append(ChangelogRecord(len(log.records), key, value, None))
    ck, cv = state_record(Change("w.windows", b"a", b"2"))
    log.records.append(ChangelogRecord(len(log.records), ck, cv, {"t": 150}, "new"))
    mk, mv = meta_record({"t": 150}, {"watermark": 1})
    log.records.append(ChangelogRecord(len(log.records), mk, mv, {"t": 150}, "new"))
    # The zombie's late checkpoint, of input it processed before it lost the partition.
    ck, cv = state_record(Change("w.windows", b"a", b"9"))
    log.records.append(ChangelogRecord(len(log.records), ck, cv, {"t": 120}, "old"))
    mk, mv = meta_record({"t": 120}, {"watermark": 0})
    log.records.append(ChangelogRecord(len(log.records), mk, mv, {"t": 120}, "old"))
    plan = plan_restore(log.records, {"t": 150})
    assert state_of(plan.changes) == {"a": "2"}
    assert plan.offsets == {"t": 150}
    assert plan.skipped == 2
    # Records without an epoch (written before epochs were recorded) keep the offset rule.
    legacy = [r if r.epoch != "old" or r.offset < 3 else ChangelogRecord(
        r.offset, r.key, r.value, r.checkpoint) for r in log.records]
    assert state_of(plan_restore(legacy, {"t": 150}).changes) == {"a": "9"}
