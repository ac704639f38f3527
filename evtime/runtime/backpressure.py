"""Backpressure: the worker's partitions paused while a slow step runs.

Each fetched batch is processed, delivered and (when due) checkpointed by one *step*.
When a step's sink work is still outstanding after ``pause_after_ms`` (a slow or
unreachable sink), every assigned partition is paused and the consumer keeps being
polled, so that the member stays in the group (``max.poll.interval.ms``) while nothing
more is fetched; the partitions resume when the step is done. At most one batch is
processed at a time, and at most one fetched while paused is held back: memory is
bounded at any input rate.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence

from evtime.io import GroupSource, TopicPartition
from evtime.records import FetchedRecord
from evtime.runtime.status import WorkerStats

log = logging.getLogger("evtime.worker")

Fetched = dict[TopicPartition, Sequence[FetchedRecord]]
"""One poll's records, per partition."""


class Backpressure:
    """Pauses and resumes a group source's partitions around slow steps."""

    def __init__(
        self,
        poll_ms: int,
        batch_size: int,
        pause_after_ms: int,
        stats: WorkerStats,
        timings: dict[str, float],
    ) -> None:
        self.poll_ms = poll_ms
        self.batch_size = batch_size
        self.pause_after_ms = pause_after_ms
        self.stats = stats
        self.timings = timings
        self._paused_at = 0.0
        # Polls that returned records while the partitions were paused (of a partition
        # assigned meanwhile), processed after the step.
        self._held: list[Fetched] = []

    @property
    def paused(self) -> bool:
        return self._paused_at > 0

    @property
    def held(self) -> list[Fetched]:
        """Polls held back (fetched while paused), to process after the step."""
        return self._held

    def take_held(self) -> list[Fetched]:
        held, self._held = self._held, []
        return held

    def drop_held(self, partitions: Sequence[TopicPartition]) -> None:
        """Forget held records of ``partitions`` (revoked, or sought elsewhere)."""
        for batches in self._held:
            for tp in partitions:
                batches.pop(tp, None)

    def pause(self, source: GroupSource) -> None:
        self._paused_at = time.monotonic()
        self.stats.pauses += 1
        partitions = source.assignment()
        source.pause(partitions)
        log.warning(
            "backpressure: a step (its sink writes, its checkpoint, or a rebalance holding its "
            "tasks) still runs after %.1f s; pausing %d partitions, polling only to stay in "
            "the group",
            self.pause_after_ms / 1000,
            len(partitions),
        )

    async def wait(
        self, source: GroupSource, step: asyncio.Task[None]
    ) -> asyncio.Task[None] | None:
        """Wait up to ``poll_ms`` for ``step``, then poll once without waiting (the member
        stays in the group); return the step while it runs, None once it is done (the
        partitions resumed)."""
        await asyncio.wait((step,), timeout=self.poll_ms / 1000)
        if not step.done():
            # Partitions assigned meanwhile are not paused yet; pausing is idempotent.
            source.pause(source.assignment())
            batches = await source.poll(0, self.batch_size)
            if batches:
                # Of a partition assigned during the poll (before it could be paused).
                self._held.append(batches)
            return step
        step.result()
        paused = time.monotonic() - self._paused_at
        self._paused_at = 0.0
        self.timings["paused"] += paused
        partitions = source.assignment()
        source.resume(partitions)
        log.info(
            "backpressure: caught up after %.1f s paused; resuming %d partitions",
            paused,
            len(partitions),
        )
        return None
