"""Incremental aggregates: what a window keeps per key instead of its records.

An :class:`Aggregate` folds records into an *accumulator* with ``add``,
combines two accumulators with ``merge`` (session windows merging) and turns
the accumulator into the output with ``result`` (Flink's ``AggregateFunction``).
The built-ins are here; :mod:`evtime.aggregate_custom` has ``Multi``, ``Custom``
and ``as_aggregate``.
Only accumulators are stored, as orjson documents, so every accumulator here
is made of ints, floats, strs, ``None``, lists and str-keyed dicts, and
survives ``orjson.loads(orjson.dumps(acc))`` unchanged.

Contract for callers (the window operator):

* ``init()`` returns a fresh accumulator every call;
* ``add`` and ``merge`` may mutate an accumulator passed in and return it, or
  return a new one: always use the return value, never the argument afterwards;
* ``result`` returns a value that shares no mutable part with the accumulator,
  so an emitted result never changes when the window keeps growing;
* ``add`` runs once per record per window: the built-ins resolve their field
  selector once, in ``__init__``, and do no type checks per call.

>>> from evtime.aggregate_custom import Multi
>>> agg = Multi(n=Count(), total=Sum("amount"), last=Last("status"))
>>> acc = agg.init()
>>> for ts, value in [(20, {"amount": 5, "status": "paid"}), (10, {"amount": 2, "status": "new"})]:
...     acc = agg.add(acc, value, ts)
>>> agg.result(acc)
{'n': 2, 'total': 7, 'last': 'paid'}
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from operator import itemgetter
from typing import Any, Protocol, TypeVar, runtime_checkable

from evtime.errors import ConfigError

__all__ = [
    "Aggregate",
    "Collect",
    "Count",
    "Field",
    "First",
    "Last",
    "Max",
    "Mean",
    "Min",
    "Sum",
]

A = TypeVar("A")
R = TypeVar("R")
R_co = TypeVar("R_co", covariant=True)

Field = str | Callable[[Any], Any] | None
"""Which part of a record's value an aggregate reads.

``None``: the whole value; a ``str``: ``value[field]`` (a missing field raises
``KeyError`` naming it, which sends the record to the dead-letter output); a
callable: its result on the value.
"""


@runtime_checkable
class Aggregate(Protocol[A, R_co]):
    """An incremental aggregation with accumulator type ``A`` and result type ``R_co``."""

    @property
    def name(self) -> str:
        """A short label for outputs and metrics, e.g. ``"sum(amount)"``."""
        ...

    def init(self) -> A:
        """A fresh, empty accumulator."""
        ...

    def add(self, acc: A, value: Any, ts: int) -> A:
        """Fold one record (decoded ``value``, event time ``ts``) into ``acc``; use the return."""
        ...

    def merge(self, a: A, b: A) -> A:
        """Combine two accumulators; ``a`` holds the records that arrived first."""
        ...

    def result(self, acc: A) -> R_co:
        """The output value of an accumulator."""
        ...


def _identity(value: Any) -> Any:
    return value


def _detached(acc: Any) -> Any:
    """The accumulator itself if immutable, else a deep copy (the default ``result``)."""
    return copy.deepcopy(acc) if isinstance(acc, list | dict) else acc


def _getter(field: Field, kind: str) -> Callable[[Any], Any]:
    if field is None:
        return _identity
    if isinstance(field, str):
        return itemgetter(field)
    if callable(field):
        return field
    raise ConfigError(
        f"invalid field {field!r} for {kind}: use a field name (str), a function of the "
        "value, or None for the whole value"
    )


def _label(kind: str, field: Field, name: str | None) -> str:
    if name is not None:
        return name
    if field is None:
        return kind
    if isinstance(field, str):
        return f"{kind}({field})"
    return f"{kind}({getattr(field, '__name__', 'fn')})"


class _Selecting:
    """Shared setup of the built-ins that read one field of the value."""

    __slots__ = ("_get", "field", "name")

    kind = "aggregate"

    def __init__(self, field: Field = None, *, name: str | None = None) -> None:
        self.field = field
        self._get = _getter(field, self.kind)
        self.name = _label(self.kind, field, name)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.field!r})"


class Count:
    """The number of records.

    >>> agg = Count()
    >>> agg.result(agg.add(agg.add(agg.init(), "a", 1), "b", 2))
    2
    """

    __slots__ = ("name",)

    def __init__(self, *, name: str | None = None) -> None:
        """Count every record."""
        self.name = name or "count"

    def init(self) -> int:
        """Zero."""
        return 0

    def add(self, acc: int, value: Any, ts: int) -> int:
        """One more."""
        return acc + 1

    def merge(self, a: int, b: int) -> int:
        """The sum of both counts."""
        return a + b

    def result(self, acc: int) -> int:
        """The count."""
        return acc

    def __repr__(self) -> str:
        return "Count()"


class Sum(_Selecting):
    """The sum of a numeric field (0 when empty); a non-number raises ``TypeError``.

    >>> agg = Sum("amount")
    >>> agg.name, agg.result(agg.add(agg.add(agg.init(), {"amount": 2}, 1), {"amount": 3}, 2))
    ('sum(amount)', 5)
    """

    __slots__ = ()
    kind = "sum"

    def init(self) -> Any:
        """Zero."""
        return 0

    def add(self, acc: Any, value: Any, ts: int) -> Any:
        """Add the field's value."""
        return acc + self._get(value)

    def merge(self, a: Any, b: Any) -> Any:
        """The sum of both sums."""
        return a + b

    def result(self, acc: Any) -> Any:
        """The sum."""
        return acc


class Min(_Selecting):
    """The smallest value of a field (``None`` when empty); ties keep the first added.

    >>> agg = Min("price")
    >>> acc = agg.init()
    >>> for price in [3, 1, 2]:
    ...     acc = agg.add(acc, {"price": price}, 0)
    >>> agg.result(acc)
    1
    """

    __slots__ = ()
    kind = "min"

    def init(self) -> Any:
        """``None``: no value yet."""
        return None

    def add(self, acc: Any, value: Any, ts: int) -> Any:
        """Keep the smaller of ``acc`` and the field's value."""
        v = self._get(value)
        return v if acc is None or v < acc else acc

    def merge(self, a: Any, b: Any) -> Any:
        """The smaller of both minima."""
        if a is None:
            return b
        return a if b is None or not b < a else b

    def result(self, acc: Any) -> Any:
        """The minimum, or ``None``."""
        return acc


class Max(_Selecting):
    """The largest value of a field (``None`` when empty); ties keep the first added.

    >>> agg = Max()
    >>> agg.result(agg.add(agg.add(agg.init(), 4, 0), 9, 0))
    9
    """

    __slots__ = ()
    kind = "max"

    def init(self) -> Any:
        """``None``: no value yet."""
        return None

    def add(self, acc: Any, value: Any, ts: int) -> Any:
        """Keep the larger of ``acc`` and the field's value."""
        v = self._get(value)
        return v if acc is None or v > acc else acc

    def merge(self, a: Any, b: Any) -> Any:
        """The larger of both maxima."""
        if a is None:
            return b
        return a if b is None or not b > a else b

    def result(self, acc: Any) -> Any:
        """The maximum, or ``None``."""
        return acc


class Mean(_Selecting):
    """The arithmetic mean of a numeric field; ``None`` when empty. Accumulator ``[sum, count]``.

    >>> agg = Mean("x")
    >>> acc = agg.add(agg.add(agg.init(), {"x": 1}, 0), {"x": 2}, 0)
    >>> acc, agg.result(acc), agg.result(agg.init())
    ([3, 2], 1.5, None)
    """

    __slots__ = ()
    kind = "mean"

    def init(self) -> list[Any]:
        """``[0, 0]``."""
        return [0, 0]

    def add(self, acc: list[Any], value: Any, ts: int) -> list[Any]:
        """Add the value to the sum and one to the count (in place)."""
        acc[0] += self._get(value)
        acc[1] += 1
        return acc

    def merge(self, a: list[Any], b: list[Any]) -> list[Any]:
        """Sums and counts added."""
        return [a[0] + b[0], a[1] + b[1]]

    def result(self, acc: list[Any]) -> float | None:
        """``sum / count``, or ``None`` for no records."""
        return acc[0] / acc[1] if acc[1] else None


class First(_Selecting):
    """The value with the smallest event time; ties keep the one added first.

    Deciding by event time rather than arrival makes the result the same
    whatever the disorder of the input. Accumulator ``[ts, value]`` or ``None``.

    >>> agg = First("status")
    >>> acc = agg.init()
    >>> for ts, status in [(20, "paid"), (10, "new"), (10, "dup")]:
    ...     acc = agg.add(acc, {"status": status}, ts)
    >>> acc, agg.result(acc)
    ([10, 'new'], 'new')
    """

    __slots__ = ()
    kind = "first"

    def init(self) -> list[Any] | None:
        """``None``: no value yet."""
        return None

    def add(self, acc: list[Any] | None, value: Any, ts: int) -> list[Any] | None:
        """Keep the record if it is strictly earlier than the kept one."""
        if acc is None:
            return [ts, self._get(value)]
        if ts < acc[0]:
            acc[0] = ts
            acc[1] = self._get(value)
        return acc

    def merge(self, a: list[Any] | None, b: list[Any] | None) -> list[Any] | None:
        """The earlier of both; ``a`` on a tie."""
        if a is None:
            return b
        return a if b is None or a[0] <= b[0] else b

    def result(self, acc: list[Any] | None) -> Any:
        """The first value, or ``None``."""
        return None if acc is None else acc[1]


class Last(_Selecting):
    """The value with the largest event time; ties keep the one added last.

    Accumulator ``[ts, value]`` or ``None``.

    >>> agg = Last("status")
    >>> acc = agg.init()
    >>> for ts, status in [(20, "paid"), (10, "new"), (20, "refunded")]:
    ...     acc = agg.add(acc, {"status": status}, ts)
    >>> agg.result(acc)
    'refunded'
    """

    __slots__ = ()
    kind = "last"

    def init(self) -> list[Any] | None:
        """``None``: no value yet."""
        return None

    def add(self, acc: list[Any] | None, value: Any, ts: int) -> list[Any] | None:
        """Keep the record if it is not earlier than the kept one."""
        if acc is None:
            return [ts, self._get(value)]
        if ts >= acc[0]:
            acc[0] = ts
            acc[1] = self._get(value)
        return acc

    def merge(self, a: list[Any] | None, b: list[Any] | None) -> list[Any] | None:
        """The later of both; ``b`` on a tie."""
        if a is None:
            return b
        return a if b is None or a[0] > b[0] else b

    def result(self, acc: list[Any] | None) -> Any:
        """The last value, or ``None``."""
        return None if acc is None else acc[1]


class Collect(_Selecting):
    """Every value (or field), in arrival order; merging concatenates.

    The state grows with the window: prefer a real aggregate for big windows.

    >>> agg = Collect("id")
    >>> agg.merge(agg.add(agg.init(), {"id": 1}, 0), agg.add(agg.init(), {"id": 2}, 0))
    [1, 2]
    """

    __slots__ = ()
    kind = "collect"

    def init(self) -> list[Any]:
        """An empty list."""
        return []

    def add(self, acc: list[Any], value: Any, ts: int) -> list[Any]:
        """Append the value (in place)."""
        acc.append(self._get(value))
        return acc

    def merge(self, a: list[Any], b: list[Any]) -> list[Any]:
        """``a`` followed by ``b``."""
        return a + b

    def result(self, acc: list[Any]) -> list[Any]:
        """A copy of the list: emitted results must not change when the window grows."""
        return acc.copy()
