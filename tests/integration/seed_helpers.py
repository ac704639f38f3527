"""The seed pipeline's test stream, its reference documents, and the pipeline as a process.

``generate`` makes the A/B stream, ``expected_documents`` computes what the index must
hold from it (the brute-force join model of ``tests/unit/join_reference.py``), and the
rest runs ``examples/seed_join.py`` against the real broker and OpenSearch node and reads
back what it wrote. Shared by the end-to-end test, the fault tests and the benchmark.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from evtime.connectors.local import partition_for
from tests.integration.kafka_helpers import create_topics, produce
from tests.unit.join_reference import MIN_TS, Event, JoinConfig, one_topic_events, run_events

ROOT = Path(__file__).resolve().parents[2]
PARTITIONS = 4
MINUTE = 60_000
WITHIN = 6 * 60 * MINUTE
UNMATCHED_AFTER = 15 * MINUTE
OOO = 5_000


def generate(pairs: int, seed: int, *, bad_every: int | None = None) -> list[dict[str, Any]]:
    """Two events per key (A and B), in arrival order: most partners minutes apart, some
    hours apart, some beyond 6 h, some never; arrival up to 3 s out of order, a few late.

    With ``bad_every``, every ``bad_every``-th key carries a string ``n`` (``"bad-<i>"``)
    in all its events instead of the integer: a document no index mapping ``n`` as an
    integer accepts. Which keys those are: ``bad_keys``."""
    rng = random.Random(seed)
    base = 1_767_225_600_000
    timed: list[tuple[float, dict[str, Any]]] = []
    for i in range(pairs):
        key = f"k{i}"
        n: int | str = f"bad-{i}" if bad_every and i % bad_every == 0 else i
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
        events = [{"type": first, "id": key, "ts": a_ts, "n": n}]
        if b_ts is not None:
            events.append({"type": second, "id": key, "ts": b_ts, "n": n})
        for e in events:
            arrival = e["ts"] + rng.uniform(0, 3_000)
            if rng.random() < 0.001:
                arrival += MINUTE  # behind the watermark when it arrives: a late record
            timed.append((arrival, e))
    timed.sort(key=lambda pair: pair[0])
    return [e for _, e in timed]


def bad_keys(events: list[dict[str, Any]]) -> set[str]:
    """The keys whose events carry a string ``n`` (``generate(..., bad_every=...)``)."""
    return {e["id"] for e in events if isinstance(e["n"], str)}


def expected(
    events: list[dict[str, Any]], topic: str
) -> tuple[dict[str, dict[str, Any]], set[str]]:
    """The model: the documents (each partition's emissions in order, upserted by join key;
    no end of input: on Kafka the stream goes on, so rows not yet due are not expected) and
    the late records, as ``"<topic>-<partition>@<offset>"`` (they go to the dead letters)."""
    cfg = JoinConfig(-WITHIN, WITHIN, "outer", UNMATCHED_AFTER, OOO)
    per_partition: list[list[dict[str, Any]]] = [[] for _ in range(PARTITIONS)]
    for e in events:
        per_partition[partition_for(e["id"], PARTITIONS)].append(e)
    docs: dict[str, dict[str, Any]] = {}
    late: set[str] = set()
    for p, records in enumerate(per_partition):
        model_events, _bad = one_topic_events(records, p, cfg, topic=topic)
        emissions, late_here = _emissions_by_key(model_events, cfg)
        late.update(late_here)
        for em in emissions:
            joined = em.kind == "joined"
            docs[em.key] = {
                "id": em.key,
                "a": em.left,
                "b": em.right,
                "status": "joined" if joined else "unmatched",
                "joined_at_ms": max(em.left_ts or 0, em.right_ts or 0) if joined else None,
            }
    return docs, late


def expected_documents(events: list[dict[str, Any]], topic: str) -> dict[str, dict[str, Any]]:
    """The documents the index must hold (``expected``)."""
    return expected(events, topic)[0]


def _emissions_by_key(events: list[Event], cfg: JoinConfig) -> tuple[list[Any], list[str]]:
    """The model run key by key (it is quadratic in a partition's rows): a key's rows only
    meet rows of the same key, so each key's records are run with the partition's
    watermark before and after each of them, then its final watermark (no end of input).
    Returns each key's emissions in order, and the late records."""
    by_key: dict[str, list[Event]] = {}
    before = MIN_TS
    for e in events:
        if e.arrival is not None:
            group = by_key.setdefault(e.arrival.key, [])
            group.append(Event(None, before))
            group.append(e)
        before = e.watermark
    out: list[Any] = []
    late: list[str] = []
    for group in by_key.values():
        group.append(Event(None, before))
        run = run_events(group, cfg)
        for step in run.steps[:-1]:
            out.extend(step)
        late.extend(run.late)
    return out, late


# -- OpenSearch ----------------------------------------------------------------------------
def http(method: str, url: str, body: Any = None) -> Any:
    """A JSON request; HTTP errors raise urllib.error.HTTPError."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method)
    req.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(req, timeout=30) as resp:
        return json.load(resp)


def all_documents(es: str, index: str) -> dict[str, dict[str, Any]]:
    """Every document of ``index`` by ``_id`` (after a refresh)."""
    http("POST", f"{es}/{index}/_refresh")
    out: dict[str, dict[str, Any]] = {}
    page = http("POST", f"{es}/{index}/_search?scroll=1m", {"size": 5000})
    while page["hits"]["hits"]:
        for hit in page["hits"]["hits"]:
            out[hit["_id"]] = hit["_source"]
        page = http(
            "POST", f"{es}/_search/scroll", {"scroll": "1m", "scroll_id": page["_scroll_id"]}
        )
    http("DELETE", f"{es}/_search/scroll", {"scroll_id": page["_scroll_id"]})
    return out


def count(es: str, index: str) -> int:
    """Documents in ``index`` after a refresh; 0 while it does not exist or the node is away."""
    try:
        http("POST", f"{es}/{index}/_refresh")
        return int(http("GET", f"{es}/{index}/_count")["count"])
    except (OSError, urllib.error.URLError, ValueError, KeyError):
        return 0


def delete_index(es: str, index: str) -> None:
    try:
        http("DELETE", f"{es}/{index}")
    except urllib.error.HTTPError as exc:
        if exc.code != 404:
            raise


def assert_same_documents(got: dict[str, Any], want: dict[str, Any]) -> None:
    """The index holds exactly ``want``: same ids, same content, no more, no fewer."""
    missing = set(want) - set(got)
    extra = set(got) - set(want)
    assert not missing, f"{len(missing)} documents missing, e.g. {sorted(missing)[:3]}"
    assert not extra, f"{len(extra)} unexpected documents, e.g. {sorted(extra)[:3]}"
    wrong = [k for k in want if got[k] != want[k]]
    assert not wrong, (
        f"{len(wrong)} documents differ, e.g. {wrong[:1]}: {got[wrong[0]]} != {want[wrong[0]]}"
    )


# -- Kafka ---------------------------------------------------------------------------------
def produce_stream(bootstrap: str, topic: str, events: list[dict[str, Any]]) -> None:
    """Create ``topic`` (PARTITIONS partitions) and its dead-letter topic, and produce
    ``events`` keyed by ``id`` to the partition the pipeline's keying expects."""
    asyncio.run(create_topics(bootstrap, {topic: PARTITIONS, f"{topic}-dlq": 1}))
    records = [
        (partition_for(e["id"], PARTITIONS), e["id"].encode(), orjson.dumps(e)) for e in events
    ]
    asyncio.run(produce(bootstrap, topic, PARTITIONS, records))


async def _lag(bootstrap: str, group: str, topic: str) -> int:
    """Records of ``topic`` past the offsets ``group`` committed (all of them when none)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10_000)
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, request_timeout_ms=10_000)
    await admin.start()
    try:
        await consumer.start()
        committed = await admin.list_consumer_group_offsets(group)
        tps = [TopicPartition(topic, p) for p in range(PARTITIONS)]
        ends = await consumer.end_offsets(tps)
        lag = 0
        for tp in tps:
            meta = committed.get(tp)
            lag += ends[tp] - (meta.offset if meta is not None and meta.offset >= 0 else 0)
        return lag
    finally:
        await consumer.stop()
        await admin.close()


def lag(bootstrap: str, group: str, topic: str) -> int:
    """Records of ``topic`` the pipeline has not checkpointed: at 0, every output of the
    whole input is acknowledged by the index (the sink is flushed before offsets commit)."""
    return asyncio.run(_lag(bootstrap, group, topic))


async def _dead_letters(bootstrap: str, topic: str, timeout_s: float) -> list[Any]:
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", enable_auto_commit=False
    )
    await consumer.start()
    try:
        tp = TopicPartition(topic, 0)
        end = (await consumer.end_offsets([tp]))[tp]
        out: list[Any] = []
        deadline = time.monotonic() + timeout_s
        while len(out) < end and time.monotonic() < deadline:
            for records in (await consumer.getmany(timeout_ms=500)).values():
                out.extend(records)
        return out
    finally:
        await consumer.stop()


def dead_letters(bootstrap: str, topic: str, timeout_s: float = 30) -> list[Any]:
    """Every record of the (one-partition) dead-letter ``topic``, up to its end offset now."""
    return asyncio.run(_dead_letters(bootstrap, topic, timeout_s))


def headers(record: Any) -> dict[str, str]:
    return {k: v.decode() for k, v in record.headers or ()}


def late_letters(letters: list[Any]) -> set[str]:
    """The source positions (``"<topic>-<partition>@<offset>"``) of the dead letters for
    late records."""
    out = set()
    for r in letters:
        h = headers(r)
        if h["evtime-reason"] == "late":
            out.add(f"{h['evtime-topic']}-{h['evtime-partition']}@{h['evtime-offset']}")
    return out


# -- the pipeline as a process -------------------------------------------------------------
class Pipeline:
    """``examples/seed_join.py`` run as a worker process on one topic and one index.

    Every start uses the same state dir, app name (consumer group) and instance id, as a
    restarted worker does; output is appended to ``log_path``.
    """

    def __init__(
        self, bootstrap: str, es: str, name: str, tmp_path: Path, *, topic: str, index: str
    ) -> None:
        self.bootstrap = bootstrap
        self.es = es
        self.topic = topic
        self.index = index
        self.app_name = name
        self.state_dir = tmp_path / "state"
        self.log_path = tmp_path / "seed.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.env = {
            **os.environ,
            "PYTHONPATH": str(ROOT),
            "EVTIME_APP_NAME": name,
            "EVTIME_INSTANCE_ID": f"{name}-1",
            # The test streams' event times are not the wall clock's, and the model's
            # watermark follows records only; the clock-driven one has its own test.
            "EVTIME_IDLE_TIMEOUT": "off",
        }

    def start(self) -> subprocess.Popen[bytes]:
        args = [
            sys.executable,
            str(ROOT / "examples" / "seed_join.py"),
            "--bootstrap", self.bootstrap,
            "--topic", self.topic,
            "--es-url", self.es,
            "--index", self.index,
            "--state-dir", str(self.state_dir),
        ]  # fmt: skip
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                args, env=self.env, stdout=log, stderr=subprocess.STDOUT, cwd=str(ROOT)
            )
        return self.proc

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_tail(self, chars: int = 4000) -> str:
        if not self.log_path.exists():
            return "(no log)"
        return self.log_path.read_text(errors="replace")[-chars:]

    def kill(self) -> None:
        """SIGKILL: no checkpoint, no flush, no goodbye."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def stop(self, timeout: float = 60) -> int:
        """SIGTERM and wait (the worker checkpoints); SIGKILL when it does not stop in time.
        Returns the exit code (-9 after a SIGKILL)."""
        proc = self.proc
        if proc is None:
            return 0
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        return int(proc.returncode)

    def wait_caught_up(self, want: int, timeout_s: float) -> None:
        """Wait until the worker checkpointed the whole input and the index holds ``want``
        documents; fail if the worker dies or time is up.

        A checkpoint flushes the sink (every document acknowledged) before it commits the
        input offsets: once the whole input is committed, fewer documents than ``want``
        (for 10 s, in case the node is still recovering) means documents were lost."""
        deadline = time.monotonic() + timeout_s
        short_since: float | None = None
        while True:
            assert self.alive(), f"the worker exited:\n{self.log_tail()}"
            behind = lag(self.bootstrap, self.app_name, self.topic)
            n = count(self.es, self.index)  # after the lag: it may only grow in between
            if behind == 0 and n >= want:
                return
            now = time.monotonic()
            if behind == 0:
                short_since = now if short_since is None else short_since
                assert now - short_since < 10, (
                    f"the whole input is checkpointed but the index holds {n} of {want} "
                    f"documents:\n{self.log_tail()}"
                )
            else:
                short_since = None
            assert now < deadline, (
                f"not caught up after {timeout_s:.0f} s: {n} of {want} documents, "
                f"{behind} records not checkpointed:\n{self.log_tail()}"
            )
            time.sleep(1)
