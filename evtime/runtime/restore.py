"""Reconciliation on assignment: a task's local snapshot against the group's offsets.

When a partition is assigned, its task's database (its last local snapshot) is
compared with the consumer group's committed offsets (DESIGN.md section 6); each
case is a function below:

1. **Equal** (:func:`resume_equal`): the snapshot is the group's last commit;
   resume from it.
2. **Behind** (:func:`replay_behind`): the group committed past the snapshot (a
   crash between the commit and the snapshot's write, or old local state).
   The changelog is replayed from the snapshot's changelog end offset,
   applying only records of checkpoints that a later run or the group
   committed to (evtime/runtime/changelog.py); resume from the last one
   applied.
3. **Ahead** (:func:`keep_ahead`): the snapshot is past the group's offsets
   (at-least-once, a crash between the snapshot and the commit): the local
   state wins; resume from it.
4. **Absent** (:func:`restore_absent`): no local snapshot (the partition moved
   here, a new machine): the changelog is replayed from its beginning, with the
   same rule as 2; resume from the last checkpoint applied (or the start).

A topic group is behind when any of its topics is behind; ahead when none is
behind and one is ahead.
"""

from __future__ import annotations

import enum
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from evtime.io import Changelog
from evtime.names import group_name
from evtime.runtime.changelog import plan_restore
from evtime.runtime.snapshot import SnapshotMeta, restored_meta
from evtime.runtime.task import PartitionTask
from evtime.time import format_timestamp

log = logging.getLogger("evtime.restore")


class Case(enum.Enum):
    """How a task's local snapshot stands against the group's committed offsets."""

    EQUAL = 1
    BEHIND = 2
    AHEAD = 3
    ABSENT = 4


def case_of(
    local: SnapshotMeta | None, committed: dict[str, int], group: tuple[str, ...]
) -> Case:
    """Which of the four cases ``local`` (a task's snapshot) is in against ``committed``
    (the group's next offsets, by topic; a topic without a commit counts as 0)."""
    if local is None:
        return Case.ABSENT
    offsets = {t: local.offsets.get(t, 0) for t in group}
    if any(offsets[t] < committed.get(t, 0) for t in group):
        return Case.BEHIND
    if any(offsets[t] > committed.get(t, 0) for t in group):
        return Case.AHEAD
    return Case.EQUAL


@dataclass(frozen=True, slots=True)
class Restored:
    """What a reconciliation did: its case and the changelog records it applied."""

    task: PartitionTask
    case: Case
    applied: int = 0
    skipped: int = 0


Opener = Callable[[], PartitionTask]
"""Opens the task (its database and operators, from its last snapshot)."""


@dataclass(frozen=True, slots=True)
class GroupSide:
    """What a reconciliation has besides the local snapshot: how to (re)open the task, its
    changelog partition (and where it ends, if known: nothing is read at the end) and the
    group's committed offsets (by topic)."""

    open_task: Opener
    changelog: Changelog
    committed: dict[str, int]
    end: int | None = None


async def reconcile(side: GroupSide) -> Restored:
    """Open a task and reconcile it with the group (one of the four cases)."""
    task = side.open_task()
    match case_of(task.snapshot, side.committed, task.group):
        case Case.EQUAL:
            return resume_equal(task)
        case Case.BEHIND:
            return await replay_behind(task, side)
        case Case.AHEAD:
            return keep_ahead(task, side)
        case Case.ABSENT:
            return await restore_absent(task, side)


def resume_equal(task: PartitionTask) -> Restored:
    """Case 1: the task resumes from its snapshot, which the group committed."""
    return Restored(task, Case.EQUAL)


async def replay_behind(task: PartitionTask, side: GroupSide) -> Restored:
    """Case 2: replay the changelog from where the snapshot left it."""
    start = task.snapshot.changelog_end if task.snapshot is not None else None
    return await _replay(task, side, start or 0, Case.BEHIND)


def keep_ahead(task: PartitionTask, side: GroupSide) -> Restored:
    """Case 3: the snapshot is ahead of the group; it wins."""
    log.info(
        "%s[%d]: local state ahead of the group (%s > %s): the local state wins",
        group_name(task.group),
        task.partition,
        task.offsets,
        side.committed,
    )
    return Restored(task, Case.AHEAD)


async def restore_absent(task: PartitionTask, side: GroupSide) -> Restored:
    """Case 4: no snapshot; replay the changelog from its beginning."""
    return await _replay(task, side, 0, Case.ABSENT)


async def _replay(task: PartitionTask, side: GroupSide, start: int, case: Case) -> Restored:
    """Apply the valid changelog records from ``start`` on to the task's database (with the
    last applied checkpoint's offsets and watermarks), and reopen the task on it."""
    started = time.monotonic()
    partition = task.partition
    end = side.end
    records = (
        [] if end is not None and start >= end else await side.changelog.read(partition, start)
    )
    plan = plan_restore(records, side.committed)
    if records:
        meta = restored_meta(plan.offsets, plan.watermarks, records[-1].offset + 1)
        task.db.write_changes(plan.changes, meta)
        # Reopened: the operators read their state (and what is persisted) at open.
        task.close()
        task = side.open_task()
    took = time.monotonic() - started
    log.info(
        "%s[%d]: restored %d changelog records (%d skipped: uncommitted) from offset "
        "%d in %.1f s (%.0f records/s); resuming at %s",
        group_name(task.group),
        partition,
        plan.applied,
        plan.skipped,
        start,
        took,
        len(records) / max(took, 1e-6),
        task.offsets,
        extra={"task": f"{group_name(task.group)}[{partition}]", "offsets": dict(task.offsets),
               "watermark": format_timestamp(task.watermark), "restore_seconds": round(took, 3)},
    )
    return Restored(task, case, plan.applied, plan.skipped)
