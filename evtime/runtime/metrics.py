"""A worker's Prometheus metrics and health, served over HTTP (DESIGN.md section 9).

Nothing is measured per record: the worker keeps plain counters per fetched batch,
per delivery and per checkpoint (:class:`WorkerStats`), and everything else
(watermarks, lag, state size) is read from the worker when Prometheus scrapes.

``GET /metrics``       the metrics, in Prometheus' text format;
``GET /healthz``       readiness: 200 while the worker runs with its partitions' tasks
                       open, 503 while it starts, rebalances (restores state) or stops;
                       a JSON body says which, with the assigned partitions and the age
                       of the last checkpoint;
``GET /healthz/live``  liveness: 200 whenever the worker's event loop answers (a loop
                       blocked by user code cannot).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import orjson
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    Metric,
    SummaryMetricFamily,
)
from prometheus_client.registry import Collector

from evtime.io import TopicPartition

if TYPE_CHECKING:
    from evtime.runtime.worker import Worker

log = logging.getLogger("evtime.metrics")


@dataclass
class WorkerStats:
    """Counters the worker keeps as it goes (since the process started)."""

    records_in: dict[TopicPartition, int] = field(default_factory=dict)
    """Records fetched and handed to their task, per input topic-partition."""
    records_out: dict[str, int] = field(default_factory=dict)
    """Outputs handed to their sink, per output id (``<operator>/main``, ``<operator>/late``)."""
    dead_letters: dict[str, int] = field(default_factory=dict)
    """Records sent to the dead-letter output, per reason."""
    late_records: int = 0
    checkpoint_count: int = 0
    checkpoint_seconds: float = 0.0
    checkpoint_last_seconds: float = 0.0
    checkpoint_changes: int = 0
    """State entries written to the changelog by checkpoints."""
    checkpoint_last_changes: int = 0
    sink_flushes: dict[str, tuple[int, float]] = field(default_factory=dict)
    """Per sink: flushes and the seconds they took (a flush awaits every acknowledgement)."""

    def flushed(self, sink: str, seconds: float) -> None:
        count, total = self.sink_flushes.get(sink, (0, 0.0))
        self.sink_flushes[sink] = (count + 1, total + seconds)


def sink_names(worker: Worker) -> dict[int, str]:
    """A label per distinct sink (by id): the output ids it serves, or ``dead-letters``."""
    names: dict[int, list[str]] = {}
    for output_id, sink in worker.plan.sinks.items():
        names.setdefault(id(sink), []).append(output_id)
    out = {key: "+".join(sorted(ids)) for key, ids in names.items()}
    if worker.plan.dead_letter is not None:
        out.setdefault(id(worker.plan.dead_letter), "dead-letters")
    return out


class WorkerCollector(Collector):
    """Reads a worker's state and counters when scraped."""

    def __init__(self, worker: Worker) -> None:
        self._worker = worker

    def collect(self) -> Iterator[Metric]:
        w = self._worker
        stats = w.stats
        app = w.plan.app_name
        now_ms = w.clock.now_ms()

        records_in = CounterMetricFamily(
            "evtime_records_in", "Records read, per input topic and partition",
            labels=["app", "topic", "partition"],
        )
        for (topic, partition), n in sorted(stats.records_in.items()):
            records_in.add_metric([app, topic, str(partition)], n)
        yield records_in

        records_out = CounterMetricFamily(
            "evtime_records_out", "Outputs handed to their sink, per output",
            labels=["app", "output"],
        )
        for output, n in sorted(stats.records_out.items()):
            records_out.add_metric([app, output], n)
        yield records_out

        dead = CounterMetricFamily(
            "evtime_dead_letters", "Records sent to the dead-letter output, per reason",
            labels=["app", "reason"],
        )
        for reason, n in sorted(stats.dead_letters.items()):
            dead.add_metric([app, reason], n)
        yield dead

        late = CounterMetricFamily(
            "evtime_late_records", "Records behind the watermark (to the late output or the "
            "dead letters)", labels=["app"],
        )
        late.add_metric([app], stats.late_records)
        yield late

        lag = GaugeMetricFamily(
            "evtime_consumer_lag", "Records between a partition's next offset and the end of "
            "the partition at the last fetch", labels=["app", "topic", "partition"],
        )
        highwaters = w.highwaters()
        watermark = GaugeMetricFamily(
            "evtime_watermark_ms", "Watermark of a partition task (event time, ms since the "
            "epoch)", labels=["app", "topics", "partition"],
        )
        delay = GaugeMetricFamily(
            "evtime_watermark_delay_seconds", "How far a task's watermark is behind the wall "
            "clock", labels=["app", "topics", "partition"],
        )
        state_bytes = GaugeMetricFamily(
            "evtime_state_bytes", "RocksDB size of a task's state (SST files and memtables)",
            labels=["app", "topics", "partition"],
        )
        state_keys = GaugeMetricFamily(
            "evtime_state_keys", "RocksDB's estimate of the entries of a task's state",
            labels=["app", "topics", "partition"],
        )
        for task in list(w.tasks.values()):
            topics, part = "+".join(task.group), str(task.partition)
            for topic in task.group:
                end = highwaters.get((topic, task.partition))
                if end is not None:
                    lag.add_metric([app, topic, part], max(0, end - task.offsets[topic]))
            wm = task.tracker.current
            if wm > -(2**62):  # no watermark before the first record
                watermark.add_metric([app, topics, part], wm)
                delay.add_metric([app, topics, part], max(0.0, (now_ms - wm) / 1000))
            if not task.db.closed:
                size, keys = task.db.size()
                state_bytes.add_metric([app, topics, part], size)
                state_keys.add_metric([app, topics, part], keys)
        yield from (lag, watermark, delay, state_bytes, state_keys)

        checkpoints = SummaryMetricFamily(
            "evtime_checkpoint_seconds", "Checkpoints (flush, changelog, snapshot, commit) and "
            "the seconds they took", labels=["app"],
        )
        checkpoints.add_metric([app], stats.checkpoint_count, stats.checkpoint_seconds)
        yield checkpoints
        last = GaugeMetricFamily(
            "evtime_checkpoint_last_seconds", "Duration of the last checkpoint", labels=["app"]
        )
        last.add_metric([app], stats.checkpoint_last_seconds)
        yield last
        changes = CounterMetricFamily(
            "evtime_checkpoint_changes", "State entries written to the changelog by checkpoints",
            labels=["app"],
        )
        changes.add_metric([app], stats.checkpoint_changes)
        yield changes
        last_changes = GaugeMetricFamily(
            "evtime_checkpoint_last_changes", "State entries written by the last checkpoint",
            labels=["app"],
        )
        last_changes.add_metric([app], stats.checkpoint_last_changes)
        yield last_changes

        flushes = SummaryMetricFamily(
            "evtime_sink_flush_seconds", "Sink flushes (every write acknowledged) and the "
            "seconds they took, per sink", labels=["app", "sink"],
        )
        for sink, (count, total) in sorted(stats.sink_flushes.items()):
            flushes.add_metric([app, sink], count, total)
        yield flushes

        phases = CounterMetricFamily(
            "evtime_loop_seconds", "Seconds the worker loop spent per phase",
            labels=["app", "phase"],
        )
        for phase, seconds in w.timings.items():
            phases.add_metric([app, phase], seconds)
        yield phases

        for name, help_, value in (
            ("evtime_assigned_partitions", "Input partitions assigned to this worker",
             len(w.assigned())),
            ("evtime_tasks", "Partition tasks open in this worker", len(w.tasks)),
        ):
            gauge = GaugeMetricFamily(name, help_, labels=["app"])
            gauge.add_metric([app], value)
            yield gauge
        for name, help_, value in (
            ("evtime_rebalances_assigned", "Partition assignments handled", w.assignments),
            ("evtime_rebalances_revoked", "Partition revocations handled", w.revocations),
            ("evtime_backpressure_pauses", "Times the partitions were paused for a slow sink",
             w.pauses),
            ("evtime_restored_records", "Changelog records applied by state restores",
             w.restored_records),
            ("evtime_transactions_redone", "Exactly-once intervals processed again after "
             "their transaction could not commit", w.redos),
        ):
            counter = CounterMetricFamily(name, help_, labels=["app"])
            counter.add_metric([app], value)
            yield counter


class MetricsServer:
    """``/metrics``, ``/healthz`` and ``/healthz/live`` on ``host:port``, in the worker's loop."""

    def __init__(self, worker: Worker, host: str, port: int) -> None:
        self._worker = worker
        self.host = host
        self.port = port
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(WorkerCollector(worker))
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/healthz", self._ready)
        app.router.add_get("/healthz/live", self._live)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, self.host, self.port)
        try:
            await site.start()
        except OSError as exc:
            await runner.cleanup()
            raise OSError(
                exc.errno,
                f"cannot serve metrics on {self.host}:{self.port} ({exc.strerror}); give "
                "another --metrics-port (EVTIME_METRICS_PORT), or 0 for any free port",
            ) from exc
        self._runner = runner
        if runner.addresses:  # the port bound (port 0: any free one)
            self.port = int(runner.addresses[0][1])
        log.info("metrics on http://%s:%d/metrics, health on /healthz", self.host, self.port)

    async def stop(self) -> None:
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()

    async def _metrics(self, request: web.Request) -> web.Response:
        body = generate_latest(self.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def _ready(self, request: web.Request) -> web.Response:
        health = self._worker.health()
        return _json(health, 200 if health["ready"] else 503)

    async def _live(self, request: web.Request) -> web.Response:
        return _json({"live": True, "state": self._worker.state}, 200)


def _json(body: dict[str, Any], status: int) -> web.Response:
    return web.Response(body=orjson.dumps(body), status=status, content_type="application/json")
