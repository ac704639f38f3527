"""evtime: event-time stream processing for Python on Kafka.

Watermarks, windows that close on event time, keyed state in RocksDB that is
snapshotted together with the input offsets.
"""

from __future__ import annotations

from evtime.aggregate_custom import Custom, Multi
from evtime.aggregates import Collect, Count, First, Last, Max, Mean, Min, Sum
from evtime.app import App, ProcessFunction, SourceRef
from evtime.errors import ConfigError, EvtimeError, SerdeError, StateError, TimestampError
from evtime.operators.join import JoinType
from evtime.operators.process import ProcessContext, TimeDomain, Timer
from evtime.records import (
    DeadLetter,
    DeadLetterReason,
    EmitKind,
    ErrorPolicy,
    JoinKind,
    JoinResult,
    Output,
    Record,
    WindowResult,
)
from evtime.time import ManualClock, SystemClock
from evtime.windows import Session, Sliding, Tumbling

__version__ = "0.1.0"

__all__ = [
    "App",
    "Collect",
    "ConfigError",
    "Count",
    "Custom",
    "DeadLetter",
    "DeadLetterReason",
    "EmitKind",
    "ErrorPolicy",
    "EvtimeError",
    "First",
    "JoinKind",
    "JoinResult",
    "JoinType",
    "Last",
    "ManualClock",
    "Max",
    "Mean",
    "Min",
    "Multi",
    "Output",
    "ProcessContext",
    "ProcessFunction",
    "Record",
    "SerdeError",
    "Session",
    "Sliding",
    "SourceRef",
    "StateError",
    "Sum",
    "SystemClock",
    "TimeDomain",
    "Timer",
    "TimestampError",
    "Tumbling",
    "WindowResult",
    "__version__",
]
