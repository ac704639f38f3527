"""Producing test streams to the real broker and reading results back."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).resolve().parents[2]
JOBS = Path(__file__).resolve().parent / "jobs"
MIN = -(2**63)


async def create_topics(bootstrap: str, topics: dict[str, int]) -> None:
    """Create ``topics`` (name: partitions) with no time-based retention.

    The test streams' event times (``make_events``) lie in the past, and sinks stamp
    outputs with them: under the default 7-day ``retention.ms`` the broker's retention
    check (30 s after its start, then every 5 minutes) would delete outputs mid-test.
    """
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics(
            [
                NewTopic(
                    t, num_partitions=n, replication_factor=1, topic_configs={"retention.ms": "-1"}
                )
                for t, n in topics.items()
            ]
        )
        for _ in range(100):
            if set(topics) <= set(await admin.list_topics()):
                return
            await asyncio.sleep(0.1)
    finally:
        await admin.close()


def make_events(n: int, users: int, seed: int) -> list[dict[str, Any]]:
    """``n`` click events, about 200 per second of event time, disorder up to 3 s."""
    rng = random.Random(seed)
    base = 1_767_225_600_000
    return [
        {"user": f"u{rng.randrange(users)}", "ts": base + i * 5 + rng.randrange(-3000, 3000)}
        for i in range(n)
    ]


def partition_of(user: str, partitions: int) -> int:
    return zlib.crc32(user.encode()) % partitions


async def produce(
    bootstrap: str, topic: str, partitions: int, records: list[tuple[int, bytes | None, bytes]]
) -> None:
    """Send (partition, key, value) records in order, acknowledged."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, enable_idempotence=True, linger_ms=5)
    await producer.start()
    try:
        futures = [
            await producer.send(topic, value, key=key, partition=p) for p, key, value in records
        ]
        await producer.flush()
        for f in futures:
            await f
    finally:
        await producer.stop()


async def consume_all(
    bootstrap: str,
    topic: str,
    *,
    expect: int,
    timeout_s: float,
    isolation_level: str = "read_uncommitted",
) -> list[Any]:
    """Read ``topic`` from the beginning until ``expect`` distinct records arrived (records
    with the same ``evtime-id`` header count once: re-emissions are not progress)."""
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        isolation_level=isolation_level,
    )
    await consumer.start()
    out: list[Any] = []
    distinct: set[Any] = set()
    deadline = time.monotonic() + timeout_s
    try:
        while len(distinct) < expect and time.monotonic() < deadline:
            batches = await consumer.getmany(timeout_ms=500)
            for records in batches.values():
                out.extend(records)
                for r in records:
                    rid = dict(r.headers or ()).get("evtime-id")
                    distinct.add(rid if rid is not None else (r.partition, r.offset))
        # Anything beyond the expected count would be a duplicate: wait a little for it.
        batches = await consumer.getmany(timeout_ms=1000)
        for records in batches.values():
            out.extend(records)
    finally:
        await consumer.stop()
    return out


def keyed_stream(
    n: int, *, seed: int, partitions: int
) -> tuple[list[tuple[int, bytes | None, bytes]], list[list[dict[str, Any]]]]:
    """Records to produce (partition, key, value) and the good events of each partition."""
    events = make_events(n, users=300, seed=seed)
    per_partition: list[list[dict[str, Any]]] = [[] for _ in range(partitions)]
    records: list[tuple[int, bytes | None, bytes]] = []
    for e in events:
        p = partition_of(e["user"], partitions)
        per_partition[p].append(e)
        records.append((p, e["user"].encode(), orjson.dumps(e)))
    return records, per_partition


def reference_counts(
    per_partition: list[list[dict[str, Any]]], size: int, ooo: int
) -> tuple[dict[str, int], int]:
    """Brute force: windows closed by each partition's final watermark, and late records."""
    counts: dict[str, int] = {}
    late = 0
    for events in per_partition:
        wm = MIN
        max_ts = MIN
        open_: dict[str, int] = {}
        for e in events:
            ts = e["ts"]
            start = ts - ts % size
            if start + size - 1 <= wm:
                late += 1
            else:
                wid = f"{e['user']}@{start}-{start + size}"
                open_[wid] = open_.get(wid, 0) + 1
            max_ts = max(max_ts, ts)
            wm = max(wm, max_ts - ooo - 1)
        for wid, c in open_.items():
            end = int(wid.rsplit("-", 1)[1])
            if end - 1 <= wm:
                counts[wid] = c
    return counts, late


def worker_env(name: str, tmp_path: Path) -> dict[str, str]:
    """The env of ``jobs/window_job.py``: topics, state dir and a static instance id."""
    return {
        "EVTIME_TEST_APP": name,
        "EVTIME_TEST_IN": f"{name}-in",
        "EVTIME_TEST_OUT": f"{name}-out",
        "EVTIME_TEST_DLQ": f"{name}-dlq",
        "EVTIME_STATE_DIR": str(tmp_path / "state"),
        "EVTIME_INSTANCE_ID": f"{name}-worker-1",
    }


def start_worker(
    job: str, env: dict[str, str], log_path: Path, args: Sequence[str] = ()
) -> subprocess.Popen[bytes]:
    full_env = {**os.environ, **env, "PYTHONPATH": str(ROOT)}
    log = log_path.open("ab")
    return subprocess.Popen(
        [sys.executable, "-m", "evtime.cli", "worker", f"{JOBS / job}:app", *args],
        env=full_env,
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=str(ROOT),
    )


def stop_worker(proc: subprocess.Popen[bytes], timeout: float = 60) -> int:
    proc.send_signal(signal.SIGTERM)
    return proc.wait(timeout=timeout)


def decode_outputs(records: list[Any]) -> list[tuple[str, dict[str, Any]]]:
    out = []
    for r in records:
        headers = dict(r.headers or ())
        out.append((headers["evtime-id"].decode(), orjson.loads(r.value)))
    return out


def check_windows(outputs: list[tuple[str, dict[str, Any]]], expected: dict[str, int]) -> int:
    """Every expected window is present with the right count; duplicates are identical.

    Returns the number of duplicate emissions.
    """
    seen: dict[str, dict[str, Any]] = {}
    duplicates = 0
    for wid, value in outputs:
        if wid in seen:
            duplicates += 1
            assert seen[wid] == value, f"window {wid} emitted twice with different results"
        seen[wid] = value
    got = {wid: v["count"] for wid, v in seen.items()}
    missing = set(expected) - set(got)
    extra = set(got) - set(expected)
    assert not missing, f"{len(missing)} windows missing, e.g. {sorted(missing)[:3]}"
    assert not extra, f"{len(extra)} unexpected windows, e.g. {sorted(extra)[:3]}"
    wrong = {w for w in expected if got[w] != expected[w]}
    assert not wrong, f"{len(wrong)} windows with wrong counts, e.g. {sorted(wrong)[:3]}"
    return duplicates


async def _delete_topics(bootstrap: str, prefix: str) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.delete_topics([t for t in await admin.list_topics() if t.startswith(prefix)])
    finally:
        await admin.close()


def delete_topics(bootstrap: str, prefix: str) -> None:
    """Delete the topics named ``prefix...`` (input, dead letters, changelogs): the broker
    is shared, and every partition slows its restarts (tests/faults restart it)."""
    asyncio.run(_delete_topics(bootstrap, prefix))


# -- a worker's HTTP endpoints ----------------------------------------------------------
def free_port() -> int:
    """A TCP port free on the loopback now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def http_get(url: str) -> tuple[int, bytes]:
    """Status and body of a GET (an HTTP error status is returned, not raised)."""
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def scrape(port: int) -> dict[str, list[tuple[dict[str, str], float]]]:
    """A worker's /metrics: sample name -> (labels, value) of each sample."""
    _, body = http_get(f"http://127.0.0.1:{port}/metrics")
    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            out.setdefault(sample.name, []).append((sample.labels, sample.value))
    return out
