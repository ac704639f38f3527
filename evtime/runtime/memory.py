"""An in-memory changelog and offset store: what the embedded runner checkpoints to.

The embedded runner (evtime/runtime/local.py) keeps its state in its RocksDB only, and
reads its sources from offsets of its own; it checkpoints through the same protocol as
the Kafka worker (evtime/runtime/checkpoint.py), with these two in place of the
changelog topic and the consumer group.
"""

from __future__ import annotations

from evtime.io import ChangelogBatch, TopicPartition
from evtime.records import ChangelogRecord


class MemoryChangelog:
    """A changelog in memory. With ``retain`` it keeps every record (for a restore);
    without, it keeps nothing and knows no position (end offsets are not reported, so a
    snapshot records none)."""

    def __init__(self, *, retain: bool = False) -> None:
        self.retain = retain
        self.records: dict[int, list[ChangelogRecord]] = {}
        self.appends = 0

    async def ensure(self, source_topic: str) -> None:
        return None

    async def append(
        self,
        batches: dict[int, ChangelogBatch],
        producer: object | None = None,
        epochs: dict[int, str] | None = None,
    ) -> dict[int, int]:
        self.appends += 1
        if not self.retain:
            return {}
        ends: dict[int, int] = {}
        for partition, (records, checkpoint) in batches.items():
            log = self.records.setdefault(partition, [])
            epoch = (epochs or {}).get(partition)
            for key, value in records:
                log.append(ChangelogRecord(len(log), key, value, checkpoint, epoch))
            ends[partition] = len(log)
        return ends

    async def end_offsets(self, partitions: list[int]) -> dict[int, int]:
        return {p: len(self.records.get(p, [])) for p in partitions}

    async def read(self, partition: int, start: int) -> list[ChangelogRecord]:
        return self.records.get(partition, [])[start:]

    async def close(self) -> None:
        return None


class MemoryOffsets:
    """A consumer group's committed offsets, in memory."""

    def __init__(self, group_id: str) -> None:
        self._group_id = group_id
        self.committed: dict[TopicPartition, int] = {}

    @property
    def group_id(self) -> str:
        return self._group_id

    async def commit(self, offsets: dict[TopicPartition, int]) -> None:
        self.committed.update(offsets)
