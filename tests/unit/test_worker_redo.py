"""Exactly-once, a transaction that cannot commit (a batch was given up on in a broker
outage): the worker aborts it, reopens the task from its last checkpoint and processes the
interval again. In memory: a group source, a changelog and transactions that keep what
they commit, so the committed output can be compared with an undisturbed run's."""

from __future__ import annotations

import asyncio
import random
import tempfile
from collections.abc import Sequence
from typing import Any

import orjson

from evtime import App, Sum, Tumbling
from evtime.errors import TransactionFailedError
from evtime.io import AssignCallback, RevokeCallback
from evtime.io import TopicPartition as TP
from evtime.records import ChangelogRecord, Output, RawRecord

TOPIC = "in"
PARTITIONS = 2


class _Source:
    def __init__(self, records: dict[int, list[RawRecord]]) -> None:
        self.records = records
        self.position: dict[TP, int] = {}
        self.committed_offsets: dict[TP, int] = {}
        self.seeks: list[dict[TP, int]] = []

    async def start(self, on_assigned: AssignCallback, on_revoked: RevokeCallback) -> None:
        starts = await on_assigned([(TOPIC, p) for p in self.records])
        self.position = dict(starts)

    async def poll(self, timeout_ms: int, max_records: int) -> dict[TP, list[RawRecord]]:
        await asyncio.sleep(0.001)
        out: dict[TP, list[RawRecord]] = {}
        for (topic, p), pos in self.position.items():
            batch = self.records[p][pos : pos + 50]
            if batch:
                out[(topic, p)] = batch
                self.position[(topic, p)] = pos + len(batch)
        return out

    @property
    def group_id(self) -> str:
        return "group"

    async def committed(self, partitions: Sequence[TP]) -> dict[TP, int]:
        return {tp: self.committed_offsets[tp] for tp in partitions if tp in self.committed_offsets}

    async def commit(self, offsets: dict[TP, int]) -> None:
        self.committed_offsets.update(offsets)

    def assignment(self) -> set[TP]:
        return set(self.position)

    def pause(self, partitions: Any) -> None:
        return None

    def resume(self, partitions: Any) -> None:
        return None

    def paused(self) -> set[TP]:
        return set()

    def seek(self, offsets: dict[TP, int]) -> None:
        self.seeks.append(dict(offsets))
        self.position.update(offsets)

    async def stop(self) -> None:
        return None


class _Changelog:
    def __init__(self) -> None:
        self.log: dict[int, list[ChangelogRecord]] = {}

    async def ensure(self, source_topic: str) -> None:
        return None

    async def append(
        self,
        batches: dict[int, tuple[Sequence[tuple[bytes, bytes | None]], dict[str, int] | None]],
        producer: object | None = None,
        epochs: dict[int, str] | None = None,
    ) -> dict[int, int]:
        # Inside a transaction the records become visible only when it commits.
        target = producer.staged_changelog if isinstance(producer, _Txn) else None
        ends: dict[int, int] = {}
        for p, (records, ckpt) in batches.items():
            log = self.log.setdefault(p, [])
            recs = [
                ChangelogRecord(0, k, v, ckpt, (epochs or {}).get(p)) for k, v in records
            ]
            if target is not None:
                target.append((self, p, recs))
                ends[p] = len(log) + len(recs)
            else:
                log.extend(recs)
                ends[p] = len(log)
        return ends

    async def end_offsets(self, partitions: list[int]) -> dict[int, int]:
        return {p: len(self.log.get(p, [])) for p in partitions}

    async def read(self, partition: int, start: int) -> list[ChangelogRecord]:
        log = self.log.get(partition, [])
        return [
            ChangelogRecord(n, r.key, r.value, r.checkpoint, r.epoch)
            for n, r in enumerate(log)
            if n >= start
        ]

    async def close(self) -> None:
        return None


class _Txn:
    def __init__(self, world: _World, tid: str) -> None:
        self.world = world
        self.tid = tid
        self.staged: list[Output] = []
        self.staged_changelog: list[tuple[_Changelog, int, list[ChangelogRecord]]] = []

    @property
    def producer(self) -> object:
        return self

    async def begin(self) -> None:
        self.staged, self.staged_changelog = [], []

    async def commit(self, offsets: dict[TP, int], group_id: str) -> None:
        if self.world.fail_commits and self.staged:
            self.world.fail_commits -= 1
            self.world.failed += 1
            raise TransactionFailedError(f"transaction of {self.tid!r}: a batch was not delivered")
        self.world.committed.extend(self.staged)
        for changelog, p, recs in self.staged_changelog:
            changelog.log.setdefault(p, []).extend(recs)
        self.world.source.committed_offsets.update(offsets)
        self.staged, self.staged_changelog = [], []

    async def abort(self) -> None:
        self.staged, self.staged_changelog = [], []

    async def close(self) -> None:
        await self.abort()


class _World:
    """The factory of the app's source: one group source, changelogs, transactions."""

    topic = TOPIC

    def __init__(self, records: dict[int, list[RawRecord]], fail_commits: int) -> None:
        self.source = _Source(records)
        self.changelogs: dict[str, _Changelog] = {}
        self.committed: list[Output] = []
        self.fail_commits = fail_commits
        self.failed = 0

    def group_source(self, group_id: str, topics: Sequence[str], instance_id: Any = None) -> Any:
        return self.source

    async def partition_counts(self, topics: Sequence[str]) -> dict[str, int]:
        return dict.fromkeys(topics, PARTITIONS)

    def changelog(self, topic: str) -> _Changelog:
        return self.changelogs.setdefault(topic, _Changelog())

    def transaction(self, transactional_id: str) -> _Txn:
        return _Txn(self, transactional_id)


class _Sink:
    """The output topic: written inside the task's transaction."""

    async def write_in(self, producer: object, outputs: Sequence[Output]) -> None:
        assert isinstance(producer, _Txn)
        producer.staged.extend(outputs)

    async def write(self, outputs: Sequence[Output]) -> None:
        raise AssertionError("exactly-once writes go through the transaction")

    async def flush(self) -> None:
        return None

    async def close(self) -> None:
        return None


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


async def _run(fail_commits: int) -> tuple[list[Output], _World]:
    world = _World(_stream(3), fail_commits)
    with tempfile.TemporaryDirectory() as state:
        app = App("redo", state_dir=state, checkpoint_interval=1, processing="exactly_once")
        events = app.source(TOPIC, world, key="user", timestamp="ts")  # type: ignore[arg-type]

        @app.window(events, Tumbling("10s"), aggregate=Sum("amount"), sink=_Sink())  # type: ignore[arg-type]
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
