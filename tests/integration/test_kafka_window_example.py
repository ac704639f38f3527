"""examples/kafka_window.py as its docstring runs it: `evtime worker` on the real broker,
Kafka to Kafka, exactly once. A read_committed consumer sees every minute of every user
once, with the counts a brute-force model gives; a malformed record is a dead letter."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.integration.kafka_helpers import (
    ROOT,
    consume_all,
    create_topics,
    delete_topics,
    keyed_stream,
    produce,
)

pytestmark = pytest.mark.kafka

PARTITIONS = 2
MINUTE = 60_000
OOO = 5_000  # the example's max_out_of_orderness


def _final_counts(per_partition: list[list[dict[str, Any]]]) -> dict[str, int]:
    """Every record of each window closed by its partition's last watermark (the test
    stream's disorder, 6 s at most, is well within the minute of allowed lateness)."""
    counts: dict[str, int] = {}
    for events in per_partition:
        watermark = max(e["ts"] for e in events) - OOO - 1
        for e in events:
            start = e["ts"] - e["ts"] % MINUTE
            if start + MINUTE - 1 <= watermark:
                wid = f"{e['user']}@{start}-{start + MINUTE}"
                counts[wid] = counts.get(wid, 0) + 1
    return counts


def test_the_kafka_window_example_counts_each_minute_once(
    kafka_bootstrap: str, unique_name: str, tmp_path: Path
) -> None:
    name = unique_name
    clicks, counts = f"{name}-clicks", f"{name}-out"
    # Output topics without time-based retention: outputs carry old event times.
    asyncio.run(create_topics(
        kafka_bootstrap, {clicks: PARTITIONS, counts: 1, f"{clicks}-dlq": 1}
    ))
    records, per_partition = keyed_stream(3_000, seed=5, partitions=PARTITIONS)
    expected = _final_counts(per_partition)
    records.append((0, b"u1", b"{not json"))
    asyncio.run(produce(kafka_bootstrap, clicks, PARTITIONS, records))

    env = {
        **os.environ,
        "EVTIME_KAFKA_BOOTSTRAP": kafka_bootstrap,
        "EVTIME_APP_NAME": name,
        "EVTIME_CLICKS_TOPIC": clicks,
        "EVTIME_COUNTS_TOPIC": counts,
        "EVTIME_STATE_DIR": str(tmp_path / "state"),
        "PYTHONPATH": str(ROOT),
    }
    log = (tmp_path / "worker.log").open("wb")
    worker = subprocess.Popen(
        [sys.executable, "-m", "evtime.cli", "worker", "examples/kafka_window.py:app"],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
    )
    try:
        out = asyncio.run(consume_all(
            kafka_bootstrap, counts, expect=len(expected), timeout_s=90,
            isolation_level="read_committed",
        ))
        dead = asyncio.run(consume_all(kafka_bootstrap, f"{clicks}-dlq", expect=1, timeout_s=30))
    finally:
        worker.send_signal(signal.SIGTERM)
        code = worker.wait(timeout=60)
        log.close()
    assert code == 0, (tmp_path / "worker.log").read_text()[-3000:]
    got: dict[str, int] = {}
    for r in out:  # one output partition: in the order written
        value = orjson.loads(r.value)
        wid = dict(r.headers)["evtime-id"].decode()
        # A record behind the watermark (within the minute of allowed lateness) re-emits
        # its window, counted once more; nothing is seen twice by a read_committed reader.
        assert value["kind"] == ("update" if wid in got else "final")
        assert value["clicks"] > got.get(wid, 0), f"{wid} seen twice"
        got[wid] = value["clicks"]
    assert got == expected
    assert [dict(r.headers)["evtime-reason"] for r in dead] == [b"decode"]
    delete_topics(kafka_bootstrap, name)
