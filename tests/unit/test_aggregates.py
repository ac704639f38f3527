"""Incremental aggregates (evtime.aggregates) against Python references."""

from __future__ import annotations

import itertools
import math
from functools import reduce
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from evtime.aggregate_custom import Custom, Multi, as_aggregate
from evtime.aggregates import (
    Aggregate,
    Collect,
    Count,
    First,
    Last,
    Max,
    Mean,
    Min,
    Sum,
)
from evtime.errors import ConfigError

Record = tuple[int, Any]  # (event time, decoded value)

records_int = st.lists(
    st.tuples(
        st.integers(0, 50),
        st.fixed_dictionaries({"x": st.integers(-(10**6), 10**6), "tag": st.text(max_size=3)}),
    ),
    max_size=40,
)


def roundtrip(acc: Any) -> Any:
    return orjson.loads(orjson.dumps(acc))


def add_all(agg: Aggregate[Any, Any], records: list[Record], *, via_json: bool = False) -> Any:
    acc = agg.init()
    for ts, value in records:
        acc = agg.add(acc, value, ts)
        if via_json:
            copy = roundtrip(acc)
            assert copy == acc and type(copy) is type(acc), "accumulator changed through orjson"
            acc = copy
    return acc


def first_by_ts(records: list[Record], field: str) -> Any:
    if not records:
        return None
    index = min(range(len(records)), key=lambda i: (records[i][0], i))
    return records[index][1][field]


def last_by_ts(records: list[Record], field: str) -> Any:
    if not records:
        return None
    index = max(range(len(records)), key=lambda i: (records[i][0], i))
    return records[index][1][field]


def references(records: list[Record]) -> dict[str, tuple[Aggregate[Any, Any], Any]]:
    xs = [value["x"] for _, value in records]
    return {
        "count": (Count(), len(xs)),
        "sum": (Sum("x"), sum(xs)),
        "min": (Min("x"), min(xs, default=None)),
        "max": (Max("x"), max(xs, default=None)),
        "min_tag": (Min("tag"), min((v["tag"] for _, v in records), default=None)),
        "mean": (Mean("x"), sum(xs) / len(xs) if xs else None),
        "first": (First("tag"), first_by_ts(records, "tag")),
        "last": (Last("tag"), last_by_ts(records, "tag")),
        "collect": (Collect("x"), xs),
        "collect_all": (Collect(), [value for _, value in records]),
    }


@settings(max_examples=200)
@given(records_int)
def test_add_all_then_result_equals_the_python_reference(records: list[Record]) -> None:
    for label, (agg, expected) in references(records).items():
        assert agg.result(add_all(agg, records)) == expected, label


@settings(max_examples=200)
@given(records_int)
def test_accumulators_round_trip_through_orjson_unchanged(records: list[Record]) -> None:
    for label, (agg, expected) in references(records).items():
        assert roundtrip(agg.init()) == agg.init(), label
        assert agg.result(add_all(agg, records, via_json=True)) == expected, label


@settings(max_examples=200)
@given(records_int, st.lists(st.integers(0, 40), max_size=4))
def test_merging_split_accumulators_equals_adding_all(
    records: list[Record], cuts: list[int]
) -> None:
    bounds = sorted({0, len(records), *(min(c, len(records)) for c in cuts)})
    chunks = [records[a:b] for a, b in itertools.pairwise(bounds)] or [[]]
    for label, (agg, expected) in references(records).items():
        accs = [add_all(agg, chunk) for chunk in chunks]
        left = reduce(agg.merge, [add_all(agg, chunk) for chunk in chunks])
        right = reduce(lambda a, b: agg.merge(b, a), reversed(accs))  # right-associated
        assert agg.result(left) == expected, label
        assert agg.result(right) == expected, label
        assert roundtrip(left) == left, label


@settings(max_examples=100)
@given(records_int)
def test_merging_with_an_empty_accumulator_changes_nothing(records: list[Record]) -> None:
    for label, (agg, expected) in references(records).items():
        full = add_all(agg, records)
        assert agg.result(agg.merge(agg.init(), full)) == expected, label
        full = add_all(agg, records)
        assert agg.result(agg.merge(full, agg.init())) == expected, label


@settings(max_examples=100)
@given(
    st.lists(
        st.tuples(st.integers(0, 20), st.floats(-1e6, 1e6, allow_nan=False)),
        min_size=1,
        max_size=30,
    )
)
def test_float_sum_and_mean_are_close_and_round_trip(records: list[tuple[int, float]]) -> None:
    xs = [x for _, x in records]
    cases: list[tuple[Aggregate[Any, Any], float]] = [
        (Sum(), math.fsum(xs)),
        (Mean(), math.fsum(xs) / len(xs)),
    ]
    for agg, expected in cases:
        acc = agg.init()
        for ts, x in records:
            acc = roundtrip(agg.add(acc, x, ts))
        assert agg.result(acc) == pytest.approx(expected, rel=1e-9, abs=1e-6)


@settings(max_examples=200)
@given(st.permutations(list(range(12))), st.integers(0, 11))
def test_first_and_last_do_not_depend_on_arrival_order(order: list[int], dup: int) -> None:
    # ts = i // 2: pairs share a timestamp; the tie goes to arrival order.
    records = [(i // 2, {"id": i}) for i in order]
    first, last = First("id"), Last("id")
    first_result = first.result(add_all(first, records))
    last_result = last.result(add_all(last, records))
    assert first_result in (0, 1)
    assert last_result in (10, 11)
    assert first_result == next(i for i in order if i in (0, 1))
    assert last_result == [i for i in order if i in (10, 11)][-1]


def test_empty_results() -> None:
    assert Count().result(Count().init()) == 0
    assert Sum("x").result(Sum("x").init()) == 0
    empties: list[Aggregate[Any, Any]] = [Min("x"), Max("x"), Mean("x"), First("x"), Last("x")]
    for agg in empties:
        assert agg.result(agg.init()) is None, agg
    assert Collect().result(Collect().init()) == []


def test_init_returns_a_fresh_accumulator_each_time() -> None:
    aggs: list[Aggregate[Any, Any]] = [Collect(), Mean(), Multi(c=Collect())]
    for agg in aggs:
        acc = agg.add(agg.init(), 1, 0)
        assert acc != agg.init()


def test_ties_in_min_and_max_keep_the_first_added() -> None:
    a, b = [1], [1]  # equal but distinct objects (lists compare by value)
    assert Min().add(Min().add(None, a, 0), b, 0) is a
    assert Max().add(Max().add(None, a, 0), b, 0) is a
    assert Min().merge(a, b) is a
    assert Max().merge(a, b) is a


def test_field_selectors() -> None:
    assert Sum().add(0, 5, 0) == 5
    assert Sum(lambda v: v["a"]["b"]).add(0, {"a": {"b": 3}}, 0) == 3
    assert Max("price").add(None, {"price": 9}, 0) == 9
    with pytest.raises(KeyError, match="amount"):
        Sum("amount").add(0, {"price": 9}, 0)
    with pytest.raises(ConfigError, match="invalid field 3 for sum"):
        Sum(3)  # type: ignore[arg-type]


def named_length(value: Any) -> int:
    return len(value)


def test_names_describe_the_aggregate() -> None:
    assert Count().name == "count"
    assert Sum("amount").name == "sum(amount)"
    assert Sum().name == "sum"
    assert Mean(named_length).name == "mean(named_length)"
    assert Min(lambda v: v).name == "min(<lambda>)"
    assert Max("x", name="peak").name == "peak"
    assert First("status").name == "first(status)"
    assert Last().name == "last"
    assert Collect("id").name == "collect(id)"
    assert Multi(n=Count(), total=Sum("x")).name == "multi(n=count, total=sum(x))"


def test_multi_combines_results_in_a_dict() -> None:
    agg = Multi({"n": Count()}, total=Sum("x"), last=Last("x"))
    acc = add_all(agg, [(2, {"x": 5}), (1, {"x": 7})], via_json=True)
    assert acc == {"n": 2, "total": 12, "last": [2, 5]}
    assert agg.result(acc) == {"n": 2, "total": 12, "last": 5}
    other = add_all(agg, [(3, {"x": 1})])
    assert agg.result(agg.merge(acc, other)) == {"n": 3, "total": 13, "last": 1}


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: Multi(), "at least one aggregate"),
        (lambda: Multi({"n": Count()}, n=Sum()), "got the name 'n' twice"),
        (lambda: Multi({"": Count()}), "invalid Multi name ''"),
        (lambda: Multi(n=object()), "is not an aggregate"),  # type: ignore[arg-type]
    ],
)
def test_multi_validates_its_parts(make: Any, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        make()


def test_custom_wraps_user_functions_without_ts() -> None:
    agg = Custom(
        init=lambda: {"n": 0, "tags": []},
        add=lambda acc, value: {"n": acc["n"] + 1, "tags": [*acc["tags"], value["tag"]]},
        merge=lambda a, b: {"n": a["n"] + b["n"], "tags": a["tags"] + b["tags"]},
        result=lambda acc: f"{acc['n']}:{','.join(acc['tags'])}",
        name="tags",
    )
    acc = add_all(agg, [(0, {"tag": "a"}), (1, {"tag": "b"})], via_json=True)
    assert agg.result(acc) == "2:a,b"
    assert agg.result(agg.merge(acc, add_all(agg, [(2, {"tag": "c"})]))) == "3:a,b,c"
    assert agg.name == "tags"
    identity: Custom[int, int] = Custom(lambda: 0, lambda acc, v: acc + v, lambda a, b: a + b)
    assert identity.result(identity.add(identity.init(), 4, 0)) == 4
    assert identity.name == "custom"


def test_custom_can_take_the_timestamp() -> None:
    latest_ts: Custom[int | None, int | None] = Custom(
        lambda: None, lambda acc, v, ts: ts, lambda a, b: b, takes_ts=True
    )
    assert latest_ts.add(None, "v", 42) == 42


def test_custom_rejects_non_callables() -> None:
    with pytest.raises(ConfigError, match="custom aggregate 'custom': merge must be callable"):
        Custom(lambda: 0, lambda a, v: a, None)  # type: ignore[arg-type]


class Longest:
    def init(self) -> str:
        return ""

    def add(self, acc: str, value: str) -> str:
        return value if len(value) > len(acc) else acc

    def merge(self, a: str, b: str) -> str:
        return b if len(b) > len(a) else a

    def result(self, acc: str) -> int:
        return len(acc)


class Spread:
    name = "spread"

    def init(self) -> list[int] | None:
        return None

    def add(self, acc: list[int] | None, value: Any, ts: int) -> list[int]:
        return [ts, ts] if acc is None else [min(acc[0], ts), max(acc[1], ts)]

    def merge(self, a: list[int] | None, b: list[int] | None) -> list[int] | None:
        if a is None or b is None:
            return a or b
        return [min(a[0], b[0]), max(a[1], b[1])]

    def result(self, acc: list[int] | None) -> int:
        return 0 if acc is None else acc[1] - acc[0]


def test_as_aggregate_adapts_user_objects() -> None:
    longest = as_aggregate(Longest())
    assert longest.name == "longest"
    assert longest.result(add_all(longest, [(0, "ab"), (1, "abcd"), (2, "abc")])) == 4
    spread_obj = Spread()
    spread = as_aggregate(spread_obj)
    assert spread is spread_obj  # already speaks the protocol
    assert spread.result(add_all(spread, [(5, "a"), (2, "b"), (9, "c")])) == 7
    builtin = Sum("x")
    assert as_aggregate(builtin) is builtin


def test_as_aggregate_explains_what_is_missing() -> None:
    class NoMerge:
        def init(self) -> int:
            return 0

        def add(self, acc: int, value: Any) -> int:
            return acc + 1

    with pytest.raises(ConfigError, match=r"lacks merge; give it init\(\), add"):
        as_aggregate(NoMerge())
    with pytest.raises(ConfigError, match=r"pass an instance: Longest\(\)"):
        as_aggregate(Longest)


def test_builtins_satisfy_the_protocol() -> None:
    for agg in (Count(), Sum(), Min(), Max(), Mean(), First(), Last(), Collect(), Multi(n=Count())):
        assert isinstance(agg, Aggregate)
        assert isinstance(agg.name, str) and agg.name


@pytest.mark.parametrize(
    "agg",
    [
        Collect(),
        Collect("x"),
        Multi(items=Collect(), n=Count(), mean=Mean("x"), first=First(), last=Last()),
        Custom(lambda: [], lambda acc, v: [*acc, v], lambda a, b: a + b),
        Custom(lambda: {"xs": []}, lambda acc, v: (acc["xs"].append(v), acc)[1], lambda a, b: a),
    ],
    ids=lambda agg: agg.name,
)
def test_an_emitted_result_does_not_change_when_the_window_grows(agg: Any) -> None:
    acc = agg.add(agg.init(), {"x": 1}, 0)
    emitted = agg.result(acc)
    snapshot = orjson.dumps(emitted)
    for ts in range(1, 4):
        acc = agg.add(acc, {"x": ts + 1}, ts)
    assert orjson.dumps(emitted) == snapshot
    assert agg.result(acc) != emitted
