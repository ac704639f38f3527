"""Backpressure in the Kafka worker (DESIGN.md §7): a sink slower than the consumer's
``max_poll_interval_ms`` pauses the partitions, and the worker keeps polling so that it
stays in its group; the output is then complete and equal to the brute-force reference.

The worker runs in this process on the real broker, with a sink that blocks until the
test opens it (as the Elasticsearch sink does while it retries an unreachable cluster).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from evtime import App, Count, Tumbling, WindowResult
from evtime.connectors.kafka import KafkaGroupSource, KafkaSource
from evtime.records import Output
from evtime.runtime.worker import Worker
from tests.integration.kafka_helpers import (
    check_windows,
    create_topics,
    keyed_stream,
    produce,
    reference_counts,
)

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

PARTITIONS = 4
SIZE = 10_000
OOO = 5_000
# Deliberately small: a worker that stopped polling for longer would leave the group.
MAX_POLL_MS = 3_000


class GatedSink:
    """Keeps every output; while the gate is closed, ``write`` blocks (a sink retrying)."""

    def __init__(self) -> None:
        self.outputs: list[Output] = []
        self.gate = asyncio.Event()
        self.gate.set()
        self.blocked = asyncio.Event()

    async def write(self, outputs: Sequence[Output]) -> None:
        if not self.gate.is_set():
            self.blocked.set()
            await self.gate.wait()
        self.outputs.extend(outputs)

    async def flush(self) -> None:
        return None

    async def close(self) -> None:
        return None


def _app(name: str, topic: str, bootstrap: str, state_dir: Path, sink: GatedSink) -> App:
    app = App(name, state_dir=state_dir, checkpoint_interval="300ms")
    events = app.source(
        topic,
        KafkaSource(topic, bootstrap, consumer_config={"max_poll_interval_ms": MAX_POLL_MS}),
        key="user",
        timestamp="ts",
        max_out_of_orderness="5s",
    )

    @app.window(events, Tumbling("10s"), aggregate=Count(), sink=sink)
    def counts(result: WindowResult) -> dict[str, object]:
        return {"user": result.key, "start": result.start, "count": result.value}

    return app


async def _until(predicate: Any, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


def _processed(worker: Worker) -> int:
    return sum(task.records_in for task in worker.tasks.values())


async def test_a_sink_slower_than_max_poll_interval_pauses_the_partitions_and_keeps_the_member(
    kafka_bootstrap: str, unique_name: str, tmp_path: Path
) -> None:
    topic = f"{unique_name}-in"
    records, per_partition = keyed_stream(20_000, seed=11, partitions=PARTITIONS)
    expected, _late = reference_counts(per_partition, SIZE, OOO)
    await create_topics(kafka_bootstrap, {topic: PARTITIONS})
    await produce(kafka_bootstrap, topic, PARTITIONS, records[:8_000])

    sink = GatedSink()
    sink.gate.clear()  # the first write blocks
    app = _app(unique_name, topic, kafka_bootstrap, tmp_path / "state", sink)
    worker: Worker = app.worker(handle_signals=False, poll_ms=50, pause_after_ms=200)
    run = asyncio.create_task(worker.run())
    try:
        await asyncio.wait_for(sink.blocked.wait(), timeout=60)
        source = worker._source
        assert isinstance(source, KafkaGroupSource)
        assigned = {(t, p) for (_g, p) in worker.tasks for t in _g}
        assert len(assigned) == PARTITIONS
        # (A first, short pause may come earlier: the first step waits while the
        # assignment opens the tasks.)
        await _until(lambda: source.paused() == assigned, 10, "the partitions to be paused")
        pauses = worker.pauses
        # More input arrives while the sink is stuck: none of it is fetched or processed.
        await produce(kafka_bootstrap, topic, PARTITIONS, records[8_000:])
        processed = _processed(worker)
        await asyncio.sleep(2.5 * MAX_POLL_MS / 1000)  # the sink stays stuck this long
        assert not run.done()
        assert _processed(worker) == processed
        assert source.paused() == assigned
        assert worker.pauses == pauses  # one episode, however many polls
        assert worker.backpressure.held == []  # every partition was paused before each poll
        sink.gate.set()
        await _until(
            lambda: len({o.id for o in sink.outputs}) >= len(expected),
            60,
            "every window in the sink",
        )
        await _until(lambda: _processed(worker) == len(records), 30, "every record processed")
        # One member all along: no rebalance, nothing processed twice.
        assert (worker.assignments, worker.revocations) == (1, 0)
        assert _processed(worker) == len(records)
        assert not source.paused()
    finally:
        sink.gate.set()
        worker.stop()
        await asyncio.wait_for(run, timeout=60)
    duplicates = check_windows([(str(o.id), o.value) for o in sink.outputs], expected)
    assert duplicates == 0
    assert worker.pauses >= 1 and worker.timings["paused"] > 2 * MAX_POLL_MS / 1000


async def test_a_rebalance_while_the_sink_is_stuck_waits_for_it_then_moves_the_partitions(
    kafka_bootstrap: str, unique_name: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Worker A's sink is stuck when worker B joins: A's revocation (which checkpoints,
    under the tasks' lock) waits for the stuck step instead of racing it, then hands the
    partitions over; B restores their state from the changelog. Together they compute
    the reference."""
    topic = f"{unique_name}-in"
    records, per_partition = keyed_stream(20_000, seed=12, partitions=PARTITIONS)
    expected, _late = reference_counts(per_partition, SIZE, OOO)
    await create_topics(kafka_bootstrap, {topic: PARTITIONS})
    await produce(kafka_bootstrap, topic, PARTITIONS, records[:6_000])

    caplog.set_level(logging.INFO, logger="aiokafka.consumer.group_coordinator")
    sink_a, sink_b = GatedSink(), GatedSink()
    app_a = _app(unique_name, topic, kafka_bootstrap, tmp_path / "a", sink_a)
    app_b = _app(unique_name, topic, kafka_bootstrap, tmp_path / "b", sink_b)
    worker_a: Worker = app_a.worker(handle_signals=False, poll_ms=50, pause_after_ms=200)
    worker_b: Worker = app_b.worker(handle_signals=False, poll_ms=50, pause_after_ms=200)
    run_a = asyncio.create_task(worker_a.run())
    run_b: asyncio.Task[None] | None = None
    try:
        await _until(lambda: len(sink_a.outputs) > 0, 60, "worker A's first windows")
        sink_a.gate.clear()
        await produce(kafka_bootstrap, topic, PARTITIONS, records[6_000:12_000])
        await asyncio.wait_for(sink_a.blocked.wait(), timeout=30)
        await _until(lambda: worker_a.pauses >= 1, 10, "worker A to pause")
        run_b = asyncio.create_task(worker_b.run())
        # B's join asks A to give its partitions up (A's next heartbeat learns it): A's
        # revocation callback starts, and waits for the stuck step.
        await _until(
            lambda: any(
                "Revoking previously assigned partitions frozenset" in r.getMessage()
                for r in caplog.records
            ),
            30,
            "worker A's revocation to start",
        )
        await asyncio.sleep(0.5)
        assert worker_a.revocations == 0 and not run_a.done()
        sink_a.gate.set()
        await _until(lambda: worker_b.assignments >= 1 and worker_b.tasks, 60, "B's partitions")
        await produce(kafka_bootstrap, topic, PARTITIONS, records[12_000:])
        await _until(
            lambda: len({o.id for o in sink_a.outputs + sink_b.outputs}) >= len(expected),
            90,
            "every window in the two sinks",
        )
        assert worker_a.revocations >= 1
        assert worker_a.tasks and worker_b.tasks  # the partitions are shared
        assert not run_a.done() and not run_b.done()
    finally:
        sink_a.gate.set()
        worker_a.stop()
        worker_b.stop()
        await asyncio.wait_for(run_a, timeout=60)
        if run_b is not None:
            await asyncio.wait_for(run_b, timeout=60)
    assert worker_b.restored_records > 0  # B took A's state over from the changelog
    check_windows([(str(o.id), o.value) for o in sink_a.outputs + sink_b.outputs], expected)
