"""Kafka sources on aiokafka (the sinks are in connectors/kafka_sink.py).

``KafkaSource`` declares a topic; the worker asks it for the consumer group
that reads every Kafka topic of the app (one consumer per worker process, the
range assignor so that partition ``p`` of co-partitioned topics lands in the
same worker), and for the other clients of the job on the same cluster:
changelogs, transactional producers, repartition topics, partition counts. Every
one is made from the source's :class:`KafkaConnection` (address, TLS, SASL;
connectors/kafka_connection.py), so a secured cluster is configured once.

A broker that goes away is waited for, never a reason to drop anything: aiokafka's
consumer refetches and retries offset commits by itself, a started producer keeps
its batches until the broker is back, and what aiokafka gives up on (starting a
consumer or producer, a transactional one included; queuing a batch behind one that
cannot be sent) is retried with backoff, up to ``EVTIME_KAFKA_BROKER_WAIT`` (see
connectors/kafka_retry.py). A broker that refuses the client (a wrong password, an
untrusted certificate) is a ConfigError at once (connectors/kafka_probe.py).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.coordinator.assignors.range import RangePartitionAssignor
from aiokafka.errors import (
    CommitFailedError,
    IllegalStateError,
    RebalanceInProgressError,
)

from evtime.connectors.kafka_changelog import KafkaChangelog, partition_counts
from evtime.connectors.kafka_connection import KafkaConnection, connection_for
from evtime.connectors.kafka_fetch import lean_fetch
from evtime.connectors.kafka_probe import verified
from evtime.connectors.kafka_retry import started, while_unreachable
from evtime.connectors.kafka_sink import KafkaDeadLetterSink, KafkaRepartitionSink, KafkaSink
from evtime.connectors.kafka_transaction import KafkaTransaction
from evtime.errors import ConfigError, EvtimeError
from evtime.io import AssignCallback, RevokeCallback
from evtime.io import TopicPartition as TP
from evtime.records import FetchedRecord
from evtime.settings import Settings

__all__ = [
    "KafkaConnection",
    "KafkaDeadLetterSink",
    "KafkaGroupSource",
    "KafkaRepartitionSink",
    "KafkaSink",
    "KafkaSource",
    "default_bootstrap",
]

log = logging.getLogger("evtime.kafka")


def default_bootstrap() -> str:
    """``EVTIME_KAFKA_BOOTSTRAP``, or the broker `evtime services up` starts."""
    return Settings.load().kafka_bootstrap


@dataclass(frozen=True)
class KafkaSource:
    """A Kafka topic as an app input.

    ``connection`` (address, TLS, SASL) defaults to the settings' (``EVTIME_KAFKA_*``:
    ``KafkaConnection.from_settings``); ``bootstrap`` is a shortcut that replaces only
    its address (else 127.0.0.1:9092), and reads back as the connection's address.
    ``consumer_config`` passes further aiokafka consumer settings, e.g.
    ``max_poll_interval_ms`` (default 300,000): a member that does not poll for that long
    leaves the group. The worker keeps polling while its sinks are slow (it pauses the
    partitions after ``pause_after_ms`` instead), so this bounds a rebalance's wait for
    a stuck sink rather than the sink itself.
    """

    topic: str
    bootstrap: str = ""
    consumer_config: dict[str, object] = field(default_factory=dict)
    connection: KafkaConnection = field(default_factory=connection_for, repr=False)

    def __post_init__(self) -> None:
        connection = connection_for(self.bootstrap, self.connection)
        object.__setattr__(self, "connection", connection)
        object.__setattr__(self, "bootstrap", connection.bootstrap)

    def describe(self) -> str:
        """For ``evtime describe``: the topic and the cluster (no secrets)."""
        return f"Kafka topic {self.topic!r} at {self.connection.describe()}"

    def group_source(
        self, group_id: str, topics: Sequence[str], instance_id: str | None = None
    ) -> KafkaGroupSource:
        """The consumer group reading ``topics``; ``instance_id`` makes the member static
        (a restarted worker takes its partitions back without a rebalance)."""
        config = dict(self.consumer_config)
        if instance_id:
            config.setdefault("group_instance_id", instance_id)
        return KafkaGroupSource(self.connection, group_id, list(topics), config)

    async def partition_counts(self, topics: Sequence[str]) -> dict[str, int]:
        """How many partitions each of ``topics`` has on this source's cluster."""
        return await partition_counts(self.connection, topics)

    def changelog(self, topic: str) -> KafkaChangelog:
        """The changelog topic ``topic`` on this source's cluster."""
        return KafkaChangelog(self.connection, topic)

    def transaction(self, transactional_id: str) -> KafkaTransaction:
        """A transactional producer for one task (exactly-once)."""
        return KafkaTransaction(self.connection, transactional_id)

    def internal_source(self, topic: str) -> KafkaSource:
        """The source of an internal topic (a repartition's) on this source's cluster."""
        return replace(self, topic=topic)

    def repartition_sink(self, topic: str) -> KafkaRepartitionSink:
        """The sink that writes a repartition's internal topic on this source's cluster."""
        return KafkaRepartitionSink(topic, connection=self.connection)


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
        self,
        connection: KafkaConnection,
        group_id: str,
        topics: list[str],
        config: dict[str, object],
    ) -> None:
        self.connection = connection
        settings: dict[str, object] = {
            **connection.client_kwargs(),
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
            f"starting the consumer of group {self.group_id!r}", self._start_consumer,
            target=self.connection.target,
        )
        consumer.subscribe(self._topics, listener=_Listener(self))
        self._consumer = consumer

    async def _start_consumer(self) -> AIOKafkaConsumer:
        await verified(self.connection)
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
