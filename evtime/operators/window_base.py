"""What the fixed-window and the session-window operators share: emission of results,
late and bad records, and the event-time timers that fire windows."""

from __future__ import annotations

from typing import TYPE_CHECKING

from evtime.operators.base import (
    Collector,
    batch_dead_letter,
    describe_error,
    emit_shaped,
    send_late,
)
from evtime.operators.timers import EventTimers
from evtime.records import Batch, DeadLetter, DeadLetterReason, WindowResult
from evtime.state import TaskDB, TimerQueue
from evtime.time import Clock

if TYPE_CHECKING:
    from evtime.operators.window import WindowSpec


class WindowOperatorBase:
    """Emission, late records and timers of a window operator; subclasses define
    ``process`` and :meth:`_on_timer`."""

    def __init__(self, spec: WindowSpec, db: TaskDB, collector: Collector, clock: Clock):
        self.spec = spec
        self.name = spec.name
        self._collector = collector
        self._clock = clock
        self._agg = spec.aggregate
        self._lateness = spec.allowed_lateness
        self._events = EventTimers(db, f"{spec.name}.timers")
        self.late_count = 0
        self.emitted_count = 0

    # -- emission -----------------------------------------------------------
    def _emit(self, result: WindowResult) -> None:
        self.emitted_count += 1
        emit_shaped(
            self._collector,
            self.spec.output,
            self.spec.result_fn,
            result,
            result.end - 1,
            self._result_failed,
        )

    def _result_failed(self, result: WindowResult, exc: Exception) -> None:
        self._collector.dead_letter(
            DeadLetter(
                DeadLetterReason.USER_CODE,
                f"result function of {self.name!r} raised {describe_error(exc)}",
                self.spec.source,
                -1,
                -1,
                result.key,
                result.to_dict(),
                result.end - 1,
                self.name,
            )
        )

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

    # -- driving ------------------------------------------------------------
    def on_watermark(self, watermark: int) -> None:
        if self._events.advance(watermark):
            self._events.fire(self._on_timer)

    def _on_timer(self, ts: int, payload: bytes) -> None:
        raise NotImplementedError  # pragma: no cover - both subclasses define it

    def on_processing_time(self, now_ms: int) -> None:
        return None

    def next_processing_time(self) -> int | None:
        return None

    @property
    def watermark(self) -> int:
        return self._events.watermark

    @property
    def timers(self) -> TimerQueue:
        return self._events.queue
