"""The local driver: runs a plan's tasks over embedded (in-process) sources.

It reads every partition of every source a batch at a time, hands outputs to
the sinks, and checkpoints on an interval. It is what ``App.run()`` uses when
no source is a Kafka topic, and what the engine's tests step through.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

from evtime.errors import ConfigError
from evtime.io import LocalSource
from evtime.plan import Plan
from evtime.runtime.checkpoint import Checkpointer
from evtime.runtime.gc import tune_gc
from evtime.runtime.guard import DeadLetterGuard, configured_guard
from evtime.runtime.memory import MemoryChangelog, MemoryOffsets
from evtime.runtime.progress import Progress, count_delivered
from evtime.runtime.sinks import close_sinks, deliver
from evtime.runtime.status import WorkerStats
from evtime.runtime.task import PartitionTask
from evtime.time import Clock, SystemClock

log = logging.getLogger("evtime.local")


class LocalRunner:
    """Drives every partition task of a plan whose sources are all :class:`LocalSource`."""

    def __init__(
        self, plan: Plan, *, clock: Clock | None = None, guard: DeadLetterGuard | None = None
    ) -> None:
        plan.validate()
        self.plan = plan
        self.clock = clock or SystemClock()
        self.tasks: list[PartitionTask] = []
        self._sources: dict[str, LocalSource] = {}
        for topic, spec in plan.sources.items():
            if not isinstance(spec.connector, LocalSource):
                raise ConfigError(
                    f"source {topic!r} is not a local source; run this app with "
                    "`evtime worker` against Kafka"
                )
            self._sources[topic] = spec.connector
        self._ended: set[tuple[str, int]] = set()
        # Stops the run when a source's records all fail (evtime/runtime/guard.py).
        self.guard = guard if guard is not None else configured_guard()
        # The worker's checkpoint protocol, on an in-memory changelog and offset store:
        # the state lives in the tasks' RocksDB, the positions in their snapshots.
        self.changelog = MemoryChangelog()
        self.committed = MemoryOffsets(plan.app_name)
        self.stats = WorkerStats()
        self._checkpointer = Checkpointer(
            plan,
            {group: self.changelog for group in plan.groups()},
            self.committed,
            self._deliver_all,
            self.clock,
            self.stats,
            state_changes=self.changelog.retain,
        )
        self._checkpointer.begin_interval()
        self.dead_letters = 0
        self.outputs_written = 0
        self._opened = False
        self._caught_up: set[tuple[str, int]] = set()
        self.progress = Progress(self.stats, lambda: [t.watermark for t in self.tasks])

    def open(self) -> None:
        """Open (and restore) one task per partition of every topic group."""
        if self._opened:
            return
        for group in self.plan.groups():
            partitions = [self._sources[t].partitions for t in group]
            if any(p != partitions[0] for p in partitions):
                raise ConfigError(
                    f"topics {list(group)} are joined but have different partitions "
                    f"{partitions}; co-partition them (same count, same key)"
                )
            for partition in partitions[0]:
                self.tasks.append(PartitionTask(self.plan, group, partition, self.clock))
        self._opened = True

    async def step(self) -> bool:
        """Read and process one batch of every partition; return whether any record was read
        or any partition reached its end."""
        self.open()
        progressed = False
        size = self.plan.batch_size
        for task in self.tasks:
            for topic in task.group:
                if (topic, task.partition) in self._ended:
                    continue
                source = self._sources[topic]
                raws = source.read(task.partition, task.offsets[topic], size)
                # Read to its end for now (fewer than asked for): with advance_when_idle
                # its watermark may follow the clock while it stays quiet.
                if len(raws) < size:
                    self._caught_up.add((topic, task.partition))
                else:
                    self._caught_up.discard((topic, task.partition))
                if raws:
                    counts = self.stats.records_in
                    tp = (topic, task.partition)
                    counts[tp] = counts.get(tp, 0) + len(raws)
                    dead = len(task.collector.dead)
                    task.process(topic, raws)
                    self.guard.observe(topic, len(raws), task.collector.dead[dead:])
                    progressed = True
                elif source.bounded:
                    task.end_of_input(topic)
                    self._ended.add((topic, task.partition))
                    if all((topic, p) in self._ended for p in source.partitions):
                        self.guard.end_of_input(topic)
                    progressed = True
            await self._deliver(task)
        now = self.clock.now_ms()
        for task in self.tasks:
            nxt = task.next_tick()
            if (nxt is not None and nxt <= now) or task.tracker.strategy.idle_timeout is not None:
                task.tick(now, self._caught_up)
                await self._deliver(task)
        if self._checkpointer.due(now) or any(t.has_backlog() for t in self.tasks):
            await self.checkpoint()
        self.progress.maybe()
        return progressed

    @property
    def finished(self) -> bool:
        """Whether every partition of every bounded source has ended."""
        total = sum(len(self._sources[t].partitions) for g in self.plan.groups() for t in g)
        return len(self._ended) == total

    async def _deliver(self, task: PartitionTask) -> None:
        outputs, dead = task.take()
        await deliver(self.plan, outputs, dead)
        self.outputs_written += sum(len(v) for v in outputs.values())
        self.dead_letters += len(dead)
        count_delivered(self.stats, task.collector, outputs, dead)

    async def _deliver_all(self, tasks: Sequence[PartitionTask]) -> None:
        for task in tasks:
            await self._deliver(task)

    async def checkpoint(self) -> None:
        """Checkpoint every task (evtime/runtime/checkpoint.py, at-least-once)."""
        await self._checkpointer.checkpoint(self.tasks)

    async def run(self, *, poll_interval: float = 0.05) -> None:
        """Run until every bounded source ended (forever for unbounded ones), then checkpoint.

        A step that raised (a bad record under fail-fast, a sink error) may have moved the
        offsets past records it did not finish: the tasks then close without a snapshot, so
        that the last one stands and a restart resumes from it.
        """
        tune_gc()
        self.open()
        failed = False
        try:
            while not self.finished:
                if not await self.step():
                    await asyncio.sleep(poll_interval)
        except Exception:
            failed = True
            raise
        finally:
            self.progress.line()  # the tasks' watermarks, before they close
            await self.close(checkpoint=not failed)
            self.progress.summary()

    async def close(self, *, checkpoint: bool = True) -> None:
        """Checkpoint (unless told not to), close every task, then every sink."""
        try:
            if checkpoint and self._opened:
                await self.checkpoint()
        finally:
            for task in self.tasks:
                task.close()
            self.tasks.clear()
            self._opened = False
            await close_sinks(self.plan)

    def abandon(self) -> None:
        """Drop every task without a snapshot: what a crash leaves behind (for tests)."""
        for task in self.tasks:
            task.close()
        self.tasks.clear()
        self._opened = False
