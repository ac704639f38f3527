"""`evtime state reset` on the real broker: a window job runs to the end of its input,
is reset to the earliest offsets and runs again with the same output; reset to a time, it
starts at the first record of that time; with a worker running, the reset refuses and
changes nothing; a dry run prints its steps and changes nothing."""

from __future__ import annotations

import asyncio
import json
import os
import random
import subprocess
import sys
import time
import zlib
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient

from evtime.names import changelog_topic
from tests.integration.kafka_helpers import (
    JOBS,
    ROOT,
    consume_all,
    create_topics,
    decode_outputs,
    delete_topics,
    reference_counts,
    start_worker,
    stop_worker,
    worker_env,
)

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

PARTITIONS = 2
SIZE, OOO = 10_000, 5_000


def _events(n: int, seed: int) -> list[dict[str, Any]]:
    """Click events of the last hour, about 20 per second of event time, in order per user."""
    rng = random.Random(seed)
    base = int(time.time() * 1000) - 3_600_000
    return [{"user": f"u{rng.randrange(50)}", "ts": base + i * 50} for i in range(n)]


async def _produce(bootstrap: str, topic: str, events: list[dict[str, Any]]) -> None:
    """Each record stamped with its event time, so that offsets-for-times finds it."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5)
    await producer.start()
    try:
        for e in events:
            p = zlib.crc32(e["user"].encode()) % PARTITIONS
            await producer.send(topic, orjson.dumps(e), key=e["user"].encode(), partition=p,
                                timestamp_ms=e["ts"])
        await producer.flush()
    finally:
        await producer.stop()


def _expected(events: list[dict[str, Any]]) -> dict[str, int]:
    per_partition: list[list[dict[str, Any]]] = [[] for _ in range(PARTITIONS)]
    for e in events:
        per_partition[zlib.crc32(e["user"].encode()) % PARTITIONS].append(e)
    counts, late = reference_counts(per_partition, SIZE, OOO)
    assert late == 0
    return counts


def _cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "evtime.cli", *args],
        env={**os.environ, **env, "PYTHONPATH": str(ROOT)},
        capture_output=True, text=True, timeout=120, cwd=str(ROOT),
    )


def _run_until(bootstrap: str, env: dict[str, str], log: Path, want: int, skip: int) -> list[
    tuple[str, dict[str, Any]]
]:
    """Run the job until the output topic holds ``skip + want`` records; return the last
    ``want``."""
    proc = start_worker("window_job.py", env, log)
    try:
        deadline = time.monotonic() + 120
        records: list[Any] = []
        while time.monotonic() < deadline:
            records = asyncio.run(
                consume_all(bootstrap, env["EVTIME_TEST_OUT"], expect=skip + want, timeout_s=5)
            )
            if len(records) >= skip + want:
                break
    finally:
        assert stop_worker(proc) == 0, log.read_text()[-3000:]
    return decode_outputs(records[skip:])


async def _committed(bootstrap: str, group: str) -> dict[Any, int]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        return {tp: m.offset for tp, m in (await admin.list_consumer_group_offsets(group)).items()}
    finally:
        await admin.close()


def test_reset_to_earliest_and_to_a_time_reprocesses_from_there(
    kafka_bootstrap: str, unique_name: str, tmp_path: Path
) -> None:
    env = worker_env(unique_name, tmp_path)
    target = str(JOBS / "window_job.py") + ":app"
    events = _events(6_000, seed=3)
    asyncio.run(create_topics(kafka_bootstrap, {env["EVTIME_TEST_IN"]: PARTITIONS,
                                                env["EVTIME_TEST_OUT"]: 1,
                                                env["EVTIME_TEST_DLQ"]: 1}))
    asyncio.run(_produce(kafka_bootstrap, env["EVTIME_TEST_IN"], events))
    expected = _expected(events)

    # describe: the job as the worker will run it, partition counts from the broker.
    described = _cli(env, "describe", target, "--json")
    assert described.returncode == 0, described.stderr
    desc = json.loads(described.stdout)
    assert desc["consumer_group"] == unique_name
    assert [s["partitions"] for s in desc["sources"]] == [PARTITIONS]
    internal = {t["topic"]: t for t in desc["internal_topics"]}
    changelog_name = changelog_topic(unique_name, (env["EVTIME_TEST_IN"],))
    assert internal[changelog_name]["partitions"] == PARTITIONS
    assert internal[changelog_name]["configs"]["cleanup.policy"] == "compact"
    log = tmp_path / "worker.log"

    first = _run_until(kafka_bootstrap, env, log, len(expected), skip=0)
    assert {w: v["count"] for w, v in first} == expected
    changelog = changelog_topic(unique_name, (env["EVTIME_TEST_IN"],))
    state = Path(env["EVTIME_STATE_DIR"]) / unique_name
    assert (state / env["EVTIME_TEST_IN"]).is_dir()
    before = asyncio.run(_committed(kafka_bootstrap, unique_name))
    assert sum(before.values()) == len(events)

    # A dry run says what it would do and does nothing.
    dry = _cli(env, "state", "reset", target, "--to", "earliest", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert "would move group" in dry.stdout and f"{changelog}" in dry.stdout
    assert "dry run: nothing changed" in dry.stdout
    assert asyncio.run(_committed(kafka_bootstrap, unique_name)) == before
    assert (state / env["EVTIME_TEST_IN"]).is_dir()

    # With a worker in the group, the reset refuses and changes nothing.
    seen = len(log.read_text())
    proc = start_worker("window_job.py", env, log)
    try:
        deadline = time.monotonic() + 60
        while "assigned" not in log.read_text()[seen:]:
            assert time.monotonic() < deadline, log.read_text()[-2000:]
            time.sleep(0.2)
        refused = _cli(env, "state", "reset", target, "--to", "earliest", "--wait", "4")
    finally:
        assert stop_worker(proc) == 0
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert f"consumer group {unique_name!r} still has members after 4 s" in refused.stderr
    assert "waiting up to 4 s" in refused.stdout
    assert "aiokafka" in refused.stderr  # the member named by its client id
    assert refused.stderr.count("\n") == 1  # one line, no traceback
    assert asyncio.run(_committed(kafka_bootstrap, unique_name)) == before

    done = _cli(env, "state", "reset", target, "--to", "earliest")
    assert done.returncode == 0, done.stderr
    assert "reset done" in done.stdout
    assert not (state / env["EVTIME_TEST_IN"]).exists()
    assert set(asyncio.run(_committed(kafka_bootstrap, unique_name)).values()) == {0}
    second = _run_until(kafka_bootstrap, env, log, len(expected), skip=len(first))
    assert sorted(second) == sorted(first)  # the same windows with the same counts

    # To a time: the run starts at the first record at or after it, from empty state.
    cut = events[len(events) // 2]["ts"]
    iso = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(cut / 1000)) + f".{cut % 1000:03d}Z"
    timed = _cli(env, "state", "reset", target, "--to", iso)
    assert timed.returncode == 0, timed.stderr
    suffix = [e for e in events if e["ts"] >= cut]
    want = _expected(suffix)
    third = _run_until(kafka_bootstrap, env, log, len(want), skip=len(first) + len(second))
    assert {w: v["count"] for w, v in third} == want
    delete_topics(kafka_bootstrap, unique_name)
