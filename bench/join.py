"""Engine vs plain dict loop: the seed's interval join (W2) on the embedded engine.

One topic of A and B events (JSON bytes, as Kafka hands them), split into the
two join sides by ``where``: ``--ids`` ids, each with an A event; 90 % of
them a B event within 15 min of it, 5 % one 1 to 5 h later, 5 % none. Event
time runs over ``--span``; arrival order is event time with up to 2 s of
disorder. The join: within 6 h, inner or full outer (``--how``), optionally
with ``--unmatched-after``. Results are counted in memory.

Both run in this process, one after the other, on the same encoded records:

(a) the ceiling, a plain loop: ``orjson.loads`` every value and touch a dict
    (id -> the A / B rows seen), counting the pairs within the bounds;
(b) evtime on the embedded MemorySource, RocksDB state, snapshots every second
    and a memory sink.

Prints events/s of both and the ratio. With ``--kafka`` the records go to a
fresh topic of the local broker instead, the ceiling is a raw aiokafka consumer
that ``orjson.loads`` every value (bench/kafka_window.py's), and evtime runs as a
worker into a memory sink; the bench's topics are deleted at the end. Usage:

    python bench/join.py [--ids 500000] [--how inner|outer] [--unmatched-after 15m]
    python bench/join.py --kafka [--partitions 1] [--bootstrap 127.0.0.1:9092]
    python bench/join.py --profile [cprofile|pyinstrument]   # one engine run, profiled
"""

from __future__ import annotations

import argparse
import asyncio
import random
import shutil
import tempfile
import time
import uuid
from typing import Any

import orjson

from evtime import App
from evtime.connectors.kafka import KafkaSource, default_bootstrap
from evtime.connectors.local import MemorySink, MemorySource
from evtime.runtime.gc import tune_gc
from evtime.time import to_millis

SECOND = 1000
MINUTE = 60 * SECOND
HOUR = 60 * MINUTE
WITHIN = 6 * HOUR
OOO = 5 * SECOND
START = 1_767_225_600_000


def generate(ids: int, span: int, seed: int = 13) -> list[tuple[bytes, bytes]]:
    """(key, JSON value) records in arrival order, W2-shaped."""
    rng = random.Random(seed)
    timed: list[tuple[int, bytes, bytes]] = []
    for i in range(ids):
        key = f"id-{i:07d}"
        a_ts = START + i * span // ids
        roll = rng.random()
        b_ts: int | None
        if roll < 0.90:
            b_ts = a_ts + rng.randrange(0, 15 * MINUTE)
        elif roll < 0.95:
            b_ts = a_ts + rng.randrange(HOUR, 5 * HOUR)
        else:
            b_ts = None
        kb = key.encode()
        a = {"type": "A", "id": key, "ts": a_ts, "amount": rng.randrange(5, 500)}
        timed.append((a_ts + rng.randrange(0, 2 * SECOND), kb, orjson.dumps(a)))
        if b_ts is not None:
            b = {"type": "B", "id": key, "ts": b_ts, "method": "card"}
            timed.append((b_ts + rng.randrange(0, 2 * SECOND), kb, orjson.dumps(b)))
    timed.sort(key=lambda row: row[0])
    return [(k, v) for _, k, v in timed]


def plain_loop(records: list[tuple[bytes, bytes]]) -> int:
    """The ceiling: decode every value, keep each id's rows in a dict, count the pairs."""
    rows: dict[str, tuple[list[int], list[int]]] = {}
    pairs = 0
    loads = orjson.loads
    for _key, raw in records:
        v = loads(raw)
        ts = v["ts"]
        entry = rows.get(v["id"])
        if entry is None:
            entry = rows[v["id"]] = ([], [])
        side = 0 if v["type"] == "A" else 1
        for other in entry[1 - side]:
            if -WITHIN <= other - ts <= WITHIN:
                pairs += 1
        entry[side].append(ts)
    return pairs


def declare(app: App, events: Any, how: str, after: int | None) -> MemorySink:
    """The W2 join of ``events`` into a memory sink (its values: whether a row is a pair)."""
    sink = MemorySink()

    @app.join(
        events.where(lambda v: v["type"] == "A"),
        events.where(lambda v: v["type"] == "B"),
        within=WITHIN,
        how=how,
        emit_unmatched_after=after,
        sink=sink,
    )
    def joined(result: Any) -> Any:
        return result.right is not None and result.left is not None

    return sink


def engine(
    src: MemorySource, state_dir: str, how: str, after: int | None
) -> tuple[int, int]:
    """Run the join over ``src``; returns (results emitted, joined results)."""
    app = App("bench-join", state_dir=state_dir, checkpoint_interval="1s", batch_size=5_000)
    events = app.source("events", src, key="id", timestamp="ts", max_out_of_orderness=OOO)
    sink = declare(app, events, how, after)
    asyncio.run(app.runner().run())
    return len(sink.outputs), sum(1 for o in sink.outputs if o.value)


async def kafka_produce(
    bootstrap: str, topic: str, records: list[tuple[bytes, bytes]], partitions: int
) -> None:
    from aiokafka import AIOKafkaProducer
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, partitions, 1)])
    finally:
        await admin.close()
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, linger_ms=20, max_batch_size=512 * 1024, acks=1
    )
    await producer.start()
    try:
        for key, value in records:
            await producer.send(topic, value, key=key)
        await producer.flush()
    finally:
        await producer.stop()


async def kafka_delete(bootstrap: str, prefixes: tuple[str, ...]) -> None:
    """Delete the bench's topics: its input and the app's internal ones."""
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        names = [t for t in await admin.list_topics() if t.startswith(prefixes)]
        if names:
            await admin.delete_topics(names)
    finally:
        await admin.close()


async def kafka_engine(
    bootstrap: str, topic: str, ends: dict[int, int], app_name: str, state_dir: str,
    how: str, after: int | None,
) -> tuple[float, int, int]:
    """Run the join as a worker on ``topic`` until every record is processed."""
    app = App(app_name, state_dir=state_dir, checkpoint_interval="1s", batch_size=5_000)
    events = app.source(
        topic, KafkaSource(topic, bootstrap), key="id", timestamp="ts",
        max_out_of_orderness=OOO,
    )
    sink = declare(app, events, how, after)
    worker = app.worker(handle_signals=False)
    t0 = time.perf_counter()
    run = asyncio.create_task(worker.run())
    while True:
        await asyncio.sleep(0.05)
        if run.done():
            await run
            raise SystemExit("the worker stopped early")
        done = {t.partition: t.offsets[topic] for t in worker.tasks.values()}
        if len(done) == len(ends) and all(done[p] >= ends[p] for p in ends):
            break
    elapsed = time.perf_counter() - t0
    worker.stop()
    await run
    return elapsed, len(sink.outputs), sum(1 for o in sink.outputs if o.value)


def run_kafka(args: argparse.Namespace, records: list[tuple[bytes, bytes]], after: int | None,
              pairs: int) -> None:
    from kafka_window import ceiling, end_offsets  # bench/ is the script's folder

    topic = f"bench-join-{uuid.uuid4().hex[:8]}"
    app_name = f"{topic}-app"
    print(f"producing {len(records):,} events to {topic} ({args.partitions} partitions) ...")
    try:
        asyncio.run(kafka_produce(args.bootstrap, topic, records, args.partitions))
        ends = asyncio.run(end_offsets(args.bootstrap, topic, args.partitions))
        total = sum(ends.values())
        tune_gc()
        ceiling_s = engine_s = float("inf")
        emitted = joined = 0
        for n in range(args.repeat):
            ceiling_s = min(ceiling_s, asyncio.run(ceiling(args.bootstrap, topic, total)))
            state_dir = tempfile.mkdtemp(prefix="evtime-kbench-")
            try:
                elapsed, emitted, joined = asyncio.run(kafka_engine(
                    args.bootstrap, topic, ends, f"{app_name}{n}", state_dir, args.how, after
                ))
                engine_s = min(engine_s, elapsed)
            finally:
                shutil.rmtree(state_dir, ignore_errors=True)
    finally:
        asyncio.run(kafka_delete(args.bootstrap, (topic,)))
    if joined != pairs:
        print(f"WARNING: the worker emitted {joined:,} pairs, the plain loop counts {pairs:,}")
    c_eps, e_eps = total / ceiling_s, total / engine_s
    best = f"best of {args.repeat}"
    print(f"how: {args.how}  unmatched_after: {args.unmatched_after}  results: {emitted:,}")
    print(f"raw aiokafka + orjson.loads : {c_eps:12,.0f} events/s  ({ceiling_s:.2f} s, {best})")
    print(f"evtime join, Kafka -> memory: {e_eps:12,.0f} events/s  ({engine_s:.2f} s, {best})")
    print(f"ratio evtime/ceiling: {e_eps / c_eps:.1%}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--ids", type=int, default=500_000, help="ids (about 1.95 events each)")
    parser.add_argument("--span", default="24h", help="event time the ids are spread over")
    parser.add_argument("--how", choices=("inner", "outer"), default="inner")
    parser.add_argument(
        "--unmatched-after", default=None, help="emit_unmatched_after (outer only), e.g. 15m"
    )
    parser.add_argument("--repeat", type=int, default=1, help="runs of each; the best counts")
    parser.add_argument("--kafka", action="store_true", help="through the local broker")
    parser.add_argument("--partitions", type=int, default=1, help="of the topic")
    parser.add_argument("--bootstrap", default=default_bootstrap())
    parser.add_argument(
        "--profile", nargs="?", const="cprofile", choices=("cprofile", "pyinstrument"),
        help="profile one engine run instead of timing (pyinstrument must be installed)",
    )
    args = parser.parse_args()
    after = None
    if args.unmatched_after:
        after = to_millis(args.unmatched_after, name="--unmatched-after")
    records = generate(args.ids, to_millis(args.span, name="--span"))
    n = len(records)
    if args.kafka:
        run_kafka(args, records, after, plain_loop(records))
        return
    src = MemorySource("events", partitions=args.partitions)
    for key, value in records:
        src.add(value, key=key)
    tune_gc()

    if args.profile:
        state_dir = tempfile.mkdtemp(prefix="evtime-bench-")
        try:
            if args.profile == "pyinstrument":
                from pyinstrument import Profiler

                profiler = Profiler(interval=0.0005)
                profiler.start()
                engine(src, state_dir, args.how, after)
                profiler.stop()
                print(profiler.output_text(unicode=False, color=False, show_all=False))
            else:
                import cProfile
                import pstats

                prof = cProfile.Profile()
                prof.enable()
                engine(src, state_dir, args.how, after)
                prof.disable()
                pstats.Stats(prof).sort_stats("tottime").print_stats(25)
        finally:
            shutil.rmtree(state_dir, ignore_errors=True)
        return

    plain_s = engine_s = engine_cpu = float("inf")
    pairs = emitted = joined = 0
    for _ in range(args.repeat):
        t0 = time.perf_counter()
        pairs = plain_loop(records)
        plain_s = min(plain_s, time.perf_counter() - t0)
        state_dir = tempfile.mkdtemp(prefix="evtime-bench-")
        try:
            t0, c0 = time.perf_counter(), time.process_time()
            emitted, joined = engine(src, state_dir, args.how, after)
            engine_s = min(engine_s, time.perf_counter() - t0)
            engine_cpu = min(engine_cpu, time.process_time() - c0)
        finally:
            shutil.rmtree(state_dir, ignore_errors=True)

    if joined != pairs:
        raise SystemExit(f"MISMATCH: engine joined {joined:,} pairs, plain loop {pairs:,}")
    plain_eps, engine_eps = n / plain_s, n / engine_s
    print(
        f"events: {n:,}  ids: {args.ids:,}  span: {args.span}  how: {args.how}  "
        f"unmatched_after: {args.unmatched_after}  results: {emitted:,} ({joined:,} joined)"
    )
    best = f"best of {args.repeat}"
    print(f"plain dict loop : {plain_eps:12,.0f} events/s  ({plain_s:.2f} s, {best})")
    print(
        f"evtime (RocksDB): {engine_eps:12,.0f} events/s  ({engine_s:.2f} s, {best}; "
        f"{n / engine_cpu:,.0f} events per CPU second)"
    )
    print(f"ratio evtime/plain: {engine_eps / plain_eps:.1%}")


if __name__ == "__main__":
    main()
