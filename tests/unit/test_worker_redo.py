"""Exactly-once, a transaction that cannot commit (a batch was given up on in a broker
outage): the worker aborts it, reopens the task from its last checkpoint and processes the
interval again. In memory: a group source, a changelog and transactions that keep what
they commit, so the committed output can be compared with an undisturbed run's."""

from __future__ import annotations

import asyncio
import random
import tempfile
from typing import Any

import orjson

from evtime import App, Sum, Tumbling
from evtime.records import Output, RawRecord
from tests.unit.memory_kafka import PARTITIONS, TOPIC, MemoryKafka, TransactionalMemorySink


def _stream(seed: int) -> dict[int, list[RawRecord]]:
    rng = random.Random(seed)
    base = 1_767_225_600_000
    out: dict[int, list[RawRecord]] = {p: [] for p in range(PARTITIONS)}
    for i in range(3_000):
        user = f"u{rng.randrange(20)}"
        p = int(user[1:]) % PARTITIONS
        value = {"user": user, "amount": rng.randrange(1, 9), "ts": base + i * 100}
        out[p].append(RawRecord(len(out[p]), None, orjson.dumps(value)))
    return out


async def _run(fail_commits: int) -> tuple[list[Output], MemoryKafka]:
    world = MemoryKafka(_stream(3), fail_commits)
    with tempfile.TemporaryDirectory() as state:
        app = App("redo", state_dir=state, checkpoint_interval=1, processing="exactly_once")
        events = app.source(TOPIC, world, key="user", timestamp="ts")  # type: ignore[arg-type]

        sink: Any = TransactionalMemorySink()

        @app.window(events, Tumbling("10s"), aggregate=Sum("amount"), sink=sink)
        def totals(result: Any) -> Any:
            return {"user": result.key, "start": result.start, "total": result.value}

        worker = app.worker(handle_signals=False, poll_ms=5)
        run = asyncio.create_task(worker.run())
        ends = {(TOPIC, p): len(r) for p, r in world.source.records.items()}
        while world.source.committed_offsets != ends:
            await asyncio.sleep(0.01)
            assert not run.done(), run.exception()
        worker.stop()
        await run
    return world.committed, world


def test_a_transaction_that_cannot_commit_is_redone_from_the_last_checkpoint() -> None:
    undisturbed, _ = asyncio.run(_run(0))
    assert undisturbed
    redone, world = asyncio.run(_run(3))
    assert world.failed == 3
    assert sorted(o.id for o in redone if o.id) == sorted(o.id for o in undisturbed if o.id)
    assert len(redone) == len(undisturbed)  # nothing of an aborted transaction is kept
    assert sorted((o.id, orjson.dumps(o.value)) for o in redone) == sorted(
        (o.id, orjson.dumps(o.value)) for o in undisturbed
    )
    assert world.source.seeks  # the task's partition was fetched again from its checkpoint
