"""Acceptance of `evtime services up`: the real broker and node do what evtime relies on.

Kafka: consumer groups that resume from committed offsets, idempotent and
transactional producers, consume-transform-produce with offsets in the transaction,
read_committed isolation, compacted topics. OpenSearch: `_bulk` with index /
update-as-upsert / delete, refresh, search, delete-by-query, and its version.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

READ_TIMEOUT_S = 30.0


# --- Kafka helpers ---------------------------------------------------------------------


class Topics:
    """Creates topics through an admin client and deletes them when the test ends."""

    def __init__(self, admin: AIOKafkaAdminClient) -> None:
        self.admin = admin
        self.created: list[str] = []

    async def create(self, *topics: NewTopic) -> None:
        response = await self.admin.create_topics(list(topics))
        errors = [(name, code, msg) for name, code, msg in response.topic_errors if code != 0]
        assert not errors, f"create_topics failed: {errors}"
        self.created.extend(topic.name for topic in topics)
        # The controller acknowledges before the broker has applied the new metadata.
        deadline = time.monotonic() + READ_TIMEOUT_S
        while not {topic.name for topic in topics} <= set(await self.admin.list_topics()):
            assert time.monotonic() < deadline, "created topics did not show up in metadata"
            await asyncio.sleep(0.1)


@pytest.fixture
async def topics(kafka_bootstrap: str) -> AsyncIterator[Topics]:
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    await admin.start()
    made = Topics(admin)
    try:
        yield made
    finally:
        if made.created:
            await admin.delete_topics(made.created)
        await admin.close()


async def read_to_end(
    consumer: AIOKafkaConsumer, partitions: list[TopicPartition]
) -> list[ConsumerRecord[bytes, bytes]]:
    """Everything up to the end offsets (the LSO under read_committed) as of now."""
    ends = await consumer.end_offsets(partitions)
    records: list[ConsumerRecord[bytes, bytes]] = []
    deadline = time.monotonic() + READ_TIMEOUT_S
    while [tp for tp in partitions if await consumer.position(tp) < ends[tp]]:
        assert time.monotonic() < deadline, f"did not reach end offsets {ends} in time"
        batches = await consumer.getmany(*partitions, timeout_ms=500)
        for batch in batches.values():
            records.extend(batch)
    return records


async def read_count(consumer: AIOKafkaConsumer, count: int) -> list[ConsumerRecord[bytes, bytes]]:
    records: list[ConsumerRecord[bytes, bytes]] = []
    deadline = time.monotonic() + READ_TIMEOUT_S
    while len(records) < count:
        assert time.monotonic() < deadline, f"got {len(records)} of {count} records in time"
        for batch in (await consumer.getmany(timeout_ms=500)).values():
            records.extend(batch)
    return records


def values(records: list[ConsumerRecord[bytes, bytes]]) -> list[str]:
    return sorted(record.value.decode() for record in records if record.value is not None)


# --- Kafka -----------------------------------------------------------------------------


@pytest.mark.kafka
async def test_group_resumes_after_committed_offsets_of_idempotent_producer(
    kafka_bootstrap: str, topics: Topics, unique_name: str
) -> None:
    topic, group = unique_name, f"{unique_name}-group"
    await topics.create(NewTopic(topic, num_partitions=4, replication_factor=1))
    partitions = [TopicPartition(topic, p) for p in range(4)]

    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, enable_idempotence=True)
    await producer.start()
    try:
        for p in range(4):
            for i in range(5):
                meta = await producer.send_and_wait(
                    topic, f"first-{p}-{i}".encode(), key=f"k{i}".encode(), partition=p
                )
                assert (meta.partition, meta.offset) == (p, i)
    finally:
        await producer.stop()

    first = AIOKafkaConsumer(
        topic,
        bootstrap_servers=kafka_bootstrap,
        group_id=group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    await first.start()
    try:
        records = await read_count(first, 20)
        assert values(records) == sorted(f"first-{p}-{i}" for p in range(4) for i in range(5))
        await first.commit()
        assert {tp: await first.committed(tp) for tp in partitions} == dict.fromkeys(partitions, 5)
    finally:
        await first.stop()

    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, enable_idempotence=True)
    await producer.start()
    try:
        for p in range(4):
            for i in range(2):
                await producer.send_and_wait(topic, f"second-{p}-{i}".encode(), partition=p)
    finally:
        await producer.stop()

    second = AIOKafkaConsumer(
        topic,
        bootstrap_servers=kafka_bootstrap,
        group_id=group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    await second.start()
    try:
        resumed = await read_count(second, 8)
        await asyncio.sleep(1.0)  # anything else would be a replay of committed records
        resumed.extend(
            r for batch in (await second.getmany(timeout_ms=500)).values() for r in batch
        )
        assert values(resumed) == sorted(f"second-{p}-{i}" for p in range(4) for i in range(2))
        assert min(record.offset for record in resumed) == 5
    finally:
        await second.stop()


@pytest.mark.kafka
async def test_transactions_commit_offsets_and_hide_aborted_records_from_read_committed(
    kafka_bootstrap: str, topics: Topics, unique_name: str
) -> None:
    source, sink, group = f"{unique_name}-in", f"{unique_name}-out", f"{unique_name}-group"
    await topics.create(
        NewTopic(source, num_partitions=2, replication_factor=1),
        NewTopic(sink, num_partitions=2, replication_factor=1),
    )
    source_partitions = [TopicPartition(source, p) for p in range(2)]
    sink_partitions = [TopicPartition(sink, p) for p in range(2)]

    plain = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, enable_idempotence=True)
    await plain.start()
    try:
        for i in range(6):
            await plain.send_and_wait(source, f"event-{i}".encode(), partition=i % 2)
    finally:
        await plain.stop()

    # Consume-transform-produce: outputs and input offsets commit together.
    consumer = AIOKafkaConsumer(
        bootstrap_servers=kafka_bootstrap,
        group_id=group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        isolation_level="read_committed",
    )
    producer = AIOKafkaProducer(
        bootstrap_servers=kafka_bootstrap, transactional_id=f"{unique_name}-tx"
    )
    await consumer.start()
    await producer.start()
    try:
        consumer.assign(source_partitions)
        inputs = await read_count(consumer, 6)
        async with producer.transaction():
            for record in inputs:
                await producer.send(sink, record.value.upper(), partition=record.partition)
            await producer.send_offsets_to_transaction(
                {tp: await consumer.position(tp) for tp in source_partitions}, group
            )

        await producer.begin_transaction()
        for i in range(3):
            await producer.send(sink, f"aborted-{i}".encode(), partition=i % 2)
        await producer.flush()
        await producer.abort_transaction()

        async with producer.transaction():
            await producer.send(sink, b"after-abort", partition=0)
    finally:
        await producer.stop()
        await consumer.stop()

    committed = await topics.admin.list_consumer_group_offsets(group, partitions=source_partitions)
    assert {tp: meta.offset for tp, meta in committed.items()} == dict.fromkeys(
        source_partitions, 3
    )

    transformed = [f"EVENT-{i}" for i in range(6)]
    for isolation, expected in (
        ("read_committed", sorted([*transformed, "after-abort"])),
        (
            "read_uncommitted",
            sorted([*transformed, "after-abort", *(f"aborted-{i}" for i in range(3))]),
        ),
    ):
        reader = AIOKafkaConsumer(
            bootstrap_servers=kafka_bootstrap,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            isolation_level=isolation,
        )
        await reader.start()
        try:
            reader.assign(sink_partitions)
            await reader.seek_to_beginning(*sink_partitions)
            assert values(await read_to_end(reader, sink_partitions)) == expected, isolation
        finally:
            await reader.stop()


@pytest.mark.kafka
async def test_compacted_topic_is_created_with_its_cleanup_policy(
    kafka_bootstrap: str, topics: Topics, unique_name: str
) -> None:
    await topics.create(
        NewTopic(
            unique_name,
            num_partitions=1,
            replication_factor=1,
            topic_configs={"cleanup.policy": "compact", "min.cleanable.dirty.ratio": "0.01"},
        ),
    )
    resource = ConfigResource(ConfigResourceType.TOPIC, unique_name, {"cleanup.policy": None})
    deadline = time.monotonic() + READ_TIMEOUT_S
    while True:
        [response] = await topics.admin.describe_configs([resource])
        [(error_code, _, _, _, entries)] = response.resources
        if error_code != 3:  # UNKNOWN_TOPIC_OR_PARTITION: not yet applied by the broker
            break
        assert time.monotonic() < deadline, "the compacted topic's config never showed up"
        await asyncio.sleep(0.1)
    assert error_code == 0
    assert {entry[0]: entry[1] for entry in entries}["cleanup.policy"] == "compact"

    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, enable_idempotence=True)
    await producer.start()
    try:
        for i in range(4):
            await producer.send_and_wait(unique_name, f"v{i}".encode(), key=b"same-key")
    finally:
        await producer.stop()


# --- OpenSearch ------------------------------------------------------------------------


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as session:
        yield session


async def call(
    http: aiohttp.ClientSession, method: str, url: str, body: Any = None, ndjson: str | None = None
) -> Any:
    if ndjson is not None:
        kwargs: dict[str, Any] = {
            "data": ndjson.encode(),
            "headers": {"Content-Type": "application/x-ndjson"},
        }
    else:
        kwargs = {} if body is None else {"json": body}
    async with http.request(method, url, **kwargs) as response:
        payload = await response.json()
        assert response.status < 300, f"{method} {url} -> {response.status}: {payload}"
        return payload


@pytest.mark.opensearch
async def test_opensearch_reports_its_distribution_and_2_19_version(
    opensearch_url: str, http: aiohttp.ClientSession
) -> None:
    root = await call(http, "GET", f"{opensearch_url}/")
    assert root["version"]["distribution"] == "opensearch"
    assert root["version"]["number"].startswith("2.19.")


@pytest.mark.opensearch
async def test_bulk_index_upsert_delete_then_refresh_and_search(
    opensearch_url: str, http: aiohttp.ClientSession, unique_name: str
) -> None:
    index = f"{opensearch_url}/{unique_name}"
    await call(http, "PUT", index, {"settings": {"number_of_shards": 1, "number_of_replicas": 0}})
    try:
        actions: list[dict[str, Any]] = [
            {"index": {"_index": unique_name, "_id": "1"}},
            {"n": 1, "tag": "a"},
            {"index": {"_index": unique_name, "_id": "2"}},
            {"n": 2},
            {"index": {"_index": unique_name, "_id": "3"}},
            {"n": 3},
            {"update": {"_index": unique_name, "_id": "2"}},
            {"doc": {"tag": "b"}, "doc_as_upsert": True},
            {"update": {"_index": unique_name, "_id": "4"}},
            {"doc": {"n": 4, "tag": "new"}, "doc_as_upsert": True},
            {"delete": {"_index": unique_name, "_id": "3"}},
        ]
        ndjson = "".join(json.dumps(action) + "\n" for action in actions)
        bulk = await call(http, "POST", f"{opensearch_url}/_bulk", ndjson=ndjson)
        assert bulk["errors"] is False
        results = [next(iter(item.values()))["result"] for item in bulk["items"]]
        assert results == ["created", "created", "created", "updated", "created", "deleted"]

        await call(http, "POST", f"{index}/_refresh")
        found = await call(
            http, "POST", f"{index}/_search", {"query": {"match_all": {}}, "size": 100}
        )
        docs = {hit["_id"]: hit["_source"] for hit in found["hits"]["hits"]}
        assert docs == {
            "1": {"n": 1, "tag": "a"},
            "2": {"n": 2, "tag": "b"},
            "4": {"n": 4, "tag": "new"},
        }

        deleted = await call(
            http,
            "POST",
            f"{index}/_delete_by_query?refresh=true",
            {"query": {"range": {"n": {"gte": 2}}}},
        )
        assert deleted["deleted"] == 2
        found = await call(http, "POST", f"{index}/_search", {"query": {"match_all": {}}})
        assert [hit["_id"] for hit in found["hits"]["hits"]] == ["1"]
    finally:
        await call(http, "DELETE", index)
