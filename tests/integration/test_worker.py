"""The Kafka worker as a subprocess on the real broker: results, bad input, SIGTERM, kill -9."""

from __future__ import annotations

import asyncio
import random
import threading
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
# The crash test of the acceptance: 200,000 records in 8 partitions, 10 SIGKILLs.
KILL_PARTITIONS = 8
KILLS = 10
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
@pytest.mark.parametrize("processing", ["at_least_once", "exactly_once"])
def test_kill_9_at_random_moments_loses_nothing_and_duplicates_nothing_visible(
    kafka_bootstrap: str, unique_name: str, tmp_path: Path, processing: str
) -> None:
    """at_least_once: nothing missing, every duplicate an identical re-emission.
    exactly_once: a read_committed consumer sees every window exactly once."""
    env = worker_env(unique_name, tmp_path)
    env["EVTIME_TEST_CHECKPOINT"] = "300ms"
    env["EVTIME_TEST_PROCESSING"] = processing
    records, per_partition = keyed_stream(200_000, seed=2, partitions=KILL_PARTITIONS)
    expected, _late = reference_counts(per_partition, SIZE, OOO)
    asyncio.run(
        create_topics(
            kafka_bootstrap,
            {
                env["EVTIME_TEST_IN"]: KILL_PARTITIONS,
                env["EVTIME_TEST_OUT"]: 1,
                env["EVTIME_TEST_DLQ"]: 1,
            },
        )
    )

    # The input is produced live by a background thread, in small paced batches, while the
    # worker runs; the worker is SIGKILLed at random moments (so kills land while it is
    # processing, checkpointing or starting), restarted, and at the end runs until every
    # window is out.
    def feed() -> None:
        for i in range(0, len(records), 2_000):
            asyncio.run(
                produce(
                    kafka_bootstrap, env["EVTIME_TEST_IN"], KILL_PARTITIONS, records[i : i + 2_000]
                )
            )
            time.sleep(0.3)

    feeder = threading.Thread(target=feed)
    feeder.start()
    rng = random.Random(7)
    kills = 0
    proc = start_worker("window_job.py", env, tmp_path / "worker.log")
    try:
        while kills < KILLS:
            time.sleep(rng.uniform(2.0, 4.0))
            assert proc.poll() is None, (tmp_path / "worker.log").read_text()[-3000:]
            proc.kill()  # SIGKILL: no checkpoint, no goodbye to the group
            proc.wait()
            kills += 1
            proc = start_worker("window_job.py", env, tmp_path / "worker.log")
    finally:
        feeder.join()
    isolation = "read_committed" if processing == "exactly_once" else "read_uncommitted"
    try:
        out = asyncio.run(
            consume_all(
                kafka_bootstrap,
                env["EVTIME_TEST_OUT"],
                expect=len(expected),
                timeout_s=120,
                isolation_level=isolation,
            )
        )
    finally:
        code = stop_worker(proc)
    log = (tmp_path / "worker.log").read_text()
    assert code == 0, f"worker exited with {code}:\n{log[-3000:]}"
    assert kills == KILLS
    duplicates = check_windows(decode_outputs(out), expected)
    print(f"{processing}: {len(expected)} windows, {duplicates} re-emissions after {kills} kills")
    if processing == "exactly_once":
        assert duplicates == 0
