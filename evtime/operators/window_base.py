"""What the fixed-window and the session-window operators share: emission of results,
late and bad records, and the event-time timers that fire windows."""

from __future__ import annotations

from typing import TYPE_CHECKING

from evtime.operators.base import (
    Collector,
    ResultEmitter,
    batch_dead_letter,
    describe_error,
    send_late,
)
from evtime.operators.timers import EventTimeOperator, EventTimers
from evtime.records import Batch, DeadLetterReason, WindowResult
from evtime.state import TaskDB
from evtime.time import Clock

if TYPE_CHECKING:
    from evtime.operators.window import WindowSpec


class WindowOperatorBase(EventTimeOperator):
    """Emission, late records and timers of a window operator; subclasses define
    ``process`` and :meth:`_on_timer`."""

    def __init__(self, spec: WindowSpec, db: TaskDB, collector: Collector, clock: Clock):
        self.spec = spec
        self.name = spec.name
        self._collector = collector
        self._agg = spec.aggregate
        self._lateness = spec.allowed_lateness
        self._events = EventTimers(db, f"{spec.name}.timers")
        self._results = ResultEmitter(
            collector, spec.name, spec.output, spec.result_fn, spec.source, -1
        )
        self.late_count = 0

    @property
    def emitted_count(self) -> int:
        return self._results.count

    # -- emission -----------------------------------------------------------
    def _emit(self, result: WindowResult) -> None:
        self._results.emit(result, result.end - 1)

    def _late_record(self, batch: Batch, i: int, watermark: int) -> None:
        self.late_count += 1
        send_late(
            self._collector,
            self.spec.late_output,
            batch,
            i,
            f"event time {batch.timestamps[i]} is behind the watermark {watermark} by more "
            f"than the allowed lateness ({self._lateness} ms) of {self.name!r}",
            self.name,
        )

    def _bad_record(self, batch: Batch, i: int, exc: Exception) -> None:
        self._collector.dead_letter(
            batch_dead_letter(
                batch,
                i,
                DeadLetterReason.USER_CODE,
                f"aggregate {self._agg.name!r} of {self.name!r} raised {describe_error(exc)}",
                self.name,
            )
        )

