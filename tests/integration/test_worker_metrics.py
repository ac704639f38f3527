"""`evtime worker --metrics-port` on the real broker: /healthz turns ready once the
partitions are assigned, and /metrics reports what the run did: every record read per
partition, no lag left, the outputs the output topic holds, dead letters per reason and
the late records of the reference model."""

from __future__ import annotations

import asyncio
import json
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.integration.kafka_helpers import (
    consume_all,
    create_topics,
    free_port,
    http_get,
    keyed_stream,
    produce,
    reference_counts,
    scrape,
    start_worker,
    stop_worker,
    worker_env,
)

pytestmark = pytest.mark.kafka

PARTITIONS = 4
SIZE = 10_000
OOO = 5_000








def _until(what: str, check: Any, timeout_s: float, log: Path) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            result = check()
        except (OSError, urllib.error.URLError):
            result = None  # the server is not up yet
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout_s} s\n{log.read_text()[-3000:]}")
        time.sleep(0.2)


def test_worker_serves_health_and_metrics(
    kafka_bootstrap: str, unique_name: str, tmp_path: Path
) -> None:
    env = worker_env(unique_name, tmp_path)
    records, per_partition = keyed_stream(20_000, seed=7, partitions=PARTITIONS)
    records[3000:3000] = [
        (0, b"u-bad", b"{not json"),
        (1, b"u-bad", orjson.dumps({"user": "u-bad"})),  # no timestamp
    ]
    expected, late = reference_counts(per_partition, SIZE, OOO)
    assert late > 0
    asyncio.run(
        create_topics(
            kafka_bootstrap,
            {env["EVTIME_TEST_IN"]: PARTITIONS, env["EVTIME_TEST_OUT"]: 1,
             env["EVTIME_TEST_DLQ"]: 1},
        )
    )
    asyncio.run(produce(kafka_bootstrap, env["EVTIME_TEST_IN"], PARTITIONS, records))
    port = free_port()
    log = tmp_path / "worker.log"
    proc = start_worker(
        "window_job.py", env, log, ["--metrics-port", str(port), "--metrics-host", "127.0.0.1"]
    )
    try:
        live = _until(
            "liveness", lambda: http_get(f"http://127.0.0.1:{port}/healthz/live"), 60, log
        )
        assert live[0] == 200
        health = _until(
            "readiness",
            lambda: (r := http_get(f"http://127.0.0.1:{port}/healthz"))[0] == 200 and r,
            90,
            log,
        )
        body = json.loads(health[1])
        assert body["state"] == "running" and body["ready"] is True
        assert len(body["assigned"]) == PARTITIONS

        def caught_up() -> Any:
            m = scrape(port)
            read = {int(lb["partition"]): v for lb, v in m.get("evtime_records_in_total", [])}
            lag = [v for _, v in m.get("evtime_consumer_lag", [])]
            out = sum(v for _, v in m.get("evtime_records_out_total", []))
            counts = [0] * PARTITIONS
            for p, _, _ in records:
                counts[p] += 1
            checkpoints = sum(v for _, v in m.get("evtime_checkpoint_seconds_count", []))
            done = (
                read == dict(enumerate(counts)) and len(lag) == PARTITIONS and not any(lag)
                and out >= len(expected) and checkpoints > 0
            )
            return done and m

        m = _until("every record read, every window out, a checkpoint", caught_up, 120, log)
        outputs = asyncio.run(
            consume_all(kafka_bootstrap, env["EVTIME_TEST_OUT"], expect=len(expected),
                        timeout_s=60)
        )
    finally:
        code = stop_worker(proc)
    assert code == 0, log.read_text()[-3000:]
    # One clean run: each window once, in the topic as in the metric.
    assert sum(v for _, v in m["evtime_records_out_total"]) == len(outputs) == len(expected)
    dead = {lb["reason"]: v for lb, v in m["evtime_dead_letters_total"]}
    assert dead == {"decode": 1, "timestamp": 1, "late": late}
    assert m["evtime_late_records_total"][0][1] == late
    assert m["evtime_tasks"][0][1] == PARTITIONS
    assert all(v > 0 for _, v in m["evtime_state_bytes"])
    assert m["evtime_checkpoint_seconds_count"][0][1] > 0
    sinks = {lb["sink"] for lb, _ in m["evtime_sink_flush_seconds_count"]}
    assert sinks == {"counts/main", "dead-letters"}
