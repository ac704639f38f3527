"""Repartitioning: records re-keyed and sent to an internal topic partitioned by the new key.

The upstream side of ``app.repartition(source, key=...)``: each record of the source
topic (decoded with the new key) goes, as it came (its bytes),
to the internal topic ``<app>-<name>-repartition``, whose partitioner (Kafka's default,
on the new key) puts every record of a key into one partition. Each record carries its
origin (source partition and offset) in the output id, so the downstream task can drop
a record sent twice (a restarted upstream task resends what its last checkpoint had not
covered). Watermarks cross the topic as marker records, written by the worker after each
step (see evtime/runtime/markers.py and evtime/runtime/task.py): the downstream watermark
is the minimum of the upstream partitions' watermarks, as a shuffle's is in Flink.
"""

from __future__ import annotations

from dataclasses import dataclass

from evtime.operators.base import Collector
from evtime.records import Batch, Output
from evtime.serde import KeySpec


@dataclass(frozen=True, slots=True)
class RepartitionSpec:
    """``app.repartition``: ``source`` re-keyed by ``key`` into the internal ``topic``."""

    name: str
    source: str
    topic: str
    key: KeySpec
    partitions: int | None
    output: str


def origin_id(partition: int, offset: int) -> str:
    """The output id of a repartitioned record: its source partition and offset."""
    return f"{partition}:{offset}"


class RepartitionOperator:
    """Sends each record of its source partition to the internal topic, keyed anew (the task
    decodes the source with the new key, so a record without one is a dead letter there)."""

    def __init__(self, spec: RepartitionSpec, collector: Collector) -> None:
        self.spec = spec
        self.name = spec.name
        self._collector = collector
        self.late_count = 0

    def process(self, batch: Batch) -> None:
        partition = batch.partition
        self._collector.bucket(self.spec.output).extend(
            Output(key, raw.value, ts, origin_id(partition, raw.offset))
            for key, raw, ts in zip(batch.keys, batch.raw, batch.timestamps, strict=True)
        )

    def on_watermark(self, watermark: int) -> None:
        return None

    def on_processing_time(self, now_ms: int) -> None:
        return None

    def next_processing_time(self) -> int | None:
        return None


def column_families(spec: RepartitionSpec) -> list[str]:
    return []
