"""Semantic acceptance tests of the interval join: the engine against a brute-force model.

``join_reference.py`` holds the model: whole-stream facts (which rows are
accepted, which pairs are within the bounds, which event's watermark reaches
which point), no state store and no timers; ``join_harness.py`` runs the
engine. These tests run random A/B streams through a real
:class:`evtime.App` (MemorySource -> join -> MemorySink, RocksDB state) and
compare:

1. every emission, record by record (batch size 1: step ``i`` of a partition is
   what its record ``i`` caused), the per-id sequences, the multiset of all
   emissions, the late and bad records, and the number of rows in state after
   every step (state is dropped exactly when the watermark passes a row's
   last matching point; nothing is left in RocksDB at the end); for one topic
   split by type, and for two co-partitioned topics; inner, left, right and
   full outer joins, with and without ``emit_unmatched_after``;
2. the outputs of the same stream run with different batch sizes;
3. an uninterrupted run against runs crashed (``LocalRunner.abandon``) at random
   steps after random checkpoints and restored from RocksDB (and no state left
   at the end).

``test_join_examples.py`` pins each rule with hand-written examples.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Iterator, Sequence
from typing import Any
from unittest import mock

import pytest
from hypothesis import event, given, note, settings
from hypothesis import strategies as st
from hypothesis.errors import InvalidArgument

from evtime import (
    DeadLetterReason,
    Output,
)
from evtime.connectors.local import MemorySink, MemorySource, partition_for
from evtime.runtime.local import LocalRunner

try:  # tests/unit is not a package: pytest puts this directory on sys.path
    from join_harness import (
        build_one_topic,
        build_two_topics,
        check_dead,
        check_steps,
        check_totals,
        one_topic_model,
        run_stepwise,
        run_to_empty,
        run_to_end,
        state_dir,
    )
    from join_reference import (
        HOWS,
        Emission,
        JoinConfig,
        JoinRun,
        run_events,
        split,
        two_topic_events,
    )
except ImportError:  # pragma: no cover - if tests/unit becomes a package
    from .join_harness import (
        build_one_topic,
        build_two_topics,
        check_dead,
        check_steps,
        check_totals,
        one_topic_model,
        run_stepwise,
        run_to_empty,
        run_to_end,
        state_dir,
    )
    from .join_reference import (
        HOWS,
        Emission,
        JoinConfig,
        JoinRun,
        run_events,
        split,
        two_topic_events,
    )


@pytest.fixture(autouse=True, scope="module")
def _dead_letter_guard_off() -> Iterator[None]:
    """A generated stream may be all bad records: the dead-letter guard would stop it."""
    with mock.patch.dict(os.environ, {"EVTIME_DEAD_LETTER_GUARD_FIRST": "0"}):
        yield


# -- random streams -----------------------------------------------------------------------------

KEYS = ["k1", "k2", "k3", "k4"]
UNIT = 10


@st.composite
def join_configs(draw: st.DrawFn, hows: Sequence[str] = HOWS) -> JoinConfig:
    if draw(st.booleans()):
        within = draw(st.sampled_from([0, 3, UNIT, 25, 60]))
        lower, upper = -within, within
    else:
        lower = draw(st.integers(-25, 15))
        upper = lower + draw(st.integers(0, 30))
    how = draw(st.sampled_from(list(hows)))
    after = None
    if how != "inner":
        # Mostly before the last point a row can match (a partial row), sometimes at or after.
        span = max(upper, -lower)
        after = draw(st.sampled_from([None, 0, 2, span // 4, span // 2, span - 1, span, span + 5]))
        after = None if after is None else max(0, after)
    ooo = draw(st.sampled_from([0, 5, UNIT, 30]))
    return JoinConfig(lower, upper, how, after, ooo)


RECORD_KINDS = ["plain"] * 5 + ["straggler", "edge"] + ["partner"] * 3
TYPES = ["A"] * 5 + ["B"] * 5 + ["C", "bad"]


@st.composite
def streams(
    draw: st.DrawFn, cfg: JoinConfig, partitions: int, max_size: int = 120
) -> list[dict[str, Any]]:
    """A/B records around a moving base: ``base - jitter``; now and then a big gap, a
    straggler further behind, a record at its partition's watermark (late or just on time),
    or the partner of one of the last 20 records, placed within, exactly at or one past a
    bound. Type C
    records belong to no side; records without a type make the predicates raise."""
    nkeys = draw(st.integers(1, len(KEYS)))
    base = draw(st.sampled_from([0, -37, 1_000]))
    disorder = draw(st.sampled_from([0, UNIT // 2, UNIT, 3 * UNIT]))
    length = draw(
        st.sampled_from(["long", "short", "long", "long"]).flatmap(
            lambda kind: st.integers(0, 12) if kind == "short" else st.integers(30, max_size)
        )
    )
    rows = draw(
        st.lists(
            st.tuples(
                st.sampled_from([0, 0, 1, 1, 2, 3, 5, UNIT, 8 * UNIT]),  # how far the base moves
                st.integers(0, disorder),
                st.integers(0, nkeys - 1),
                st.sampled_from(TYPES),
                st.sampled_from(RECORD_KINDS),
                st.integers(0, 5 * UNIT),  # straggler: how far behind
                st.integers(0, 7),  # edge / partner: which one
            ),
            min_size=length,
            max_size=length,
        )
    )
    values: list[dict[str, Any]] = []
    max_ts: dict[int, int] = {}
    for seq, (move, jitter, k, typ, kind, far, pick) in enumerate(rows):
        base += move
        key = KEYS[k]
        ts = base - jitter
        if kind == "straggler":
            ts -= far
        elif kind == "edge" and partition_for(key, partitions) in max_ts:
            ts = max_ts[partition_for(key, partitions)] - cfg.ooo - 1 + pick % 3  # W, W+1, W+2
        elif kind == "partner" and values:
            mate = values[-1 - far % min(len(values), 20)]
            if mate.get("type") in ("A", "B"):
                key = mate["id"]
                # A partner exactly at a bound, one past it, or anywhere within the bounds.
                inside = cfg.lower + far % (cfg.upper - cfg.lower + 1)
                edge = [cfg.lower, cfg.upper, cfg.lower - 1, cfg.upper + 1, inside, inside][
                    pick % 6
                ]
                if mate["type"] == "A":
                    typ, ts = "B", mate["ts"] + edge
                else:
                    typ, ts = "A", mate["ts"] - edge
        p = partition_for(key, partitions)
        max_ts[p] = max(max_ts.get(p, ts), ts)
        value: dict[str, Any] = {"id": key, "ts": ts, "seq": seq}
        if typ != "bad":
            value["type"] = typ
        values.append(value)
    return values


@st.composite
def scenarios(
    draw: st.DrawFn, hows: Sequence[str] = HOWS, max_size: int = 120
) -> tuple[JoinConfig, int, list[dict[str, Any]]]:
    cfg = draw(join_configs(hows))
    partitions = draw(st.integers(1, 3))
    return cfg, partitions, draw(streams(cfg, partitions, max_size))


def _note(text: str) -> None:
    with contextlib.suppress(InvalidArgument):  # outside a hypothesis test
        note(text)


def _event(text: str) -> None:
    with contextlib.suppress(InvalidArgument):  # outside a hypothesis test
        event(text)


def describe(cfg: JoinConfig, partitions: int, values: Sequence[dict[str, Any]]) -> None:
    _note(f"config={cfg!r} partitions={partitions}")
    for p, records in enumerate(split(values, partitions)):
        rows = [(r["id"], r.get("type", "-"), r["ts"], r["seq"]) for r in records]
        _note(f"partition {p}: {rows}")


def tally(runs: Sequence[JoinRun]) -> None:
    emissions = [e for r in runs for step in r.steps for e in step]
    _event(f"pairs: {min(sum(r.pairs for r in runs) // 10 * 10, 50)}+")
    _event(f"late records: {'yes' if any(r.late for r in runs) else 'no'}")
    _event(f"unmatched rows: {'yes' if any(e.kind == 'unmatched' for e in emissions) else 'no'}")
    _event(f"partial rows: {'yes' if any(e.emit == 'early' for e in emissions) else 'no'}")
    _event(f"updates: {'yes' if any(e.emit == 'update' for e in emissions) else 'no'}")
    _event(f"pair ids: {'yes' if any(e.id.count('|') == 2 and '|L|' not in e.id and '|R|' not in e.id for e in emissions) else 'no'}")  # noqa: E501


# -- 1. the engine equals the model ----------------------------------------------------------


def _one_topic_equivalence(scenario: tuple[JoinConfig, int, list[dict[str, Any]]]) -> None:
    cfg, partitions, values = scenario
    describe(cfg, partitions, values)
    runs, bad, texts = one_topic_model(values, partitions, cfg)
    out, dead = MemorySink(), MemorySink()
    source = MemorySource.of("events", values, partitions=partitions, key="id")
    with state_dir() as d:
        app = build_one_topic(d, source, out, dead, cfg)
        steps, live = asyncio.run(run_stepwise(app, out, partitions))
    check_totals(out.outputs, runs)
    check_dead(dead.dead, [x for r in runs for x in r.late], bad)
    for p, run in enumerate(runs):
        check_steps(p, steps[p], run.steps, texts[p])
        assert live[p][: len(run.live)] == run.live, f"partition {p}: rows in state per step"
    tally(runs)


@settings(max_examples=100, deadline=None)
@given(scenarios(("inner",)))
def test_inner_join_equals_reference(
    scenario: tuple[JoinConfig, int, list[dict[str, Any]]],
) -> None:
    _one_topic_equivalence(scenario)


@settings(max_examples=100, deadline=None)
@given(scenarios(("left", "right")))
def test_left_and_right_joins_equal_reference(
    scenario: tuple[JoinConfig, int, list[dict[str, Any]]],
) -> None:
    _one_topic_equivalence(scenario)


@settings(max_examples=100, deadline=None)
@given(scenarios(("outer",)))
def test_full_outer_join_equals_reference(
    scenario: tuple[JoinConfig, int, list[dict[str, Any]]],
) -> None:
    _one_topic_equivalence(scenario)


def two_topic_values(
    values: Sequence[dict[str, Any]],
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """A random stream as two topics: A records on the left, B on the right (no C or bad)."""
    lefts = [v for v in values if v.get("type") == "A"]
    rights = [v for v in values if v.get("type") == "B"]
    return lefts, rights


@settings(max_examples=80, deadline=None)
@given(scenarios())
def test_two_topic_join_equals_reference(
    scenario: tuple[JoinConfig, int, list[dict[str, Any]]],
) -> None:
    cfg, partitions, values = scenario
    lefts, rights = two_topic_values(values)
    describe(cfg, partitions, lefts + rights)
    runs: list[JoinRun] = []
    step_maps: list[list[int]] = []
    for p, (ls, rs) in enumerate(zip(split(lefts, partitions), split(rights, partitions),
                                     strict=True)):
        events, step_of = two_topic_events(ls, rs, p, cfg)
        runs.append(run_events(events, cfg))
        step_maps.append(step_of)
    out, dead = MemorySink(), MemorySink()
    left = MemorySource.of("left", lefts, partitions=partitions, key="id")
    right = MemorySource.of("right", rights, partitions=partitions, key="id")
    with state_dir() as d:
        app = build_two_topics(d, left, right, out, dead, cfg)
        steps, live = asyncio.run(run_stepwise(app, out, partitions))
    check_totals(out.outputs, runs)
    got_late = sorted(f"{x.topic}-{x.partition}@{x.offset}" for x in dead.dead)
    assert all(x.reason is DeadLetterReason.LATE for x in dead.dead)
    assert got_late == sorted(x for r in runs for x in r.late)
    for p, (run, step_of) in enumerate(zip(runs, step_maps, strict=True)):
        # Group the model's events into the runner's steps (a left and a right event each).
        want: list[list[Emission]] = [[] for _ in range(max(step_of) + 1)]
        want_live = [0] * len(want)
        for i, emitted in enumerate(run.steps[:-1]):
            want[step_of[i]] += emitted
            want_live[step_of[i]] = run.live[i]
        assert not run.steps[-1], "the watermark reached MAX when both inputs ended"
        check_steps(p, steps[p], want, [])
        assert live[p][: len(want_live)] == want_live, f"partition {p}: rows in state per step"
    tally(runs)


@st.composite
def seed_shaped(
    draw: st.DrawFn, hows: Sequence[str] = ("left", "outer", "right")
) -> tuple[JoinConfig, int, list[dict[str, Any]]]:
    """The seed's traffic, scaled down: per key an A and (mostly) a B, usually soon after
    (before ``emit_unmatched_after``), sometimes much later (within the bound: the partial
    row is updated), sometimes never or beyond the bound, now and then a second B or the B
    first; in time order up to a small disorder, with C heartbeats moving the watermark."""
    within = draw(st.sampled_from([20, 60]))
    how = draw(st.sampled_from(list(hows)))
    after = None if how == "inner" else draw(st.sampled_from([0, 2, 5, 15]))
    cfg = JoinConfig(-within, within, how, after, draw(st.sampled_from([0, 3, 10])))
    disorder = draw(st.sampled_from([0, 3, 10]))
    timed: list[tuple[int, dict[str, Any]]] = []
    for k in range(draw(st.integers(1, 12))):
        key = f"s{k}"
        a_ts = draw(st.integers(0, 300))
        partner = draw(st.sampled_from(["soon", "soon", "later", "later", "never", "beyond"]))
        span = {"soon": (0, 5), "later": (5, within), "beyond": (within + 1, within + 30)}
        types = ["A", "B"]
        if draw(st.integers(0, 4)) == 0:
            types.reverse()  # the B comes first
        timed.append((a_ts, {"type": types[0], "id": key, "ts": a_ts}))
        if partner != "never":
            b_ts = a_ts + draw(st.integers(*span[partner]))
            timed.append((b_ts, {"type": types[1], "id": key, "ts": b_ts}))
            if draw(st.integers(0, 4)) == 0:  # many-to-many
                b2 = a_ts + draw(st.integers(0, within))
                timed.append((b2, {"type": types[1], "id": key, "ts": b2}))
    for t in range(0, 400, 7):
        timed.append((t, {"type": "C", "id": "tick", "ts": t}))
    # Arrival order: event time plus up to ``disorder`` of delay.
    arrival = [ts + draw(st.integers(0, disorder)) for ts, _ in timed]
    order = sorted(range(len(timed)), key=lambda i: (arrival[i], i))
    values = [dict(timed[i][1], seq=n) for n, i in enumerate(order)]
    return cfg, draw(st.integers(1, 3)), values


@settings(max_examples=100, deadline=None)
@given(seed_shaped())
def test_seed_shaped_streams_equal_reference(
    scenario: tuple[JoinConfig, int, list[dict[str, Any]]],
) -> None:
    _one_topic_equivalence(scenario)


# -- 2. batch size does not matter ---------------------------------------------------------------


async def _run_with_batch(
    cfg: JoinConfig, partitions: int, values: Sequence[dict[str, Any]], batch_size: int
) -> tuple[list[list[Output]], list[list[tuple[int, DeadLetterReason]]]]:
    out, dead = MemorySink(), MemorySink()
    source = MemorySource.of("events", values, partitions=partitions, key="id")
    with state_dir() as d:
        app = build_one_topic(d, source, out, dead, cfg, batch_size=batch_size)
        await run_to_end(app.runner())
    outs: list[list[Output]] = [[] for _ in range(partitions)]
    for o in out.outputs:
        outs[partition_for(o.key, partitions)].append(o)
    deads: list[list[tuple[int, DeadLetterReason]]] = [[] for _ in range(partitions)]
    for x in dead.dead:
        deads[x.partition].append((x.offset, x.reason))
    return outs, deads


@settings(max_examples=40, deadline=None)
@given(st.one_of(scenarios(), seed_shaped(HOWS)), st.sampled_from([2, 3, 7, 50]))
def test_batch_size_does_not_matter(
    scenario: tuple[JoinConfig, int, list[dict[str, Any]]], middle: int
) -> None:
    cfg, partitions, values = scenario
    describe(cfg, partitions, values)
    runs = [asyncio.run(_run_with_batch(cfg, partitions, values, b)) for b in (1, middle, 1000)]
    model, _, _ = one_topic_model(values, partitions, cfg)
    check_totals([o for part in runs[0][0] for o in part], model)
    for other, size in zip(runs[1:], (middle, 1000), strict=True):
        # Partitions interleave differently; each partition's own sequence is the same.
        assert other[0] == runs[0][0], f"outputs with batch_size={size} differ from batch_size=1"
        assert other[1] == runs[0][1], f"dead letters with batch_size={size} differ"


# -- 3. snapshot, crash, restore -----------------------------------------------------------------

Phase = tuple[int, frozenset[int]]  # (crash after this many steps, checkpoint after these steps)


async def _crash_scenario(
    cfg: JoinConfig,
    partitions: int,
    values: Sequence[dict[str, Any]],
    batch_size: int,
    phases: Sequence[Phase],
    two_topics: bool = False,
) -> None:
    if two_topics:
        lefts, rights = two_topic_values(values)
        left = MemorySource.of("left", lefts, partitions=partitions, key="id")
        right = MemorySource.of("right", rights, partitions=partitions, key="id")

    def build(d: str, out: MemorySink, dead: MemorySink) -> LocalRunner:
        if two_topics:
            app = build_two_topics(d, left, right, out, dead, cfg, batch_size=batch_size)
        else:
            source = MemorySource.of("events", values, partitions=partitions, key="id")
            app = build_one_topic(d, source, out, dead, cfg, batch_size=batch_size)
        runner: LocalRunner = app.runner()
        return runner

    # The uninterrupted run.
    out, dead = MemorySink(), MemorySink()
    with state_dir() as d:
        await run_to_end(build(d, out, dead))
    expected, expected_dead = list(out.outputs), list(dead.dead)
    if not two_topics:
        check_totals(expected, one_topic_model(values, partitions, cfg)[0])

    # The same input, crashing and restoring.
    out, dead = MemorySink(), MemorySink()
    resumed = 0
    with state_dir() as d:
        for crash_after, checkpoints in phases:
            runner = build(d, out, dead)
            committed = (len(out.outputs), len(dead.dead))
            for step in range(crash_after):
                if runner.finished:
                    break
                await runner.step()
                if step in checkpoints:
                    await runner.checkpoint()
                    committed = (len(out.outputs), len(dead.dead))
                    resumed += not runner.finished
            runner.abandon()
            # What an exactly-once sink had committed at the last checkpoint.
            del out.outputs[committed[0] :]
            del dead.dead[committed[1] :]
            _note(f"crash after {crash_after} steps, resuming from {committed}")
        await run_to_empty(build(d, out, dead))
    _event(f"restarts from a mid-stream snapshot: {min(resumed, 3)}")
    assert out.outputs == expected
    assert [(x.topic, x.partition, x.offset, x.reason) for x in dead.dead] == [
        (x.topic, x.partition, x.offset, x.reason) for x in expected_dead
    ]


phases_st = st.lists(
    st.integers(0, 40).flatmap(
        lambda n: st.tuples(
            st.just(n),
            st.one_of(
                st.frozensets(st.integers(0, max(0, n - 1)), max_size=4),
                st.just(frozenset(range(n))),  # after every step
            ),
        )
    ),
    min_size=1,
    max_size=4,
)


@settings(max_examples=60, deadline=None)
@given(
    st.one_of(scenarios(max_size=80), seed_shaped(HOWS)),
    st.sampled_from([1, 2, 3, 5, 8, 1000]),
    phases_st,
    st.booleans(),
)
def test_crash_and_restore_changes_nothing(
    scenario: tuple[JoinConfig, int, list[dict[str, Any]]],
    batch_size: int,
    phases: list[Phase],
    two_topics: bool,
) -> None:
    cfg, partitions, values = scenario
    describe(cfg, partitions, values)
    asyncio.run(_crash_scenario(cfg, partitions, values, batch_size, phases, two_topics))
