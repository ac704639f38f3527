"""Window aggregation on event time: tumbling, sliding and session windows.

A window [start, end) fires when the watermark reaches ``end - 1``. With
``allowed_lateness`` its state is kept until the watermark reaches
``end - 1 + allowed_lateness``; a record arriving in between updates the
window and re-fires it at once (an UPDATE of the same window id). A record
whose every window has been cleaned up is late: it goes to the late output
(or the dead-letter output) and is counted, never silently dropped.

Only accumulators are stored. The watermark advances after every record
(``Batch.watermarks``), so results do not depend on how input is batched.

This module holds the declaration (:class:`WindowSpec`) and picks the
operator; the operators live where their paths differ: tumbling and sliding
windows in :mod:`~evtime.operators.window_fixed`, session windows in
:mod:`~evtime.operators.window_session`, what both share in
:mod:`~evtime.operators.window_base`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from evtime.aggregates import Aggregate
from evtime.errors import ConfigError
from evtime.operators.base import Collector
from evtime.operators.window_fixed import FixedWindowOperator
from evtime.operators.window_session import SessionWindowOperator
from evtime.records import WindowResult
from evtime.state import TaskDB
from evtime.time import Clock
from evtime.windows import Session, WindowAssigner

__all__ = [
    "FixedWindowOperator",
    "SessionWindowOperator",
    "WindowSpec",
    "column_families",
    "make_window_operator",
]


@dataclass(frozen=True, slots=True)
class WindowSpec:
    """A declared window aggregation (built by ``App.window``)."""

    name: str
    source: str
    assigner: WindowAssigner
    aggregate: Aggregate[Any, Any]
    allowed_lateness: int = 0
    early_every: int | None = None
    early_interval: int | None = None
    result_fn: Callable[[WindowResult], Any] | None = None
    output: str = "main"
    late_output: str | None = None

    def __post_init__(self) -> None:
        if self.allowed_lateness < 0:
            raise ConfigError(f"window {self.name!r}: allowed_lateness must be >= 0")
        if self.early_every is not None and self.early_every < 1:
            raise ConfigError(f"window {self.name!r}: early_every must be a positive count")
        if self.early_interval is not None and self.early_interval < 1:
            raise ConfigError(f"window {self.name!r}: early_interval must be a positive duration")
        if isinstance(self.assigner, Session) and (self.early_every or self.early_interval):
            raise ConfigError(
                f"window {self.name!r}: early firing is supported on tumbling and sliding "
                "windows; session windows fire when the session closes"
            )


def column_families(spec: WindowSpec) -> list[str]:
    """The RocksDB column families the operator of ``spec`` uses (declared at open)."""
    store = "sessions" if isinstance(spec.assigner, Session) else "windows"
    return [f"{spec.name}.{store}", f"{spec.name}.timers"]


def make_window_operator(
    spec: WindowSpec, db: TaskDB, collector: Collector, clock: Clock
) -> FixedWindowOperator | SessionWindowOperator:
    """The operator that runs ``spec`` in one partition task."""
    if isinstance(spec.assigner, Session):
        return SessionWindowOperator(spec, db, collector, clock)
    return FixedWindowOperator(spec, db, collector, clock)
