"""The Kafka worker as a subprocess on the real broker: results, bad input, SIGTERM, kill -9."""

from __future__ import annotations

import asyncio
import random
import time
from pathlib import Path

import orjson
import pytest

from tests.integration.kafka_helpers import (
    check_windows,
    consume_all,
    create_topics,
    decode_outputs,
    keyed_stream,
    produce,
    reference_counts,
    start_worker,
    stop_worker,
    worker_env,
)

pytestmark = pytest.mark.kafka

PARTITIONS = 4
SIZE = 10_000
OOO = 5_000


def test_worker_computes_the_reference_and_routes_bad_input_to_the_dlq(
    kafka_bootstrap: str, unique_name: str, tmp_path: Path
) -> None:
    env = worker_env(unique_name, tmp_path)
    records, per_partition = keyed_stream(20_000, seed=1, partitions=PARTITIONS)
    bad = [
        (0, b"u-bad", b"{not json"),
        (1, b"u-bad", orjson.dumps({"user": "u-bad"})),  # no timestamp
        (2, b"u-bad", orjson.dumps({"user": "u-bad", "ts": "soon"})),
    ]
    records[5000:5000] = bad
    expected, late = reference_counts(per_partition, SIZE, OOO)
    assert late > 0  # the stream has late records: they must reach the DLQ, counted
    asyncio.run(
        create_topics(
            kafka_bootstrap,
            {
                env["EVTIME_TEST_IN"]: PARTITIONS,
                env["EVTIME_TEST_OUT"]: 1,
                env["EVTIME_TEST_DLQ"]: 1,
            },
        )
    )
    asyncio.run(produce(kafka_bootstrap, env["EVTIME_TEST_IN"], PARTITIONS, records))

    proc = start_worker("window_job.py", env, tmp_path / "worker.log")
    try:
        out = asyncio.run(
            consume_all(kafka_bootstrap, env["EVTIME_TEST_OUT"], expect=len(expected), timeout_s=90)
        )
        dead = asyncio.run(
            consume_all(kafka_bootstrap, env["EVTIME_TEST_DLQ"], expect=3 + late, timeout_s=30)
        )
    finally:
        code = stop_worker(proc)
    log = (tmp_path / "worker.log").read_text()
    assert code == 0, f"worker exited with {code}:\n{log[-3000:]}"
    assert "stopped after" in log
    check_windows(decode_outputs(out), expected)
    reasons = [dict(r.headers)["evtime-reason"].decode() for r in dead]
    assert sorted(r for r in reasons if r != "late") == ["decode", "timestamp", "timestamp"]
    assert reasons.count("late") == late
    assert {r.value for r in dead} >= {b"{not json"}
    for r in dead:
        headers = dict(r.headers)
        assert headers["evtime-topic"].decode() == env["EVTIME_TEST_IN"]
        assert int(headers["evtime-offset"]) >= 0


@pytest.mark.slow
def test_kill_9_at_random_moments_loses_nothing_and_duplicates_are_identical(
    kafka_bootstrap: str, unique_name: str, tmp_path: Path
) -> None:
    env = worker_env(unique_name, tmp_path)
    env["EVTIME_TEST_CHECKPOINT"] = "300ms"
    records, per_partition = keyed_stream(60_000, seed=2, partitions=PARTITIONS)
    expected, _late = reference_counts(per_partition, SIZE, OOO)
    asyncio.run(
        create_topics(
            kafka_bootstrap,
            {
                env["EVTIME_TEST_IN"]: PARTITIONS,
                env["EVTIME_TEST_OUT"]: 1,
                env["EVTIME_TEST_DLQ"]: 1,
            },
        )
    )
    # The input is produced live, in small paced batches, while the worker runs; the
    # worker is SIGKILLed at random moments of that stream, restarted, and at the end
    # runs until every window is out.
    rng = random.Random(7)
    kills = 0
    sent = 0
    proc = start_worker("window_job.py", env, tmp_path / "worker.log")
    while sent < len(records):
        step = rng.randrange(2_000, 6_000)
        asyncio.run(
            produce(kafka_bootstrap, env["EVTIME_TEST_IN"], PARTITIONS, records[sent : sent + step])
        )
        sent += step
        if kills < 6 and sent < len(records):
            time.sleep(rng.uniform(0.3, 2.0))
            assert proc.poll() is None, (tmp_path / "worker.log").read_text()[-3000:]
            proc.kill()  # SIGKILL: no checkpoint, no goodbye to the group
            proc.wait()
            kills += 1
            proc = start_worker("window_job.py", env, tmp_path / "worker.log")
    try:
        out = asyncio.run(
            consume_all(
                kafka_bootstrap, env["EVTIME_TEST_OUT"], expect=len(expected), timeout_s=120
            )
        )
    finally:
        code = stop_worker(proc)
    log = (tmp_path / "worker.log").read_text()
    assert code == 0, f"worker exited with {code}:\n{log[-3000:]}"
    assert kills == 6
    duplicates = check_windows(decode_outputs(out), expected)
    print(f"{len(expected)} windows, {duplicates} identical re-emissions after {kills} kills")
