"""The tasks of the partitions assigned to a worker: opened on assignment, checkpointed
away on revocation, reopened when an exactly-once interval is redone.

On assignment (after the group gave this worker new partitions):

1. Exactly-once: begin each task's transaction, which fences the task's previous
   producer (a zombie owner) and aborts its open transaction, so that committed
   offsets and the changelog are stable from here on.
2. Read the group's committed offsets and, in one request per changelog, where
   each new task's changelog partition ends.
3. Open each new task and reconcile its state with the group's offsets
   (evtime/runtime/restore.py).
4. Append an epoch marker per opened task, naming the offsets it resumes from
   (one append per changelog); return each partition's start offset.

On revocation (before the partitions are taken away):

1. Drop what was fetched for them and not processed (the next owner fetches it).
2. Checkpoint their tasks (evtime/runtime/checkpoint.py).
3. Close the tasks and their transactions.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Mapping

from evtime.io import Changelog, ChangelogBatch, GroupSource, TopicPartition
from evtime.names import group_name
from evtime.plan import Plan
from evtime.runtime.backpressure import Backpressure
from evtime.runtime.changelog import marker_record
from evtime.runtime.checkpoint import Checkpointer
from evtime.runtime.restore import GroupSide, reconcile
from evtime.runtime.status import WorkerStats
from evtime.runtime.task import PartitionTask, TaskId
from evtime.runtime.transactions import TaskTransactions
from evtime.time import Clock

log = logging.getLogger("evtime.worker")

KEY_CHECKS = 20
"""Batches per opened task whose first record's Kafka key is checked against its key."""


class Assignment:
    """The open tasks of this worker, by task (a topic group and a partition)."""

    def __init__(
        self,
        plan: Plan,
        clock: Clock,
        changelogs: Mapping[tuple[str, ...], Changelog],
        transactions: TaskTransactions | None,
        backpressure: Backpressure,
        stats: WorkerStats,
    ) -> None:
        self.plan = plan
        self.clock = clock
        self.group_of: dict[str, tuple[str, ...]] = {
            topic: group for group in plan.groups() for topic in group
        }
        self.tasks: dict[TaskId, PartitionTask] = {}
        self._changelogs = changelogs
        self._txns = transactions
        self._backpressure = backpressure
        self._stats = stats

    async def assigned(
        self, source: GroupSource, partitions: list[TopicPartition]
    ) -> dict[TopicPartition, int]:
        """Steps 1 to 4 of an assignment (see the module docstring)."""
        group_of = self.group_of
        if self._txns is not None:
            await self._txns.begin((group_of[t], p) for t, p in partitions)
        self._stats.assignments += 1
        self._backpressure.drop_held(partitions)  # each is sought to its task's offset
        committed = await source.committed(partitions)
        new: dict[tuple[str, ...], set[int]] = {}
        for topic, partition in partitions:
            if (group_of[topic], partition) not in self.tasks:
                new.setdefault(group_of[topic], set()).add(partition)
        ends = {
            group: await self._changelogs[group].end_offsets(sorted(parts))
            for group, parts in new.items()
        }
        starts: dict[TopicPartition, int] = {}
        markers: dict[tuple[str, ...], dict[int, ChangelogBatch]] = {}
        for topic, partition in partitions:
            tid = (group_of[topic], partition)
            if tid not in self.tasks:
                group_offsets = {t: committed.get((t, partition), 0) for t in tid[0]}
                task = self.tasks[tid] = await self._open(tid, group_offsets, ends[tid[0]])
                task.epoch = uuid.uuid4().hex
                marker = marker_record(task.epoch, dict(task.offsets))
                markers.setdefault(tid[0], {})[partition] = ([marker], None)
            starts[(topic, partition)] = self.tasks[tid].offsets[topic]
        for group, batches in markers.items():
            await self._changelogs[group].append(batches)
        log.info("assigned %s", sorted(partitions), extra={
            "partitions": [f"{t}[{p}]" for t, p in sorted(partitions)],
            "offsets": {f"{t}[{p}]": o for (t, p), o in sorted(starts.items())},
        })
        return starts

    def _new_task(self, tid: TaskId) -> PartitionTask:
        return PartitionTask(self.plan, tid[0], tid[1], self.clock)

    async def _open(
        self, tid: TaskId, committed: dict[str, int], ends: dict[int, int]
    ) -> PartitionTask:
        side = GroupSide(
            lambda: self._new_task(tid), self._changelogs[tid[0]], committed, ends.get(tid[1])
        )
        restored = await reconcile(side)
        self._stats.restored_records += restored.applied
        restored.task.key_checks = KEY_CHECKS
        return restored.task

    async def revoked(
        self, checkpointer: Checkpointer, partitions: list[TopicPartition]
    ) -> None:
        """Steps 1 to 3 of a revocation (see the module docstring)."""
        self._stats.revocations += 1
        self._backpressure.drop_held(partitions)
        ids = {(self.group_of[t], p) for t, p in partitions}
        tasks = [self.tasks[i] for i in ids if i in self.tasks]
        if tasks:
            await checkpointer.checkpoint(tasks)
        for i in ids:
            task = self.tasks.pop(i, None)
            if task is not None:
                task.close()
            if self._txns is not None:
                await self._txns.close(i)
        log.info("revoked %s", sorted(partitions),
                 extra={"partitions": [f"{t}[{p}]" for t, p in sorted(partitions)]})

    async def redo(self, source: GroupSource, task: PartitionTask, exc: Exception) -> None:
        """Exactly-once, a transaction that cannot commit (evtime/runtime/checkpoint.py): it
        is aborted, the task reopened from its last snapshot and its partitions fetched
        again from there."""
        tid = (task.group, task.partition)
        self._stats.redos += 1
        log.warning(
            "%s[%d]: %s; aborting the transaction and processing again from the last "
            "checkpoint %s",
            group_name(task.group),
            task.partition,
            exc,
            dict(task.snapshot.offsets) if task.snapshot is not None else None,
            extra={"task": f"{group_name(task.group)}[{task.partition}]"},
        )
        if self._txns is not None:
            await self._txns.renew(tid)
        epoch = task.epoch
        task.close()
        fresh = self.tasks[tid] = self._new_task(tid)
        fresh.epoch = epoch  # the same run: no other owner came in between
        partitions = [(topic, task.partition) for topic in task.group]
        self._backpressure.drop_held(partitions)
        source.seek({tp: fresh.offsets[tp[0]] for tp in partitions})

    def close(self) -> None:
        """Close every task (what was not checkpointed is dropped)."""
        for task in self.tasks.values():
            task.close()
        self.tasks.clear()
