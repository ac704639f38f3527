"""Progress lines: what a run has done so far, logged every few seconds and at its end.

``evtime run`` and the worker log, on the logger named "evtime.progress" at INFO, a line like::

    progress: 120,000 records in, 11,950 outputs, 12 dead letters (decode 10, key 2),
    3 late, watermark 2026-12-01T08:00:00.000Z

every :data:`INTERVAL` seconds, and a summary when the run ends. The drivers call
:meth:`Progress.maybe` once per step (a batch of every partition): it compares the clock
with the next line's time and does nothing else until then.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime

from evtime.operators.base import Collector
from evtime.records import DeadLetter, Output
from evtime.runtime.status import WorkerStats
from evtime.time import MAX_TIMESTAMP, MIN_TIMESTAMP

log = logging.getLogger("evtime.progress")
INTERVAL = 5.0
"""Seconds between two progress lines."""


class Progress:
    """Logs a :class:`WorkerStats`' counters and the watermark of a driver's tasks."""

    def __init__(
        self,
        stats: WorkerStats,
        watermarks: Callable[[], Iterable[int]],
        *,
        interval: float = INTERVAL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.stats = stats
        self.watermarks = watermarks
        self.interval = interval
        self.clock = clock
        self.started = clock()
        self._next = self.started + interval
        self._watermarks: list[int] = []  # the last ones seen (the tasks close at the end)

    def maybe(self) -> None:
        """Log a progress line if one is due."""
        now = self.clock()
        if now >= self._next:
            self._next = now + self.interval
            log.info("progress: %s", self.line())

    def summary(self) -> None:
        """Log what the whole run did."""
        took = self.clock() - self.started
        log.info("summary: %s, in %.1f s", self.line(), took)

    def line(self) -> str:
        """The counters as one line of text."""
        stats = self.stats
        watermarks = list(self.watermarks()) or self._watermarks
        self._watermarks = watermarks
        records = sum(stats.records_in.values())
        outputs = sum(stats.records_out.values())
        dead = sum(stats.dead_letters.values())
        reasons = ", ".join(f"{r} {n:,}" for r, n in sorted(stats.dead_letters.items()))
        return (
            f"{records:,} records in, {outputs:,} outputs, {dead:,} dead letters"
            f"{f' ({reasons})' if reasons else ''}, {stats.late_records:,} late, "
            f"watermark {format_watermark(watermarks)}"
        )


def count_delivered(
    stats: WorkerStats,
    collector: Collector,
    outputs: dict[str, list[Output]],
    dead: list[DeadLetter],
) -> None:
    """Count what a task handed over: outputs per output id, dead letters per reason, and
    the late records its ``collector`` counted (taken from it)."""
    if collector.late_count:
        stats.late_records += collector.late_count
        collector.late_count = 0
    for output_id, batch in outputs.items():
        stats.records_out[output_id] = stats.records_out.get(output_id, 0) + len(batch)
    for letter in dead:
        stats.dead_letter(letter)


def format_watermark(watermarks: list[int]) -> str:
    """The least of the tasks' watermarks as an ISO time (and ms)."""
    if not watermarks:
        return "- (no task)"
    least = min(watermarks)
    if least <= MIN_TIMESTAMP:
        return "- (none yet)"
    if least >= MAX_TIMESTAMP:
        return "end of input"
    return f"{iso_time(least)} ({least})"


def iso_time(ms: int) -> str:
    """``ms`` since the epoch as an ISO time in UTC, to the millisecond."""
    text = datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds")
    return text.replace("+00:00", "Z")
