"""Changelog topics on Kafka: one compacted topic per topic group, a partition per task.

Appends go through an idempotent producer (acks=all) and return the
partition's end offset once every record is acknowledged; reads assign the
partition directly (no consumer group) and stop at the end offset taken when
the read began.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Sequence

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError
from aiokafka.structs import RecordMetadata

from evtime.connectors.kafka_connection import KafkaConnection, as_connection
from evtime.connectors.kafka_fetch import lean_fetch
from evtime.connectors.kafka_probe import verified
from evtime.connectors.kafka_retry import (
    given_up,
    producer_overrides,
    send_batch,
    started,
    stopped,
    while_unreachable,
)
from evtime.connectors.kafka_transaction import TransactionalProducer
from evtime.errors import ConfigError, TransactionFailedError
from evtime.io import ChangelogBatch
from evtime.records import ChangelogRecord
from evtime.wire import CHECKPOINT_HEADER, EPOCH_HEADER

log = logging.getLogger("evtime.changelog")


async def _partition_count(admin: AIOKafkaAdminClient, topic: str) -> int:
    # Asked for by name, a missing topic would be created by a broker that auto-creates
    # topics (with its default partition count): its existence is checked first.
    if topic not in await admin.list_topics():
        raise ConfigError(f"source topic {topic!r} does not exist; create it before starting")
    for _ in range(100):
        meta = await admin.describe_topics([topic])
        found = meta[0].get("partitions") if meta else None
        if found:
            return len(found)
        await asyncio.sleep(0.1)
    raise ConfigError(f"source topic {topic!r} does not exist; create it before starting")


@contextlib.asynccontextmanager
async def _admin(connection: KafkaConnection) -> AsyncIterator[AIOKafkaAdminClient]:
    await verified(connection)
    admin = AIOKafkaAdminClient(**connection.client_kwargs())
    try:
        await admin.start()
        yield admin
    finally:
        await admin.close()


async def partition_counts(
    connection: KafkaConnection | str, topics: Sequence[str]
) -> dict[str, int]:
    """How many partitions each of ``topics`` has (ConfigError if one does not exist);
    an unreachable broker is waited for (connectors/kafka_retry.py)."""
    cluster = as_connection(connection)

    async def attempt() -> dict[str, int]:
        async with _admin(cluster) as admin:
            return {topic: await _partition_count(admin, topic) for topic in topics}

    return await while_unreachable(
        f"reading the partition counts of {list(topics)}", attempt, target=cluster.target
    )


async def _create_topic(
    admin: AIOKafkaAdminClient,
    topic: str,
    partitions: int,
    configs: dict[str, str],
    mismatch: str,
) -> None:
    """Create ``topic`` if it is missing and wait until it shows up; an existing one with
    another partition count is a ConfigError (``mismatch``: what to do about it)."""
    cluster = await admin.describe_cluster()
    replicas = max(1, min(3, len(cluster.get("brokers") or [])))
    with contextlib.suppress(TopicAlreadyExistsError):
        await admin.create_topics([NewTopic(topic, partitions, replicas, topic_configs=configs)])
    for _ in range(100):
        meta = await admin.describe_topics([topic])
        found = meta[0].get("partitions") if meta else None
        if found:
            if len(found) != partitions:
                raise ConfigError(
                    f"topic {topic!r} has {len(found)} partitions, {partitions} are needed; "
                    f"{mismatch}"
                )
            return
        await asyncio.sleep(0.1)
    raise ConfigError(f"topic {topic!r} was created but does not show up; try again")


async def ensure_topic(
    connection: KafkaConnection | str, topic: str, partitions: int, configs: dict[str, str]
) -> None:
    """Create ``topic`` with ``partitions`` partitions and ``configs`` if it is missing; an
    existing one must have as many partitions (ConfigError). The broker is waited for."""
    cluster = as_connection(connection)

    async def attempt() -> None:
        async with _admin(cluster) as admin:
            await _create_topic(
                admin, topic, partitions, configs,
                "delete it (and the app's state) or declare its partition count",
            )

    await while_unreachable(f"creating the topic {topic!r}", attempt, target=cluster.target)


class KafkaChangelog:
    """The changelog topic ``topic`` (created compacted, with ``partitions`` partitions)."""

    def __init__(
        self, connection: KafkaConnection | str, topic: str, *, progress_every_s: float = 5.0
    ) -> None:
        self.connection = as_connection(connection)
        self.topic = topic
        self.progress_every_s = progress_every_s
        """How often a long read (a restore) logs its progress."""
        self._producer: AIOKafkaProducer | None = None
        self._reader: AIOKafkaConsumer | None = None

    async def ensure(self, source_topic: str) -> None:
        """Create the topic, with ``source_topic``'s partition count, if it is missing;
        check its partition count if it exists. An unreachable broker is waited for."""
        await while_unreachable(
            f"creating the changelog topic {self.topic!r}", lambda: self._ensure(source_topic)
        )

    async def _ensure(self, source_topic: str) -> None:
        async with _admin(self.connection) as admin:
            partitions = await _partition_count(admin, source_topic)
            await _create_topic(
                admin,
                self.topic,
                partitions,
                {
                    "cleanup.policy": "compact",
                    # Keep recent records uncompacted for an hour: a restore may still need
                    # a checkpoint's older values (see evtime/runtime/changelog.py).
                    "min.compaction.lag.ms": "3600000",
                },
                f"the source {source_topic!r} has {partitions}: delete the changelog topic "
                "(and the state) or restore the source's partition count",
            )

    async def _ensure_producer(self) -> AIOKafkaProducer:
        if self._producer is None:
            self._producer = await while_unreachable(
                f"starting the producer of {self.topic!r}", self._start_producer,
                target=self.connection.target,
            )
        return self._producer

    async def _start_producer(self) -> AIOKafkaProducer:
        await verified(self.connection)
        return await started(
            AIOKafkaProducer(
                **self.connection.client_kwargs(),
                enable_idempotence=True,
                acks="all",
                linger_ms=5,
                max_batch_size=512 * 1024,
                **producer_overrides(),
            )
        )

    async def append(
        self,
        batches: dict[int, ChangelogBatch],
        producer: object | None = None,
        epochs: dict[int, str] | None = None,
    ) -> dict[int, int]:
        """Append records per partition (with their checkpoint's offsets and the epoch of
        the run that writes them in headers) and return each partition's end offset once
        everything is acknowledged.

        With a task's transactional ``producer`` the records join its transaction (whose
        commit fails if any did not land). With the changelog's own producer, an append
        that the producer gave up on while the broker was unreachable (a batch's delivery
        timed out, its partition had no leader) is made again, whole, by a new producer:
        records may repeat in the log, which restores the same state from them."""
        if producer is not None:
            if not isinstance(producer, TransactionalProducer):
                raise ConfigError(
                    "a changelog appends in a transaction with a KafkaTransaction's producer"
                )
            try:
                return await self._append_with(producer.producer, batches, epochs)
            except Exception as exc:
                if given_up(exc):
                    raise TransactionFailedError(
                        f"appending to {self.topic!r} in a transaction: a batch was not "
                        f"delivered ({type(exc).__name__}: {exc})"
                    ) from exc
                raise

        async def attempt() -> dict[int, int]:
            own = await self._ensure_producer()
            try:
                return await self._append_with(own, batches, epochs)
            except Exception as exc:
                if given_up(exc):
                    await self._drop_producer(own)  # its sequence numbers are spent
                raise

        return await while_unreachable(
            f"appending to {self.topic!r}",
            attempt,
            retry_if=given_up,
            target=self.connection.target,
        )

    async def _drop_producer(self, producer: AIOKafkaProducer) -> None:
        if self._producer is producer:
            self._producer = None
        await stopped(producer)

    async def _append_with(
        self,
        producer: AIOKafkaProducer,
        batches: dict[int, ChangelogBatch],
        epochs: dict[int, str] | None,
    ) -> dict[int, int]:
        # Per partition: the future of its last batch and that batch's record count.
        last: dict[int, tuple[asyncio.Future[RecordMetadata], int]] = {}
        sent: list[asyncio.Future[RecordMetadata]] = []
        what = ("appending to", self.connection.target)
        for partition, (records, checkpoint) in batches.items():
            headers = (
                [(CHECKPOINT_HEADER, orjson.dumps(checkpoint))] if checkpoint is not None else []
            )
            epoch = epochs.get(partition) if epochs else None
            if epoch is not None:
                headers.append((EPOCH_HEADER, epoch.encode()))
            batch = producer.create_batch()
            count = 0
            for key, value in records:
                if batch.append(timestamp=None, key=key, value=value, headers=headers) is None:
                    fut = await send_batch(producer, batch, self.topic, partition, *what)
                    last[partition] = (fut, count)
                    sent.append(fut)
                    batch = producer.create_batch()
                    batch.append(timestamp=None, key=key, value=value, headers=headers)
                    count = 0
                count += 1
            if count:
                fut = await send_batch(producer, batch, self.topic, partition, *what)
                last[partition] = (fut, count)
                sent.append(fut)
        # Every batch acknowledged; every future retrieved, then the first failure raised.
        for result in await asyncio.gather(*sent, return_exceptions=True):
            if isinstance(result, BaseException):
                raise result
        ends: dict[int, int] = {}
        for partition, (fut, count) in last.items():
            meta = await fut  # the batch's base offset, once acknowledged
            ends[partition] = meta.offset + count
        return ends

    async def end_offsets(self, partitions: list[int]) -> dict[int, int]:
        """The end offsets of ``partitions`` (what a restore would read up to), in one
        request: a task whose changelog position is at the end has nothing to read."""
        consumer = await self._ensure_reader()
        tps = [TopicPartition(self.topic, p) for p in partitions]
        ends = await while_unreachable(
            f"reading the end offsets of {self.topic!r}", lambda: consumer.end_offsets(tps)
        )
        return {tp.partition: off for tp, off in ends.items()}

    async def _ensure_reader(self) -> AIOKafkaConsumer:
        # One reader for every restore of this worker: a consumer costs a connection
        # and a metadata round trip to start.
        if self._reader is None:
            self._reader = await while_unreachable(
                f"starting the reader of {self.topic!r}", self._start_reader,
                target=self.connection.target,
            )
        return self._reader

    async def _start_reader(self) -> AIOKafkaConsumer:
        await verified(self.connection)
        reader = AIOKafkaConsumer(
            **self.connection.client_kwargs(),
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            # Records of aborted transactions (exactly-once) are never restored.
            isolation_level="read_committed",
            max_partition_fetch_bytes=8 * 1024 * 1024,
        )
        reader = await started(reader)
        lean_fetch(reader)  # restores read records without a ConsumerRecord each
        return reader

    async def read(self, partition: int, start: int) -> list[ChangelogRecord]:
        """Every record of ``partition`` from offset ``start`` to the current end, with the
        progress logged every ``progress_every_s`` (records, percent of the range, rate)."""
        consumer = await self._ensure_reader()
        tp = TopicPartition(self.topic, partition)
        out: list[ChangelogRecord] = []
        try:
            consumer.assign([tp])
            end = (await consumer.end_offsets([tp]))[tp]
            if start >= end:
                return out
            consumer.seek(tp, start)
            began = last_report = time.monotonic()
            while (position := await consumer.position(tp)) < end:
                now = time.monotonic()
                if now - last_report >= self.progress_every_s:
                    last_report = now
                    log.info(
                        "restoring %s[%d]: %d records read, offset %d of %d..%d (%.0f%%), "
                        "%.0f records/s",
                        self.topic,
                        partition,
                        len(out),
                        position,
                        start,
                        end,
                        100 * (position - start) / (end - start),
                        len(out) / max(now - began, 1e-6),
                    )
                batches = await consumer.getmany(tp, timeout_ms=1000, max_records=10_000)
                for r in batches.get(tp, []):
                    if r.offset >= end:
                        break
                    headers = dict(r.headers or ())
                    header = headers.get(CHECKPOINT_HEADER)
                    epoch = headers.get(EPOCH_HEADER)
                    out.append(
                        ChangelogRecord(
                            r.offset,
                            r.key,
                            r.value,
                            orjson.loads(header) if header else None,
                            epoch.decode() if epoch else None,
                        )
                    )
            return out
        finally:
            consumer.unsubscribe()

    async def close(self) -> None:
        if self._producer is not None:
            producer, self._producer = self._producer, None
            await producer.stop()
        if self._reader is not None:
            reader, self._reader = self._reader, None
            await reader.stop()
