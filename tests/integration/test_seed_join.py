"""End to end, the seed pipeline: 100,000 A/B events, Kafka -> examples/seed_join.py -> OpenSearch.

The index must hold exactly the documents a brute-force model of the join computes
from the generated stream: same ids, same status, same content, no more, no fewer.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import orjson
import pytest

from connectors.local import partition_for
from tests.integration.kafka_helpers import create_topics, produce
from tests.unit.join_reference import MIN_TS, Event, JoinConfig, one_topic_events, run_events

pytestmark = [pytest.mark.kafka, pytest.mark.opensearch, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
PARTITIONS = 4
MINUTE = 60_000
WITHIN = 6 * 60 * MINUTE
UNMATCHED_AFTER = 15 * MINUTE
OOO = 5_000


def generate(pairs: int, seed: int) -> list[dict[str, Any]]:
    """Two events per key (A and B), in arrival order: most partners minutes apart, some
    hours apart, some beyond 6 h, some never; arrival up to 3 s out of order, a few late."""
    rng = random.Random(seed)
    base = 1_767_225_600_000
    timed: list[tuple[float, dict[str, Any]]] = []
    for i in range(pairs):
        key = f"k{i}"
        a_ts = base + i * 3_000 + rng.randrange(0, 3_000)
        roll = rng.random()
        if roll < 0.70:
            b_ts: int | None = a_ts + rng.randrange(0, 15 * MINUTE)
        elif roll < 0.85:
            b_ts = a_ts + rng.randrange(15 * MINUTE, WITHIN)
        elif roll < 0.90:
            b_ts = a_ts + WITHIN + rng.randrange(1, 60 * MINUTE)
        else:
            b_ts = None
        first, second = ("A", "B") if rng.random() < 0.8 else ("B", "A")
        events = [{"type": first, "id": key, "ts": a_ts, "n": i}]
        if b_ts is not None:
            events.append({"type": second, "id": key, "ts": b_ts, "n": i})
        for e in events:
            arrival = e["ts"] + rng.uniform(0, 3_000)
            if rng.random() < 0.001:
                arrival += MINUTE  # behind the watermark when it arrives: a late record
            timed.append((arrival, e))
    timed.sort(key=lambda pair: pair[0])
    return [e for _, e in timed]


def expected_documents(events: list[dict[str, Any]], topic: str) -> dict[str, dict[str, Any]]:
    """The model: each partition's emissions in order, upserted by join key (no end of input:
    on Kafka the stream goes on, so rows not yet due are not expected)."""
    cfg = JoinConfig(-WITHIN, WITHIN, "outer", UNMATCHED_AFTER, OOO)
    per_partition: list[list[dict[str, Any]]] = [[] for _ in range(PARTITIONS)]
    for e in events:
        per_partition[partition_for(e["id"], PARTITIONS)].append(e)
    docs: dict[str, dict[str, Any]] = {}
    for p, records in enumerate(per_partition):
        model_events, _bad = one_topic_events(records, p, cfg, topic=topic)
        for em in _emissions_by_key(model_events, cfg):
            joined = em.kind == "joined"
            docs[em.key] = {
                "id": em.key,
                "a": em.left,
                "b": em.right,
                "status": "joined" if joined else "unmatched",
                "joined_at_ms": max(em.left_ts or 0, em.right_ts or 0) if joined else None,
            }
    return docs


def _emissions_by_key(events: list[Event], cfg: JoinConfig) -> list[Any]:
    """The model run key by key (it is quadratic in a partition's rows): a key's rows only
    meet rows of the same key, so each key's records are run with the partition's
    watermark before and after each of them, then its final watermark (no end of input).
    Returns each key's emissions in order."""
    by_key: dict[str, list[Event]] = {}
    before = MIN_TS
    for e in events:
        if e.arrival is not None:
            group = by_key.setdefault(e.arrival.key, [])
            group.append(Event(None, before))
            group.append(e)
        before = e.watermark
    out: list[Any] = []
    for group in by_key.values():
        group.append(Event(None, before))
        run = run_events(group, cfg)
        for step in run.steps[:-1]:
            out.extend(step)
    return out


def _http(method: str, url: str, body: Any = None) -> Any:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method)
    req.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(req, timeout=30) as resp:
        return json.load(resp)


def all_documents(es: str, index: str) -> dict[str, dict[str, Any]]:
    _http("POST", f"{es}/{index}/_refresh")
    out: dict[str, dict[str, Any]] = {}
    page = _http("POST", f"{es}/{index}/_search?scroll=1m", {"size": 5000})
    while page["hits"]["hits"]:
        for hit in page["hits"]["hits"]:
            out[hit["_id"]] = hit["_source"]
        page = _http(
            "POST", f"{es}/_search/scroll", {"scroll": "1m", "scroll_id": page["_scroll_id"]}
        )
    return out


def count(es: str, index: str) -> int:
    try:
        _http("POST", f"{es}/{index}/_refresh")
        return int(_http("GET", f"{es}/{index}/_count")["count"])
    except Exception:
        return 0


def test_seed_join_lands_exactly_the_reference_documents(
    kafka_bootstrap: str, opensearch_url: str, unique_name: str, tmp_path: Path
) -> None:
    topic = f"{unique_name}-events"
    index = unique_name
    events = generate(50_000, seed=5)
    assert len(events) >= 95_000
    want = expected_documents(events, topic)
    statuses = {d["status"] for d in want.values()}
    assert statuses == {"joined", "unmatched"}
    asyncio.run(create_topics(kafka_bootstrap, {topic: PARTITIONS, f"{topic}-dlq": 1}))
    records = [
        (partition_for(e["id"], PARTITIONS), e["id"].encode(), orjson.dumps(e)) for e in events
    ]
    asyncio.run(produce(kafka_bootstrap, topic, PARTITIONS, records))

    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "EVTIME_APP_NAME": unique_name,
        "EVTIME_INSTANCE_ID": f"{unique_name}-1",
    }
    log_path = tmp_path / "seed.log"
    proc = subprocess.Popen(
        [
            sys.executable,
            str(ROOT / "examples" / "seed_join.py"),
            "--bootstrap",
            kafka_bootstrap,
            "--topic",
            topic,
            "--es-url",
            opensearch_url,
            "--index",
            index,
            "--state-dir",
            str(tmp_path / "state"),
        ],
        env=env,
        stdout=log_path.open("wb"),
        stderr=subprocess.STDOUT,
        cwd=str(ROOT),
    )
    try:
        deadline = time.monotonic() + 240
        last, stable_since = -1, time.monotonic()
        while time.monotonic() < deadline:
            n = count(opensearch_url, index)
            if n != last:
                last, stable_since = n, time.monotonic()
            elif n >= len(want) and time.monotonic() - stable_since > 5:
                break
            assert proc.poll() is None, log_path.read_text()[-3000:]
            time.sleep(1)
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=60)
    assert code == 0, log_path.read_text()[-3000:]
    got = all_documents(opensearch_url, index)
    try:
        missing = set(want) - set(got)
        extra = set(got) - set(want)
        assert not missing, f"{len(missing)} documents missing, e.g. {sorted(missing)[:3]}"
        assert not extra, f"{len(extra)} unexpected documents, e.g. {sorted(extra)[:3]}"
        wrong = [k for k in want if got[k] != want[k]]
        assert not wrong, (
            f"{len(wrong)} documents differ, e.g. {wrong[:1]}: {got[wrong[0]]} != {want[wrong[0]]}"
        )
    finally:
        _http("DELETE", f"{opensearch_url}/{index}")
