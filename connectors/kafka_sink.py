"""Kafka sinks on aiokafka: outputs, dead letters and a repartition's internal topic.

``KafkaSink`` produces results with an idempotent producer and waits for every
acknowledgement at ``flush`` (the first step of a checkpoint); under exactly-once it
writes in a task's transaction instead. ``KafkaDeadLetterSink`` writes bad records with
their original bytes and the reason in headers. Every producer is made from the job's
:class:`KafkaConnection` (address, TLS, SASL). A broker that goes away is waited for
(connectors/kafka_retry.py).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any

import orjson
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from aiokafka.partitioner import murmur2
from aiokafka.producer.message_accumulator import BatchBuilder
from aiokafka.structs import RecordMetadata

from evtime.connectors.kafka_changelog import ensure_topic
from evtime.connectors.kafka_connection import KafkaConnection, connection_for
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
from evtime.errors import ConfigError
from evtime.records import DeadLetter, Output
from evtime.wire import IDLE, IDLE_MARK, ORIGIN_HEADER, ORIGINS_HEADER, WATERMARK_HEADER

log = logging.getLogger("evtime.kafka")
_MAX_TS = 2**63 - 1
_Rec = tuple[bytes | None, bytes, int | None, list[tuple[str, bytes]]]
"""A record to produce: key, value, timestamp (ms or None), headers."""

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

    ``connection`` (address, TLS, SASL) defaults to the settings' (``EVTIME_KAFKA_*``);
    ``bootstrap`` is a shortcut that replaces only its address.
    """

    def __init__(
        self,
        topic: str,
        bootstrap: str | None = None,
        producer_config: dict[str, object] | None = None,
        *,
        connection: KafkaConnection | None = None,
    ) -> None:
        self.topic = topic
        self.connection = connection_for(bootstrap, connection)
        self._target = self.connection.target
        self._settings: dict[str, Any] = {
            **self.connection.client_kwargs(),
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

    def describe(self) -> str:
        """For ``evtime describe``: the topic and the cluster (no secrets)."""
        return f"Kafka topic {self.topic!r} at {self.connection.describe()}"

    async def _ensure(self) -> AIOKafkaProducer:
        # The producer starts at the first write, which may come while the broker is
        # down (records fetched before the outage are still being processed): start()
        # then fails at once ("Unable to bootstrap"), so it is retried until it is back.
        if self._producer is None:
            self._producer = await while_unreachable(
                f"starting the producer of {self.topic!r}",
                self._start_producer,
                target=self._target,
            )
        return self._producer

    async def _start_producer(self) -> AIOKafkaProducer:
        await verified(self.connection)
        return await started(AIOKafkaProducer(**self._settings))

    async def _partitions(self, producer: AIOKafkaProducer) -> int:
        if self._partition_count is None:
            parts = await while_unreachable(
                f"reading the partitions of {self.topic!r}",
                lambda: producer.partitions_for(self.topic),
                target=self._target,
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
        what = "producing to"
        return await send_batch(producer, batch, self.topic, partition, what, self._target)

    async def flush(self) -> None:
        """Wait until every record written so far is acknowledged.

        A batch the producer gave up on while the broker was unreachable (its delivery
        timed out, its partition had no leader) is sent again by a new producer, with
        every later batch of its partition, in order: outputs may repeat (identically,
        at least once) but none is lost and none overtakes a later one of its key."""
        if self._producer is None:
            return
        await while_unreachable(
            f"delivering to {self.topic!r}", self._flush_once, retry_if=given_up,
            target=self._target,
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
            self.connection,
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

