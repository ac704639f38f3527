"""Incremental aggregates: what a window keeps per key instead of its records.

An :class:`Aggregate` folds records into an *accumulator* with ``add``,
combines two accumulators with ``merge`` (session windows merging) and turns
the accumulator into the output with ``result`` (Flink's ``AggregateFunction``).
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

>>> agg = Multi(n=Count(), total=Sum("amount"), last=Last("status"))
>>> acc = agg.init()
>>> for ts, value in [(20, {"amount": 5, "status": "paid"}), (10, {"amount": 2, "status": "new"})]:
...     acc = agg.add(acc, value, ts)
>>> agg.result(acc)
{'n': 2, 'total': 7, 'last': 'paid'}
"""

from __future__ import annotations

import copy
import inspect
from collections.abc import Callable, Mapping
from operator import itemgetter
from typing import Any, Generic, Protocol, TypeVar, cast, runtime_checkable

from evtime.errors import ConfigError

__all__ = [
    "Aggregate",
    "Collect",
    "Count",
    "Custom",
    "Field",
    "First",
    "Last",
    "Max",
    "Mean",
    "Min",
    "Multi",
    "Sum",
    "as_aggregate",
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


class Multi:
    """Several aggregates over the same records, with a dict result.

    The accumulator is a dict from each name to that aggregate's accumulator.

    >>> agg = Multi({"n": Count(), "total": Sum("x")})
    >>> agg.name
    'multi(n=count, total=sum(x))'
    >>> agg.result(agg.add(agg.init(), {"x": 4}, 0))
    {'n': 1, 'total': 4}
    """

    __slots__ = ("_adds", "name", "parts")

    def __init__(
        self,
        aggregates: Mapping[str, Aggregate[Any, Any]] | None = None,
        /,
        *,
        name: str | None = None,
        **named: Aggregate[Any, Any],
    ) -> None:
        """Combine ``aggregates`` and/or ``named`` aggregates under their names."""
        parts: dict[str, Aggregate[Any, Any]] = {}
        for key, agg in [*(aggregates or {}).items(), *named.items()]:
            if not isinstance(key, str) or not key:
                raise ConfigError(
                    f"invalid Multi name {key!r}: names are non-empty strs (they become "
                    "the keys of the result dict)"
                )
            if key in parts:
                raise ConfigError(
                    f"Multi got the name {key!r} twice; give each aggregate its own name"
                )
            parts[key] = as_aggregate(agg)
        if not parts:
            raise ConfigError(
                "Multi needs at least one aggregate, e.g. Multi(n=Count(), total=Sum('x'))"
            )
        self.parts: dict[str, Aggregate[Any, Any]] = parts
        self._adds = tuple((key, agg.add) for key, agg in parts.items())
        self.name = name or "multi(" + ", ".join(f"{k}={a.name}" for k, a in parts.items()) + ")"

    def init(self) -> dict[str, Any]:
        """Each part's fresh accumulator under its name."""
        return {key: agg.init() for key, agg in self.parts.items()}

    def add(self, acc: dict[str, Any], value: Any, ts: int) -> dict[str, Any]:
        """Add the record to every part (in place)."""
        for key, add in self._adds:
            acc[key] = add(acc[key], value, ts)
        return acc

    def merge(self, a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
        """Merge part by part."""
        return {key: agg.merge(a[key], b[key]) for key, agg in self.parts.items()}

    def result(self, acc: dict[str, Any]) -> dict[str, Any]:
        """Each part's result under its name."""
        return {key: agg.result(acc[key]) for key, agg in self.parts.items()}

    def __repr__(self) -> str:
        return f"Multi({self.parts!r})"


class Custom(Generic[A, R]):
    """An aggregate made of user functions (Flink's ``AggregateFunction`` as callables).

    ``add(acc, value)`` gets the record's value without its timestamp; pass
    ``takes_ts=True`` for an ``add(acc, value, ts)``. ``result`` defaults to a
    deep copy of the accumulator (so emitted results never alias state that
    ``add`` may mutate later); a user ``result`` must not return mutable parts
    of the accumulator either. The accumulator must round-trip through orjson:
    use lists and str-keyed dicts, not tuples or sets.

    >>> longest = Custom(
    ...     init=lambda: "",
    ...     add=lambda acc, value: value if len(value) > len(acc) else acc,
    ...     merge=lambda a, b: b if len(b) > len(a) else a,
    ...     result=len,
    ...     name="longest",
    ... )
    >>> longest.result(longest.add(longest.add(longest.init(), "ab", 0), "abc", 1))
    3
    """

    __slots__ = ("_add", "_init", "_merge", "_result", "name")

    def __init__(
        self,
        init: Callable[[], A],
        add: Callable[..., A],
        merge: Callable[[A, A], A],
        result: Callable[[A], R] = _detached,
        *,
        name: str = "custom",
        takes_ts: bool = False,
    ) -> None:
        """Wrap ``init``, ``add``, ``merge`` and ``result`` as an aggregate called ``name``."""
        for label, fn in (("init", init), ("add", add), ("merge", merge), ("result", result)):
            if not callable(fn):
                raise ConfigError(
                    f"custom aggregate {name!r}: {label} must be callable, got {fn!r}"
                )
        self.name = name
        self._init = init
        self._add = add if takes_ts else _drop_ts(add)
        self._merge = merge
        self._result = result

    def init(self) -> A:
        """The user's ``init()``."""
        return self._init()

    def add(self, acc: A, value: Any, ts: int) -> A:
        """The user's ``add``."""
        return self._add(acc, value, ts)

    def merge(self, a: A, b: A) -> A:
        """The user's ``merge(a, b)``."""
        return self._merge(a, b)

    def result(self, acc: A) -> R:
        """The user's ``result(acc)``."""
        return self._result(acc)

    def __repr__(self) -> str:
        return f"Custom(name={self.name!r})"


def _drop_ts(add: Callable[..., A]) -> Callable[[A, Any, int], A]:
    def add_without_ts(acc: A, value: Any, ts: int) -> A:
        return add(acc, value)

    return add_without_ts


def _positional_capacity(fn: Callable[..., Any]) -> int | None:
    """How many positional arguments ``fn`` accepts (``None``: unknown or unlimited)."""
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return None
    count = 0
    for param in params:
        if param.kind is inspect.Parameter.VAR_POSITIONAL:
            return None
        if param.kind in (
            inspect.Parameter.POSITIONAL_ONLY,
            inspect.Parameter.POSITIONAL_OR_KEYWORD,
        ):
            count += 1
    return count


_BUILTINS = (Count, Sum, Min, Max, Mean, First, Last, Collect, Multi, Custom)


def as_aggregate(obj: Any) -> Aggregate[Any, Any]:
    """Accept a built-in aggregate, or any object with ``init``, ``add`` and ``merge`` methods.

    A user object's ``add`` may take ``(acc, value)`` or ``(acc, value, ts)``
    (decided once, from its signature); ``result`` is optional (a copy of the
    accumulator, as in :class:`Custom`), and
    ``name`` defaults to the class name. ``merge`` is required because session
    windows merge accumulators.

    >>> class Longest:
    ...     def init(self): return ""
    ...     def add(self, acc, value): return value if len(value) > len(acc) else acc
    ...     def merge(self, a, b): return b if len(b) > len(a) else a
    >>> agg = as_aggregate(Longest())
    >>> agg.name, agg.result(agg.add(agg.init(), "abc", 0))
    ('longest', 'abc')
    """
    if isinstance(obj, _BUILTINS):
        return cast(Aggregate[Any, Any], obj)
    if isinstance(obj, type):
        raise ConfigError(
            f"as_aggregate got the class {obj.__name__}; pass an instance: {obj.__name__}()"
        )
    missing = [m for m in ("init", "add", "merge") if not callable(getattr(obj, m, None))]
    if missing:
        raise ConfigError(
            f"{obj!r} is not an aggregate: it lacks {', '.join(missing)}; give it "
            "init(), add(acc, value) and merge(a, b) methods (and optionally result(acc)), "
            "or use Custom(init, add, merge, result)"
        )
    add = obj.add
    capacity = _positional_capacity(add)
    takes_ts = capacity is None or capacity >= 3
    result = getattr(obj, "result", None)
    name = getattr(obj, "name", None)
    if not isinstance(name, str) or not name:
        name = type(obj).__name__.lower()
    if takes_ts and isinstance(getattr(obj, "name", None), str) and callable(result):
        return cast(Aggregate[Any, Any], obj)  # already speaks the protocol
    return Custom(
        obj.init,
        add,
        obj.merge,
        result if callable(result) else _detached,
        name=name,
        takes_ts=takes_ts,
    )
