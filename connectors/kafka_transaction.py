"""Kafka transactions of the exactly-once guarantee: one transactional producer per task.

A task's outputs, dead letters, changelog entries and input offsets go into its open
transaction, which commits at each checkpoint, or not at all: a commit whose batches did
not all land raises TransactionFailedError instead (the worker then redoes the interval).
"""

from __future__ import annotations

import asyncio

from aiokafka import AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaConnectionError, NodeNotReadyError
from aiokafka.structs import RecordMetadata

from evtime.connectors.kafka_connection import KafkaConnection, as_connection
from evtime.connectors.kafka_probe import verified
from evtime.connectors.kafka_retry import producer_overrides, while_unreachable
from evtime.errors import TransactionFailedError
from evtime.io import TopicPartition as TP


def _retry_closed_connections_in_coordinator_lookups(producer: AIOKafkaProducer) -> None:
    """Work around aiokafka 0.14.0: its transactional sender retries a FindCoordinator that
    failed with NodeNotReadyError or RequestTimedOutError, but a KafkaConnectionError (the
    broker closed the connection mid-request, as it does when it shuts down) kills the
    sender routine, and every later call of the producer raises "Unexpected error during
    batch delivery". Seen in the broker-restart test, in send_offsets_to_transaction.

    On this producer's own client only, such a lookup fails as NodeNotReadyError instead,
    which aiokafka handles: metadata refresh, backoff, retry until the broker is back.
    tests/unit/test_kafka_transaction.py tells when an aiokafka upgrade makes this moot.
    """
    client = producer.client
    lookup = client.coordinator_lookup

    async def coordinator_lookup(coordinator_type: int, coordinator_key: str) -> int:
        try:
            node_id: int = await lookup(coordinator_type, coordinator_key)
        except KafkaConnectionError as exc:
            raise NodeNotReadyError(f"coordinator lookup: {exc}") from exc
        return node_id

    client.coordinator_lookup = coordinator_lookup


class TransactionalProducer:
    """What a task's transaction hands to its sinks and its changelog: the transactional
    aiokafka producer, and the futures of the batches sent in the open transaction.

    aiokafka commits a transaction even when some of its batches were given up on (a broker
    outage longer than the delivery timeout); so sinks record here every batch they send,
    and :meth:`KafkaTransaction.commit` checks them all before committing.
    """

    __slots__ = ("producer", "sent")

    def __init__(
        self, producer: AIOKafkaProducer, sent: list[asyncio.Future[RecordMetadata]]
    ) -> None:
        self.producer = producer
        self.sent = sent


class KafkaTransaction:
    """One task's transactional producer.

    Its ``transactional_id`` is stable per task (app, topic group, partition):
    starting it fences any zombie producer of a previous owner of the task and
    aborts that owner's open transaction.
    """

    def __init__(self, connection: KafkaConnection | str, transactional_id: str) -> None:
        self.transactional_id = transactional_id
        self.connection = as_connection(connection)
        self._producer = self._new_producer()
        self._started = False
        self._sent: list[asyncio.Future[RecordMetadata]] = []

    def _new_producer(self) -> AIOKafkaProducer:
        producer = AIOKafkaProducer(
            **self.connection.client_kwargs(),
            transactional_id=self.transactional_id,
            enable_idempotence=True,
            acks="all",
            linger_ms=5,
            max_batch_size=512 * 1024,
            # The broker aborts a transaction open longer than this: it must outlast a
            # broker outage (a checkpoint waits for the broker), within the broker's
            # transaction.max.timeout.ms (15 min by default).
            transaction_timeout_ms=600_000,
            **producer_overrides(),
        )
        _retry_closed_connections_in_coordinator_lookups(producer)
        return producer

    @property
    def producer(self) -> TransactionalProducer:
        """The producer for sinks and changelog appends in the open transaction."""
        return TransactionalProducer(self._producer, self._sent)

    async def begin(self) -> None:
        self._sent = []
        if not self._started:
            # Starting fences the task's previous producer: it needs the broker (and the
            # transaction coordinator), which may be away during a rebalance.
            await while_unreachable(
                f"starting the transactional producer {self.transactional_id!r}",
                self._start,
                target=self.connection.target,
            )
            self._started = True
        await self._producer.begin_transaction()

    async def _start(self) -> None:
        await verified(self.connection)
        try:
            await self._producer.start()
        except BaseException:
            await self._producer.stop()
            self._producer = self._new_producer()  # a failed one cannot start again
            raise

    async def commit(self, offsets: dict[TP, int], group_id: str) -> None:
        """Commit the transaction with ``offsets`` as the group's; TransactionFailedError
        (nothing committed) if any record sent in it was not delivered."""
        sent, self._sent = self._sent, []
        for result in await asyncio.gather(*sent, return_exceptions=True):
            if isinstance(result, BaseException):
                raise TransactionFailedError(
                    f"transaction of {self.transactional_id!r}: a batch was not delivered "
                    f"({type(result).__name__}: {result}); it is not committed"
                ) from result
        if offsets:
            await self._producer.send_offsets_to_transaction(
                {TopicPartition(t, p): o for (t, p), o in offsets.items()}, group_id
            )
        await self._producer.commit_transaction()

    async def abort(self) -> None:
        await self._producer.abort_transaction()

    async def close(self) -> None:
        if self._started:
            self._started = False
            await self._producer.stop()
