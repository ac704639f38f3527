"""The checkpoint protocol, for both processing guarantees (DESIGN.md section 6).

A checkpoint runs every ``checkpoint_interval``, on revocation and on shutdown,
between batches. :class:`Checkpointer` runs it for the Kafka worker and for the
embedded runner alike (the latter with an in-memory changelog and offset store,
evtime/runtime/memory.py).

``at_least_once``, for every task checkpointed together:

1. Deliver every pending output and flush every sink, awaiting each
   acknowledgement.
2. Append each task's dirty state entries, and a META record with its offsets
   and watermarks, to its changelog partition, every record carrying the
   checkpoint's input offsets and the task's epoch; await the acknowledgements.
3. Write each task's dirty state, timers, watermarks, next input offsets and
   changelog end offset in one synced RocksDB WriteBatch.
4. Commit the same input offsets to the consumer group.

A crash before 3 replays from the previous snapshot (outputs may repeat,
identically; the changelog records of the lost checkpoint are skipped by every
restore, see evtime/runtime/changelog.py); a crash between 3 and 4 leaves the
database ahead of the group, and the database wins on restart
(evtime/runtime/restore.py).

``exactly_once``, task by task (the task's outputs of the interval were written
in its open transaction as they were delivered):

1. Deliver every pending output and flush every sink (sinks outside Kafka are
   idempotent).
2. Append the task's changelog entries and META record inside its transaction.
3. Add its next input offsets to the transaction as the group's, and commit.
4. Write the RocksDB WriteBatch of at-least-once step 3.
5. Begin the task's next transaction.

A transaction that cannot commit (some of its records were not delivered: a
broker outage longer than the delivery timeout) is aborted and its interval
redone: the task goes back to its last snapshot (its database is written only
after a commit, step 4) and its partitions are fetched again from there.
Nothing of the interval was visible to read_committed consumers.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Protocol

from evtime.errors import TransactionFailedError
from evtime.io import Changelog, ChangelogBatch, TopicPartition, Transaction
from evtime.plan import Plan
from evtime.runtime.changelog import meta_record, state_record
from evtime.runtime.sinks import flush_all
from evtime.runtime.snapshot import PreparedSnapshot
from evtime.runtime.status import WorkerStats, sink_names
from evtime.runtime.task import PartitionTask, TaskId
from evtime.time import Clock

log = logging.getLogger("evtime.checkpoint")


class OffsetStore(Protocol):
    """Where input offsets are committed: the consumer group (or the embedded runner's
    stand-in for one)."""

    @property
    def group_id(self) -> str: ...

    async def commit(self, offsets: dict[TopicPartition, int]) -> None: ...


class Redo(Protocol):
    async def __call__(self, task: PartitionTask, exc: Exception) -> None:
        """Abort the task's transaction and process its interval again (exactly-once)."""
        ...


class Checkpointer:
    """Runs the checkpoint protocol (see the module docstring) over a driver's tasks.

    ``deliver`` hands the tasks' pending outputs to their sinks (step 1);
    ``transactions`` (exactly-once only) is each task's open transaction, kept up to date
    by the driver, and ``redo`` what happens to a task whose transaction failed.
    Without ``state_changes`` a checkpoint's changelog append holds its META record only
    (a changelog that keeps nothing: the embedded runner's, whose state is its RocksDB).
    """

    def __init__(
        self,
        plan: Plan,
        changelogs: Mapping[tuple[str, ...], Changelog],
        offsets: OffsetStore,
        deliver: Callable[[Sequence[PartitionTask]], Awaitable[None]],
        clock: Clock,
        stats: WorkerStats,
        *,
        transactions: Mapping[TaskId, Transaction] | None = None,
        redo: Redo | None = None,
        state_changes: bool = True,
    ) -> None:
        self.plan = plan
        self.changelogs = changelogs
        self.offsets = offsets
        self.clock = clock
        self.stats = stats
        self._deliver = deliver
        self._transactions = transactions
        self._redo = redo
        self._state_changes = state_changes
        self._sink_names = sink_names(plan)
        self.last_ms = 0
        """When the last checkpoint ended, or the first interval began (the clock's
        milliseconds; 0: not yet)."""

    def begin_interval(self) -> None:
        """Start counting the checkpoint interval (when the driver starts processing)."""
        self.last_ms = self.clock.now_ms()

    def due(self, now_ms: int) -> bool:
        return now_ms - self.last_ms >= self.plan.checkpoint_interval

    async def checkpoint(self, tasks: Sequence[PartitionTask]) -> None:
        """Checkpoint ``tasks``: steps 1 to 4 (at-least-once) or 1 to 5 (exactly-once)."""
        began = time.perf_counter()
        # 1. Outputs delivered, every sink flushed.
        await self._deliver(tasks)
        names = self._sink_names
        for sink, seconds in await flush_all(self.plan):
            self.stats.flushed(names.get(id(sink), type(sink).__name__), seconds)
        prepared: list[tuple[PartitionTask, PreparedSnapshot, ChangelogBatch]] = []
        changes = 0
        for task in tasks:
            snapshot = task.prepare_snapshot(collect_changes=self._state_changes)
            meta = snapshot.meta
            records: list[tuple[bytes, bytes | None]] = [
                state_record(c) for c in snapshot.changes
            ]
            changes += len(records)
            records.append(meta_record(dict(meta.offsets), dict(meta.watermarks)))
            prepared.append((task, snapshot, (records, dict(meta.offsets))))
        if self._transactions is None:
            await self._commit(prepared)
        else:
            await self._commit_transactions(prepared, self._transactions)
        self.last_ms = self.clock.now_ms()
        took = time.perf_counter() - began
        self.stats.checkpointed(took, changes)
        log.debug("checkpoint of %d tasks, %d changes, in %.3f s", len(tasks), changes, took,
                  extra={"checkpoint_seconds": round(took, 4), "changes": changes})

    async def _commit(
        self, prepared: list[tuple[PartitionTask, PreparedSnapshot, ChangelogBatch]]
    ) -> None:
        """At-least-once steps 2 to 4, for every task at once."""
        appends: dict[tuple[str, ...], dict[int, ChangelogBatch]] = {}
        epochs: dict[tuple[str, ...], dict[int, str]] = {}
        for task, _, batch in prepared:
            appends.setdefault(task.group, {})[task.partition] = batch
            if task.epoch is not None:
                epochs.setdefault(task.group, {})[task.partition] = task.epoch
        # 2. The changelog: one append per changelog topic.
        ends = {
            group: await self.changelogs[group].append(batches, epochs=epochs.get(group, {}))
            for group, batches in appends.items()
        }
        # 3. The snapshots.
        offsets: dict[TopicPartition, int] = {}
        for task, snapshot, _ in prepared:
            task.apply_snapshot(snapshot, ends[task.group].get(task.partition))
            offsets.update(next_offsets(task))
        # 4. The group's offsets.
        await self.offsets.commit(offsets)

    async def _commit_transactions(
        self,
        prepared: list[tuple[PartitionTask, PreparedSnapshot, ChangelogBatch]],
        transactions: Mapping[TaskId, Transaction],
    ) -> None:
        """Exactly-once steps 2 to 5, task by task."""
        for task, snapshot, batch in prepared:
            txn = transactions[(task.group, task.partition)]
            try:
                # 2. The changelog, in the transaction.
                ends = await self.changelogs[task.group].append(
                    {task.partition: batch},
                    producer=txn.producer,
                    epochs={task.partition: task.epoch} if task.epoch is not None else None,
                )
                # 3. The offsets, and the commit.
                await txn.commit(next_offsets(task), self.offsets.group_id)
            except TransactionFailedError as exc:
                if self._redo is None:
                    raise
                await self._redo(task, exc)
                continue
            # 4. The snapshot, once the transaction is committed.
            task.apply_snapshot(snapshot, ends.get(task.partition))
            # 5. The next interval's transaction.
            await txn.begin()


def next_offsets(task: PartitionTask) -> dict[TopicPartition, int]:
    """The task's next input offsets, as the group commits them."""
    return {
        (topic, task.partition): task.offsets[topic]
        for topic in task.group
        if task.offsets[topic] > 0
    }
