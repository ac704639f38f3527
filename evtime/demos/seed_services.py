"""``evtime demo`` on Kafka and OpenSearch: the stream produced, the seed pipeline as a worker.

The worker is ``python -m evtime.demos.seed_join`` (the code of ``examples/seed_join.py``),
run on a fresh topic and index; the index and the dead-letter topic are read back and
checked against the generated stream.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

from evtime.demos.seed_stream import (
    HOUR,
    MINUTE,
    OOO,
    PREFIX,
    START,
    Stream,
    expected_documents,
    report,
)
from evtime.errors import EvtimeError
from evtime.services.build import tail

ROOT = Path(__file__).resolve().parents[2]  # the folder that holds this evtime package

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
        sys.executable, "-m", "evtime.demos.seed_join",
        "--bootstrap", args.bootstrap, "--topic", topic, "--es-url", args.es_url,
        "--index", index, "--state-dir", str(work / "state"), "--app-name", name,
        "--within", args.within, "--unmatched-after", args.unmatched_after,
        "--max-out-of-orderness", f"{OOO}ms",
    ]
    env = {**os.environ, "EVTIME_INSTANCE_ID": f"{name}-1"}
    if (ROOT / "pyproject.toml").is_file():  # a checkout, maybe not installed: run this one
        env["PYTHONPATH"] = os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])
    print(f"starting the pipeline: python -m evtime.demos.seed_join (examples/seed_join.py) "
          f"--topic {topic} --index {index}")
    with (work / "worker.log").open("wb") as log:
        return subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, cwd=str(work))


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
