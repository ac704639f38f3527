"""A lean way out of aiokafka's fetcher: fetched records without a ConsumerRecord each.

aiokafka's ``getmany`` turns every record of a fetch response into a ``ConsumerRecord``
(a Python generator step, a dataclass of 11 fields and a tuple of headers per record):
for small JSON events that is about half of a consumer's time. The worker needs only
offset, key, value, timestamp and headers, which the record objects of aiokafka's
record batches already carry (built in C). ``lean_fetch`` makes one consumer's
``getmany`` return those objects: the fetch responses are still parsed, checked and
handed over by aiokafka, and only the unpacking of a partition's records changes:

- a record batch is walked at C speed (``itertools``), so Python runs once per batch;
- the per-batch rules stay those of aiokafka: CRC check, control batches skipped,
  batches of aborted transactions skipped under ``read_committed``, records before
  the fetch offset skipped (a fetch returns the whole batch that holds its offset);
- the position is left where aiokafka leaves it (after the last record returned, or
  past the skipped batches at the end), so a pause, a seek or a rebalance that drops
  a fetched result loses nothing, exactly as before.

It relies on aiokafka's fetcher internals (``Fetcher._records``, ``FetchResult``,
``PartitionRecords``), checked when the consumer starts: with a layout it does not
know, or with key or value deserializers, the consumer is left as it is (and says so
once in the log). tests/integration/test_kafka_fetch.py compares it with ``getmany``
on plain, compacted and transactional topics, aborted transactions included.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Iterable, Iterator
from itertools import chain, islice

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import CorruptRecordException

from evtime.records import FetchedRecord

log = logging.getLogger("evtime.kafka")

try:  # aiokafka's private fetcher classes (the layout checked by `supported`)
    from aiokafka.consumer.fetcher import READ_COMMITTED, FetchResult, PartitionRecords
except ImportError:  # pragma: no cover - another aiokafka layout
    FetchResult = PartitionRecords = None
    READ_COMMITTED = 1

_NEEDED = {
    FetchResult: ("check_assignment", "has_more", "_update_position", "_partition_records"),
    PartitionRecords: (
        "_records",
        "_records_iterator",
        "next_fetch_offset",
        "_check_crcs",
        "_isolation_level",
        "_consume_aborted_up_to",
        "_contains_abort_marker",
        "_aborted_producers",
    ),
}


def supported(consumer: AIOKafkaConsumer) -> str | None:
    """None if ``lean_fetch`` can work on ``consumer`` (started), else why not."""
    if FetchResult is None:
        return "aiokafka's fetcher classes were not found"
    fetcher = getattr(consumer, "_fetcher", None)
    if fetcher is None or type(getattr(fetcher, "_records", None)) is not OrderedDict:
        return "aiokafka's fetcher keeps its results differently"
    if fetcher._key_deserializer is not None or fetcher._value_deserializer is not None:
        return "the consumer has a key or value deserializer"
    for cls, names in _NEEDED.items():
        missing = [n for n in names if not hasattr(cls, n) and n not in _instance_attrs(cls)]
        if missing:
            return f"aiokafka's {cls.__name__} has no {', '.join(missing)}"
    return None


def _instance_attrs(cls: type) -> set[str]:
    # Attributes set in __init__ are not on the class: read them off its code.
    init = cls.__dict__.get("__init__")
    code = getattr(init, "__code__", None)
    return set(code.co_names) if code is not None else set()


def lean_fetch(consumer: AIOKafkaConsumer) -> bool:
    """Make ``consumer.getmany`` return aiokafka's record objects (offset, key, value,
    timestamp, headers) instead of ConsumerRecords; False (and nothing changed) if
    this aiokafka or this consumer's settings do not allow it."""
    why = supported(consumer)
    if why is not None:
        log.info("the consumer reads records aiokafka's usual way (%s)", why)
        return False
    fetcher = consumer._fetcher
    fetcher._records = _LeanResults(fetcher._records)
    return True


class _LeanResults(OrderedDict[TopicPartition, object]):
    """The fetcher's results per partition: each new fetch result is made lean."""

    def __init__(
        self, existing: Iterable[tuple[TopicPartition, object]] | dict[TopicPartition, object] = ()
    ) -> None:
        super().__init__()
        for tp, result in dict(existing).items():
            self[tp] = result

    def __setitem__(self, tp: TopicPartition, result: object) -> None:
        if type(result) is FetchResult:
            _make_lean(result)
        super().__setitem__(tp, result)


def _make_lean(result: FetchResult) -> None:
    records = result._partition_records
    if records is not None:
        records._records_iterator = chain.from_iterable(_batches(records))
        result.getall = _Getall(result)


class _Getall:
    """``FetchResult.getall``, taking up to ``max_records`` records in one C-level slice."""

    __slots__ = ("_result",)

    def __init__(self, result: FetchResult) -> None:
        self._result = result

    def __call__(self, max_records: int | None = None) -> list[FetchedRecord]:
        result = self._result
        if not result.check_assignment(result._topic_partition) or not result.has_more():
            return []
        records = result._partition_records
        taken = list(islice(records._records_iterator, max_records))
        if max_records is None or len(taken) < max_records:
            # Read to the end: the batches' walk left the next fetch offset past the
            # last batch (skipped control and aborted batches included).
            result._update_position()
            result._partition_records = None
        else:
            # Maybe in the middle of a batch: the position is right after the last record
            # returned, as aiokafka leaves it, so a result dropped by a pause or a seek
            # loses nothing (the next fetch starts there).
            records.next_fetch_offset = taken[-1].offset + 1
            result._update_position()
        return taken


def _batches(records: PartitionRecords) -> Iterator[Iterable[FetchedRecord]]:
    """The record batches of one fetched partition, each as an iterable of its records
    (walked by the caller at C speed), with aiokafka's rules for which batches count."""
    buffer = records._records
    start = records.next_fetch_offset  # the fetch offset
    read_committed = records._isolation_level == READ_COMMITTED
    while buffer.has_next():
        batch = buffer.next_batch()
        if records._check_crcs and not batch.validate_crc():
            raise CorruptRecordException(f"Invalid CRC - {records._tp}")
        if read_committed and batch.producer_id is not None:
            records._consume_aborted_up_to(batch.base_offset)
            if batch.is_control_batch and records._contains_abort_marker(batch):
                records._aborted_producers.discard(batch.producer_id)
            if batch.is_transactional and batch.producer_id in records._aborted_producers:
                records.next_fetch_offset = batch.next_offset
                continue
        if batch.is_control_batch:
            records.next_fetch_offset = batch.next_offset
            continue
        items = list(batch)
        if items and items[0].offset < start:
            # The batch that holds the fetch offset comes whole (or a compressed set).
            items = [r for r in items if r.offset >= start]
        yield items
        # Resumed once the batch was read whole.
        start = records.next_fetch_offset = batch.next_offset
