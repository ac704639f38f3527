"""An in-memory consumer group for worker tests without a broker: a group source, changelogs
that keep what is appended (inside a transaction: what it commits), transactions, and a
sink written inside them."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from evtime.errors import TransactionFailedError
from evtime.io import AssignCallback, RevokeCallback
from evtime.io import TopicPartition as TP
from evtime.records import ChangelogRecord, Output, RawRecord

TOPIC = "in"
PARTITIONS = 2


class MemoryGroupSource:
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

    def highwaters(self) -> dict[TP, int]:
        return {}

    def paused(self) -> set[TP]:
        return set()

    def seek(self, offsets: dict[TP, int]) -> None:
        self.seeks.append(dict(offsets))
        self.position.update(offsets)

    async def stop(self) -> None:
        return None


class MemoryChangelog:
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
        target = producer.staged_changelog if isinstance(producer, MemoryTransaction) else None
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


class MemoryTransaction:
    def __init__(self, world: MemoryKafka, tid: str) -> None:
        self.world = world
        self.tid = tid
        self.staged: list[Output] = []
        self.staged_changelog: list[tuple[MemoryChangelog, int, list[ChangelogRecord]]] = []

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


class MemoryKafka:
    """The factory of the app's source: one group source, changelogs, transactions."""

    topic = TOPIC

    def __init__(self, records: dict[int, list[RawRecord]], fail_commits: int) -> None:
        self.source = MemoryGroupSource(records)
        self.changelogs: dict[str, MemoryChangelog] = {}
        self.committed: list[Output] = []
        self.fail_commits = fail_commits
        self.failed = 0

    def group_source(self, group_id: str, topics: Sequence[str], instance_id: Any = None) -> Any:
        return self.source

    async def partition_counts(self, topics: Sequence[str]) -> dict[str, int]:
        return dict.fromkeys(topics, PARTITIONS)

    def changelog(self, topic: str) -> MemoryChangelog:
        return self.changelogs.setdefault(topic, MemoryChangelog())

    def transaction(self, transactional_id: str) -> MemoryTransaction:
        return MemoryTransaction(self, transactional_id)


class TransactionalMemorySink:
    """The output topic: written inside the task's transaction."""

    async def write_in(self, producer: object, outputs: Sequence[Output]) -> None:
        assert isinstance(producer, MemoryTransaction)
        producer.staged.extend(outputs)

    async def write(self, outputs: Sequence[Output]) -> None:
        raise AssertionError("exactly-once writes go through the transaction")

    async def flush(self) -> None:
        return None

    async def close(self) -> None:
        return None
