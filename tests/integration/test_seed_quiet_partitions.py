"""The seed's 15-minute promise when partitions go quiet (issue: watermarks that follow the
clock on live streams), on the real broker and OpenSearch.

Live A/B traffic (event time = now) on four partitions, then silence on three of them
while the fourth still gets heartbeats: every lone event's unmatched document must be in
the index within ``unmatched_after + idle_timeout`` plus a few seconds of wall-clock time,
although its partition never sees another record. Then a new group replays the topic from
the beginning as fast as it reads: the same documents, and no late record.
"""

from __future__ import annotations

import asyncio
import random
import threading
import time
import zlib
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaProducer

from tests.integration.kafka_helpers import create_topics, delete_topics
from tests.integration.seed_helpers import (
    Pipeline,
    all_documents,
    count,
    dead_letters,
    delete_index,
    late_letters,
)

pytestmark = [pytest.mark.kafka, pytest.mark.opensearch, pytest.mark.slow]

PARTITIONS = 4
UNMATCHED_AFTER_S, IDLE_S = 8, 5
SLACK_S = 8  # a checkpoint (1 s), the index refresh (1 s), polling and a noisy machine


def _partition(key: str) -> int:
    return zlib.crc32(key.encode()) % PARTITIONS


async def _live_traffic(bootstrap: str, topic: str, seconds: float) -> dict[str, dict[str, Any]]:
    """Pairs and lone A events with the wall clock as event time on every partition for
    ``seconds``, then heartbeats (neither A nor B) on partition 0 only for three times the idle
    timeout plus the unmatched delay. Returns the lone A events by id."""
    rng = random.Random(11)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5)
    await producer.start()
    lone: dict[str, dict[str, Any]] = {}
    pending: list[dict[str, Any]] = []  # B events due later
    try:
        began = time.time()
        i = 0
        while time.time() - began < seconds:
            now = int(time.time() * 1000)
            for _ in range(8):
                i += 1
                key = f"k{i}"
                a = {"type": "A", "id": key, "ts": now}
                await producer.send(topic, orjson.dumps(a), key=key.encode(),
                                    partition=_partition(key), timestamp_ms=now)
                if rng.random() < 0.3:
                    lone[key] = a
                else:
                    pending.append({"type": "B", "id": key, "ts": now + rng.randrange(500, 2000)})
            due = [b for b in pending if b["ts"] <= now]
            pending = [b for b in pending if b["ts"] > now]
            for b in due:
                await producer.send(topic, orjson.dumps({**b, "ts": now}), key=b["id"].encode(),
                                    partition=_partition(b["id"]), timestamp_ms=now)
            await asyncio.sleep(0.1)
        for b in pending:  # their partners came: the pairs are complete
            now = int(time.time() * 1000)
            await producer.send(topic, orjson.dumps({**b, "ts": now}), key=b["id"].encode(),
                                partition=_partition(b["id"]), timestamp_ms=now)
        await producer.flush()
        quiet_until = time.time() + 3 * IDLE_S + UNMATCHED_AFTER_S
        while time.time() < quiet_until:
            now = int(time.time() * 1000)
            beat = {"type": "heartbeat", "id": "hb", "ts": now}
            await producer.send(topic, orjson.dumps(beat), key=b"hb", partition=0,
                                timestamp_ms=now)
            await asyncio.sleep(0.5)
        await producer.flush()
    finally:
        await producer.stop()
    return lone


def _pipeline(bootstrap: str, es: str, name: str, tmp: Path, topic: str) -> Pipeline:
    pipeline = Pipeline(bootstrap, es, name, tmp, topic=topic, index=name)
    pipeline.env.update({
        "EVTIME_IDLE_TIMEOUT": f"{IDLE_S}s",
        "EVTIME_UNMATCHED_AFTER": f"{UNMATCHED_AFTER_S}s",
        "EVTIME_WITHIN": "1m",
    })
    return pipeline


def test_lone_events_of_quiet_partitions_are_reported_and_a_replay_agrees(
    kafka_bootstrap: str, opensearch_url: str, unique_name: str, tmp_path: Path
) -> None:
    topic = f"{unique_name}-events"
    asyncio.run(create_topics(kafka_bootstrap, {topic: PARTITIONS, f"{topic}-dlq": 1}))
    live = _pipeline(kafka_bootstrap, opensearch_url, f"{unique_name}-live", tmp_path / "a",
                     topic)
    replay = _pipeline(kafka_bootstrap, opensearch_url, f"{unique_name}-replay",
                       tmp_path / "b", topic)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    live.start()
    try:
        time.sleep(3)  # the worker joins its group and gets its partitions
        produced: dict[str, dict[str, Any]] = {}
        traffic = threading.Thread(target=lambda: produced.update(
            asyncio.run(_live_traffic(kafka_bootstrap, topic, seconds=12))))
        traffic.start()
        seen: dict[str, float] = {}
        # Poll the index while the traffic runs, noting when each document first shows.
        while traffic.is_alive():
            docs = all_documents(opensearch_url, live.index) if count(
                opensearch_url, live.index) else {}
            now = time.time()
            for key, doc in docs.items():
                if doc["status"] == "unmatched" and key not in seen:
                    seen[key] = now
            time.sleep(0.3)
        traffic.join()
        lone = produced
        seen = {k: t for k, t in seen.items() if k in lone}
        last_ts = max(e["ts"] for e in lone.values())
        deadline = last_ts / 1000 + UNMATCHED_AFTER_S + IDLE_S + SLACK_S
        while time.time() < deadline and len(seen) < len(lone):
            docs = all_documents(opensearch_url, live.index) if count(
                opensearch_url, live.index) else {}
            now = time.time()
            for key, doc in docs.items():
                if key in lone and doc["status"] == "unmatched" and key not in seen:
                    seen[key] = now
            time.sleep(0.3)
        missing = sorted(set(lone) - set(seen))
        assert not missing, (
            f"{len(missing)} of {len(lone)} lone events not reported in time, e.g. "
            f"{missing[:3]}:\n{live.log_tail()}"
        )
        late = [k for k, t in seen.items()
                if t - lone[k]["ts"] / 1000 > UNMATCHED_AFTER_S + IDLE_S + SLACK_S]
        assert not late, f"{len(late)} lone events reported too late"
        quiet = [k for k in lone if _partition(k) != 0
                 and lone[k]["ts"] > last_ts - (UNMATCHED_AFTER_S + 5) * 1000]
        assert quiet, "no lone event near the end of a quiet partition: the test proves nothing"
        live_docs = all_documents(opensearch_url, live.index)
    finally:
        code = live.stop()
    assert code == 0, live.log_tail()
    letters_before = len(dead_letters(kafka_bootstrap, f"{topic}-dlq"))

    # A new group replays the whole topic as fast as it reads.
    replay.start()
    try:
        replay.wait_caught_up(len(live_docs), timeout_s=120)
        time.sleep(IDLE_S + 3)  # its quiet partitions' clock then closes what is left
        replay_docs = all_documents(opensearch_url, replay.index)
    finally:
        assert replay.stop() == 0, replay.log_tail()
    strip = lambda docs: {k: {f: v for f, v in d.items() if f != "joined_at_ms"}  # noqa: E731
                          for k, d in docs.items()}
    assert strip(replay_docs) == strip(live_docs)
    letters = dead_letters(kafka_bootstrap, f"{topic}-dlq")
    assert not late_letters(letters), "the replay made records late"
    assert len(letters) == letters_before
    print(f"{len(lone)} lone events, {len(quiet)} only the clock could report; "
          f"{len(live_docs)} documents; the replay gave the same")
    for index in (live.index, replay.index):
        delete_index(opensearch_url, index)
    delete_topics(kafka_bootstrap, unique_name)
