"""Exactly-once on the real broker when a transaction cannot commit: some output batches
are given up on (as aiokafka does after ``request_timeout_ms`` without a leader; here the
sink's send of a few batches fails that way without reaching the broker). The worker must
not commit those transactions: it aborts them, reopens the task from its last checkpoint
and fetches the interval again. A read_committed consumer then sees every window of the
reference exactly once."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

import pytest
from aiokafka.errors import KafkaTimeoutError

from evtime import App, Count, Tumbling, WindowResult
from evtime.connectors.kafka import KafkaDeadLetterSink, KafkaSink, KafkaSource
from tests.integration.kafka_helpers import (
    check_windows,
    consume_all,
    create_topics,
    decode_outputs,
    keyed_stream,
    produce,
    reference_counts,
)

pytestmark = pytest.mark.kafka

PARTITIONS = 4
SIZE = 10_000
OOO = 5_000
GIVE_UP = {4, 11, 25}  # the output batches given up on (counted from 1)


async def _run(bootstrap: str, name: str, state: Path, ends: dict[int, int]) -> Any:
    app = App(name, state_dir=state, checkpoint_interval="300ms", processing="exactly_once",
              dead_letter=KafkaDeadLetterSink(f"{name}-dlq", bootstrap))
    events = app.source(f"{name}-in", KafkaSource(f"{name}-in", bootstrap), key="user",
                        timestamp="ts", max_out_of_orderness="5s")

    @app.window(events, Tumbling("10s"), aggregate=Count(),
                sink=KafkaSink(f"{name}-out", bootstrap))
    def counts(result: WindowResult) -> dict[str, object]:
        return {"user": result.key, "start": result.start, "count": result.value}

    worker = app.worker(handle_signals=False)
    run = asyncio.create_task(worker.run())
    try:
        while True:
            await asyncio.sleep(0.1)
            assert not run.done(), run.exception()
            source = worker._source
            if source is None or len(worker.tasks) < PARTITIONS:
                continue
            committed = await source.committed([(f"{name}-in", p) for p in ends])
            if all(committed.get((f"{name}-in", p), 0) >= end for p, end in ends.items()):
                break
    finally:
        worker.stop()
        await run
    return worker


def test_a_transaction_with_a_given_up_batch_is_redone(
    kafka_bootstrap: str, unique_name: str, tmp_path: Path, monkeypatch: Any
) -> None:
    sent = {"batches": 0, "given_up": 0}
    send_batch = KafkaSink._send_batch

    async def flaky(self: KafkaSink, producer: Any, batch: Any, partition: int) -> Any:
        if self.topic.endswith("-out"):
            sent["batches"] += 1
            if sent["batches"] in GIVE_UP:
                sent["given_up"] += 1
                future = asyncio.get_running_loop().create_future()
                future.set_exception(KafkaTimeoutError("batch given up on (test)"))
                return future
        return await send_batch(self, producer, batch, partition)

    monkeypatch.setattr(KafkaSink, "_send_batch", flaky)
    records, per_partition = keyed_stream(30_000, seed=13, partitions=PARTITIONS)
    expected, _ = reference_counts(per_partition, SIZE, OOO)
    name = unique_name
    asyncio.run(create_topics(
        kafka_bootstrap, {f"{name}-in": PARTITIONS, f"{name}-out": 1, f"{name}-dlq": 1}
    ))
    ends = {p: 0 for p in range(PARTITIONS)}
    for p, _, _ in records:
        ends[p] += 1

    async def scenario() -> Any:
        # Produced in slices while the worker runs: many checkpoints, many transactions.
        worker_run = asyncio.create_task(_run(kafka_bootstrap, name, tmp_path / "state", ends))
        for i in range(0, len(records), 3_000):
            await produce(kafka_bootstrap, f"{name}-in", PARTITIONS, records[i : i + 3_000])
            await asyncio.sleep(0.2)
        return await worker_run

    worker = asyncio.run(scenario())
    assert sent["given_up"] == len(GIVE_UP)
    assert worker.redos >= 1  # (a given-up batch may belong to a transaction redone already)
    out = asyncio.run(consume_all(kafka_bootstrap, f"{name}-out", expect=len(expected),
                                  timeout_s=60, isolation_level="read_committed"))
    duplicates = check_windows(decode_outputs(out), expected)
    assert duplicates == 0
    if os.environ.get("EVTIME_TEST_VERBOSE"):
        print(f"{len(expected)} windows; {worker.redos} intervals redone")
