"""Aggregates made of others: :class:`Multi` (several at once) and :class:`Custom`
(user-defined ``init``/``add``/``merge``/``result``), and :func:`as_aggregate`, which
turns any of them, a built-in or an object with those methods into an Aggregate.

The built-ins and the protocol are in :mod:`evtime.aggregates`.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from typing import Any, Generic, cast

from evtime.aggregates import (
    A,
    Aggregate,
    Collect,
    Count,
    First,
    Last,
    Max,
    Mean,
    Min,
    R,
    Sum,
    _detached,
)
from evtime.errors import ConfigError

__all__ = ["Custom", "Multi", "as_aggregate"]

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
