"""A worker's Prometheus metrics and health, served over HTTP (DESIGN.md section 9).

Nothing is measured per record: the worker keeps plain counters per fetched batch,
per delivery and per checkpoint (evtime/runtime/status.py), and everything else
(watermarks, lag, state size) is in the status value the worker builds when Prometheus
scrapes: this module reads that value, never the worker.

``GET /metrics``       the metrics, in Prometheus' text format;
``GET /healthz``       readiness: 200 while the worker runs with its partitions' tasks
                       open, 503 while it starts, rebalances (restores state) or stops;
                       a JSON body says which, with the assigned partitions and the age
                       of the last checkpoint;
``GET /healthz/live``  liveness: 200 whenever the worker's event loop answers (a loop
                       blocked by user code cannot);
``GET /``              the live status page, drawn from ``GET /status.json``
                       (evtime/runtime/status_page.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterable, Iterator

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    Metric,
    SummaryMetricFamily,
)
from prometheus_client.registry import Collector

from evtime.names import group_name
from evtime.runtime.status import WorkerStatus
from evtime.runtime.status_page import Throughput, json_response, page, serve, status_document
from evtime.settings import Settings
from evtime.state.memory import memory_stats
from evtime.time import MIN_TIMESTAMP

log = logging.getLogger("evtime.metrics")


def configured_port(port: int | None) -> int | None:
    """The metrics port: ``port`` if given, else ``EVTIME_METRICS_PORT``; None: not served."""
    return Settings.load({"metrics_port": port}).metrics_port


class WorkerCollector(Collector):
    """Reads a worker's status when scraped."""

    def __init__(self, status: Callable[[], WorkerStatus]) -> None:
        self._status = status

    def collect(self) -> Iterator[Metric]:
        w = self._status()
        stats = w.stats
        app = w.app
        now_ms = w.now_ms
        counter, gauge = CounterMetricFamily, GaugeMetricFamily

        yield _family(counter, "evtime_records_in", "Records read, per input topic and partition",
                      app, ["topic", "partition"],
                      [([t, str(p)], n) for (t, p), n in sorted(stats.records_in.items())])
        yield _family(counter, "evtime_records_out", "Outputs handed to their sink, per output",
                      app, ["output"], [([o], n) for o, n in sorted(stats.records_out.items())])
        yield _family(counter, "evtime_dead_letters",
                      "Records sent to the dead-letter output, per reason", app, ["reason"],
                      [([r], n) for r, n in sorted(stats.dead_letters.items())])

        lag: list[tuple[list[str], float]] = []
        watermarks: list[tuple[list[str], float]] = []
        delays: list[tuple[list[str], float]] = []
        sizes: list[tuple[list[str], float]] = []
        entries: list[tuple[list[str], float]] = []
        clock: list[tuple[list[str], float]] = []
        highwaters = w.highwaters
        for task in w.tasks:
            labels = [group_name(task.group), str(task.partition)]
            for topic in task.group:
                clock.append(([topic, labels[1]], 1.0 if topic in task.clock_driven else 0.0))
                end = highwaters.get((topic, task.partition))
                if end is not None:
                    lag.append(([topic, labels[1]], max(0, end - task.offsets[topic])))
            wm = task.watermark
            if wm > MIN_TIMESTAMP:  # no watermark before the first record
                watermarks.append((labels, wm))
                delays.append((labels, max(0.0, (now_ms - wm) / 1000)))
            if task.state_size is not None:
                size, keys = task.state_size
                sizes.append((labels, size))
                entries.append((labels, keys))
        yield _family(gauge, "evtime_consumer_lag", "Records between a partition's next offset "
                      "and the end of the partition at the last fetch", app,
                      ["topic", "partition"], lag)
        yield _family(gauge, "evtime_watermark_follows_clock", "1 while a partition's "
                      "watermark follows the wall clock (quiet and read to its end, "
                      "advance_when_idle), 0 while it follows its records", app,
                      ["topic", "partition"], clock)
        task_labels = ["topics", "partition"]
        yield _family(gauge, "evtime_watermark_ms", "Watermark of a partition task (event time, "
                      "ms since the epoch)", app, task_labels, watermarks)
        yield _family(gauge, "evtime_watermark_delay_seconds", "How far a task's watermark is "
                      "behind the wall clock", app, task_labels, delays)
        yield _family(gauge, "evtime_state_bytes", "RocksDB size of a task's state (SST files "
                      "and memtables)", app, task_labels, sizes)
        yield _family(gauge, "evtime_state_keys", "RocksDB's estimate of the entries of a "
                      "task's state", app, task_labels, entries)

        checkpoints = SummaryMetricFamily(
            "evtime_checkpoint_seconds", "Checkpoints (flush, changelog, snapshot, commit) and "
            "the seconds they took", labels=["app"],
        )
        checkpoints.add_metric([app], stats.checkpoint_count, stats.checkpoint_seconds)
        yield checkpoints
        flushes = SummaryMetricFamily(
            "evtime_sink_flush_seconds", "Sink flushes (every write acknowledged) and the "
            "seconds they took, per sink", labels=["app", "sink"],
        )
        for sink, (count, total) in sorted(stats.sink_flushes.items()):
            flushes.add_metric([app, sink], count, total)
        yield flushes
        yield _family(counter, "evtime_loop_seconds", "Seconds the worker loop spent per phase",
                      app, ["phase"], [([phase], t) for phase, t in w.timings.items()])

        for kind, name, help_, value in (
            (counter, "evtime_late_records", "Records behind the watermark (to the late output "
             "or the dead letters)", stats.late_records),
            (gauge, "evtime_checkpoint_last_seconds", "Duration of the last checkpoint",
             stats.checkpoint_last_seconds),
            (counter, "evtime_checkpoint_changes", "State entries written to the changelog by "
             "checkpoints", stats.checkpoint_changes),
            (gauge, "evtime_checkpoint_last_changes", "State entries written by the last "
             "checkpoint", stats.checkpoint_last_changes),
            (gauge, "evtime_assigned_partitions", "Input partitions assigned to this worker",
             len(w.assigned)),
            (gauge, "evtime_tasks", "Partition tasks open in this worker", len(w.tasks)),
            (counter, "evtime_rebalances_assigned", "Partition assignments handled",
             stats.assignments),
            (counter, "evtime_rebalances_revoked", "Partition revocations handled",
             stats.revocations),
            (counter, "evtime_backpressure_pauses", "Times the partitions were paused for a "
             "slow sink", stats.pauses),
            (counter, "evtime_restored_records", "Changelog records applied by state restores",
             stats.restored_records),
            (counter, "evtime_transactions_redone", "Exactly-once intervals processed again "
             "after their transaction could not commit", stats.redos),
        ):
            yield _family(kind, name, help_, app, [], [([], value)])
        yield from _memory_families(app)


def _memory_families(app: str) -> Iterator[Metric]:
    """The process's memory budget and its use (evtime/state/memory.py)."""
    m = memory_stats()
    for name, help_, value in (
        ("evtime_memory_budget_bytes", "The process's memory budget (memory_budget)", m.budget),
        ("evtime_memory_block_cache_bytes", "RocksDB's shared block cache in use (memtable "
         "reservations included)", m.block_cache_usage),
        ("evtime_memory_memtable_bytes", "RocksDB's memtables, every task", m.memtable_usage),
        ("evtime_memory_python_cache_bytes", "Estimated bytes of the state caches' entries",
         m.python_cache_bytes),
        ("evtime_memory_python_cache_entries", "Entries of the state caches",
         m.python_cache_entries),
    ):
        yield _family(GaugeMetricFamily, name, help_, app, [], [([], value)])


def _family(
    kind: type[CounterMetricFamily] | type[GaugeMetricFamily],
    name: str,
    help_: str,
    app: str,
    labels: list[str],
    rows: Iterable[tuple[list[str], float]],
) -> Metric:
    """A metric family labelled ``app`` and ``labels``, with one sample per row."""
    family = kind(name, help_, labels=["app", *labels])
    for values, value in rows:
        family.add_metric([app, *values], value)
    return family


class MetricsServer:
    """``/metrics``, ``/healthz``, ``/healthz/live`` and the status page (``/``,
    ``/status.json``) on ``host:port``, in the worker's loop."""

    def __init__(self, status: Callable[[], WorkerStatus], host: str, port: int) -> None:
        self._status = status
        self.host = host
        self.port = port
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(WorkerCollector(status))
        self._runner: web.AppRunner | None = None
        self.throughput = Throughput(status)
        self._sampler: asyncio.Task[None] | None = None

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/healthz", self._ready)
        app.router.add_get("/healthz/live", self._live)
        app.router.add_get("/", page)
        app.router.add_get("/status.json", self._status_json)
        self._runner, self.port = await serve(app, self.host, self.port, "metrics")
        self._sampler = asyncio.create_task(self.throughput.run())
        log.info(
            "metrics on http://%s:%d/metrics, health on /healthz, status page on /",
            self.host, self.port,
        )

    async def stop(self) -> None:
        if self._sampler is not None:
            sampler, self._sampler = self._sampler, None
            sampler.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sampler
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()

    async def _metrics(self, request: web.Request) -> web.Response:
        body = generate_latest(self.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def _ready(self, request: web.Request) -> web.Response:
        health = self._status().health()
        return json_response(health, 200 if health["ready"] else 503)

    async def _live(self, request: web.Request) -> web.Response:
        return json_response({"live": True, "state": self._status().state.value})

    async def _status_json(self, request: web.Request) -> web.Response:
        return json_response(status_document(self._status(), list(self.throughput.samples)))
