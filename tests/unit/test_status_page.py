"""The status page's document and servers: ``/status.json`` from a worker's status (ISO
watermarks and their delay, lag, the latest dead letters first, throughput samples),
``/`` as one self-contained page, and the supervisor's page gathering its workers'."""

from __future__ import annotations

import re

import aiohttp
import orjson

from evtime.records import DeadLetter, DeadLetterReason
from evtime.runtime.metrics import MetricsServer
from evtime.runtime.status import (
    RECENT_DEAD_LETTERS,
    TaskStatus,
    WorkerState,
    WorkerStats,
    WorkerStatus,
)
from evtime.runtime.status_page import SupervisorStatusServer, Throughput, status_document
from evtime.time import MIN_TIMESTAMP

NOW = 1_765_000_000_000


def _letter(offset: int) -> DeadLetter:
    return DeadLetter(DeadLetterReason.DECODE, f"bad json at {offset}", "clicks", 1, offset,
                      b"k", b"{", timestamp=None)


def _status(stats: WorkerStats | None = None) -> WorkerStatus:
    stats = stats or WorkerStats()
    return WorkerStatus(
        "shop", WorkerState.RUNNING, NOW,
        frozenset({("clicks", 0), ("clicks", 1)}),
        {("clicks", 0): 120, ("clicks", 1): 50},
        (
            TaskStatus(("clicks",), 1, {"clicks": 50}, MIN_TIMESTAMP, None),
            TaskStatus(("clicks",), 0, {"clicks": 100}, NOW - 2500, (4096, 12),
                       frozenset({"clicks"})),
        ),
        stats, {}, True, 3, NOW - 1500,
    )


def test_the_document_shows_tasks_watermarks_lag_and_the_latest_dead_letters() -> None:
    stats = WorkerStats(records_in={("clicks", 0): 100, ("clicks", 1): 50},
                        records_out={"counts/main": 7})
    for offset in range(RECENT_DEAD_LETTERS + 5):
        stats.dead_letter(_letter(offset))
    doc = status_document(_status(stats), [(NOW - 2000, 10, 0), (NOW, 150, 7)])
    assert doc["assigned"] == ["clicks[0]", "clicks[1]"]
    first, second = doc["tasks"]
    assert (first["partition"], first["watermark"], first["watermark_delay_s"]) == (
        0, "2025-12-06T05:46:37.500Z", 2.5
    )
    assert first["inputs"] == [
        {"topic": "clicks", "partition": 0, "offset": 100, "lag": 20, "clock": True}
    ]
    assert (first["state_bytes"], first["state_keys"]) == (4096, 12)
    assert second["watermark"] is None and second["state_bytes"] is None  # none yet, closed
    assert doc["paused"] is True and doc["last_checkpoint_age_s"] == 1.5
    assert (doc["records_in"], doc["records_out"]) == (150, 7)
    assert doc["dead_letters"] == {"decode": RECENT_DEAD_LETTERS + 5}
    recent = doc["recent_dead_letters"]
    assert len(recent) == RECENT_DEAD_LETTERS
    assert [d["offset"] for d in recent[:2]] == [RECENT_DEAD_LETTERS + 4, RECENT_DEAD_LETTERS + 3]
    assert recent[0]["error"] == f"bad json at {RECENT_DEAD_LETTERS + 4}"
    assert doc["samples"] == [(NOW - 2000, 10, 0), (NOW, 150, 7)]
    orjson.dumps(doc)  # JSON-ready


def test_throughput_keeps_the_last_samples_of_the_totals() -> None:
    stats = WorkerStats()
    throughput = Throughput(lambda: _status(stats), size=3)
    for n in range(5):
        stats.records_in[("clicks", 0)] = n * 10
        throughput.sample()
    assert [s[1] for s in throughput.samples] == [20, 30, 40]


async def test_the_worker_serves_a_self_contained_page_and_its_json() -> None:
    server = MetricsServer(_status, "127.0.0.1", 0)
    await server.start()
    try:
        async with aiohttp.ClientSession() as http:
            async with http.get(f"http://127.0.0.1:{server.port}/") as response:
                assert response.status == 200
                assert response.content_type == "text/html"
                html = await response.text()
            async with http.get(f"http://127.0.0.1:{server.port}/status.json") as response:
                doc = orjson.loads(await response.read())
    finally:
        await server.stop()
    assert "<script>" in html and "status.json" in html
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", html)  # no external assets
    assert doc["app"] == "shop" and len(doc["samples"]) == 1  # sampled at start


async def test_the_supervisor_page_gathers_its_workers_and_their_readiness() -> None:
    worker = MetricsServer(_status, "127.0.0.1", 0)
    await worker.start()
    with_free_port = MetricsServer(_status, "127.0.0.1", 0)
    await with_free_port.start()
    gone = with_free_port.port
    await with_free_port.stop()  # a worker not (yet) listening
    supervisor = SupervisorStatusServer("127.0.0.1", 0, [worker.port, gone])
    await supervisor.start()
    try:
        port = supervisor.port
        async with aiohttp.ClientSession() as http:
            async with http.get(f"http://127.0.0.1:{port}/status.json") as response:
                workers = orjson.loads(await response.read())["workers"]
            async with http.get(f"http://127.0.0.1:{port}/healthz") as response:
                health = (response.status, orjson.loads(await response.read()))
            async with http.get(f"http://127.0.0.1:{port}/") as response:
                assert "status.json" in await response.text()
    finally:
        await supervisor.stop()
        await worker.stop()
    assert workers[0]["worker"] == 0 and workers[0]["app"] == "shop"
    assert workers[1]["port"] == gone and "error" in workers[1]
    assert health[0] == 503 and [w["ready"] for w in health[1]["workers"]] == [True, False]
