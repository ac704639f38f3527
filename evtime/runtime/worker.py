"""The Kafka worker: partition tasks fed by a consumer group, checkpointed with their offsets.

One asyncio loop, one consumer for every Kafka topic of the app, one task per
assigned partition of each topic group (partition ``p`` of co-partitioned
topics meets in one task). Records are processed a fetched batch at a time.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from collections.abc import Iterable
from typing import Any

from evtime.errors import ConfigError
from evtime.io import GroupSource, GroupSourceFactory, TopicPartition
from evtime.plan import Plan
from evtime.runtime.gc import tune_gc
from evtime.runtime.local import deliver, flush_all
from evtime.runtime.task import PartitionTask
from evtime.time import Clock, SystemClock

log = logging.getLogger("evtime.worker")

TaskId = tuple[tuple[str, ...], int]


class Worker:
    """Runs a plan whose sources are consumer-group sources (Kafka), until stopped."""

    def __init__(
        self,
        plan: Plan,
        *,
        clock: Clock | None = None,
        poll_ms: int = 100,
        handle_signals: bool = True,
        instance_id: str | None = None,
    ) -> None:
        plan.validate()
        self.plan = plan
        self.clock = clock or SystemClock()
        self.poll_ms = poll_ms
        self.handle_signals = handle_signals
        # A stable id per worker process (static group membership): a restarted worker
        # gets its partitions back at once instead of after the session timeout.
        self.instance_id = instance_id or os.environ.get("EVTIME_INSTANCE_ID") or None
        factories = []
        for spec in plan.sources.values():
            if not isinstance(spec.connector, GroupSourceFactory):
                raise ConfigError(
                    f"source {spec.topic!r} is not a Kafka source; an app runs either on Kafka "
                    "or on local sources, not both"
                )
            factories.append(spec.connector)
        self._factory = factories[0]
        self._group_of: dict[str, tuple[str, ...]] = {
            topic: group for group in plan.groups() for topic in group
        }
        self.tasks: dict[TaskId, PartitionTask] = {}
        self._source: GroupSource | None = None
        self._lock = asyncio.Lock()
        self._stop = asyncio.Event()
        self._signals = 0
        self._last_checkpoint = 0
        self.checkpoints = 0

    # -- lifecycle -----------------------------------------------------------------
    async def run(self) -> None:
        """Consume, process and checkpoint until :meth:`stop` (or SIGTERM / SIGINT)."""
        tune_gc()
        if self.handle_signals:
            self._install_signal_handlers()
        source = self._factory.group_source(
            self.plan.app_name, sorted(self.plan.sources), self.instance_id
        )
        self._source = source
        await source.start(self._on_assigned, self._on_revoked)
        self._last_checkpoint = self.clock.now_ms()
        log.info("worker %s started on topics %s", self.plan.app_name, sorted(self.plan.sources))
        failed = False
        try:
            while not self._stop.is_set():
                batches = await source.poll(self.poll_ms, self.plan.batch_size)
                async with self._lock:
                    await self._process(batches)
                    now = self.clock.now_ms()
                    for task in self.tasks.values():
                        task.tick(now)
                    await self._deliver(self.tasks.values())
                    if now - self._last_checkpoint >= self.plan.checkpoint_interval:
                        await self._checkpoint(list(self.tasks.values()))
        except Exception:
            # A failed step may have moved offsets past records it did not finish:
            # no checkpoint, so the last snapshot stands and a restart resumes there.
            failed = True
            raise
        finally:
            await self._shutdown(source, checkpoint=not failed)

    def stop(self) -> None:
        """Ask the worker to checkpoint every task, leave the group and return."""
        self._stop.set()

    def _install_signal_handlers(self) -> None:
        loop = asyncio.get_running_loop()

        def on_signal(signum: int) -> None:
            self._signals += 1
            if self._signals > 1:
                # The last snapshot stands; offsets after it are replayed on restart.
                log.warning("second signal %s: exiting at once", signum)
                os._exit(128 + signum)
            log.info("signal %s: checkpointing and leaving the group", signum)
            self.stop()

        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, on_signal, sig)

    async def _shutdown(self, source: GroupSource, *, checkpoint: bool = True) -> None:
        async with self._lock:
            try:
                if self.tasks and checkpoint:
                    await self._checkpoint(list(self.tasks.values()))
            finally:
                for task in self.tasks.values():
                    task.close()
                self.tasks.clear()
        await source.stop()
        closed: set[int] = set()
        for sink in [*self.plan.sinks.values(), self.plan.dead_letter]:
            if sink is not None and id(sink) not in closed:
                closed.add(id(sink))
                await sink.close()
        log.info("worker %s stopped after %d checkpoints", self.plan.app_name, self.checkpoints)

    # -- processing ------------------------------------------------------------------
    async def _process(self, batches: dict[TopicPartition, list[Any]]) -> None:
        for (topic, partition), raws in batches.items():
            task = self.tasks.get((self._group_of[topic], partition))
            if task is None:
                continue  # revoked while the fetch was in flight
            task.process(topic, raws)

    async def _deliver(self, tasks: Iterable[PartitionTask]) -> None:
        for task in tasks:
            outputs, dead = task.take()
            if outputs or dead:
                await deliver(self.plan, outputs, dead)

    async def _checkpoint(self, tasks: list[PartitionTask]) -> None:
        """Checkpoint ``tasks`` (at-least-once).

        1. Deliver every pending output and flush every sink, awaiting each
           acknowledgement.
        2. (Changelog: not written yet; a task without local state replays its
           partitions from the beginning instead.)
        3. Write each task's dirty state, timers, watermarks and next input
           offsets in one synced RocksDB WriteBatch.
        4. Commit the same offsets to the consumer group.

        A crash before 3 replays from the previous snapshot (outputs may repeat,
        identically); a crash between 3 and 4 leaves the database ahead of the
        group, and the database wins on restart.
        """
        if self._source is None:
            return
        await self._deliver(tasks)
        await flush_all(self.plan)
        offsets: dict[TopicPartition, int] = {}
        for task in tasks:
            task.snapshot()
            for topic in task.group:
                if task.offsets[topic] > 0:
                    offsets[(topic, task.partition)] = task.offsets[topic]
        await self._source.commit(offsets)
        self._last_checkpoint = self.clock.now_ms()
        self.checkpoints += 1

    # -- rebalance -------------------------------------------------------------------
    async def _on_revoked(self, partitions: list[TopicPartition]) -> None:
        async with self._lock:
            ids = {(self._group_of[t], p) for t, p in partitions}
            tasks = [self.tasks[i] for i in ids if i in self.tasks]
            if tasks:
                await self._checkpoint(tasks)
            for i in ids:
                task = self.tasks.pop(i, None)
                if task is not None:
                    task.close()
            log.info("revoked %s", sorted(partitions))

    async def _on_assigned(self, partitions: list[TopicPartition]) -> dict[TopicPartition, int]:
        """Open the tasks of new partitions and choose where each partition resumes.

        The task's database and the group's committed offset are reconciled:
        equal, or database ahead (a crash between snapshot and commit): the
        database wins. Database behind the group: resume from the database
        (its state matches its offsets; outputs in between repeat). No database
        but a committed offset (a new machine): without a changelog the state
        must be rebuilt, so the partition is replayed from its beginning.
        """
        if self._source is None:
            return {}
        async with self._lock:
            committed = await self._source.committed(partitions)
            starts: dict[TopicPartition, int] = {}
            for topic, partition in partitions:
                tid = (self._group_of[topic], partition)
                task = self.tasks.get(tid)
                if task is None:
                    task = PartitionTask(self.plan, tid[0], partition, self.clock)
                    self.tasks[tid] = task
                group_offset = committed.get((topic, partition))
                if task.restored:
                    db_offset = task.offsets[topic]
                    if group_offset is not None and db_offset != group_offset:
                        log.info(
                            "%s[%d]: local state at offset %d, group at %d: resuming from the "
                            "local state",
                            topic,
                            partition,
                            db_offset,
                            group_offset,
                        )
                    starts[(topic, partition)] = db_offset
                else:
                    if group_offset:
                        log.warning(
                            "%s[%d]: no local state but the group committed offset %d: "
                            "replaying the partition from its beginning to rebuild state",
                            topic,
                            partition,
                            group_offset,
                        )
                    starts[(topic, partition)] = 0
            log.info("assigned %s", sorted(partitions))
            return starts
