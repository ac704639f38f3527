"""The seed pipeline end to end: Kafka -> interval join -> OpenSearch, in events/s.

Produces N A/B events (the generator of the seed join tests: most pairs minutes
apart, some hours, some never) to a fresh 4-partition topic, then runs
``examples/seed_join.py`` (its ``build_app``) as a worker in this process and
times it from the worker's start until every document is in the index: the first
checkpoint after the last record was processed has flushed the sink, i.e. every
``_bulk`` batch is acknowledged, and committed the input offsets. (Counting the
index while it runs would need a refresh per look, which slows indexing.) The
index is then refreshed and must hold the count the join model expects.

Needs the broker and node of `evtime services up` (or --bootstrap / --es-url).
Prints events/s (input records) and docs/s (documents in the index), plus the
worker's phases and the sink's request counters. Usage:

    python bench/seed_join.py [--events 200000]
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import sys
import tempfile
import time
import uuid
from pathlib import Path

import aiohttp
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # examples/ and tests/ are not installed packages

from evtime.connectors.elasticsearch import ElasticsearchSink, default_url  # noqa: E402
from evtime.connectors.kafka import default_bootstrap  # noqa: E402
from examples.seed_join import build_app, parse_args  # noqa: E402
from tests.integration.seed_helpers import (  # noqa: E402
    PARTITIONS,
    expected_documents,
    generate,
    produce_stream,
)


async def end_offsets(bootstrap: str, topic: str) -> dict[int, int]:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap)
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(PARTITIONS)]
        return {tp.partition: off for tp, off in (await consumer.end_offsets(tps)).items()}
    finally:
        await consumer.stop()


async def run(args: argparse.Namespace, topic: str, index: str, want: int, state: str) -> None:
    app = build_app(
        parse_args(
            [
                "--bootstrap", args.bootstrap, "--topic", topic, "--es-url", args.es_url,
                "--index", index, "--state-dir", state, "--app-name", topic,
            ]
        )
    )  # fmt: skip
    sink = next(s for s in app.plan.sinks.values() if isinstance(s, ElasticsearchSink))
    ends = await end_offsets(args.bootstrap, topic)
    worker = app.worker(handle_signals=False)

    def processed_all() -> bool:
        done = {t.partition: t.offsets[topic] for t in worker.tasks.values()}
        return len(done) == len(ends) and all(done[p] >= ends[p] for p in ends)

    t0 = time.perf_counter()
    task = asyncio.create_task(worker.run())
    while not processed_all():
        await asyncio.sleep(0.02)
        if task.done():
            await task
            raise SystemExit("the worker stopped early")
    processed = time.perf_counter() - t0
    # The first checkpoint that ends after the last record was processed flushed the sink:
    # every document of the input is acknowledged by the cluster, the offsets committed.
    checkpoints = worker.checkpoints
    while worker.checkpoints <= checkpoints:
        await asyncio.sleep(0.02)
    acknowledged = time.perf_counter() - t0
    worker.stop()
    await task
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{args.es_url}/{index}/_refresh"):
            pass
        async with http.get(f"{args.es_url}/{index}/_count") as resp:
            indexed = int((await resp.json())["count"])
    if indexed != want:
        raise SystemExit(f"the index holds {indexed} documents, not the {want} expected")
    n = args.events
    print(f"  every record processed after {processed:.2f} s")
    print(f"  all {want:,} documents acknowledged and the input checkpointed: {acknowledged:.2f} s")
    print(f"  end to end: {n / acknowledged:,.0f} events/s, {want / acknowledged:,.0f} docs/s")
    phases = "  ".join(f"{k} {v:.2f}s" for k, v in worker.timings.items())
    print(f"  worker phases: {phases}; {worker.checkpoints} checkpoints")
    st = sink.stats
    print(
        f"  sink: {st.acknowledged:,} documents acknowledged (updates included) in "
        f"{st.requests:,} _bulk requests, {st.bytes_sent / 1e6:.1f} MB, "
        f"{st.request_seconds:.2f} s in requests, {st.retries} retries"
    )


async def cleanup(bootstrap: str, es: str, topic: str, index: str) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        names = [t for t in await admin.list_topics() if t.startswith(topic)]
        await admin.delete_topics(names)
    finally:
        await admin.close()
    async with aiohttp.ClientSession() as http, http.delete(f"{es}/{index}"):
        pass


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--seed", type=int, default=5)
    parser.add_argument("--bootstrap", default=default_bootstrap())
    parser.add_argument("--es-url", default=default_url())
    parser.add_argument("--keep", action="store_true", help="keep the topics and the index")
    args = parser.parse_args()

    name = f"bench-seed-{uuid.uuid4().hex[:8]}"
    topic, index = f"{name}-events", name
    # About 1.9 events per pair: enough pairs for N events, the last arrivals cut off.
    events = generate(args.events * 6 // 10 + 1, seed=args.seed)[: args.events]
    args.events = len(events)
    want = len(expected_documents(events, topic))
    print(
        f"seed join, {args.events:,} events ({want:,} documents expected), 4 partitions, "
        f"{args.bootstrap} -> {args.es_url}"
    )
    t = time.perf_counter()
    produce_stream(args.bootstrap, topic, events)
    print(f"  produced in {time.perf_counter() - t:.1f} s")
    state = tempfile.mkdtemp(prefix="evtime-bench-")
    try:
        asyncio.run(run(args, topic, index, want, state))
    finally:
        shutil.rmtree(state, ignore_errors=True)
        if not args.keep:
            asyncio.run(cleanup(args.bootstrap, args.es_url, topic, index))


if __name__ == "__main__":
    main()
