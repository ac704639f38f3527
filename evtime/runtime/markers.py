"""Repartition watermark markers: the worker side of ``app.repartition``.

After a step's records of a repartitioned source partition, the task's watermark (or
its idleness) goes to every partition of the internal topic, behind those records
(evtime/wire.py names the headers; evtime/runtime/task.py reads them downstream).
"""

from __future__ import annotations

from evtime.io import GroupSourceFactory, RepartitionSink
from evtime.operators.repartition import RepartitionSpec
from evtime.plan import Plan
from evtime.runtime.task import PartitionTask
from evtime.time import MIN_TIMESTAMP
from evtime.wire import IDLE


class WatermarkMarkers:
    """Creates each repartition's internal topic and sends its source tasks' watermarks."""

    def __init__(self, plan: Plan, group_of: dict[str, tuple[str, ...]]) -> None:
        self.specs = [op for op in plan.operators if isinstance(op, RepartitionSpec)]
        self._sinks: dict[str, RepartitionSink] = plan.repartition_sinks
        self._of_group: dict[tuple[str, ...], list[RepartitionSpec]] = {}
        for spec in self.specs:
            self._of_group.setdefault(group_of[spec.source], []).append(spec)
        self._origin_counts: dict[str, int] = {}

    async def ensure_topics(self, factory: GroupSourceFactory) -> None:
        """Create each repartition's internal topic (its declared partition count, or its
        source's) before the co-partitioning check and the changelogs need it."""
        for spec in self.specs:
            count = (await factory.partition_counts([spec.source]))[spec.source]
            self._origin_counts[spec.source] = count
            await self._sinks[spec.output].ensure(spec.partitions or count)

    async def send(self, task: PartitionTask, producer: object | None) -> None:
        """Send ``task``'s watermark (or idleness) through each of its repartitions, if it
        moved since the last one sent; in the task's transaction when ``producer`` is
        given (exactly-once)."""
        specs = self._of_group.get(task.group)
        if not specs:
            return
        tracker = task.tracker
        for spec in specs:
            idle = tracker.is_idle((spec.source, task.partition))
            mark = IDLE if idle else tracker.current
            if mark == task.sent_watermark or (mark != IDLE and mark <= MIN_TIMESTAMP):
                continue
            sink = self._sinks[spec.output]
            count = self._origin_counts[spec.source]
            if producer is None:
                await sink.write_watermark(task.partition, count, mark)
            else:
                await sink.write_watermark_in(producer, task.partition, count, mark)
            task.sent_watermark = mark
