"""``evtime demo`` (README command 1): the seed pipeline on a generated stream, checked.

The pipeline our first users asked for: one Kafka topic of A and B events
(here: orders and their payments), joined by their common key, every join
result upserted into an Elasticsearch/OpenSearch index by that key. Pairs are
joined when the second event arrives; a lone event is reported ``unmatched``
15 minutes (of event time) after it, and replaced by the joined document if
its partner still comes within 6 hours.

The demo

1. starts Kafka and OpenSearch (``evtime services up``; with ``--bootstrap``
   and ``--es-url`` it uses yours instead);
2. generates a realistic stream: most partners minutes apart, some hours
   apart, some more than 6 hours apart, some never; arrival slightly out of
   order; a few malformed records (broken JSON, no timestamp, no key);
3. starts ``examples/seed_join.py`` as a worker process and produces the
   stream with event time compressed (``--speed``, event time per second),
   printing progress: what was produced and what landed in the index;
4. ends by printing what the index holds (joined and unmatched documents,
   dead letters, events/s, sample documents) and checks every document
   against the documents expected from the generated stream.

Where Java or Maven is missing (or ``--embedded``), the same join runs on the
embedded engine, with the stream in JSON-lines files and a JSON-lines sink
standing for the index; the output says so.

A live stream keeps moving event time; the generated one ends, so a
heartbeat record per partition (neither A nor B, ignored by the join) moves
each partition's watermark past the last deadline at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import logging
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import orjson

from evtime.connectors.local import partition_for
from evtime.errors import ConfigError, EvtimeError
from evtime.services_build import tail
from evtime.time import to_millis

SECOND = 1_000
MINUTE = 60 * SECOND
HOUR = 60 * MINUTE
START = 1_767_225_600_000  # 2026-01-01T00:00:00Z
OOO = 5 * SECOND  # the pipeline's max_out_of_orderness
JITTER = 2 * SECOND  # arrival disorder of the generated stream, below OOO: nothing is late
PREFIX = "evtime-demo"
ROOT = Path(__file__).resolve().parents[1]
# The example of the checkout (or, with the package installed, of the working directory).
SEED_JOIN = next(
    (p for p in (ROOT / "examples" / "seed_join.py", Path.cwd() / "examples" / "seed_join.py")
     if p.is_file()),
    ROOT / "examples" / "seed_join.py",
)
METHODS = ("card", "card", "card", "paypal", "transfer")


@dataclass
class Stream:
    """A generated stream in arrival order, and what is known of it."""

    records: list[tuple[int, int, bytes | None, bytes]] = field(default_factory=list)
    """(arrival time, partition, key, value bytes)."""
    events: list[dict[str, Any]] = field(default_factory=list)
    """The well-formed A and B events."""
    malformed: Counter[str] = field(default_factory=Counter)
    """Malformed records by the dead-letter reason they must get."""
    shapes: Counter[str] = field(default_factory=Counter)
    """Keys by how far apart their two events are."""
    heartbeats: int = 0

    @property
    def span_ms(self) -> int:
        return self.records[-1][0] - self.records[0][0] if self.records else 0


def generate(
    keys: int,
    partitions: int,
    seed: int,
    *,
    span: int = 8 * HOUR,
    within: int = 6 * HOUR,
    unmatched_after: int = 15 * MINUTE,
) -> Stream:
    """Orders (A) and their payments (B) for ``keys`` order ids over ``span`` of event time.

    75 % of payments come 20 s to 14 min after the order (some before it), 12 %
    between 16 min and ``within`` later, 5 % more than ``within`` later (too
    late to join) and 8 % never. One record in a thousand is malformed.
    """
    rng = random.Random(seed)
    stream = Stream()
    timed: list[tuple[int, bytes | None, bytes, int | None]] = []  # arrival, key, value, part.
    for i in range(keys):
        key = f"order-{i:06d}"
        first_ts = START + i * span // keys + rng.randrange(0, max(1, span // keys))
        roll = rng.random()
        second_ts: int | None
        if roll < 0.75:
            stream.shapes["minutes apart"] += 1
            second_ts = first_ts + rng.randrange(20 * SECOND, 14 * MINUTE)
        elif roll < 0.87:
            stream.shapes["hours apart"] += 1
            second_ts = first_ts + rng.randrange(unmatched_after + MINUTE, within - 10 * MINUTE)
        elif roll < 0.92:
            stream.shapes["too far apart"] += 1
            second_ts = first_ts + within + rng.randrange(2 * MINUTE, 90 * MINUTE)
        else:
            stream.shapes["partner never comes"] += 1
            second_ts = None
        amount = round(rng.uniform(5, 500), 2)
        order = {"customer": f"c{rng.randrange(5_000):04d}", "amount": amount,
                 "items": rng.randint(1, 6)}
        payment = {"method": rng.choice(METHODS), "amount": amount}
        first, second = ("A", "B") if rng.random() < 0.8 else ("B", "A")
        times = [(first, first_ts)] + ([(second, second_ts)] if second_ts is not None else [])
        for kind, ts in times:
            event = {"type": kind, "id": key, "ts": ts, **(order if kind == "A" else payment)}
            stream.events.append(event)
            timed.append((ts + rng.randrange(0, JITTER), key.encode(), orjson.dumps(event), None))
    last_ts = max(e["ts"] for e in stream.events)
    for n in range(max(3, len(stream.events) // 1000)):
        kind = ("decode", "timestamp", "key")[n % 3]
        ts = START + rng.randrange(0, span)
        key = f"order-{rng.randrange(keys):06d}"
        value: bytes
        if kind == "decode":
            value = orjson.dumps({"type": "A", "id": key, "ts": ts, "amount": 1.0})[:-9]
        elif kind == "timestamp":
            value = orjson.dumps({"type": "B", "id": key, "ts": "yesterday", "method": "card"})
        else:
            value = orjson.dumps({"type": "A", "ts": ts, "amount": 3.5})
        stream.malformed[kind] += 1
        timed.append((ts, key.encode(), value, None))
    # Heartbeats: past every lone event's report deadline, one per partition.
    beat = last_ts + unmatched_after + OOO + MINUTE
    for p in range(partitions):
        hb_key = next(k for k in (f"heartbeat-{j}" for j in range(10_000))
                      if partition_for(k, partitions) == p)
        value = orjson.dumps({"type": "heartbeat", "id": hb_key, "ts": beat})
        timed.append((beat, hb_key.encode(), value, p))
        stream.heartbeats += 1
    timed.sort(key=lambda row: row[0])
    for arrival, key_bytes, value, part in timed:
        p = part if part is not None else partition_for(key_bytes, partitions)
        stream.records.append((arrival, p, key_bytes, value))
    return stream


def expected_documents(events: Iterable[dict[str, Any]], within: int) -> dict[str, dict[str, Any]]:
    """The index the pipeline must end with, computed per key from the whole stream.

    Nothing is late (the arrival disorder is below the watermark delay) and the
    heartbeats make every deadline pass, so: an A and a B of a key at most
    ``within`` apart are one joined document (joined at the later event time);
    otherwise the key's document is the unmatched report of its last event (a
    lone event, or the second of a pair too far apart, reported after the first).
    """
    by_key: dict[str, dict[str, dict[str, Any]]] = {}
    for e in events:
        by_key.setdefault(e["id"], {})[e["type"]] = e
    docs: dict[str, dict[str, Any]] = {}
    for key, sides in by_key.items():
        a, b = sides.get("A"), sides.get("B")
        if a is not None and b is not None and abs(a["ts"] - b["ts"]) <= within:
            docs[key] = {"id": key, "a": a, "b": b, "status": "joined",
                         "joined_at_ms": max(a["ts"], b["ts"])}
        else:
            last = max((e for e in (a, b) if e is not None), key=lambda e: e["ts"])
            docs[key] = {"id": key, "a": last if last is a else None,
                         "b": last if last is b else None, "status": "unmatched",
                         "joined_at_ms": None}
    return docs


# -- the check, shared by both ways of running -------------------------------------------
def report(
    stream: Stream,
    docs: dict[str, dict[str, Any]],
    dead: Counter[str],
    elapsed: float,
    within: int,
    where: str,
    paced: str | None = None,
) -> int:
    """Print what landed and check it against the expected documents; the exit code."""
    want = expected_documents(stream.events, within)
    got_status = Counter(d.get("status") for d in docs.values())
    want_status = Counter(d["status"] for d in want.values())
    n = len(stream.records)
    pacing = f" (paced at {paced} of event time per second)" if paced else ""
    print(f"\n{n:,} records ({len(stream.events):,} A/B events, "
          f"{sum(stream.malformed.values())} malformed, {stream.heartbeats} heartbeats) "
          f"in {elapsed:.1f} s: {n / elapsed:,.0f} events/s end to end{pacing}")
    print(f"{where}: {len(docs):,} documents: {got_status['joined']:,} joined, "
          f"{got_status['unmatched']:,} unmatched "
          f"(expected {want_status['joined']:,} and {want_status['unmatched']:,})")
    print(f"dead letters: {sum(dead.values())} {dict(sorted(dead.items()))} "
          f"(expected {dict(sorted(stream.malformed.items()))})")
    shapes = ", ".join(f"{v:,} {k}" for k, v in stream.shapes.items())
    print(f"generated keys: {shapes}")
    samples = _samples(docs)
    for label, doc in samples:
        print(f"  sample ({label}): {orjson.dumps(doc).decode()}")

    failures: list[str] = []
    missing = set(want) - set(docs)
    extra = set(docs) - set(want)
    wrong = [k for k in want if k in docs and docs[k] != want[k]]
    if missing:
        failures.append(f"{len(missing):,} expected documents are missing, "
                        f"e.g. {sorted(missing)[:3]}")
    if extra:
        failures.append(f"{len(extra):,} documents were not expected, e.g. {sorted(extra)[:3]}")
    if wrong:
        failures.append(f"{len(wrong):,} documents differ from the expected ones, e.g. "
                        f"{wrong[0]}: {docs[wrong[0]]} != {want[wrong[0]]}")
    if dead != stream.malformed:
        failures.append(f"dead letters {dict(dead)} != malformed records "
                        f"{dict(stream.malformed)}")
    print()
    if failures:
        for f in failures:
            print(f"CHECK FAILED: {f}")
        return 1
    print(f"checked: all {len(want):,} documents equal the ones expected from the generated "
          f"stream; every malformed record is a dead letter with its reason.")
    return 0


def _samples(docs: dict[str, dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    picks: dict[str, dict[str, Any]] = {}
    for doc in docs.values():
        if doc.get("status") == "joined":
            gap = abs(doc["a"]["ts"] - doc["b"]["ts"])
            label = "joined, minutes apart" if gap < 15 * MINUTE else "joined, hours apart"
        else:
            label = "unmatched"
        picks.setdefault(label, doc)
        if len(picks) == 3:
            break
    return sorted(picks.items())


def load_seed_join() -> ModuleType:
    """The example pipeline module (examples/seed_join.py of the checkout)."""
    if not SEED_JOIN.is_file():
        raise ConfigError(f"{SEED_JOIN} not found: run the demo from a checkout of evtime")
    spec = importlib.util.spec_from_file_location("evtime_demo_seed_join", SEED_JOIN)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# -- on Kafka and OpenSearch -------------------------------------------------------------
def run_on_services(args: argparse.Namespace, stream: Stream, work: Path) -> int:
    """Produce the stream to Kafka, run examples/seed_join.py, read the index back."""
    return asyncio.run(_run_on_services(args, stream, work))


async def _run_on_services(args: argparse.Namespace, stream: Stream, work: Path) -> int:
    import aiohttp
    from aiokafka import AIOKafkaProducer

    logging.getLogger("aiokafka").setLevel(logging.WARNING)
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    run_id = time.strftime("%Y%m%d-%H%M%S")
    name = f"{PREFIX}-{run_id}"
    topic, dlq, index = name, f"{name}-dlq", name
    async with aiohttp.ClientSession(args.es_url, timeout=aiohttp.ClientTimeout(total=30)) as es:
        admin = AIOKafkaAdminClient(bootstrap_servers=args.bootstrap)
        await admin.start()
        try:
            old = [t for t in await admin.list_topics() if t.startswith(f"{PREFIX}-")]
            if old:
                await admin.delete_topics(old)
            await admin.create_topics([
                NewTopic(topic, args.partitions, 1, topic_configs={"retention.ms": "-1"}),
                NewTopic(dlq, 1, 1, topic_configs={"retention.ms": "-1"}),
            ])
        finally:
            await admin.close()
        async with es.delete(f"/{PREFIX}-*") as resp:
            await resp.read()
        async with es.put(f"/{index}", json=_INDEX_BODY) as resp:
            if resp.status >= 300:
                raise EvtimeError(f"creating index {index}: {resp.status} {await resp.text()}")
        print(f"topic {topic} ({args.partitions} partitions), index {index}, "
              f"dead letters {dlq}; worker log {work / 'worker.log'}")

        worker = _start_worker(args, topic, index, name, work)
        try:
            await _await_assignment(worker, work / "worker.log")
            producer = AIOKafkaProducer(
                bootstrap_servers=args.bootstrap, enable_idempotence=True, linger_ms=5
            )
            await producer.start()
            started = time.perf_counter()
            try:
                await _produce_paced(producer, stream, topic, args.speed_ms,
                                     lambda line: _progress(es, index, args, line, worker, work))
            finally:
                await producer.stop()
            produced_at = time.perf_counter() - started
            print(f"produced {len(stream.records):,} records in {produced_at:.1f} s; "
                  f"waiting for the index to settle ...")
            want = expected_documents(stream.events, args.within_ms)
            deadline = time.monotonic() + args.settle_timeout
            landed_at = produced_at
            while time.monotonic() < deadline:
                counts = await _status_counts(es, index)
                _check_alive(worker, work)
                if sum(counts.values()) >= len(want):
                    await _refresh(es, index)
                    if sum((await _status_counts(es, index)).values()) >= len(want):
                        landed_at = time.perf_counter() - started
                        break
                await asyncio.sleep(0.5)
            else:
                print(f"the index did not reach {len(want):,} documents within "
                      f"{args.settle_timeout:.0f} s")
        finally:
            code = _stop_worker(worker)
        if code != 0:
            print(f"the worker exited with {code}; last lines of {work / 'worker.log'}:")
            print(tail(work / "worker.log"))
            return 1
        docs = await _all_documents(es, index)
    dead = await _dead_letter_reasons(args.bootstrap, dlq)
    result = report(stream, docs, dead, landed_at, args.within_ms, f"index {index}",
                    args.speed if args.speed_ms else None)
    print(f"\nthe index stays for a look: curl '{args.es_url}/{index}/_search?q=status:unmatched'"
          f" (the next demo run replaces it); `evtime services down` stops the services")
    return result


_INDEX_BODY = {
    "settings": {"number_of_shards": 1, "number_of_replicas": 0, "refresh_interval": "1s"},
    "mappings": {"properties": {
        "id": {"type": "keyword"},
        "status": {"type": "keyword"},
        "joined_at_ms": {"type": "date", "format": "epoch_millis"},
    }},
}


def _start_worker(
    args: argparse.Namespace, topic: str, index: str, name: str, work: Path
) -> subprocess.Popen[bytes]:
    command = [
        sys.executable, str(SEED_JOIN),
        "--bootstrap", args.bootstrap, "--topic", topic, "--es-url", args.es_url,
        "--index", index, "--state-dir", str(work / "state"), "--app-name", name,
        "--within", args.within, "--unmatched-after", args.unmatched_after,
        "--max-out-of-orderness", f"{OOO}ms",
    ]
    env = {**os.environ, "EVTIME_INSTANCE_ID": f"{name}-1",
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    print(f"starting the pipeline: python examples/seed_join.py --topic {topic} --index {index}")
    with (work / "worker.log").open("wb") as log:
        return subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, cwd=str(ROOT))


async def _await_assignment(worker: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        _check_alive(worker, log.parent)
        if b"assigned [" in log.read_bytes():
            return
        await asyncio.sleep(0.2)
    raise EvtimeError(f"the worker got no partitions within 90 s; see {log}:\n{tail(log)}")


def _check_alive(worker: subprocess.Popen[bytes], work: Path) -> None:
    if worker.poll() is not None:
        raise EvtimeError(f"the worker exited with {worker.returncode}; last lines of its log:\n"
                          f"{tail(work / 'worker.log')}")


def _stop_worker(worker: subprocess.Popen[bytes]) -> int:
    if worker.poll() is None:
        worker.send_signal(signal.SIGTERM)  # checkpoint, leave the group, exit 0
        try:
            worker.wait(timeout=60)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait()
    return worker.returncode


async def _produce_paced(
    producer: Any, stream: Stream, topic: str, speed_ms: int, progress: Any
) -> None:
    """Send the records in arrival order, ``speed_ms`` of arrival time per second (0: at once),
    reporting progress once a second."""
    records = stream.records
    first = records[0][0]
    started = time.monotonic()
    next_report = started + 1
    i = 0
    while i < len(records):
        now = time.monotonic()
        due = first + (now - started) * speed_ms if speed_ms else records[-1][0]
        while i < len(records) and records[i][0] <= due:
            _, partition, key, value = records[i]
            await producer.send(topic, value, key=key, partition=partition)
            i += 1
            if i % 5000 == 0 and not speed_ms:
                break
        if time.monotonic() >= next_report:
            next_report += 1
            event_time = int(min(due, records[-1][0])) - START
            await progress(f"event time +{event_time // HOUR:02d}:"
                           f"{event_time % HOUR // MINUTE:02d}  produced {i:>7,}")
        if speed_ms:
            await asyncio.sleep(0.02)
    await producer.flush()


async def _progress(
    es: Any, index: str, args: argparse.Namespace, line: str,
    worker: subprocess.Popen[bytes], work: Path,
) -> None:
    _check_alive(worker, work)
    counts = await _status_counts(es, index)
    print(f"  {line}   index: {counts.get('joined', 0):>7,} joined "
          f"{counts.get('unmatched', 0):>6,} unmatched", flush=True)


async def _status_counts(es: Any, index: str) -> Counter[str]:
    body = {"size": 0, "aggs": {"s": {"terms": {"field": "status"}}}}
    async with es.post(f"/{index}/_search", json=body) as resp:
        if resp.status != 200:
            return Counter()
        data = await resp.json()
    return Counter({b["key"]: b["doc_count"] for b in data["aggregations"]["s"]["buckets"]})


async def _refresh(es: Any, index: str) -> None:
    async with es.post(f"/{index}/_refresh") as resp:
        await resp.read()


async def _all_documents(es: Any, index: str) -> dict[str, dict[str, Any]]:
    await _refresh(es, index)
    out: dict[str, dict[str, Any]] = {}
    async with es.post(f"/{index}/_search?scroll=1m", json={"size": 5000}) as resp:
        page = await resp.json()
    while page["hits"]["hits"]:
        for hit in page["hits"]["hits"]:
            out[hit["_id"]] = hit["_source"]
        body = {"scroll": "1m", "scroll_id": page["_scroll_id"]}
        async with es.post("/_search/scroll", json=body) as resp:
            page = await resp.json()
    return out


async def _dead_letter_reasons(bootstrap: str, topic: str) -> Counter[str]:
    from aiokafka import AIOKafkaConsumer, TopicPartition

    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False,
                                auto_offset_reset="earliest")
    await consumer.start()
    reasons: Counter[str] = Counter()
    try:
        tp = TopicPartition(topic, 0)
        consumer.assign([tp])
        end = (await consumer.end_offsets([tp]))[tp]
        while await consumer.position(tp) < end:
            for records in (await consumer.getmany(timeout_ms=1000)).values():
                for r in records:
                    headers = dict(r.headers or ())
                    reasons[headers.get("evtime-reason", b"?").decode()] += 1
    finally:
        await consumer.stop()
    return reasons


# -- on the embedded engine --------------------------------------------------------------
def run_embedded(args: argparse.Namespace, stream: Stream, work: Path) -> int:
    """The same join on the embedded engine: JSON-lines files in, a JSON-lines sink out."""
    from evtime.app import App
    from evtime.connectors.local import JsonLinesSink, JsonLinesSource

    seed_join = load_seed_join()
    paths = [work / f"events-{p}.jsonl" for p in range(args.partitions)]
    files = [path.open("wb") for path in paths]
    for _, partition, _, value in stream.records:
        files[partition].write(value + b"\n")
    for f in files:
        f.close()
    out = work / "joined.jsonl"
    dead_path = work / "dead-letters.jsonl"
    app = App(PREFIX, state_dir=work / "state", checkpoint_interval="1s",
              dead_letter=JsonLinesSink(dead_path))
    events = app.source("events", JsonLinesSource("events", paths), key="id", timestamp="ts",
                        max_out_of_orderness=OOO)
    options = argparse.Namespace(within=args.within, unmatched_after=args.unmatched_after)
    seed_join.declare_join(app, events, options, JsonLinesSink(out))
    runner = app.runner()
    started = time.perf_counter()

    async def drive() -> None:
        last = started
        runner.open()
        while not runner.finished:
            await runner.step()
            now = time.perf_counter()
            if now - last >= 1.0:
                last = now
                done = sum(t.records_in for t in runner.tasks)
                rate = done / (now - started)
                print(f"  {done:>9,} records  {rate:>9,.0f} records/s", flush=True)
        await runner.close()

    asyncio.run(drive())
    elapsed = time.perf_counter() - started
    docs: dict[str, dict[str, Any]] = {}
    for line in out.read_bytes().splitlines() if out.exists() else []:
        value = orjson.loads(line)["value"]
        docs[value["id"]] = value  # the index upserts by join key; so does this
    dead: Counter[str] = Counter()
    for line in dead_path.read_bytes().splitlines() if dead_path.exists() else []:
        dead[orjson.loads(line)["reason"]] += 1
    return report(stream, docs, dead, elapsed, args.within_ms, f"JSON-lines sink {out}")


# -- entry point -------------------------------------------------------------------------
def _services_up(args: argparse.Namespace) -> str | None:
    """Start Kafka and OpenSearch unless the user gave their own; None, or why not."""
    if args.bootstrap and args.es_url:
        return None
    from evtime import services

    config = services.ServicesConfig.from_env()
    args.bootstrap = args.bootstrap or config.kafka_bootstrap
    args.es_url = args.es_url or config.opensearch_url
    print("starting Kafka and OpenSearch (evtime services up) ...", flush=True)
    try:
        services.up()
    except EvtimeError as exc:
        return str(exc)
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="evtime demo", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--keys", type=int, default=20_000, help="order ids (two events each)")
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--span", default="8h", help="event time the orders are spread over")
    parser.add_argument("--speed", default="30m",
                        help="event time produced per second of wall time (0: all at once)")
    parser.add_argument("--within", default="6h")
    parser.add_argument("--unmatched-after", default="15m")
    parser.add_argument("--bootstrap", default=None, help="your Kafka (default: start one)")
    parser.add_argument("--es-url", default=None, help="your Elasticsearch/OpenSearch "
                        "(default: start OpenSearch)")
    parser.add_argument("--embedded", action="store_true",
                        help="run on the embedded engine with JSON-lines files, no services")
    parser.add_argument("--settle-timeout", type=float, default=120.0,
                        help="seconds to wait for the index after the last record")
    parser.add_argument("--out", type=Path, default=None, help="work directory (default: temp)")
    parser.add_argument("--clickstream", action="store_true",
                        help="run the windows-and-timers demo on the embedded engine instead")
    args, rest = parser.parse_known_args(argv)
    if args.clickstream:
        from evtime.demo_clickstream import main as clickstream

        return clickstream(rest)
    if rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    try:
        args.within_ms = to_millis(args.within, name="--within", allow_zero=False)
        unmatched = to_millis(args.unmatched_after, name="--unmatched-after", allow_zero=False)
        span = to_millis(args.span, name="--span", allow_zero=False)
        args.speed_ms = 0 if args.speed in ("0", "max") else to_millis(args.speed, name="--speed")
    except EvtimeError as exc:
        parser.error(str(exc))
    work = args.out or Path(tempfile.mkdtemp(prefix="evtime-demo-"))
    work.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(work / "state", ignore_errors=True)

    why_not = None if not args.embedded else "--embedded was given"
    if why_not is None:
        why_not = _services_up(args)
    stream = generate(args.keys, args.partitions, args.seed, span=span, within=args.within_ms,
                      unmatched_after=unmatched)
    print(f"\ngenerated {len(stream.records):,} records for {args.keys:,} order ids over "
          f"{stream.span_ms / HOUR:.1f} h of event time (seed {args.seed}); work dir {work}")
    if why_not is None:
        pace = f"{args.speed} of event time per second" if args.speed_ms else "at once"
        print(f"evtime demo: Kafka {args.bootstrap} -> examples/seed_join.py -> OpenSearch "
              f"{args.es_url}, produced {pace}\n")
        return run_on_services(args, stream, work)
    print("\n" + "=" * 78)
    print("EMBEDDED MODE: Kafka and OpenSearch are not used, because:")
    print(f"  {why_not}")
    print("The same join runs on the embedded engine: the stream is read from JSON-lines")
    print("files and the documents go to a JSON-lines file instead of an index.")
    print("=" * 78 + "\n")
    return run_embedded(args, stream, work)
