"""A join of two Kafka topics on the real broker, through kill -9.

A rows come on one topic and B rows on another, co-partitioned by ``id``. The worker
is killed with SIGKILL three times while the input is produced; before the second
restart its state directory is deleted, so that restart restores the join's state
from the two-topic group's changelog topic (the topic whose name Kafka once refused).
The output must equal the join model: every pair within ``within`` joined, and under
``how="outer"`` every row without a partner emitted alone, nothing else. Ids of
two-topic joins depend on which side's row the worker read first, so results are
compared by content; under exactly_once a read_committed consumer must see each
result once (a partial row and the joined row replacing it share one id).
"""

from __future__ import annotations

import asyncio
import random
import re
import shutil
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaConsumer

from evtime.names import changelog_topic
from tests.integration.kafka_helpers import (
    create_topics,
    delete_topics,
    partition_of,
    produce,
    start_worker,
    stop_worker,
)

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

PARTITIONS = 3
MINUTE = 60_000
HOUR = 60 * MINUTE
WITHIN = 2 * HOUR

Record = tuple[int, bytes | None, bytes]
Result = tuple[str, str, int | None, int | None]  # key, kind, left ts, right ts


def _stream(ids: int, seed: int) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """A rows (one per id, about 0.6 s apart, disorder under 1 s) and B rows (sorted by
    time): 60% of ids within 5 minutes of their A, 15% 1 to 1.5 h later, 10% 3 to 4 h
    later (beyond ``within``), 15% none. Event times are recent (8 h ago on)."""
    rng = random.Random(seed)
    base = int(time.time() * 1000) - 8 * HOUR
    lefts, rights = [], []
    for i in range(ids):
        key = f"k{i}"
        a = base + i * 600 + rng.randrange(0, 1_000)
        lefts.append({"id": key, "ts": a})
        r = rng.random()
        if r < 0.60:
            delta = rng.randrange(-5 * MINUTE, 5 * MINUTE)
        elif r < 0.75:
            delta = rng.randrange(HOUR, 90 * MINUTE)
        elif r < 0.85:
            delta = rng.randrange(3 * HOUR, 4 * HOUR)
        else:
            continue
        rights.append({"id": key, "ts": a + delta})
    rights.sort(key=lambda e: e["ts"])
    return lefts, rights


def _model(
    lefts: list[dict[str, Any]], rights: list[dict[str, Any]], how: str
) -> Counter[Result]:
    """Every pair with ``a.ts - WITHIN <= b.ts <= a.ts + WITHIN``, once; under "outer",
    every row with no partner, alone."""
    out: Counter[Result] = Counter()
    by_key: dict[str, list[int]] = {}
    for b in rights:
        by_key.setdefault(b["id"], []).append(b["ts"])
    matched_b: set[tuple[str, int]] = set()
    for a in lefts:
        partners = [t for t in by_key.get(a["id"], []) if abs(t - a["ts"]) <= WITHIN]
        for t in partners:
            out[(a["id"], "joined", a["ts"], t)] += 1
            matched_b.add((a["id"], t))
        if not partners and how == "outer":
            out[(a["id"], "unmatched", a["ts"], None)] += 1
    if how == "outer":
        for b in rights:
            if (b["id"], b["ts"]) not in matched_b:
                out[(b["id"], "unmatched", None, b["ts"])] += 1
    return out


def _records(events: list[dict[str, Any]]) -> list[Record]:
    return [
        (partition_of(e["id"], PARTITIONS), e["id"].encode(), orjson.dumps(e)) for e in events
    ]


def _heartbeats(side: str, at: int) -> list[Record]:
    """One row per partition, far later than every row and partnerless: the final
    watermark passes every row's last possible match."""
    return [
        (p, f"hb-{side}-{p}".encode(), orjson.dumps({"id": f"hb-{side}-{p}", "ts": at}))
        for p in range(PARTITIONS)
    ]


async def _read_results(
    bootstrap: str, topic: str, want: Counter[Result], isolation: str, timeout_s: float
) -> tuple[dict[str, Result], list[Result]]:
    """Read the output from the beginning until its upserted view (the last result per
    id) holds every wanted result; return that view and every result read, in order."""
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        isolation_level=isolation,
    )
    await consumer.start()
    view: dict[str, Result] = {}
    read: list[Result] = []
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline:
            for records in (await consumer.getmany(timeout_ms=500)).values():
                for r in records:
                    v = orjson.loads(r.value)
                    result = (v["id"], v["kind"], v["left_ts"], v["right_ts"])
                    view[dict(r.headers)["evtime-id"].decode()] = result
                    read.append(result)
            if not want - Counter(set(view.values())):
                break
        # A duplicate would come after the last wanted result: wait a little for one.
        for records in (await consumer.getmany(timeout_ms=2_000)).values():
            for r in records:
                v = orjson.loads(r.value)
                result = (v["id"], v["kind"], v["left_ts"], v["right_ts"])
                view[dict(r.headers)["evtime-id"].decode()] = result
                read.append(result)
    finally:
        await consumer.stop()
    return view, read


@pytest.mark.parametrize(
    ("how", "processing"), [("inner", "at_least_once"), ("outer", "exactly_once")]
)
def test_two_topic_join_equals_the_model_through_kills_and_a_restore(
    kafka_bootstrap: str, unique_name: str, tmp_path: Path, how: str, processing: str
) -> None:
    left, right = f"{unique_name}-a", f"{unique_name}-b"
    env = {
        "EVTIME_TEST_APP": unique_name,
        "EVTIME_TEST_LEFT": left,
        "EVTIME_TEST_RIGHT": right,
        "EVTIME_TEST_OUT": f"{unique_name}-out",
        "EVTIME_TEST_DLQ": f"{unique_name}-dlq",
        "EVTIME_STATE_DIR": str(tmp_path / "state"),
        "EVTIME_INSTANCE_ID": f"{unique_name}-worker-1",
        "EVTIME_TEST_CHECKPOINT": "300ms",
        "EVTIME_TEST_PROCESSING": processing,
        "EVTIME_TEST_HOW": how,
        "EVTIME_TEST_WITHIN": "2h",
        "EVTIME_TEST_UNMATCHED_AFTER": "15m" if how == "outer" else "",
    }
    lefts, rights = _stream(3_000, seed=13)
    want = _model(lefts, rights, how)
    assert sum(1 for r in want if r[1] == "joined") > 2_000
    if how == "outer":
        assert sum(1 for r in want if r[1] == "unmatched") > 500
    last = max(e["ts"] for e in lefts + rights)
    asyncio.run(
        create_topics(
            kafka_bootstrap,
            {left: PARTITIONS, right: PARTITIONS, env["EVTIME_TEST_OUT"]: 1,
             env["EVTIME_TEST_DLQ"]: 1},
        )
    )
    a_records, b_records = _records(lefts), _records(rights)

    def feed() -> None:
        chunk = 300
        for i in range(0, max(len(a_records), len(b_records)), chunk):
            asyncio.run(produce(kafka_bootstrap, left, PARTITIONS, a_records[i : i + chunk]))
            asyncio.run(produce(kafka_bootstrap, right, PARTITIONS, b_records[i : i + chunk]))
            time.sleep(0.4)
        asyncio.run(produce(kafka_bootstrap, left, PARTITIONS, _heartbeats("a", last + 3 * HOUR)))
        asyncio.run(produce(kafka_bootstrap, right, PARTITIONS, _heartbeats("b", last + 3 * HOUR)))

    feeder = threading.Thread(target=feed)
    feeder.start()
    log = tmp_path / "worker.log"
    rng = random.Random(7)
    proc = start_worker("join_job.py", env, log)
    kills = 0
    try:
        while kills < 3:
            time.sleep(rng.uniform(2.0, 3.5))
            assert proc.poll() is None, log.read_text()[-3000:]
            proc.kill()
            proc.wait()
            kills += 1
            if kills == 2:
                # A new machine: the join's state comes back from the changelog topic.
                shutil.rmtree(env["EVTIME_STATE_DIR"])
            proc = start_worker("join_job.py", env, log)
    finally:
        feeder.join()
    isolation = "read_committed" if processing == "exactly_once" else "read_uncommitted"
    try:
        view, read = asyncio.run(
            _read_results(kafka_bootstrap, env["EVTIME_TEST_OUT"], want, isolation, 180)
        )
    finally:
        code = stop_worker(proc)
    text = log.read_text()
    assert code == 0, text[-3000:]
    # The faults happened: four starts, and a restore from the changelog after the wipe.
    assert text.count("started on topics") == kills + 1, text[-3000:]
    restored = [int(n) for n in re.findall(r"restored (\d+) changelog records", text)]
    assert any(n > 0 for n in restored), f"no restore from the changelog: {restored}"
    assert changelog_topic(unique_name, (left, right)) == f"{unique_name}-{left}-{right}-changelog"

    final = Counter(view.values())
    missing = want - final
    extra = set(final) - set(want)
    assert not missing, f"{len(missing)} results missing, e.g. {sorted(missing)[:3]}"
    assert not extra, f"{len(extra)} results the model does not have, e.g. {sorted(extra)[:3]}"
    joined = Counter(r for r in read if r[1] == "joined")
    if processing == "exactly_once":
        # Each result once; a partial row's id is taken over by its joined row.
        assert final == want
        assert all(n == 1 for n in joined.values()), joined.most_common(3)
    print(
        f"{how}/{processing}: {sum(want.values())} results, {len(read)} read, "
        f"{len(read) - len(view)} repeated or replaced, restored {restored}, {kills} kills"
    )
    delete_topics(kafka_bootstrap, unique_name)
