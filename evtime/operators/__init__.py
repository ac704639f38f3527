"""Stateful operators: window aggregation, keyed process functions."""

from evtime.operators.base import Collector, Operator
from evtime.operators.process import ProcessContext, ProcessSpec, TimeDomain, Timer
from evtime.operators.window import WindowSpec, make_window_operator

__all__ = [
    "Collector",
    "Operator",
    "ProcessContext",
    "ProcessSpec",
    "TimeDomain",
    "Timer",
    "WindowSpec",
    "make_window_operator",
]
