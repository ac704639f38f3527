"""Changelog records and the restore rule (pure: no Kafka here).

Every checkpoint of a task appends its state changes to the task's changelog
partition, each record keyed ``<column family> NUL <state key>`` and carrying
in a header the checkpoint's input offsets. A ``META`` record per checkpoint
holds the offsets and watermarks. Whenever a task is opened it first appends
an **epoch marker** (a unique key, so compaction keeps it) naming the offsets
it resumes from.

Restore rule: the records between two markers belong to one run of the task
(an epoch). A checkpoint of an epoch is valid if its offsets are within the
offsets the *next* epoch resumed from (for the last epoch: within the
group's committed offsets). Checkpoints beyond that were written by a run
that crashed before committing them: the next run reprocessed that input, so
applying them would count it twice.

Every state and META record also names its epoch (a header). A record of
another epoch than the marker before it was appended late by a previous owner
that had lost the partition without knowing it (a zombie, e.g. stuck in a
sink beyond the group's rebalance timeout): it is skipped, whatever its
offsets, so it cannot overwrite the new owner's state.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import orjson

from evtime.records import ChangelogRecord
from evtime.state.store import Change

SEP = b"\x00"
META_KEY = SEP + b"meta"
MARKER_PREFIX = SEP + b"epoch:"


def state_record(change: Change) -> tuple[bytes, bytes | None]:
    """The changelog key and value of a state change."""
    return change.store.encode() + SEP + change.key, change.value


def meta_record(offsets: dict[str, int], watermarks: dict[str, object]) -> tuple[bytes, bytes]:
    return META_KEY, orjson.dumps({"offsets": offsets, "watermarks": watermarks})


def marker_record(epoch: str, start: dict[str, int]) -> tuple[bytes, bytes]:
    return MARKER_PREFIX + epoch.encode(), orjson.dumps({"start": start})


def within(offsets: dict[str, int], bound: dict[str, int]) -> bool:
    """Whether every input offset of a checkpoint is at or before ``bound``'s."""
    return all(offset <= bound.get(topic, 0) for topic, offset in offsets.items())


@dataclass(slots=True)
class RestorePlan:
    """What a restore applies: state changes, and where the restored task resumes."""

    changes: list[Change] = field(default_factory=list)
    offsets: dict[str, int] | None = None
    watermarks: dict[str, object] | None = None
    applied: int = 0
    skipped: int = 0


def plan_restore(records: Iterable[ChangelogRecord], committed: dict[str, int]) -> RestorePlan:
    """Choose the valid records of a changelog range (see the module docstring).

    ``committed`` bounds the last epoch: the consumer group's committed offsets.
    """
    plan = RestorePlan()
    segment: list[ChangelogRecord] = []
    epoch: str | None = None  # of the last marker read (unknown before the first one)

    def close_segment(bound: dict[str, int]) -> None:
        for rec in segment:
            if rec.checkpoint is None or not within(rec.checkpoint, bound):
                plan.skipped += 1
                continue
            plan.applied += 1
            if rec.key == META_KEY:
                if rec.value is not None:
                    meta = orjson.loads(rec.value)
                    plan.offsets = meta["offsets"]
                    plan.watermarks = meta["watermarks"]
                continue
            store, _, key = rec.key.partition(SEP)
            plan.changes.append(Change(store.decode(), key, rec.value))
        segment.clear()

    for rec in records:
        if rec.key.startswith(MARKER_PREFIX):
            start = orjson.loads(rec.value)["start"] if rec.value else {}
            close_segment(start)
            epoch = rec.key[len(MARKER_PREFIX) :].decode()
        elif epoch is not None and rec.epoch is not None and rec.epoch != epoch:
            plan.skipped += 1  # a zombie's late checkpoint (see the module docstring)
        else:
            segment.append(rec)
    close_segment(committed)
    return plan
