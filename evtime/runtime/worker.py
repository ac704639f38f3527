"""The Kafka worker: partition tasks fed by a consumer group, checkpointed with their offsets.

One asyncio loop, one consumer for every Kafka topic of the app, one task per
assigned partition of each topic group (partition ``p`` of co-partitioned
topics meets in one task). Records are processed a fetched batch at a time, by
one *step* per poll (evtime/runtime/backpressure.py pauses the partitions while
a step is slow). The checkpoint protocol is evtime/runtime/checkpoint.py; the
reconciliation of an assigned task's state, evtime/runtime/restore.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import signal
import time
from collections.abc import AsyncIterator, Sequence

from evtime.errors import ConfigError
from evtime.io import Changelog, GroupSource, GroupSourceFactory, TopicPartition
from evtime.names import check_internal_names
from evtime.operators.repartition import RepartitionSpec
from evtime.plan import Plan
from evtime.records import DeadLetter, Guarantee, Output
from evtime.runtime.assignment import Assignment
from evtime.runtime.backpressure import Backpressure, Fetched
from evtime.runtime.checkpoint import Checkpointer
from evtime.runtime.gc import tune_gc
from evtime.runtime.guard import configured_guard
from evtime.runtime.markers import WatermarkMarkers
from evtime.runtime.metrics import MetricsServer, configured_port
from evtime.runtime.progress import Progress, count_delivered
from evtime.runtime.sinks import SinkRoutes, close_sinks, deliver
from evtime.runtime.status import TaskStatus, WorkerState, WorkerStats, WorkerStatus
from evtime.runtime.task import PartitionTask, read_to_end
from evtime.runtime.topics import check_co_partitioned, prepare_topics
from evtime.runtime.transactions import TaskTransactions
from evtime.settings import Settings
from evtime.time import Clock, SystemClock

log = logging.getLogger("evtime.worker")


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
        pause_after_ms: int = 1_000,
        metrics_port: int | None = None,
        metrics_host: str | None = None,
    ) -> None:
        plan.validate()
        check_internal_names(
            plan.app_name,
            plan.groups(),
            [op.name for op in plan.operators if isinstance(op, RepartitionSpec)],
        )
        if pause_after_ms <= 0 or poll_ms <= 0:
            raise ConfigError(
                f"poll_ms ({poll_ms}) and pause_after_ms ({pause_after_ms}) must be positive; "
                "keep both well under the consumer's max_poll_interval_ms"
            )
        self.plan = plan
        self.clock = clock or SystemClock()
        self.poll_ms = poll_ms
        self.handle_signals = handle_signals
        # /metrics and /healthz (evtime/runtime/metrics.py): off unless a port is given.
        self.metrics_port = configured_port(metrics_port)
        settings = Settings.load({"metrics_host": metrics_host, "instance_id": instance_id})
        self.metrics_host = settings.metrics_host
        self.metrics: MetricsServer | None = None
        self.stats = WorkerStats()
        self.state = WorkerState.CREATED
        # A stable id per worker process (static group membership): a restarted worker
        # gets its partitions back at once instead of after the session timeout.
        self.instance_id = settings.instance_id
        self._factory: GroupSourceFactory = plan.group_source_factory()
        self._source: GroupSource | None = None
        self._changelogs: dict[tuple[str, ...], Changelog] = {}
        self.exactly_once = plan.guarantee is Guarantee.EXACTLY_ONCE
        self._txns = TaskTransactions(plan.app_name, self._factory)
        self._routes = SinkRoutes(plan)
        # Whether any source's watermark may follow the wall clock (advance_when_idle).
        self._follow_clock = any(s.watermarks.advance_when_idle for s in plan.sources.values())
        self._checkpointer: Checkpointer | None = None
        self.timings: dict[str, float] = dict.fromkeys(
            ("startup", "poll", "process", "deliver", "checkpoint", "paused"), 0.0
        )
        """Seconds spent in each phase of the loop (for metrics and benchmarks)."""
        self.backpressure = Backpressure(
            poll_ms, plan.batch_size, pause_after_ms, self.stats, self.timings
        )
        self._assignment = Assignment(
            plan,
            self.clock,
            self._changelogs,
            self._txns if self.exactly_once else None,
            self.backpressure,
            self.stats,
        )
        self._group_of = self._assignment.group_of
        self.tasks = self._assignment.tasks
        """The open partition tasks, by topic group and partition."""
        self._markers = WatermarkMarkers(plan, self._group_of)
        self.guard = configured_guard()
        self.progress = Progress(self.stats, lambda: [t.watermark for t in self.tasks.values()])
        self._lock = asyncio.Lock()
        self._stop = asyncio.Event()
        self._signals = 0

    # -- what the worker did (WorkerStats) --------------------------------------------
    @property
    def checkpoints(self) -> int:
        return self.stats.checkpoint_count

    @property
    def pauses(self) -> int:
        return self.stats.pauses

    @property
    def assignments(self) -> int:
        return self.stats.assignments

    @property
    def revocations(self) -> int:
        return self.stats.revocations

    @property
    def redos(self) -> int:
        return self.stats.redos

    @property
    def restored_records(self) -> int:
        return self.stats.restored_records

    # -- lifecycle -----------------------------------------------------------------
    async def run(self) -> None:
        """Consume, process and checkpoint until :meth:`stop` (or SIGTERM / SIGINT)."""
        tune_gc()
        started = time.perf_counter()
        self.state = WorkerState.STARTING
        if self.handle_signals:
            self._install_signal_handlers()
        if self.metrics_port is not None:
            self.metrics = MetricsServer(self.status, self.metrics_host, self.metrics_port)
            await self.metrics.start()
        try:
            await self._run(started)
        finally:
            self.state = WorkerState.STOPPED
            if self.metrics is not None:
                await self.metrics.stop()

    async def _run(self, started: float) -> None:
        self._changelogs.update(await prepare_topics(self.plan, self._factory, self._markers))
        source = self._factory.group_source(
            self.plan.app_name, sorted(self.plan.sources), self.instance_id
        )
        self._source = source
        self._checkpointer = Checkpointer(
            self.plan,
            self._changelogs,
            source,
            self._deliver,
            self.clock,
            self.stats,
            transactions=self._txns if self.exactly_once else None,
            redo=functools.partial(self._assignment.redo, source),
        )
        await source.start(self._on_assigned, self._on_revoked)
        self._checkpointer.begin_interval()
        log.info("worker %s started on topics %s", self.plan.app_name, sorted(self.plan.sources))
        failed = False
        step: asyncio.Task[None] | None = None
        backpressure = self.backpressure
        try:
            timings = self.timings
            clock = time.perf_counter
            pause_after = backpressure.pause_after_ms / 1000
            while step is not None or not self._stop.is_set():
                if step is not None:
                    # Backpressure: poll (every partition paused) while the step runs.
                    step = await backpressure.wait(source, step)
                    continue
                t0 = clock()
                batches = await source.poll(self.poll_ms, self.plan.batch_size)
                t1 = clock()
                timings["poll"] += t1 - t0
                if batches and not timings["startup"]:
                    timings["startup"] = t1 - started
                step = asyncio.create_task(self._step([*backpressure.take_held(), batches]))
                await asyncio.wait((step,), timeout=pause_after)
                if step.done():
                    done, step = step, None
                    done.result()
                else:
                    backpressure.pause(source)
        except Exception:
            # A failed step may have moved offsets past records it did not finish:
            # no checkpoint, so the last snapshot stands and a restart resumes there.
            failed = True
            raise
        finally:
            if step is not None and not step.done():
                # Interrupted (an error, a cancellation) in the middle of its sink work.
                failed = True
                step.cancel()
                await asyncio.gather(step, return_exceptions=True)
            await self._shutdown(source, checkpoint=not failed)

    async def _step(self, fetched: list[Fetched]) -> None:
        """Process the ``fetched`` batches (in the order of their polls), let wall-clock
        time act, deliver the outputs and checkpoint when due: every task is touched under
        the lock that rebalances take."""
        timings = self.timings
        clock = time.perf_counter
        async with self._lock:
            t1 = clock()
            for batches in fetched:
                # One poll at a time: a seek between two polls (a rebalance) may make the
                # second start before the end of the first, which _process then skips.
                self._process(batches)
            now = self.clock.now_ms()
            caught_up = (
                read_to_end(self.tasks.values(), self._source.highwaters())
                if self._follow_clock and self._source is not None
                else ()
            )
            for task in self.tasks.values():
                task.tick(now, caught_up)
            t2 = clock()
            await self._deliver(list(self.tasks.values()))
            t3 = clock()
            checkpointer = self._checkpointer
            # Early when the state caches hold more unsaved entries than memory allows:
            # a snapshot makes them clean, and evictable (evtime/state/memory.py).
            if checkpointer is not None and (
                checkpointer.due(now) or any(t.has_backlog() for t in self.tasks.values())
            ):
                await checkpointer.checkpoint(list(self.tasks.values()))
            t4 = clock()
        timings["process"] += t2 - t1
        timings["deliver"] += t3 - t2
        timings["checkpoint"] += t4 - t3
        self.progress.maybe()

    async def _check_co_partitioned(self) -> None:
        await check_co_partitioned(self.plan, self._factory)

    # -- observability ---------------------------------------------------------------
    def status(self) -> WorkerStatus:
        """What the worker publishes (for /metrics and /healthz)."""
        source = self._source
        running = source is not None and self.state is not WorkerState.STOPPED
        started = running and self.state is not WorkerState.CREATED
        tasks = tuple(
            TaskStatus(
                t.group,
                t.partition,
                dict(t.offsets),
                t.watermark,
                None if t.db.closed else t.db.size(),
                t.clock_driven(),
            )
            for t in list(self.tasks.values())
        )
        checkpointer = self._checkpointer
        return WorkerStatus(
            self.plan.app_name,
            self.state,
            self.clock.now_ms(),
            frozenset(source.assignment()) if source is not None and running else frozenset(),
            source.highwaters() if source is not None and started else {},
            tasks,
            self.stats,
            dict(self.timings),
            self.backpressure.paused,
            self.checkpoints,
            checkpointer.last_ms if checkpointer is not None else 0,
        )

    def health(self) -> dict[str, object]:
        """Readiness for /healthz (see :meth:`WorkerStatus.health`)."""
        return self.status().health()

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
        self.state = WorkerState.STOPPING
        self.progress.line()  # the tasks' watermarks, before they close
        async with self._lock:
            try:
                if self.tasks and checkpoint and self._checkpointer is not None:
                    await self._checkpointer.checkpoint(list(self.tasks.values()))
            finally:
                self._assignment.close()
                # An open transaction that was not committed is aborted with it.
                await self._txns.close_all()
        await source.stop()
        for changelog in self._changelogs.values():
            await changelog.close()
        await close_sinks(self.plan)
        log.info("worker %s stopped after %d checkpoints", self.plan.app_name, self.checkpoints)
        self.progress.summary()

    # -- processing ------------------------------------------------------------------
    def _process(self, batches: Fetched) -> None:
        counts = self.stats.records_in
        for (topic, partition), raws in batches.items():
            task = self.tasks.get((self._group_of[topic], partition))
            if task is None:
                continue  # revoked while the fetch was in flight
            expected = task.offsets[topic]
            if raws[0].offset < expected:
                # Records before the task's position were fetched before a seek (a
                # rebalance moved the position): they are processed already.
                raws = [r for r in raws if r.offset >= expected]
                if not raws:
                    continue
            counts[(topic, partition)] = counts.get((topic, partition), 0) + len(raws)
            dead = len(task.collector.dead)
            task.process(topic, raws)
            self.guard.observe(topic, len(raws), task.collector.dead[dead:])

    async def _deliver(self, tasks: Sequence[PartitionTask]) -> None:
        stats = self.stats
        txns = self._txns
        for task in tasks:
            outputs, dead = task.take()
            count_delivered(stats, task.collector, outputs, dead)
            producer = txns.producer((task.group, task.partition))
            if outputs or dead:
                await self._write(producer, outputs, dead)
            await self._markers.send(task, producer)

    async def _write(
        self, producer: object | None, outputs: dict[str, list[Output]], dead: list[DeadLetter]
    ) -> None:
        """Hand a task's outputs and dead letters to their sinks (exactly-once: inside the
        task's open transaction, given by its ``producer``)."""
        if producer is None:
            await deliver(self.plan, outputs, dead)
        else:
            await self._routes.write_in(producer, outputs, dead)

    # -- rebalance (evtime/runtime/assignment.py) ---------------------------------------
    async def _on_revoked(self, partitions: list[TopicPartition]) -> None:
        async with self._lock, self._rebalancing():
            if self._checkpointer is not None:
                await self._assignment.revoked(self._checkpointer, partitions)

    async def _on_assigned(self, partitions: list[TopicPartition]) -> dict[TopicPartition, int]:
        if self._source is None:
            return {}
        async with self._lock, self._rebalancing():
            return await self._assignment.assigned(self._source, partitions)

    @contextlib.asynccontextmanager
    async def _rebalancing(self) -> AsyncIterator[None]:
        # Not ready (/healthz) while tasks are checkpointed away, opened or restored; ready
        # from the end of the first assignment (the group's join runs after start-up).
        if self.state is WorkerState.RUNNING:
            self.state = WorkerState.REBALANCING
        try:
            yield
        finally:
            if self.state in (WorkerState.STARTING, WorkerState.REBALANCING):
                self.state = WorkerState.RUNNING
