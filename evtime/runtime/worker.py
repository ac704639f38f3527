"""The Kafka worker: partition tasks fed by a consumer group, checkpointed with their offsets.

One asyncio loop, one consumer for every Kafka topic of the app, one task per
assigned partition of each topic group (partition ``p`` of co-partitioned
topics meets in one task). Records are processed a fetched batch at a time.

Backpressure: each fetched batch is processed, delivered and (when due)
checkpointed by one *step*. When a step's sink work is still outstanding after
``pause_after_ms`` (a slow or unreachable sink), every assigned partition is
paused and the consumer keeps being polled, so that the member stays in the
group (``max.poll.interval.ms``) while nothing more is fetched; the partitions
resume when the step is done. At most one batch is processed at a time, and at
most one fetched while paused is held back: memory is bounded at any input rate.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import time
import uuid
from collections.abc import AsyncIterator, Iterable
from typing import Any

from evtime.errors import ConfigError, TransactionFailedError
from evtime.io import (
    Changelog,
    GroupSource,
    GroupSourceFactory,
    TopicPartition,
    Transaction,
    TransactionalDeadLetterSink,
    TransactionalSink,
)
from evtime.names import changelog_topic, check_internal_names, group_name, transactional_id
from evtime.operators.repartition import IDLE, RepartitionSpec
from evtime.plan import Plan
from evtime.records import Guarantee
from evtime.runtime.changelog import marker_record, meta_record, plan_restore, state_record
from evtime.runtime.gc import tune_gc
from evtime.runtime.local import close_sinks, deliver, flush_all
from evtime.runtime.metrics import MetricsServer, WorkerStats, configured_port, sink_names
from evtime.runtime.task import PartitionTask
from evtime.settings import Settings
from evtime.time import MIN_TIMESTAMP, Clock, SystemClock

log = logging.getLogger("evtime.worker")

TaskId = tuple[tuple[str, ...], int]
KEY_CHECKS = 20
"""Batches per opened task whose first record's Kafka key is checked against its key."""


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
        # How long a step's sink work may take before the partitions are paused.
        self.pause_after_ms = pause_after_ms
        self.handle_signals = handle_signals
        # /metrics and /healthz (evtime/runtime/metrics.py): off unless a port is given.
        self.metrics_port = configured_port(metrics_port)
        settings = Settings.load({"metrics_host": metrics_host, "instance_id": instance_id})
        self.metrics_host = settings.metrics_host
        self.metrics: MetricsServer | None = None
        self.stats = WorkerStats()
        self.state = "created"
        """created, starting, running, rebalancing, stopping or stopped (see :meth:`health`)."""
        self._sink_names: dict[int, str] = {}
        # A stable id per worker process (static group membership): a restarted worker
        # gets its partitions back at once instead of after the session timeout.
        self.instance_id = settings.instance_id
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
        self._changelogs: dict[tuple[str, ...], Changelog] = {}
        self._txns: dict[TaskId, Transaction] = {}
        self._repartitions = [op for op in plan.operators if isinstance(op, RepartitionSpec)]
        self._repartitions_of: dict[tuple[str, ...], list[RepartitionSpec]] = {}
        for rspec in self._repartitions:
            self._repartitions_of.setdefault(self._group_of[rspec.source], []).append(rspec)
        self._origin_counts: dict[str, int] = {}
        self.exactly_once = plan.guarantee is Guarantee.EXACTLY_ONCE
        self.timings: dict[str, float] = dict.fromkeys(
            ("startup", "poll", "process", "deliver", "checkpoint", "paused"), 0.0
        )
        """Seconds spent in each phase of the loop (for metrics and benchmarks)."""
        self.restored_records = 0
        self._lock = asyncio.Lock()
        self._stop = asyncio.Event()
        self._signals = 0
        self._last_checkpoint = 0
        self.checkpoints = 0
        self.pauses = 0
        """Backpressure episodes: times the partitions were paused for a slow step."""
        self.assignments = 0
        self.revocations = 0
        self.redos = 0
        """Exactly-once intervals processed again after their transaction could not commit."""
        # Polls that returned records while the partitions were paused (of a partition
        # assigned meanwhile), processed after the step.
        self._held: list[dict[TopicPartition, list[Any]]] = []
        self._paused_at = 0.0

    # -- lifecycle -----------------------------------------------------------------
    async def run(self) -> None:
        """Consume, process and checkpoint until :meth:`stop` (or SIGTERM / SIGINT)."""
        tune_gc()
        started = time.perf_counter()
        self.state = "starting"
        self._sink_names = sink_names(self)
        if self.handle_signals:
            self._install_signal_handlers()
        if self.metrics_port is not None:
            self.metrics = MetricsServer(self, self.metrics_host, self.metrics_port)
            await self.metrics.start()
        try:
            await self._run(started)
        finally:
            self.state = "stopped"
            if self.metrics is not None:
                await self.metrics.stop()

    async def _run(self, started: float) -> None:
        await self._ensure_repartitions()
        await self._check_co_partitioned()
        for group in self.plan.groups():
            changelog = self._factory.changelog(changelog_topic(self.plan.app_name, group))
            await changelog.ensure(group[0])
            self._changelogs[group] = changelog
        source = self._factory.group_source(
            self.plan.app_name, sorted(self.plan.sources), self.instance_id
        )
        self._source = source
        await source.start(self._on_assigned, self._on_revoked)
        self._last_checkpoint = self.clock.now_ms()
        log.info("worker %s started on topics %s", self.plan.app_name, sorted(self.plan.sources))
        failed = False
        step: asyncio.Task[None] | None = None
        try:
            timings = self.timings
            clock = time.perf_counter
            pause_after = self.pause_after_ms / 1000
            while step is not None or not self._stop.is_set():
                if step is not None:
                    # Backpressure: poll (every partition paused) while the step runs.
                    step = await self._wait_paused(source, step)
                    continue
                t0 = clock()
                batches = await source.poll(self.poll_ms, self.plan.batch_size)
                t1 = clock()
                timings["poll"] += t1 - t0
                if batches and not timings["startup"]:
                    timings["startup"] = t1 - started
                held, self._held = self._held, []
                step = asyncio.create_task(self._step([*held, batches]))
                await asyncio.wait((step,), timeout=pause_after)
                if step.done():
                    done, step = step, None
                    done.result()
                else:
                    self._pause(source)
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

    async def _step(self, fetched: list[dict[TopicPartition, list[Any]]]) -> None:
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
                await self._process(batches)
            now = self.clock.now_ms()
            for task in self.tasks.values():
                task.tick(now)
            t2 = clock()
            await self._deliver(self.tasks.values())
            t3 = clock()
            if now - self._last_checkpoint >= self.plan.checkpoint_interval:
                await self._checkpoint(list(self.tasks.values()))
            t4 = clock()
        timings["process"] += t2 - t1
        timings["deliver"] += t3 - t2
        timings["checkpoint"] += t4 - t3

    def _pause(self, source: GroupSource) -> None:
        self._paused_at = time.monotonic()
        self.pauses += 1
        partitions = source.assignment()
        source.pause(partitions)
        log.warning(
            "backpressure: a step (its sink writes, its checkpoint, or a rebalance holding its "
            "tasks) still runs after %.1f s; pausing %d partitions, polling only to stay in "
            "the group",
            self.pause_after_ms / 1000,
            len(partitions),
        )

    async def _wait_paused(
        self, source: GroupSource, step: asyncio.Task[None]
    ) -> asyncio.Task[None] | None:
        """Wait up to ``poll_ms`` for ``step``, then poll once without waiting (the member
        stays in the group); return the step while it runs, None once it is done (the
        partitions resumed)."""
        await asyncio.wait((step,), timeout=self.poll_ms / 1000)
        if not step.done():
            # Partitions assigned meanwhile are not paused yet; pausing is idempotent.
            source.pause(source.assignment())
            batches = await source.poll(0, self.plan.batch_size)
            if batches:
                # Of a partition assigned during the poll (before it could be paused).
                self._held.append(batches)
            return step
        step.result()
        paused = time.monotonic() - self._paused_at
        self._paused_at = 0.0
        self.timings["paused"] += paused
        partitions = source.assignment()
        source.resume(partitions)
        log.info(
            "backpressure: caught up after %.1f s paused; resuming %d partitions",
            paused,
            len(partitions),
        )
        return None

    async def _check_co_partitioned(self) -> None:
        """Topics read by one task (a join) must have equal partition counts: the group
        assigns partition ``p`` of each to the same task, and with unequal counts records
        of one key would meet the other side's in no task."""
        for group in self.plan.groups():
            if len(group) < 2:
                continue
            counts = await self._factory.partition_counts(group)
            if len(set(counts.values())) > 1:
                found = ", ".join(f"{t!r} has {counts[t]}" for t in group)
                raise ConfigError(
                    f"topics {list(group)} are joined, so they must be co-partitioned, but "
                    f"their partition counts differ: {found}. Create them with equal "
                    "partition counts (and the same key partitioning), or repartition one: "
                    f"app.repartition(source, key=..., partitions={max(counts.values())})"
                )

    # -- observability ---------------------------------------------------------------
    def assigned(self) -> set[TopicPartition]:
        """The input partitions assigned to this worker now."""
        source = self._source
        return source.assignment() if source is not None and self.state != "stopped" else set()

    def highwaters(self) -> dict[TopicPartition, int]:
        """Each assigned partition's end offset as of its last fetch (when the source knows)."""
        source = self._source
        read = getattr(source, "highwaters", None)
        if read is None or self.state in ("created", "stopped"):
            return {}
        result: dict[TopicPartition, int] = read()
        return result

    def health(self) -> dict[str, Any]:
        """Readiness for /healthz: ready while running with the assigned partitions' tasks
        open (not while starting, rebalancing, restoring or stopping)."""
        now = self.clock.now_ms()
        return {
            "ready": self.state == "running",
            "state": self.state,
            "app": self.plan.app_name,
            "assigned": sorted(f"{t}[{p}]" for t, p in self.assigned()),
            "tasks": len(self.tasks),
            "paused": self._paused_at > 0,
            "checkpoints": self.checkpoints,
            "last_checkpoint_age_s": (
                round((now - self._last_checkpoint) / 1000, 3) if self._last_checkpoint else None
            ),
        }

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
        self.state = "stopping"
        async with self._lock:
            try:
                if self.tasks and checkpoint:
                    await self._checkpoint(list(self.tasks.values()))
            finally:
                for task in self.tasks.values():
                    task.close()
                self.tasks.clear()
                for txn in self._txns.values():
                    # An open transaction that was not committed is aborted with it.
                    await txn.close()
                self._txns.clear()
        await source.stop()
        for changelog in self._changelogs.values():
            await changelog.close()
        await close_sinks(self.plan)
        log.info("worker %s stopped after %d checkpoints", self.plan.app_name, self.checkpoints)

    # -- processing ------------------------------------------------------------------
    async def _process(self, batches: dict[TopicPartition, list[Any]]) -> None:
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
            counts = self.stats.records_in
            counts[(topic, partition)] = counts.get((topic, partition), 0) + len(raws)
            task.process(topic, raws)

    async def _deliver(self, tasks: Iterable[PartitionTask]) -> None:
        stats = self.stats
        for task in tasks:
            outputs, dead = task.take()
            if task.collector.late_count:
                stats.late_records += task.collector.late_count
                task.collector.late_count = 0
            if outputs or dead:
                for output_id, batch in outputs.items():
                    stats.records_out[output_id] = stats.records_out.get(output_id, 0) + len(batch)
                for letter in dead:
                    reason = letter.reason.value
                    stats.dead_letters[reason] = stats.dead_letters.get(reason, 0) + 1
                await self._write(task, outputs, dead)
            await self._send_watermarks(task)

    async def _write(
        self, task: PartitionTask, outputs: dict[str, list[Any]], dead: list[Any]
    ) -> None:
        """Hand a task's outputs and dead letters to their sinks."""
        txn = self._txns.get((task.group, task.partition))
        if txn is None:
            await deliver(self.plan, outputs, dead)
            return
        # Exactly-once: Kafka sinks write inside the task's open transaction.
        for output_id, batch in outputs.items():
            sink = self.plan.sinks[output_id]
            if isinstance(sink, TransactionalSink):
                await sink.write_in(txn.producer, batch)
            else:
                await sink.write(batch)
        dl = self.plan.dead_letter
        if dead and isinstance(dl, TransactionalDeadLetterSink):
            await dl.write_dead_in(txn.producer, dead)
        elif dead:
            await deliver(self.plan, {}, dead)

    # -- repartitions ---------------------------------------------------------------------
    async def _ensure_repartitions(self) -> None:
        """Create each repartition's internal topic (its declared partition count, or its
        source's) before the co-partitioning check and the changelogs need it."""
        for spec in self._repartitions:
            count = (await self._factory.partition_counts([spec.source]))[spec.source]
            self._origin_counts[spec.source] = count
            sink: Any = self.plan.sinks[spec.output]
            await sink.ensure(spec.partitions or count)

    async def _send_watermarks(self, task: PartitionTask) -> None:
        """After a step's records of a repartitioned source partition, its watermark (or its
        idleness) goes to every partition of the internal topic, behind those records."""
        specs = self._repartitions_of.get(task.group)
        if not specs:
            return
        tracker = task.tracker
        for spec in specs:
            source = (spec.source, task.partition)
            idle = tracker.is_idle(source)
            mark = IDLE if idle else tracker.current
            if mark == task.sent_watermark or (mark != IDLE and mark <= MIN_TIMESTAMP):
                continue
            sink: Any = self.plan.sinks[spec.output]
            count = self._origin_counts[spec.source]
            txn = self._txns.get((task.group, task.partition))
            if txn is None:
                await sink.write_watermark(task.partition, count, mark)
            else:
                await sink.write_watermark_in(txn.producer, task.partition, count, mark)
            task.sent_watermark = mark

    async def _checkpoint(self, tasks: list[PartitionTask]) -> None:
        """Checkpoint ``tasks`` (at-least-once).

        1. Deliver every pending output and flush every sink, awaiting each
           acknowledgement.
        2. Append each task's dirty state entries (and a META record with its
           offsets and watermarks) to its changelog partition, every record
           carrying the checkpoint's input offsets; await the acknowledgements.
        3. Write each task's dirty state, timers, watermarks, next input offsets
           and changelog end offset in one synced RocksDB WriteBatch.
        4. Commit the same input offsets to the consumer group.

        A crash before 3 replays from the previous snapshot (outputs may repeat,
        identically; the changelog records of the lost checkpoint are skipped
        by every restore, see evtime/runtime/changelog.py); a crash between 3
        and 4 leaves the database ahead of the group, and the database wins on
        restart.
        """
        if self._source is None:
            return
        began = time.perf_counter()
        await self._deliver(tasks)
        for sink, seconds in await flush_all(self.plan):
            self.stats.flushed(self._sink_names.get(id(sink), type(sink).__name__), seconds)
        prepared = []
        changes = 0
        appends: dict[tuple[str, ...], dict[int, Any]] = {}
        for task in tasks:
            prep = task.db.prepare(collect_changes=True)
            meta = task.snapshot_meta()
            records = [state_record(c) for c in prep.changes]
            changes += len(records)
            records.append(meta_record(meta["offsets"], meta["watermarks"]))
            appends.setdefault(task.group, {})[task.partition] = (records, meta["offsets"])
            prepared.append((task, prep, meta))
        if self.exactly_once:
            await self._commit_transactions(prepared, appends)
        else:
            ends: dict[tuple[str, ...], dict[int, int]] = {}
            epochs = {(t.group, t.partition): t.epoch for t in tasks if t.epoch is not None}
            for group, batches in appends.items():
                ends[group] = await self._changelogs[group].append(
                    batches, epochs={p: e for (g, p), e in epochs.items() if g == group}
                )
            offsets: dict[TopicPartition, int] = {}
            for task, prep, meta in prepared:
                meta["changelog_end"] = ends[task.group][task.partition]
                task.db.apply(prep, meta)
                task.checkpoints += 1
                offsets.update(_next_offsets(task))
            await self._source.commit(offsets)
        self._last_checkpoint = self.clock.now_ms()
        self.checkpoints += 1
        took = time.perf_counter() - began
        stats = self.stats
        stats.checkpoint_count += 1
        stats.checkpoint_seconds += took
        stats.checkpoint_last_seconds = took
        stats.checkpoint_changes += changes
        stats.checkpoint_last_changes = changes

    async def _commit_transactions(
        self, prepared: list[tuple[PartitionTask, Any, dict[str, Any]]], appends: dict[Any, Any]
    ) -> None:
        """Exactly-once, per task: the changelog entries join the task's transaction (its
        outputs are in it already), the input offsets are added as the group's, the
        transaction commits, and only then is the snapshot written to RocksDB. A new
        transaction begins at once for the next interval."""
        if self._source is None:
            return
        for task, prep, meta in prepared:
            tid = (task.group, task.partition)
            txn = self._txns[tid]
            batch = appends[task.group][task.partition]
            try:
                ends = await self._changelogs[task.group].append(
                    {task.partition: batch},
                    producer=txn.producer,
                    epochs={task.partition: task.epoch} if task.epoch is not None else None,
                )
                await txn.commit(_next_offsets(task), self._source.group_id)
            except TransactionFailedError as exc:
                await self._redo_interval(task, exc)
                continue
            meta["changelog_end"] = ends[task.partition]
            task.db.apply(prep, meta)
            task.checkpoints += 1
            await txn.begin()

    def _transaction_id(self, tid: TaskId) -> str:
        """A task's stable transactional id: starting it fences the task's previous owner."""
        return transactional_id(self.plan.app_name, tid[0], tid[1])

    async def _redo_interval(self, task: PartitionTask, exc: Exception) -> None:
        """Exactly-once, a transaction that cannot commit (some of its records were not
        delivered: a broker outage longer than the delivery timeout): it is aborted (a new
        transactional producer fences the old one), the task goes back to its last
        checkpoint (its database is written only after a commit) and its partitions are
        fetched again from there. Nothing of the interval was visible to read_committed
        consumers; it is processed again."""
        if self._source is None:
            return
        tid = (task.group, task.partition)
        self.redos += 1
        log.warning(
            "%s[%d]: %s; aborting the transaction and processing again from the last "
            "checkpoint %s",
            group_name(task.group),
            task.partition,
            exc,
            task.db.get_meta("offsets"),
        )
        old = self._txns.pop(tid)
        with contextlib.suppress(Exception):
            await old.close()
        epoch = task.epoch
        task.close()
        fresh = self.tasks[tid] = PartitionTask(self.plan, task.group, task.partition, self.clock)
        fresh.epoch = epoch  # the same run: no other owner came in between
        txn = self._factory.transaction(self._transaction_id(tid))
        await txn.begin()
        self._txns[tid] = txn
        partitions = [(topic, task.partition) for topic in task.group]
        self._drop_held(partitions)
        self._source.seek({tp: fresh.offsets[tp[0]] for tp in partitions})

    # -- rebalance -------------------------------------------------------------------
    async def _on_revoked(self, partitions: list[TopicPartition]) -> None:
        async with self._lock, self._rebalancing():
            self.revocations += 1
            # Not processed: the next owner (or this worker, after a seek) fetches them.
            self._drop_held(partitions)
            ids = {(self._group_of[t], p) for t, p in partitions}
            tasks = [self.tasks[i] for i in ids if i in self.tasks]
            if tasks:
                await self._checkpoint(tasks)
            for i in ids:
                task = self.tasks.pop(i, None)
                if task is not None:
                    task.close()
                txn = self._txns.pop(i, None)
                if txn is not None:
                    await txn.close()
            log.info("revoked %s", sorted(partitions))

    @contextlib.asynccontextmanager
    async def _rebalancing(self) -> AsyncIterator[None]:
        # Not ready (/healthz) while tasks are checkpointed away, opened or restored; ready
        # from the end of the first assignment (the group's join runs after start-up).
        if self.state == "running":
            self.state = "rebalancing"
        try:
            yield
        finally:
            if self.state in ("starting", "rebalancing"):
                self.state = "running"

    def _drop_held(self, partitions: list[TopicPartition]) -> None:
        for batches in self._held:
            for tp in partitions:
                batches.pop(tp, None)

    async def _on_assigned(self, partitions: list[TopicPartition]) -> dict[TopicPartition, int]:
        """Open the tasks of new partitions, reconcile their state, choose where they resume.

        The task's database and the group's committed offsets are compared:
        database equal or ahead (a crash between snapshot and commit): the
        database wins. Database behind the group, or no database (the
        partition moved here): the changelog is replayed from the database's
        changelog position (or the beginning), applying only records of
        checkpoints that a later run or the group committed to; the task then
        resumes from the last checkpoint applied. Every opened task first
        appends an epoch marker naming the offsets it resumes from.
        """
        if self._source is None:
            return {}
        async with self._lock, self._rebalancing():
            if self.exactly_once:
                # Fence the task's previous producer (a zombie owner) first: that aborts its
                # open transaction, so committed offsets and the changelog are stable.
                for topic, partition in partitions:
                    tid = (self._group_of[topic], partition)
                    if tid not in self._txns:
                        txn = self._factory.transaction(self._transaction_id(tid))
                        await txn.begin()
                        self._txns[tid] = txn
            self.assignments += 1
            self._drop_held(partitions)  # each partition is sought to its task's offset
            committed = await self._source.committed(partitions)
            starts: dict[TopicPartition, int] = {}
            markers: dict[tuple[str, ...], dict[int, Any]] = {}
            new: dict[tuple[str, ...], set[int]] = {}
            for topic, partition in partitions:
                if (self._group_of[topic], partition) not in self.tasks:
                    new.setdefault(self._group_of[topic], set()).add(partition)
            # Where each new task's changelog ends, in one request per changelog.
            ends = {
                group: await self._changelogs[group].end_offsets(sorted(parts))
                for group, parts in new.items()
            }
            for topic, partition in partitions:
                tid = (self._group_of[topic], partition)
                if tid not in self.tasks:
                    group_offsets = {t: committed.get((t, partition), 0) for t in tid[0]}
                    end = ends[tid[0]].get(partition)
                    task = self.tasks[tid] = await self._open_task(tid, group_offsets, end)
                    task.epoch = uuid.uuid4().hex
                    marker = marker_record(task.epoch, dict(task.offsets))
                    markers.setdefault(tid[0], {})[partition] = ([marker], None)
                starts[(topic, partition)] = self.tasks[tid].offsets[topic]
            # The epoch markers of every opened task of a changelog, in one append.
            for group, batches in markers.items():
                await self._changelogs[group].append(batches)
            log.info("assigned %s", sorted(partitions))
            return starts

    async def _open_task(
        self, tid: TaskId, committed: dict[str, int], end: int | None = None
    ) -> PartitionTask:
        """Open a task and restore what its database lacks from the changelog (``end``:
        the changelog partition's end offset, if known: nothing to read at the end)."""
        group, partition = tid
        changelog = self._changelogs[group]
        task = PartitionTask(self.plan, group, partition, self.clock)
        behind = any(task.offsets[t] < committed.get(t, 0) for t in group)
        if not task.restored or behind:
            start = int(task.db.get_meta("changelog_end") or 0) if task.restored else 0
            started = time.monotonic()
            records = [] if end is not None and start >= end else await changelog.read(
                partition, start
            )
            plan = plan_restore(records, committed)
            meta: dict[str, Any] = {}
            if plan.offsets is not None:
                meta["offsets"] = plan.offsets
                meta["watermarks"] = plan.watermarks
            if records:
                meta["changelog_end"] = records[-1].offset + 1
                task.db.write_changes(plan.changes, meta)
                # Reopened: the operators read their state (and what is persisted) at open.
                task.close()
                task = PartitionTask(self.plan, group, partition, self.clock)
            self.restored_records += plan.applied
            took = time.monotonic() - started
            log.info(
                "%s[%d]: restored %d changelog records (%d skipped: uncommitted) from offset "
                "%d in %.1f s (%.0f records/s); resuming at %s",
                group_name(group),
                partition,
                plan.applied,
                plan.skipped,
                start,
                took,
                len(records) / max(took, 1e-6),
                task.offsets,
            )
        elif any(task.offsets[t] > committed.get(t, 0) for t in group):
            log.info(
                "%s[%d]: local state ahead of the group (%s > %s): the local state wins",
                group_name(group),
                partition,
                task.offsets,
                committed,
            )
        task.key_checks = KEY_CHECKS
        return task


def _next_offsets(task: PartitionTask) -> dict[TopicPartition, int]:
    """The task's next input offsets, as the group commits them."""
    return {
        (topic, task.partition): task.offsets[topic]
        for topic in task.group
        if task.offsets[topic] > 0
    }
