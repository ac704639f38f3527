"""Kafka sources and sinks on aiokafka.

``KafkaSource`` declares a topic; the worker asks it for the consumer group
that reads every Kafka topic of the app (one consumer per worker process, the
range assignor so that partition ``p`` of co-partitioned topics lands in the
same worker). ``KafkaSink`` produces results with an idempotent producer and
waits for every acknowledgement at ``flush`` (the first step of a checkpoint).
``KafkaDeadLetterSink`` writes bad records with their original bytes and the
reason in headers.

A broker that goes away is waited for, never a reason to drop anything: aiokafka's
consumer refetches and retries offset commits by itself, a started producer keeps
its batches until the broker is back, and what aiokafka gives up on (starting a
consumer or producer, a transactional one included; queuing a batch behind one that
cannot be sent) is retried with backoff, up to ``EVTIME_KAFKA_BROKER_WAIT`` (see
connectors/kafka_retry.py).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.coordinator.assignors.range import RangePartitionAssignor
from aiokafka.errors import (
    CommitFailedError,
    IllegalStateError,
    KafkaError,
    RebalanceInProgressError,
)
from aiokafka.partitioner import murmur2
from aiokafka.producer.message_accumulator import BatchBuilder
from aiokafka.structs import RecordMetadata

from evtime.connectors.kafka_changelog import KafkaChangelog, ensure_topic, partition_counts
from evtime.connectors.kafka_fetch import lean_fetch
from evtime.connectors.kafka_retry import (
    given_up,
    producer_overrides,
    started,
    stopped,
    while_unreachable,
)
from evtime.connectors.kafka_transaction import KafkaTransaction, TransactionalProducer
from evtime.errors import ConfigError, EvtimeError
from evtime.io import AssignCallback, RevokeCallback
from evtime.io import TopicPartition as TP
from evtime.records import DeadLetter, FetchedRecord, Output
from evtime.settings import Settings
from evtime.wire import IDLE, IDLE_MARK, ORIGIN_HEADER, ORIGINS_HEADER, WATERMARK_HEADER

log = logging.getLogger("evtime.kafka")
_MAX_TS = 2**63 - 1
_Rec = tuple[bytes | None, bytes, int | None, list[tuple[str, bytes]]]
"""A record to produce: key, value, timestamp (ms or None), headers."""


def default_bootstrap() -> str:
    """``EVTIME_KAFKA_BOOTSTRAP``, or the broker `evtime services up` starts."""
    return Settings.load().kafka_bootstrap


@dataclass(frozen=True)
class KafkaSource:
    """A Kafka topic as an app input.

    ``bootstrap`` defaults to ``EVTIME_KAFKA_BOOTSTRAP`` (else 127.0.0.1:9092);
    ``consumer_config`` passes further aiokafka consumer settings, e.g.
    ``max_poll_interval_ms`` (default 300,000): a member that does not poll for that long
    leaves the group. The worker keeps polling while its sinks are slow (it pauses the
    partitions after ``pause_after_ms`` instead), so this bounds a rebalance's wait for
    a stuck sink rather than the sink itself.
    """

    topic: str
    bootstrap: str = field(default_factory=default_bootstrap)
    consumer_config: dict[str, object] = field(default_factory=dict)

    def group_source(
        self, group_id: str, topics: Sequence[str], instance_id: str | None = None
    ) -> KafkaGroupSource:
        """The consumer group reading ``topics``; ``instance_id`` makes the member static
        (a restarted worker takes its partitions back without a rebalance)."""
        config = dict(self.consumer_config)
        if instance_id:
            config.setdefault("group_instance_id", instance_id)
        return KafkaGroupSource(self.bootstrap, group_id, list(topics), config)

    async def partition_counts(self, topics: Sequence[str]) -> dict[str, int]:
        """How many partitions each of ``topics`` has on this source's cluster."""
        return await partition_counts(self.bootstrap, topics)

    def changelog(self, topic: str) -> KafkaChangelog:
        """The changelog topic ``topic`` on this source's cluster."""
        return KafkaChangelog(self.bootstrap, topic)

    def transaction(self, transactional_id: str) -> KafkaTransaction:
        """A transactional producer for one task (exactly-once)."""
        return KafkaTransaction(self.bootstrap, transactional_id)

    def internal_source(self, topic: str) -> KafkaSource:
        """The source of an internal topic (a repartition's) on this source's cluster."""
        return replace(self, topic=topic)

    def repartition_sink(self, topic: str) -> KafkaRepartitionSink:
        """The sink that writes a repartition's internal topic on this source's cluster."""
        return KafkaRepartitionSink(topic, self.bootstrap)


class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, owner: KafkaGroupSource) -> None:
        self._owner = owner

    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        await self._owner._revoked(revoked)

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        await self._owner._assigned(assigned)


class KafkaGroupSource:
    """One aiokafka consumer in a group, subscribed to the app's topics.

    Offsets are committed only by the worker (auto-commit is off): a record's
    offset is committed after the snapshot that includes its effects.
    """

    def __init__(
        self, bootstrap: str, group_id: str, topics: list[str], config: dict[str, object]
    ) -> None:
        settings: dict[str, object] = {
            "bootstrap_servers": bootstrap,
            "group_id": group_id,
            "enable_auto_commit": False,
            "auto_offset_reset": "earliest",
            "partition_assignment_strategy": (RangePartitionAssignor,),
            "max_partition_fetch_bytes": 4 * 1024 * 1024,
            "fetch_max_wait_ms": 100,
            "session_timeout_ms": 15_000,
            "heartbeat_interval_ms": 3_000,
            "isolation_level": "read_committed",
        }
        settings.update(config)
        self._settings = settings
        self._group_id = str(settings["group_id"])
        self._topics = topics
        self._consumer: AIOKafkaConsumer | None = None
        self._on_assigned: AssignCallback | None = None
        self._on_revoked: RevokeCallback | None = None
        # aiokafka only logs an exception of a rebalance callback and keeps the
        # assignment: the partitions would stay assigned with no task (their records
        # dropped, never committed, the worker running on). It is raised by poll instead.
        self._callback_error: EvtimeError | None = None

    @property
    def group_id(self) -> str:
        return self._group_id

    @property
    def consumer(self) -> AIOKafkaConsumer:
        if self._consumer is None:
            raise ConfigError("the Kafka source is not started")
        return self._consumer

    async def start(self, on_assigned: AssignCallback, on_revoked: RevokeCallback) -> None:
        self._on_assigned = on_assigned
        self._on_revoked = on_revoked
        consumer = await while_unreachable(
            f"starting the consumer of group {self.group_id!r}", self._start_consumer
        )
        consumer.subscribe(self._topics, listener=_Listener(self))
        self._consumer = consumer

    async def _start_consumer(self) -> AIOKafkaConsumer:
        consumer = await started(AIOKafkaConsumer(**self._settings))
        lean_fetch(consumer)  # records without a ConsumerRecord each (connectors/kafka_fetch.py)
        return consumer

    async def _revoked(self, revoked: list[TopicPartition]) -> None:
        if self._on_revoked is not None and revoked:
            try:
                await self._on_revoked([(tp.topic, tp.partition) for tp in revoked])
            except Exception as exc:
                self._callback_failed("revocation", revoked, exc)
                raise

    async def _assigned(self, assigned: list[TopicPartition]) -> None:
        # An empty assignment is passed on too (more members than partitions): the worker
        # has joined the group all the same.
        if self._on_assigned is None:
            return
        try:
            starts = await self._on_assigned([(tp.topic, tp.partition) for tp in assigned])
        except Exception as exc:
            self._callback_failed("assignment", assigned, exc)
            raise
        for (topic, partition), offset in starts.items():
            self.consumer.seek(TopicPartition(topic, partition), offset)

    def _callback_failed(self, what: str, partitions: list[TopicPartition], exc: Exception) -> None:
        if self._callback_error is None:
            names = sorted(f"{tp.topic}[{tp.partition}]" for tp in partitions)
            error = EvtimeError(
                f"handling the {what} of {', '.join(names)} failed ({type(exc).__name__}: "
                f"{exc}); stopping rather than running on without those partitions' tasks "
                "(nothing after the last checkpoint is committed: a restart resumes there)"
            )
            error.__cause__ = exc
            self._callback_error = error

    async def poll(self, timeout_ms: int, max_records: int) -> dict[TP, Sequence[FetchedRecord]]:
        if self._callback_error is not None:
            raise self._callback_error
        batches = await self.consumer.getmany(timeout_ms=timeout_ms, max_records=max_records)
        if self._callback_error is not None:  # a rebalance ran during the fetch
            raise self._callback_error
        # aiokafka's record objects (and its ConsumerRecord, without lean_fetch) have the
        # attributes of a RawRecord (offset, key, value, timestamp, headers): handed over
        # as they are, with no per-record copy.
        return {(tp.topic, tp.partition): records for tp, records in batches.items() if records}

    async def committed(self, partitions: Sequence[TP]) -> dict[TP, int]:
        out: dict[TP, int] = {}
        for topic, partition in partitions:
            offset = await self.consumer.committed(TopicPartition(topic, partition))
            if offset is not None and offset >= 0:
                out[(topic, partition)] = offset
        return out

    async def commit(self, offsets: dict[TP, int]) -> None:
        """Commit ``offsets``; a commit refused by a rebalance is skipped (the task's
        database is then ahead of the group, and the database wins on restart)."""
        if not offsets:
            return
        try:
            await self.consumer.commit({TopicPartition(t, p): o for (t, p), o in offsets.items()})
        except (CommitFailedError, IllegalStateError, RebalanceInProgressError) as exc:
            log.warning("offset commit skipped (%s); the next checkpoint commits again", exc)

    def pause(self, partitions: Iterable[TP]) -> None:
        """Stop fetching ``partitions`` (those assigned now; a rebalance unpauses)."""
        tps = self._now_assigned(partitions)
        if tps:
            self.consumer.pause(*tps)

    def resume(self, partitions: Iterable[TP]) -> None:
        """Fetch ``partitions`` again (those assigned now), from their positions."""
        tps = self._now_assigned(partitions)
        if tps:
            self.consumer.resume(*tps)

    def assignment(self) -> set[TP]:
        return {(tp.topic, tp.partition) for tp in self.consumer.assignment()}

    def highwaters(self) -> dict[TP, int]:
        """Each assigned partition's end offset as of its last fetch (for the lag metric)."""
        consumer = self._consumer
        if consumer is None:
            return {}
        out: dict[TP, int] = {}
        for tp in consumer.assignment():
            end = consumer.highwater(tp)
            if end is not None:
                out[(tp.topic, tp.partition)] = end
        return out

    def paused(self) -> set[TP]:
        return {(tp.topic, tp.partition) for tp in self.consumer.paused()}

    def seek(self, offsets: dict[TP, int]) -> None:
        assigned = self.consumer.assignment()
        for (topic, partition), offset in offsets.items():
            tp = TopicPartition(topic, partition)
            if tp in assigned:
                self.consumer.seek(tp, offset)

    def _now_assigned(self, partitions: Iterable[TP]) -> list[TopicPartition]:
        # aiokafka raises for a partition that is not (or no longer) assigned.
        assigned = self.consumer.assignment()
        return [tp for tp in (TopicPartition(t, p) for t, p in partitions) if tp in assigned]

    async def stop(self) -> None:
        if self._consumer is not None:
            consumer, self._consumer = self._consumer, None
            await consumer.stop()


def _transactional(producer: object) -> TransactionalProducer:
    if not isinstance(producer, TransactionalProducer):
        raise ConfigError(
            f"a Kafka sink writes in a transaction with the producer of a KafkaTransaction, "
            f"not {type(producer).__name__}"
        )
    return producer


def _key_bytes(key: object) -> bytes | None:
    if key is None:
        return None
    if isinstance(key, bytes):
        return key
    return str(key).encode()


class KafkaSink:
    """Produces each output as a JSON value keyed by the output's key.

    The output id goes in the ``evtime-id`` header (consumers deduplicate by it
    under at-least-once). ``flush`` returns when the broker acknowledged every
    record written before it; a failed delivery raises there, so the checkpoint
    that would have committed the input offsets does not happen.
    """

    def __init__(
        self,
        topic: str,
        bootstrap: str | None = None,
        producer_config: dict[str, object] | None = None,
    ) -> None:
        self.topic = topic
        self._settings: dict[str, Any] = {
            "bootstrap_servers": bootstrap or default_bootstrap(),
            "enable_idempotence": True,
            "acks": "all",
            "linger_ms": 5,
            "max_batch_size": 256 * 1024,
            **producer_overrides(),
        }
        self._settings.update(producer_config or {})
        self._producer: AIOKafkaProducer | None = None
        # Batches produced and not yet acknowledged: (partition, future, their records),
        # kept so that a batch the producer gave up on can be sent again.
        self._pending: list[tuple[int, asyncio.Future[RecordMetadata], list[_Rec]]] = []
        self._partition_count: int | None = None
        self._key_partition: dict[bytes, int] = {}
        self._round_robin = 0

    async def _ensure(self) -> AIOKafkaProducer:
        # The producer starts at the first write, which may come while the broker is
        # down (records fetched before the outage are still being processed): start()
        # then fails at once ("Unable to bootstrap"), so it is retried until it is back.
        if self._producer is None:
            self._producer = await while_unreachable(
                f"starting the producer of {self.topic!r}", self._start_producer
            )
        return self._producer

    async def _start_producer(self) -> AIOKafkaProducer:
        return await started(AIOKafkaProducer(**self._settings))

    async def _partitions(self, producer: AIOKafkaProducer) -> int:
        if self._partition_count is None:
            parts = await while_unreachable(
                f"reading the partitions of {self.topic!r}",
                lambda: producer.partitions_for(self.topic),
            )
            self._partition_count = len(parts)
        return self._partition_count

    async def write(self, outputs: Sequence[Output]) -> None:
        """Queue ``outputs``, keyed records to the partition Kafka's default partitioner picks.

        Records are appended to one batch per partition and handed to the producer
        a batch at a time (no per-record future): delivery is awaited by :meth:`flush`.
        """
        await self._send(self._records(outputs))

    async def write_in(self, producer: object, outputs: Sequence[Output]) -> None:
        """Write ``outputs`` in a task's open transaction (exactly-once)."""
        await self._send(self._records(outputs), _transactional(producer))

    @staticmethod
    def _records(outputs: Sequence[Output]) -> list[_Rec]:
        return [
            (
                _key_bytes(o.key),
                orjson.dumps(o.value, option=orjson.OPT_NON_STR_KEYS),
                o.timestamp if 0 <= o.timestamp < _MAX_TS else None,
                [("evtime-id", o.id.encode())] if o.id is not None else [],
            )
            for o in outputs
        ]

    async def _send(
        self,
        records: list[_Rec],
        transaction: TransactionalProducer | None = None,
        partitions: Sequence[int] | None = None,
    ) -> None:
        """Produce ``records`` (to ``partitions``, one each, if given; else by key); in a
        ``transaction`` delivery is checked by its commit, else by :meth:`flush`."""
        if not records:
            return
        own = transaction is None
        producer = await self._ensure() if transaction is None else transaction.producer
        count = await self._partitions(producer)
        batches: dict[int, BatchBuilder] = {}
        kept: dict[int, list[_Rec]] = {}  # each open batch's records (own producer only)

        def sent(partition: int, fut: asyncio.Future[RecordMetadata]) -> None:
            # Delivery is awaited by flush (own producer: kept for a resend) or by the
            # transaction's commit.
            if transaction is None:
                self._pending.append((partition, fut, kept[partition]))
            else:
                transaction.sent.append(fut)

        cache = self._key_partition
        if len(cache) > 100_000:
            cache.clear()
        for n, rec in enumerate(records):
            key, value, ts, headers = rec
            if partitions is not None:
                partition = partitions[n]
            elif key is None:
                partition = self._round_robin % count
                self._round_robin += 1
            else:
                # Kafka's default partitioner (murmur2), cached: it is pure Python here and
                # results repeat for the same keys.
                partition = cache.get(key, -1)
                if partition < 0:
                    partition = cache[key] = (murmur2(key) & 0x7FFFFFFF) % count
            batch = batches.get(partition)
            if batch is None:
                batch = batches[partition] = producer.create_batch()
                kept[partition] = []
            if batch.append(timestamp=ts, key=key, value=value, headers=headers) is None:
                sent(partition, await self._send_batch(producer, batch, partition))
                batch = batches[partition] = producer.create_batch()
                kept[partition] = []
                batch.append(timestamp=ts, key=key, value=value, headers=headers)
            if own:
                kept[partition].append(rec)
        for partition, batch in batches.items():
            sent(partition, await self._send_batch(producer, batch, partition))

    async def _send_batch(
        self, producer: AIOKafkaProducer, batch: BatchBuilder, partition: int
    ) -> asyncio.Future[RecordMetadata]:
        # aiokafka queues a partition's batch only once the previous one is drained: while
        # the broker is down, send_batch gives up after request_timeout_ms (40 s) with a
        # KafkaTimeoutError and without queuing the batch, so it is retried as it is.
        sent: asyncio.Future[RecordMetadata] = await while_unreachable(
            f"producing to {self.topic!r}[{partition}]",
            lambda: producer.send_batch(batch, self.topic, partition=partition),
        )
        return sent

    async def flush(self) -> None:
        """Wait until every record written so far is acknowledged.

        A batch the producer gave up on while the broker was unreachable (its delivery
        timed out, its partition had no leader) is sent again by a new producer, with
        every later batch of its partition, in order: outputs may repeat (identically,
        at least once) but none is lost and none overtakes a later one of its key."""
        if self._producer is None:
            return
        await while_unreachable(
            f"delivering to {self.topic!r}", self._flush_once, retry_if=given_up
        )

    async def _flush_once(self) -> None:
        producer = await self._ensure()
        await producer.flush()
        pending, self._pending = self._pending, []
        results = await asyncio.gather(*(fut for _, fut, _ in pending), return_exceptions=True)
        failed_from: dict[int, int] = {}  # partition: its first failed batch
        first: BaseException | None = None
        for n, ((partition, _, _), result) in enumerate(zip(pending, results, strict=True)):
            if isinstance(result, BaseException):
                if not given_up(result):
                    raise KafkaError(f"delivery to {self.topic!r} failed: {result}") from result
                first = first or result
                failed_from.setdefault(partition, n)
        if first is None:
            return
        again = [
            rec
            for n, (partition, _, recs) in enumerate(pending)
            if n >= failed_from.get(partition, len(pending))
            for rec in recs
        ]
        log.warning(
            "delivery to %r failed (%s): sending %d records again with a new producer",
            self.topic,
            first,
            len(again),
        )
        old, self._producer = self._producer, None
        if old is not None:
            await stopped(old)
        await self._send(again)
        raise first  # waited for (with backoff), then the new batches are awaited

    async def close(self) -> None:
        if self._producer is not None:
            await self.flush()
            await self._producer.stop()
            self._producer = None


class KafkaDeadLetterSink(KafkaSink):
    """The dead-letter topic: the original bytes as value, the reason and position in headers."""

    @staticmethod
    def _dead_records(letters: Sequence[DeadLetter]) -> list[_Rec]:
        records: list[_Rec] = []
        for d in letters:
            value = d.value if isinstance(d.value, bytes) else orjson.dumps(d.to_dict()["value"])
            headers = [
                ("evtime-reason", d.reason.value.encode()),
                ("evtime-error", d.error.encode()[:4000]),
                ("evtime-topic", d.topic.encode()),
                ("evtime-partition", str(d.partition).encode()),
                ("evtime-offset", str(d.offset).encode()),
            ]
            if d.operator:
                headers.append(("evtime-operator", d.operator.encode()))
            records.append((_key_bytes(d.key), value, None, headers))
        return records

    async def write_dead(self, letters: Sequence[DeadLetter]) -> None:
        await self._send(self._dead_records(letters))

    async def write_dead_in(self, producer: object, letters: Sequence[DeadLetter]) -> None:
        """Write dead letters in a task's open transaction (exactly-once)."""
        await self._send(self._dead_records(letters), _transactional(producer))


class KafkaRepartitionSink(KafkaSink):
    """The internal topic of ``app.repartition``: records as they came (their bytes), keyed
    anew, each with its origin (source partition and offset); and watermark markers, one
    per partition, that carry a source partition's watermark to every downstream task.

    The topic is created by the worker (:meth:`ensure`) with append-time timestamps, so its
    retention counts from when records were written, whatever their event times.
    """

    async def ensure(self, partitions: int) -> None:
        """Create the topic with ``partitions`` partitions if it is missing (an existing one
        must have as many)."""
        await ensure_topic(
            self._settings["bootstrap_servers"],
            self.topic,
            partitions,
            {"message.timestamp.type": "LogAppendTime"},
        )

    @staticmethod
    def _records(outputs: Sequence[Output]) -> list[_Rec]:
        return [
            (
                _key_bytes(o.key),
                o.value if isinstance(o.value, bytes) else orjson.dumps(o.value),
                None,
                [(ORIGIN_HEADER, o.id.encode())] if o.id is not None else [],
            )
            for o in outputs
        ]

    def _markers(self, origin: int, origins: int, watermark: int) -> tuple[list[_Rec], list[int]]:
        headers = [
            (ORIGIN_HEADER, str(origin).encode()),
            (WATERMARK_HEADER, IDLE_MARK if watermark == IDLE else str(watermark).encode()),
            (ORIGINS_HEADER, str(origins).encode()),
        ]
        count = self._partition_count or 0
        return [(None, b"", None, headers)] * count, list(range(count))

    async def write_watermark(self, origin: int, origins: int, watermark: int) -> None:
        """Tell every partition that source partition ``origin`` (of ``origins``) is at
        ``watermark`` (after the records it sent before)."""
        await self._partitions(await self._ensure())
        records, partitions = self._markers(origin, origins, watermark)
        await self._send(records, None, partitions)

    async def write_watermark_in(
        self, producer: object, origin: int, origins: int, watermark: int
    ) -> None:
        """:meth:`write_watermark` in a task's open transaction (exactly-once)."""
        transaction = _transactional(producer)
        await self._partitions(transaction.producer)
        records, partitions = self._markers(origin, origins, watermark)
        await self._send(records, transaction, partitions)

