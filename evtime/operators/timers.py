"""The event-time timer service of the stateful operators (window, join, process).

An operator's event-time timers and its watermark belong together: a timer
fires once the watermark reaches its time. :class:`EventTimers` holds both,
plus the time of the earliest registered timer, so the per-record question
"is a timer due?" is one comparison of two ints (``watermark >= next_due``).

The timers themselves live in a :class:`~evtime.state.timers.TimerQueue`,
the storage layer (persisted with the task's snapshot, ordered by time).
This service is what operators build on that queue, which is why it lives
with the operators and not in ``evtime.state``: the state layer knows
nothing of watermarks. The window and join operators derive from
:class:`EventTimeOperator` (their timers fire from the watermark alone); the
process operator uses :class:`EventTimers` directly, beside its
processing-time queue.
"""

from __future__ import annotations

from collections.abc import Callable

from evtime.state import TaskDB, TimerQueue
from evtime.time import MAX_TIMESTAMP, MIN_TIMESTAMP

NO_TIMER = MAX_TIMESTAMP + 1
""":attr:`EventTimers.next_due` with no timer registered: after every watermark."""


class EventTimers:
    """One operator's watermark and event-time timers (one column family).

    ``watermark`` and ``next_due`` are plain attributes for the operators' hot
    loops to read; ``watermark`` only moves forward.
    """

    __slots__ = ("next_due", "queue", "watermark")

    def __init__(self, db: TaskDB, name: str) -> None:
        self.queue = TimerQueue(db, name)
        self.watermark = MIN_TIMESTAMP
        self.next_due = NO_TIMER
        self.refresh()

    def register(self, ts: int, payload: bytes) -> None:
        """Add the timer (idempotent)."""
        self.queue.register(ts, payload)
        if ts < self.next_due:
            self.next_due = ts

    def delete(self, ts: int, payload: bytes) -> None:
        """Remove the timer if it exists."""
        self.queue.delete(ts, payload)
        self.refresh()

    def refresh(self) -> None:
        """Read the earliest timer's time again (after timers were popped or deleted)."""
        nxt = self.queue.next_time()
        self.next_due = NO_TIMER if nxt is None else nxt

    @property
    def due(self) -> bool:
        """Whether a timer is due at the watermark."""
        return self.watermark >= self.next_due

    def advance(self, watermark: int) -> bool:
        """Move the watermark to ``watermark`` (never back); whether a timer is due."""
        if watermark > self.watermark:
            self.watermark = watermark
        return self.watermark >= self.next_due

    def fire(self, handle: Callable[[int, bytes], None]) -> None:
        """Pop every timer due at the watermark and ``handle(time, payload)`` each, in
        (time, payload) order; timers registered meanwhile wait for the next call."""
        for ts, payload in self.queue.pop_due(self.watermark):
            handle(ts, payload)
        self.refresh()


class EventTimeOperator:
    """Base of the operators that only event time drives (window, join): the watermark
    fires their timers through :meth:`_on_timer`; no processing-time work by default."""

    _events: EventTimers

    def on_watermark(self, watermark: int) -> None:
        if self._events.advance(watermark):
            self._events.fire(self._on_timer)

    def _on_timer(self, ts: int, payload: bytes) -> None:
        """A timer of the operator fired (at the watermark)."""
        raise NotImplementedError  # pragma: no cover - every subclass defines it

    def on_processing_time(self, now_ms: int) -> None:
        return None

    def next_processing_time(self) -> int | None:
        return None

    @property
    def watermark(self) -> int:
        """The operator's event-time watermark."""
        return self._events.watermark

    @property
    def timers(self) -> TimerQueue:
        """The event-time timer queue (for tests and metrics)."""
        return self._events.queue
