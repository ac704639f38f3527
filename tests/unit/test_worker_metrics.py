"""/metrics and /healthz of a worker on an in-memory consumer group: the figures scraped
over HTTP equal what the run did (records read per partition, outputs the sink received,
dead letters per reason, late records, checkpoints), and readiness follows the worker's
state."""

from __future__ import annotations

import asyncio
import random
import tempfile
from collections.abc import Sequence
from typing import Any

import aiohttp
import orjson
from prometheus_client.parser import text_string_to_metric_families

from evtime import App, Sum, Tumbling
from evtime.io import AssignCallback, RevokeCallback
from evtime.records import DeadLetter, Output, RawRecord
from tests.unit.memory_kafka import PARTITIONS, TOPIC, MemoryGroupSource, MemoryKafka

BASE = 1_767_225_600_000


class _Sink:
    def __init__(self) -> None:
        self.outputs: list[Output] = []

    async def write(self, outputs: Sequence[Output]) -> None:
        self.outputs.extend(outputs)

    async def flush(self) -> None:
        await asyncio.sleep(0)

    async def close(self) -> None:
        return None


class _DeadLetters(_Sink):
    def __init__(self) -> None:
        super().__init__()
        self.letters: list[DeadLetter] = []

    async def write_dead(self, letters: Sequence[DeadLetter]) -> None:
        self.letters.extend(letters)


class _Source(MemoryGroupSource):
    """Notes the worker's health while the first assignment is handled."""

    health_at_assignment: dict[str, Any] | None = None
    worker: Any = None

    async def start(self, on_assigned: AssignCallback, on_revoked: RevokeCallback) -> None:
        async def assigned(partitions: Any) -> Any:
            self.health_at_assignment = self.worker.health()
            return await on_assigned(partitions)

        await super().start(assigned, on_revoked)


def _stream(seed: int) -> tuple[dict[int, list[RawRecord]], dict[str, int]]:
    """Records per partition, with malformed and late ones; the dead letters expected."""
    rng = random.Random(seed)
    out: dict[int, list[RawRecord]] = {p: [] for p in range(PARTITIONS)}
    bad = {"decode": 0, "timestamp": 0, "late": 0}
    for i in range(4_000):
        user = f"u{rng.randrange(20)}"
        p = int(user[1:]) % PARTITIONS
        roll = rng.random()
        if roll < 0.01:
            value, reason = b"{not json", "decode"
        elif roll < 0.02:
            value, reason = orjson.dumps({"user": user, "amount": 1}), "timestamp"
        elif roll < 0.03 and i > 500:
            # An hour behind: far behind the watermark (5 s of disorder allowed).
            value = orjson.dumps({"user": user, "amount": 1, "ts": BASE + i * 100 - 3_600_000})
            reason = "late"
        else:
            amount = rng.randrange(1, 9)
            value = orjson.dumps({"user": user, "amount": amount, "ts": BASE + i * 100})
            reason = None
        if reason:
            bad[reason] += 1
        out[p].append(RawRecord(len(out[p]), None, value))
    return out, bad


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            labels = tuple(sorted((k, v) for k, v in s.labels.items() if k != "app"))
            out[(s.name, labels)] = s.value
    return out


async def _scrape(port: int, path: str) -> tuple[int, str]:
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://127.0.0.1:{port}{path}") as response,
    ):
        return response.status, await response.text()


async def _run() -> None:
    records, bad = _stream(4)
    world = MemoryKafka(records, 0)
    source = _Source(records)
    world.source = source
    sink, dead = _Sink(), _DeadLetters()
    with tempfile.TemporaryDirectory() as state:
        app = App("metrics", state_dir=state, checkpoint_interval=1, dead_letter=dead)  # type: ignore[arg-type]
        events = app.source(TOPIC, world, key="user", timestamp="ts",  # type: ignore[arg-type]
                            max_out_of_orderness="5s")

        @app.window(events, Tumbling("10s"), aggregate=Sum("amount"), sink=sink)  # type: ignore[arg-type]
        def totals(result: Any) -> Any:
            return {"user": result.key, "start": result.start, "total": result.value}

        worker = app.worker(handle_signals=False, poll_ms=5, metrics_port=0,
                            metrics_host="127.0.0.1")
        source.worker = worker
        assert worker.health()["ready"] is False and worker.state == "created"
        run = asyncio.create_task(worker.run())
        ends = {(TOPIC, p): len(r) for p, r in records.items()}
        while source.committed_offsets != ends:
            await asyncio.sleep(0.01)
            assert not run.done(), run.exception()
        assert worker.metrics is not None
        port = worker.metrics.port

        status, body = await _scrape(port, "/healthz")
        health = orjson.loads(body)
        assert status == 200 and health["ready"] and health["state"] == "running", health
        assert health["assigned"] == [f"{TOPIC}[{p}]" for p in range(PARTITIONS)]
        assert (await _scrape(port, "/healthz/live"))[0] == 200
        assert source.health_at_assignment is not None
        assert source.health_at_assignment["ready"] is False  # still starting

        status, text = await _scrape(port, "/metrics")
        assert status == 200
        m = _samples(text)
        for p in range(PARTITIONS):
            key = ("evtime_records_in_total", (("partition", str(p)), ("topic", TOPIC)))
            assert m[key] == len(records[p])
        out = m[("evtime_records_out_total", (("output", "totals/main"),))]
        assert out == len(sink.outputs) > 0
        by_reason: dict[str, int] = {}
        for letter in dead.letters:
            by_reason[letter.reason.value] = by_reason.get(letter.reason.value, 0) + 1
        assert by_reason == {k: v for k, v in bad.items() if v}
        for reason, n in by_reason.items():
            assert m[("evtime_dead_letters_total", (("reason", reason),))] == n
        assert m[("evtime_late_records_total", ())] == bad["late"] > 0
        # (the worker checkpoints on: every second since the last scrape counts)
        assert 0 < m[("evtime_checkpoint_seconds_count", ())] <= worker.checkpoints
        assert m[("evtime_checkpoint_changes_total", ())] > 0
        assert m[("evtime_assigned_partitions", ())] == PARTITIONS
        last_ts = {p: max(orjson.loads(r.value).get("ts", 0) for r in records[p]
                          if r.value.startswith(b"{\"")) for p in range(PARTITIONS)}
        for p in range(PARTITIONS):
            labels = (("partition", str(p)), ("topics", TOPIC))
            assert m[("evtime_watermark_ms", labels)] == last_ts[p] - 5_001
            assert m[("evtime_state_keys", labels)] > 0
        assert ("evtime_sink_flush_seconds_count", (("sink", "totals/main"),)) in m
        assert ("evtime_sink_flush_seconds_count", (("sink", "dead-letters"),)) in m

        worker.stop()
        await run
        assert worker.state == "stopped"


def test_metrics_and_health_report_what_the_worker_did() -> None:
    asyncio.run(_run())
