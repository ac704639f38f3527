"""`evtime worker --log-format json` on the real broker: every line the worker writes, on
stdout and stderr, from start-up through traffic to its SIGTERM, parses as one JSON object
with time, level, logger and message; the rebalance lines carry their partitions as a
structured field."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import orjson
import pytest

from tests.integration.kafka_helpers import (
    create_topics,
    keyed_stream,
    produce,
    start_worker,
    stop_worker,
    worker_env,
)

pytestmark = pytest.mark.kafka

PARTITIONS = 2


def test_worker_json_logs_are_json_lines_only(
    kafka_bootstrap: str, unique_name: str, tmp_path: Path
) -> None:
    env = worker_env(unique_name, tmp_path)
    topic = env["EVTIME_TEST_IN"]
    asyncio.run(create_topics(kafka_bootstrap, {topic: PARTITIONS, env["EVTIME_TEST_OUT"]: 1,
                                                env["EVTIME_TEST_DLQ"]: 1}))
    records, _ = keyed_stream(2000, seed=3, partitions=PARTITIONS)
    records.append((0, b"u-bad", b"{not json"))  # a dead letter on the way
    log = tmp_path / "worker.log"
    proc = start_worker("window_job.py", env, log, ["--log-format", "json"])
    try:
        deadline = time.monotonic() + 60
        while b"assigned" not in log.read_bytes():
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.2)
        asyncio.run(produce(kafka_bootstrap, topic, PARTITIONS, records))
        time.sleep(3)
    finally:
        code = stop_worker(proc)
    text = log.read_text()
    assert code == 0, text[-3000:]
    lines = [line for line in text.splitlines() if line.strip()]
    assert lines
    parsed = []
    for line in lines:
        try:
            entry = orjson.loads(line)
        except orjson.JSONDecodeError:
            pytest.fail(f"not a JSON line: {line!r}\n{text[-3000:]}")
        assert isinstance(entry, dict), line
        assert {"time", "level", "logger", "message"} <= entry.keys(), line
        parsed.append(entry)
    assigned = [e for e in parsed if e["message"].startswith("assigned")]
    assert assigned and assigned[0]["partitions"] == [f"{topic}[{p}]" for p in range(PARTITIONS)]
    assert any(e["message"].startswith("worker") and "stopped" in e["message"] for e in parsed)
