"""KafkaSink.flush when the producer gave up on batches during a broker outage: the failed
batch and every later batch of its partition go again, in order, with a new producer."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiokafka.errors import (
    KafkaTimeoutError,
    LeaderNotAvailableError,
    OutOfOrderSequenceNumber,
    RecordTooLargeError,
)

from evtime.connectors.kafka import KafkaSink
from evtime.records import Output


class _Batch:
    def __init__(self, size: int) -> None:
        self.size = size
        self.values: list[bytes] = []

    def append(self, *, timestamp: Any, key: Any, value: bytes, headers: Any) -> object | None:
        if len(self.values) >= self.size:
            return None
        self.values.append(value)
        return object()


class _Producer:
    """Batches of two records; the n-th send_batch of ``fail`` fails with its error."""

    def __init__(self, fail: dict[int, BaseException]) -> None:
        self.fail = fail
        self.sent: list[tuple[int, list[bytes]]] = []
        self.stopped = False

    def create_batch(self) -> _Batch:
        return _Batch(2)

    async def send_batch(self, batch: _Batch, topic: str, partition: int) -> Any:
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        error = self.fail.get(len(self.sent))
        self.sent.append((partition, list(batch.values)))
        if error is not None:
            fut.set_exception(error)
        else:
            fut.set_result(None)
        return fut

    async def flush(self) -> None:
        return None

    async def stop(self) -> None:
        self.stopped = True

    async def partitions_for(self, topic: str) -> set[int]:
        return {0, 1}


def _sink(producers: list[_Producer]) -> KafkaSink:
    sink = KafkaSink("out", "127.0.0.1:1")
    queue = list(producers)

    async def start() -> Any:
        return queue.pop(0)

    sink._start_producer = start  # type: ignore[method-assign]
    return sink


def _outputs(n: int) -> list[Output]:
    # Keys "a" and "d" land in different partitions of two (murmur2: 0 and 1).
    return [Output(key="a" if i % 2 == 0 else "d", value=i, timestamp=0, id=str(i))
            for i in range(n)]


async def test_a_batch_given_up_on_goes_again_with_the_later_ones_of_its_partition() -> None:
    first = _Producer({0: LeaderNotAvailableError()})  # the first batch sent fails
    second = _Producer({})
    sink = _sink([first, second])
    await sink.write(_outputs(8))  # 4 records per partition: two batches each
    await sink.flush()
    failed_partition = first.sent[0][0]
    assert {p for p, _ in first.sent} == {0, 1}
    want = [(p, v) for p, v in first.sent if p == failed_partition]
    assert len(want) == 2
    assert second.sent == want  # the failed batch and the later one, in order; nothing else
    assert first.stopped


async def test_a_sequence_gap_left_by_a_given_up_batch_is_sent_again_too() -> None:
    """The idempotent producer refuses the batch after a given-up one (a gap in its
    sequence numbers): that one goes again as well, with a new producer."""
    first = _Producer({0: LeaderNotAvailableError(), 2: OutOfOrderSequenceNumber()})
    second = _Producer({})
    sink = _sink([first, second])
    await sink.write(_outputs(8))
    await sink.flush()
    assert first.sent[0][0] == first.sent[2][0]  # both of one partition, in order
    assert second.sent == [b for b in first.sent if b[0] == first.sent[0][0]]


async def test_a_batch_that_cannot_go_is_an_error_not_retried() -> None:
    sink = _sink([_Producer({1: RecordTooLargeError()}), _Producer({})])
    await sink.write(_outputs(8))
    with pytest.raises(Exception, match="delivery to 'out' failed"):
        await sink.flush()


async def test_repeated_give_ups_are_retried_until_delivered() -> None:
    producers = [_Producer({0: KafkaTimeoutError()}), _Producer({0: KafkaTimeoutError()}),
                 _Producer({})]
    sink = _sink(producers)
    await sink.write(_outputs(4))
    await sink.flush()
    assert producers[2].sent and all(p.stopped for p in producers[:2])


class _Meta:
    def __init__(self, offset: int) -> None:
        self.offset = offset


class _LogProducer(_Producer):
    """Acknowledges with the offsets a partition's log would give."""

    def __init__(self, fail: dict[int, BaseException], logs: dict[int, list[bytes]]) -> None:
        super().__init__(fail)
        self.logs = logs

    async def send_batch(self, batch: _Batch, topic: str, partition: int) -> Any:
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        error = self.fail.get(len(self.sent))
        self.sent.append((partition, list(batch.values)))
        if error is not None:
            fut.set_exception(error)
        else:
            log = self.logs.setdefault(partition, [])
            fut.set_result(_Meta(len(log)))
            log.extend(batch.values)
        return fut


async def test_a_changelog_append_given_up_on_is_made_again_whole() -> None:
    from evtime.connectors.kafka_changelog import KafkaChangelog

    logs: dict[int, list[bytes]] = {}
    producers = [
        _LogProducer({1: LeaderNotAvailableError(), 2: OutOfOrderSequenceNumber()}, logs),
        _LogProducer({}, logs),
    ]
    changelog = KafkaChangelog("127.0.0.1:1", "app-t-changelog")

    async def start() -> Any:
        return producers.pop(0)

    changelog._start_producer = start  # type: ignore[method-assign]
    records = [(f"k{i}".encode(), f"v{i}".encode()) for i in range(3)]
    ends = await changelog.append({0: (records, {"t": 3}), 1: (records[:1], {"t": 3})})
    # The first attempt landed partition 0's first batch; the second made the whole append
    # again: every record is in the log after the failure, and the ends are the log's.
    assert logs[0][-3:] == [b"v0", b"v1", b"v2"]
    assert logs[1][-1:] == [b"v0"]
    assert ends == {0: len(logs[0]), 1: len(logs[1])}
    assert not producers


class _TxnProducer(_Producer):
    def __init__(self, fail: dict[int, BaseException]) -> None:
        super().__init__(fail)
        self.committed = False

    async def commit_transaction(self) -> None:
        self.committed = True

    async def send_offsets_to_transaction(self, offsets: Any, group_id: str) -> None:
        return None


async def test_a_transaction_with_a_batch_given_up_on_does_not_commit() -> None:
    """aiokafka would commit it without the lost batch: the commit checks every batch the
    sinks sent in the transaction first."""
    from evtime.connectors.kafka_transaction import KafkaTransaction
    from evtime.errors import TransactionFailedError

    producer = _TxnProducer({1: KafkaTimeoutError()})
    txn = KafkaTransaction("127.0.0.1:1", "app-t-0")
    txn._producer = producer  # type: ignore[assignment]
    sink = KafkaSink("out", "127.0.0.1:1")
    sink._partition_count = 2
    await sink.write_in(txn.producer, _outputs(8))
    with pytest.raises(TransactionFailedError, match="not delivered"):
        await txn.commit({("in", 0): 8}, "group")
    assert not producer.committed
    # A transaction whose batches all landed commits.
    ok = _TxnProducer({})
    txn._producer = ok  # type: ignore[assignment]
    await sink.write_in(txn.producer, _outputs(8))
    await txn.commit({("in", 0): 8}, "group")
    assert ok.committed
