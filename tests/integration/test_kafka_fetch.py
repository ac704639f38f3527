"""The lean fetch path (connectors/kafka_fetch.py) against aiokafka's own getmany, on
the real broker: plain, compressed and transactional batches (aborted transactions
included), both isolation levels, reads that start or resume in the middle of a batch,
small max_records, seeks and pauses between reads."""

from __future__ import annotations

import asyncio
import random
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from evtime.connectors.kafka_fetch import lean_fetch, supported
from tests.integration.kafka_helpers import create_topics

PARTITIONS = 2
Row = tuple[int, int, bytes | None, bytes | None, int, tuple[tuple[str, bytes], ...]]


def _row(partition: int, r: Any) -> Row:
    return (partition, r.offset, r.key, r.value, r.timestamp, tuple(r.headers))


async def _produce(bootstrap: str, topic: str) -> set[bytes]:
    """Plain, gzip and transactional batches (some aborted, interleaved with plain
    records); returns the values a read_committed consumer must see."""
    rng = random.Random(5)
    visible: set[bytes] = set()
    plain = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=50, enable_idempotence=True)
    gzip = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=50, compression_type="gzip")
    txn = AIOKafkaProducer(
        bootstrap_servers=bootstrap, transactional_id=f"{topic}-txn", enable_idempotence=True
    )
    for p in (plain, gzip, txn):
        await p.start()
    try:
        n = 0

        async def send(producer: AIOKafkaProducer, count: int, keep: bool) -> None:
            nonlocal n
            futures = []
            for _ in range(count):
                n += 1
                value = f"v{n}".encode()
                key = None if n % 5 == 0 else f"k{n % 13}".encode()
                headers = [("h", str(n).encode())] if n % 3 == 0 else []
                futures.append(
                    await producer.send(
                        topic, value, key=key, partition=rng.randrange(PARTITIONS),
                        headers=headers, timestamp_ms=1_700_000_000_000 + n,
                    )
                )
                if keep:
                    visible.add(value)
            await asyncio.gather(*futures)

        for round_ in range(6):
            await send(plain, rng.randrange(1, 400), True)
            await send(gzip, rng.randrange(1, 300), True)
            async with txn.transaction():
                await send(txn, rng.randrange(1, 200), True)
            await txn.begin_transaction()
            await send(txn, rng.randrange(1, 200), False)
            await send(plain, rng.randrange(1, 50), True)  # between the aborted txn's records
            await txn.abort_transaction()
            if round_ % 2:
                await send(plain, 1, True)  # a batch of one record
    finally:
        for p in (plain, gzip, txn):
            await p.stop()
    return visible


async def _consumer(bootstrap: str, topic: str, lean: bool, isolation: str) -> AIOKafkaConsumer:
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, isolation_level=isolation,
        auto_offset_reset="earliest", fetch_max_wait_ms=50,
        # Small fetches: results end and resume at many places inside batches.
        max_partition_fetch_bytes=2048,
    )
    await consumer.start()
    consumer.assign([TopicPartition(topic, p) for p in range(PARTITIONS)])
    if lean:
        assert lean_fetch(consumer), supported(consumer)
    return consumer


async def _ends(consumer: AIOKafkaConsumer, topic: str) -> dict[int, int]:
    tps = [TopicPartition(topic, p) for p in range(PARTITIONS)]
    return {tp.partition: o for tp, o in (await consumer.end_offsets(tps)).items()}


async def _read(
    bootstrap: str, topic: str, *, lean: bool, isolation: str, max_records: int,
    starts: dict[int, int] | None = None,
) -> dict[int, list[Row]]:
    """Every record from ``starts`` (default: the beginning) to the end, per partition."""
    consumer = await _consumer(bootstrap, topic, lean, isolation)
    try:
        ends = await _ends(consumer, topic)
        for p, offset in (starts or {}).items():
            consumer.seek(TopicPartition(topic, p), offset)
        rows: dict[int, list[Row]] = {p: [] for p in range(PARTITIONS)}
        while await _behind(consumer, topic, ends) or _pending(consumer):
            batches = await consumer.getmany(timeout_ms=200, max_records=max_records)
            for tp, records in batches.items():
                assert len(records) <= max_records
                rows[tp.partition].extend(_row(tp.partition, r) for r in records)
        return rows
    finally:
        await consumer.stop()


async def _behind(consumer: AIOKafkaConsumer, topic: str, ends: dict[int, int]) -> bool:
    for p, end in ends.items():
        if await consumer.position(TopicPartition(topic, p)) < end:
            return True
    return False


def _pending(consumer: AIOKafkaConsumer) -> bool:
    # Records fetched and not yet returned (the lean path moves positions a batch at a
    # time): the read is over when the positions are at the end and nothing is left.
    return any(r.has_more() for r in consumer._fetcher._records.values() if hasattr(r, "has_more"))


@pytest.fixture(scope="module")
def produced(kafka_bootstrap: str) -> tuple[str, set[bytes]]:
    topic = f"lean-fetch-{random.randrange(10**9)}"
    asyncio.run(create_topics(kafka_bootstrap, {topic: PARTITIONS}))
    return topic, asyncio.run(_produce(kafka_bootstrap, topic))


@pytest.mark.parametrize("isolation", ["read_committed", "read_uncommitted"])
@pytest.mark.parametrize("max_records", [1, 7, 500])
async def test_lean_reads_what_getmany_reads(
    kafka_bootstrap: str, produced: tuple[str, set[bytes]], isolation: str, max_records: int
) -> None:
    topic, visible = produced
    usual = await _read(
        kafka_bootstrap, topic, lean=False, isolation=isolation, max_records=max_records
    )
    lean = await _read(
        kafka_bootstrap, topic, lean=True, isolation=isolation, max_records=max_records
    )
    assert lean == usual
    values = {row[3] for rows in lean.values() for row in rows}
    if isolation == "read_committed":
        assert values == visible  # aborted records are skipped, nothing else is
    else:
        assert values > visible
    for rows in lean.values():
        offsets = [row[1] for row in rows]
        assert offsets == sorted(set(offsets))


async def test_lean_reads_from_inside_a_batch(
    kafka_bootstrap: str, produced: tuple[str, set[bytes]]
) -> None:
    """A fetch returns the whole batch holding its offset: records before it are skipped."""
    topic, _ = produced
    full = await _read(kafka_bootstrap, topic, lean=False, isolation="read_committed",
                       max_records=500)
    rng = random.Random(8)
    for _ in range(4):
        starts = {p: rng.choice(rows)[1] + rng.randrange(2) for p, rows in full.items()}
        lean = await _read(kafka_bootstrap, topic, lean=True, isolation="read_committed",
                           max_records=50, starts=starts)
        assert lean == {p: [r for r in rows if r[1] >= starts[p]] for p, rows in full.items()}


async def test_lean_seek_and_pause_between_reads(
    kafka_bootstrap: str, produced: tuple[str, set[bytes]]
) -> None:
    """Seeking back or pausing in the middle of a fetched result: the next reads go on
    from the new position with nothing lost or repeated."""
    topic, _ = produced
    full = await _read(kafka_bootstrap, topic, lean=False, isolation="read_committed",
                       max_records=500)
    tp0 = TopicPartition(topic, 0)
    consumer = await _consumer(kafka_bootstrap, topic, True, "read_committed")
    try:
        got: list[Row] = []
        while len(got) < 20:
            batches = await consumer.getmany(tp0, timeout_ms=200, max_records=3)
            got.extend(_row(0, r) for r in batches.get(tp0, []))
        assert got == full[0][: len(got)]
        back = full[0][5][1]
        consumer.seek(tp0, back)  # the rest of the fetched result is dropped
        consumer.pause(tp0)
        assert (await consumer.getmany(tp0, timeout_ms=300)).get(tp0, []) == []
        consumer.resume(tp0)
        got = []
        while len(got) < len(full[0]) - 5:
            batches = await consumer.getmany(tp0, timeout_ms=200, max_records=11)
            got.extend(_row(0, r) for r in batches.get(tp0, []))
        assert got == full[0][5:]
    finally:
        await consumer.stop()


async def test_a_consumer_with_deserializers_is_left_as_it_is(
    kafka_bootstrap: str, produced: tuple[str, set[bytes]]
) -> None:
    topic, _ = produced
    consumer = AIOKafkaConsumer(
        bootstrap_servers=kafka_bootstrap, value_deserializer=bytes.decode,
        auto_offset_reset="earliest",
    )
    await consumer.start()
    try:
        consumer.assign([TopicPartition(topic, 0)])
        assert supported(consumer) == "the consumer has a key or value deserializer"
        assert lean_fetch(consumer) is False
        batches = await consumer.getmany(timeout_ms=2000, max_records=5)
        values = [r.value for rs in batches.values() for r in rs]
        assert values and all(type(v) is str for v in values)  # deserialized, as usual
    finally:
        await consumer.stop()
