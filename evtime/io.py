"""The source and sink protocols that connectors implement.

The core never imports a connector: it talks to these protocols only.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Protocol, runtime_checkable

from evtime.records import ChangelogRecord, DeadLetter, FetchedRecord, Output, RawRecord


@runtime_checkable
class LocalSource(Protocol):
    """A partitioned, replayable source read in-process (memory, files).

    Offsets are positions within a partition; ``read`` returns records from
    ``offset`` on, at most ``max_records``, and an empty list at the end of a
    bounded source (or when an unbounded one has nothing yet).
    """

    topic: str

    @property
    def partitions(self) -> list[int]: ...

    @property
    def bounded(self) -> bool: ...

    def read(self, partition: int, offset: int, max_records: int) -> list[RawRecord]: ...


@runtime_checkable
class Sink(Protocol):
    """Where results go. ``flush`` returns once every written output is durable."""

    async def write(self, outputs: Sequence[Output]) -> None: ...

    async def flush(self) -> None: ...

    async def close(self) -> None: ...


@runtime_checkable
class DeadLetterSink(Protocol):
    """Where bad records go, with their reason."""

    async def write_dead(self, letters: Sequence[DeadLetter]) -> None: ...

    async def flush(self) -> None: ...

    async def close(self) -> None: ...


TopicPartition = tuple[str, int]
ChangelogBatch = tuple[Sequence[tuple[bytes, bytes | None]], dict[str, int] | None]
"""A task's changelog records (key, value) of one append, and the input offsets of the
checkpoint they belong to (None: an epoch marker)."""


@runtime_checkable
class GroupSource(Protocol):
    """A consumer-group source (Kafka): partitions are assigned by the group.

    The worker starts it with callbacks run on every rebalance: ``on_revoked``
    before partitions are taken away (the worker checkpoints them), and
    ``on_assigned`` after new ones arrive (the worker opens their tasks and
    returns the offset to start each partition from).
    """

    async def start(
        self,
        on_assigned: AssignCallback,
        on_revoked: RevokeCallback,
    ) -> None: ...

    async def poll(
        self, timeout_ms: int, max_records: int
    ) -> dict[TopicPartition, Sequence[FetchedRecord]]:
        """The records fetched, per partition (each partition's in offset order)."""
        ...

    @property
    def group_id(self) -> str: ...

    async def committed(self, partitions: Sequence[TopicPartition]) -> dict[TopicPartition, int]:
        """The group's committed next offsets (partitions without a commit are absent)."""
        ...

    async def commit(self, offsets: dict[TopicPartition, int]) -> None: ...

    def assignment(self) -> set[TopicPartition]:
        """The partitions assigned to this member now."""
        ...

    def pause(self, partitions: Iterable[TopicPartition]) -> None:
        """Stop fetching ``partitions`` while :meth:`poll` goes on keeping the member in
        the group (backpressure). Partitions not assigned now are ignored."""
        ...

    def resume(self, partitions: Iterable[TopicPartition]) -> None:
        """Fetch ``partitions`` again from their positions (unassigned ones are ignored)."""
        ...

    def paused(self) -> set[TopicPartition]: ...

    def highwaters(self) -> dict[TopicPartition, int]:
        """Each assigned partition's end offset as of its last fetch, where known (for the
        lag metric)."""
        ...

    def seek(self, offsets: dict[TopicPartition, int]) -> None:
        """Fetch ``offsets``' partitions (those assigned now) from these offsets next."""
        ...

    async def stop(self) -> None: ...


class AssignCallback(Protocol):
    async def __call__(self, partitions: list[TopicPartition]) -> dict[TopicPartition, int]: ...


class RevokeCallback(Protocol):
    async def __call__(self, partitions: list[TopicPartition]) -> None: ...


@runtime_checkable
class GroupSourceFactory(Protocol):
    """A source declaration that can open the consumer group reading it (and its co-topics)."""

    topic: str

    def group_source(
        self, group_id: str, topics: Sequence[str], instance_id: str | None = None
    ) -> GroupSource: ...

    async def partition_counts(self, topics: Sequence[str]) -> dict[str, int]:
        """How many partitions each of ``topics`` has (ConfigError if one is missing)."""
        ...

    def changelog(self, topic: str) -> Changelog: ...

    def transaction(self, transactional_id: str) -> Transaction: ...


@runtime_checkable
class Changelog(Protocol):
    """A changelog topic: a partition per task, appended at every checkpoint."""

    async def ensure(self, source_topic: str) -> None: ...

    async def append(
        self,
        batches: dict[int, ChangelogBatch],
        producer: object | None = None,
        epochs: dict[int, str] | None = None,
    ) -> dict[int, int]:
        """Append records per partition (a checkpoint's offsets and the writing run's epoch
        in headers); each partition's end offset once everything is acknowledged."""
        ...

    async def end_offsets(self, partitions: list[int]) -> dict[int, int]:
        """Each partition's end offset (what :meth:`read` reads up to)."""
        ...

    async def read(self, partition: int, start: int) -> list[ChangelogRecord]: ...

    async def close(self) -> None: ...


@runtime_checkable
class Transaction(Protocol):
    """A task's transactional producer (exactly-once): outputs, changelog entries and
    input offsets commit together or not at all."""

    @property
    def producer(self) -> object:
        """The client that transactional sinks and the changelog produce with."""
        ...

    async def begin(self) -> None: ...

    async def commit(self, offsets: dict[TopicPartition, int], group_id: str) -> None:
        """Add ``offsets`` to the transaction (as the group's) and commit it."""
        ...

    async def abort(self) -> None: ...

    async def close(self) -> None: ...


@runtime_checkable
class TransactionalSink(Protocol):
    """A sink that can write inside a task's transaction (a Kafka topic)."""

    async def write_in(self, producer: object, outputs: Sequence[Output]) -> None: ...


@runtime_checkable
class TransactionalDeadLetterSink(Protocol):
    async def write_dead_in(self, producer: object, letters: Sequence[DeadLetter]) -> None: ...


@runtime_checkable
class RepartitionSink(Sink, Protocol):
    """The internal topic of a repartition: records keyed anew, and watermark markers
    (evtime/wire.py) that carry each source partition's watermark to every partition."""

    async def ensure(self, partitions: int) -> None:
        """Create the topic with ``partitions`` partitions if it is missing."""
        ...

    async def write_watermark(self, origin: int, origins: int, watermark: int) -> None:
        """Tell every partition that source partition ``origin`` (of ``origins``) is at
        ``watermark`` (:data:`evtime.wire.IDLE`: idle), behind the records it sent."""
        ...

    async def write_watermark_in(
        self, producer: object, origin: int, origins: int, watermark: int
    ) -> None:
        """:meth:`write_watermark` in a task's open transaction (exactly-once)."""
        ...


@runtime_checkable
class RepartitionFactory(Protocol):
    """A source declaration that can repartition: the internal topic's sink and source."""

    def repartition_sink(self, topic: str) -> RepartitionSink: ...

    def internal_source(self, topic: str) -> GroupSourceFactory: ...
