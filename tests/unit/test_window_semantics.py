"""Semantic acceptance tests of window aggregation: the engine against a brute-force model.

``reference.py`` holds the model: plain lists of records per window, results
recomputed from scratch, Flink's rules written the obvious way. These tests
run random keyed, disordered streams through a real :class:`evtime.App`
(MemorySource -> window -> MemorySink, RocksDB state) and compare:

1. every emission, record by record (batch size 1: step ``i`` of a partition
   is what its record ``i`` caused), the per-window sequence of
   (kind, value, replaces), the multiset of all emissions and the late records;
2. the outputs of the same stream run with different batch sizes;
3. an uninterrupted run against runs crashed (``LocalRunner.abandon``) at
   random steps after random checkpoints and restored from RocksDB;
4. hand-written examples that pin each rule.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import tempfile
from collections import Counter, defaultdict
from collections.abc import Iterator, Sequence
from typing import Any

import pytest
from hypothesis import event, given, note, settings
from hypothesis import strategies as st
from hypothesis.errors import InvalidArgument

from evtime import (
    App,
    Collect,
    Count,
    DeadLetter,
    DeadLetterReason,
    ManualClock,
    Max,
    Mean,
    Min,
    Output,
    Session,
    Sliding,
    Sum,
    Tumbling,
    WindowResult,
)
from evtime.connectors.local import MemorySink, MemorySource, partition_for

try:  # tests/unit is not a package: pytest puts this directory on sys.path
    from reference import AGGREGATES, Config, Emission, PartitionRun, split
    from reference import run as reference_run
except ImportError:  # pragma: no cover - if tests/unit becomes a package
    from .reference import AGGREGATES, Config, Emission, PartitionRun, split
    from .reference import run as reference_run

# -- building and driving the engine ------------------------------------------------


def engine_aggregate(name: str) -> Any:
    return {
        "sum": Sum("amount"),
        "count": Count(),
        "collect": Collect("seq"),
        "min": Min("amount"),
        "max": Max("amount"),
        "mean": Mean("amount"),
    }[name]


def engine_assigner(cfg: Config) -> Any:
    if cfg.assigner == "tumbling":
        return Tumbling(cfg.size, offset=cfg.offset)
    if cfg.assigner == "sliding":
        return Sliding(cfg.size, cfg.slide, offset=cfg.offset)
    return Session(cfg.size)


def make_source(values: Sequence[dict[str, Any]], partitions: int) -> MemorySource:
    return MemorySource.of("events", values, partitions=partitions, key="user")


def build_app(
    state_dir: str,
    source: MemorySource,
    out: MemorySink,
    dead: MemorySink,
    cfg: Config,
    *,
    batch_size: int = 1,
    late: MemorySink | None = None,
) -> App:
    """The app under test; the same declarations every time (a restart rebuilds it)."""
    app = App(
        "semantics",
        state_dir=state_dir,
        checkpoint_interval="1h",
        dead_letter=dead,
        batch_size=batch_size,
        clock=ManualClock(),
    )
    events = app.source("events", source, key="user", timestamp="ts", max_out_of_orderness=cfg.ooo)

    @app.window(
        events,
        engine_assigner(cfg),
        aggregate=engine_aggregate(cfg.aggregate),
        sink=out,
        allowed_lateness=cfg.lateness,
        late=late,
        name="w",
    )
    def result(r: WindowResult) -> dict[str, Any]:
        return r.to_dict()

    return app


@contextlib.contextmanager
def state_dir() -> Iterator[str]:
    """A fresh state directory (on tmpfs when there is one: RocksDB opens 5x faster)."""
    base = "/dev/shm" if os.access("/dev/shm", os.W_OK) else None
    with tempfile.TemporaryDirectory(prefix="evtime-sem-", dir=base) as path:
        yield path


async def run_to_end(runner: Any) -> None:
    while not runner.finished:
        await runner.step()
    await runner.close()


async def run_stepwise(app: App, out: MemorySink, partitions: int) -> list[list[list[Output]]]:
    """Run with batch size 1; return, per partition, the outputs of every step."""
    assert app.plan.batch_size == 1
    runner = app.runner()
    steps: list[list[list[Output]]] = [[] for _ in range(partitions)]
    seen = 0
    while not runner.finished:
        await runner.step()
        for p in range(partitions):
            steps[p].append([])
        for o in out.outputs[seen:]:
            steps[partition_for(o.key, partitions)][-1].append(o)
        seen = len(out.outputs)
    await runner.close()
    assert len(out.outputs) == seen, "closing the runner emitted more"
    return steps


# -- comparing ----------------------------------------------------------------------

Canon = tuple[str, str, Any, tuple[str, ...]]


def canon_value(value: Any) -> Any:
    if isinstance(value, list | tuple):
        return tuple(canon_value(v) for v in value)
    return value


def canon_output(o: Output) -> Canon:
    """An engine output as (id, kind, value, replaces), after checking its envelope."""
    v = o.value
    assert set(v) <= {"key", "start", "end", "value", "kind", "replaces"}, v
    assert o.key == v["key"]
    assert o.id == f"{v['key']}@{v['start']}-{v['end']}", (o.id, v)
    assert o.timestamp == v["end"] - 1, o
    replaces = tuple(v.get("replaces", ()))
    assert "replaces" not in v or replaces, "an empty replaces list is left out"
    return (o.id, v["kind"], canon_value(v["value"]), replaces)


def canon_emission(e: Emission) -> Canon:
    return (e.id, e.kind, canon_value(e.value), e.replaces)


def _sorted(items: Sequence[Canon]) -> list[Canon]:
    return sorted(items, key=repr)


def late_by_partition(dead: Sequence[DeadLetter], partitions: int) -> list[list[int]]:
    late: list[list[int]] = [[] for _ in range(partitions)]
    for d in dead:
        assert d.reason is DeadLetterReason.LATE, f"unexpected dead letter {d.to_dict()}"
        assert d.operator == "w"
        late[d.partition].append(d.offset)
    return late


def by_window(emissions: Sequence[Canon]) -> dict[str, list[tuple[str, Any, tuple[str, ...]]]]:
    seqs: dict[str, list[tuple[str, Any, tuple[str, ...]]]] = defaultdict(list)
    for wid, kind, value, replaces in emissions:
        seqs[wid].append((kind, value, replaces))
    return dict(seqs)


def check_outputs(
    values: Sequence[dict[str, Any]],
    partitions: int,
    cfg: Config,
    outputs: Sequence[Output],
    dead: Sequence[DeadLetter],
    ref: list[PartitionRun] | None = None,
) -> list[PartitionRun]:
    """Per-window sequences, the multiset of emissions and late records equal the model's."""
    ref = ref or reference_run(values, partitions, cfg)
    got = [canon_output(o) for o in outputs]
    want = [canon_emission(e) for r in ref for step in r.steps for e in step]
    assert by_window(got) == by_window(want)
    assert Counter(map(repr, got)) == Counter(map(repr, want))
    assert late_by_partition(dead, partitions) == [r.late for r in ref]
    return ref


def check_steps(
    values: Sequence[dict[str, Any]],
    partitions: int,
    cfg: Config,
    steps: list[list[list[Output]]],
    ref: list[PartitionRun],
) -> None:
    """Each record's emissions (batch size 1) are exactly the model's for that record."""
    parts = split(values, partitions)
    for p in range(partitions):
        model = ref[p]
        for i, expected in enumerate(model.steps):
            got = steps[p][i] if i < len(steps[p]) else []
            if got or expected:
                what = (
                    f"record {i} {parts[p][i]} (watermark before "
                    f"{model.watermarks[i - 1] if i else 'MIN'}, after {model.watermarks[i]})"
                    if i < len(parts[p])
                    else "the end of input"
                )
                assert _sorted([canon_output(o) for o in got]) == _sorted(
                    [canon_emission(e) for e in expected]
                ), f"partition {p}: emissions caused by {what}"
        assert not any(steps[p][len(model.steps) :]), f"partition {p}: output after the end"


# -- random streams ---------------------------------------------------------------------

KEYS = ["ann", "bob", "cy", "dee"]


def _some(unit: int, none_weight: int = 1) -> st.SearchStrategy[int]:
    """0 now and then, else up to three windows (sampled_from draws evenly; it shrinks to 0)."""
    return st.sampled_from(["none"] * none_weight + ["some"] * 3).flatmap(
        lambda which: st.just(0) if which == "none" else st.integers(1, 3 * unit)
    )


@st.composite
def configs(draw: st.DrawFn, assigner: str) -> Config:
    unit = draw(st.sampled_from([10, 3, 25]))
    slide = offset = 0
    if assigner == "tumbling":
        offset = draw(st.sampled_from([0, 1, unit - 1, unit // 2]))
    elif assigner == "sliding":
        slide = draw(
            st.sampled_from(
                [
                    max(1, unit // 2),
                    max(1, unit // 3),
                    unit,
                    unit - 1,
                    unit + 1,  # slide > size: records in the gaps have no window
                    2 * unit,
                ]
            )
        )
        offset = draw(st.sampled_from([0, slide - 1, slide // 2]))
    return Config(
        assigner,
        unit,
        slide=slide,
        offset=offset,
        ooo=draw(_some(unit)),
        lateness=draw(_some(unit)),
        aggregate=draw(st.sampled_from(sorted(AGGREGATES))),
    )


def edge_ts(cfg: Config, wm: int, shift: int, pick: int) -> int:
    """A timestamp whose last window ends near the lateness boundary of watermark ``wm``.

    The record's latest window ``[s, e)`` gets ``e - 1 + lateness <= wm + shift``, with
    equality for one ``shift`` in every ``slide`` (window size for tumbling windows); the
    record is late when ``e - 1 + lateness <= wm``. ``pick`` moves it inside that window.
    For sessions the record's own window is ``[ts, ts + gap)`` with ``e - 1 + lateness`` equal
    to ``wm + shift``.
    """
    target = wm + 1 - cfg.lateness + shift  # the wanted window end
    if cfg.assigner == "session":
        return target - cfg.size
    slide = cfg.slide or cfg.size
    first = target - cfg.size
    start = first - (first - cfg.offset) % slide  # aligned, so its end is <= target
    return start + pick % min(slide, cfg.size)  # still the record's latest window


RECORD_KINDS = ["plain"] * 6 + ["straggler", "edge"]


@st.composite
def streams(
    draw: st.DrawFn, cfg: Config, partitions: int, max_size: int = 150
) -> list[dict[str, Any]]:
    """Records around a moving base: ``base - jitter``, jitter up to ``disorder`` (at most 3
    windows); now and then a straggler up to 5 windows further behind, or a record placed
    right at the lateness boundary of its partition's current watermark."""
    unit = cfg.size
    nkeys = draw(st.integers(1, len(KEYS)))
    base = draw(st.sampled_from([0, -3 * unit - 1, 2 * unit + 1]))
    disorder = draw(st.sampled_from([unit, 0, unit // 2, 2 * unit, 3 * unit]))
    # Mostly long streams (hypothesis' own lists are short): windows fire, update, merge.
    length = draw(
        st.sampled_from(["long", "short", "long", "long"]).flatmap(
            lambda kind: (
                st.integers(0, 12) if kind == "short" else st.integers(min(40, max_size), max_size)
            )
        )
    )
    rows = draw(
        st.lists(
            st.tuples(
                st.integers(0, unit),  # how far the base moves
                st.integers(0, disorder),
                st.integers(0, nkeys - 1),
                st.integers(-5, 20),  # amount
                st.sampled_from(RECORD_KINDS),
                st.integers(0, 5 * unit),  # straggler: how far behind; edge: pick
                st.integers(-1, max(cfg.slide, 1) if cfg.assigner == "sliding" else unit),
            ),
            min_size=length,
            max_size=length,
        )
    )
    values = []
    max_ts: dict[int, int] = {}
    for seq, (move, jitter, k, amount, kind, far, shift) in enumerate(rows):
        base += move
        key = KEYS[k]
        ts = base - jitter
        p = partition_for(key, partitions)
        if kind == "straggler":
            ts -= far
        elif kind == "edge" and p in max_ts:
            wm = max_ts[p] - cfg.ooo - 1
            ts = edge_ts(cfg, wm, shift if cfg.assigner != "session" else shift % 3 - 1, far)
        max_ts[p] = max(max_ts.get(p, ts), ts)
        values.append({"user": key, "ts": ts, "amount": amount, "seq": seq})
    return values


@st.composite
def scenarios(
    draw: st.DrawFn, assigner: str, max_size: int = 150
) -> tuple[Config, int, list[dict[str, Any]]]:
    cfg = draw(configs(assigner))
    partitions = draw(st.integers(1, 3))
    return cfg, partitions, draw(streams(cfg, partitions, max_size))


def _note(text: str) -> None:
    with contextlib.suppress(InvalidArgument):  # outside a hypothesis test
        note(text)


def _event(text: str) -> None:
    with contextlib.suppress(InvalidArgument):  # outside a hypothesis test
        event(text)


def describe(cfg: Config, partitions: int, values: Sequence[dict[str, Any]]) -> None:
    note(f"config={cfg!r} partitions={partitions}")
    for p, records in enumerate(split(values, partitions)):
        note(f"partition {p}: {[(r['user'], r['ts'], r['amount'], r['seq']) for r in records]}")


ASSIGNERS = ["tumbling", "sliding", "session"]

# -- 1. the engine equals the model ------------------------------------------------------


def _model_equivalence(scenario: tuple[Config, int, list[dict[str, Any]]]) -> None:
    cfg, partitions, values = scenario
    describe(cfg, partitions, values)
    out, dead = MemorySink(), MemorySink()
    with state_dir() as d:
        app = build_app(d, make_source(values, partitions), out, dead, cfg, batch_size=1)
        steps = asyncio.run(run_stepwise(app, out, partitions))
    ref = check_outputs(values, partitions, cfg, out.outputs, dead.dead)
    check_steps(values, partitions, cfg, steps, ref)
    emissions = [e for r in ref for step in r.steps for e in step]
    event(f"records: {len(values) // 50 * 50}+")
    event(f"late records: {'yes' if any(r.late for r in ref) else 'no'}")
    event(f"updates: {'yes' if any(e.kind == 'update' for e in emissions) else 'no'}")
    if cfg.assigner == "session":
        event(f"replaces: {'yes' if any(e.replaces for e in emissions) else 'no'}")


@settings(max_examples=50, deadline=None)
@given(scenarios("tumbling"))
def test_tumbling_equals_reference(scenario: tuple[Config, int, list[dict[str, Any]]]) -> None:
    _model_equivalence(scenario)


@settings(max_examples=50, deadline=None)
@given(scenarios("sliding"))
def test_sliding_equals_reference(scenario: tuple[Config, int, list[dict[str, Any]]]) -> None:
    _model_equivalence(scenario)


@settings(max_examples=50, deadline=None)
@given(scenarios("session"))
def test_session_equals_reference(scenario: tuple[Config, int, list[dict[str, Any]]]) -> None:
    _model_equivalence(scenario)


# -- 2. batch size does not matter --------------------------------------------------------


async def _run_with_batch(
    cfg: Config, partitions: int, values: Sequence[dict[str, Any]], batch_size: int
) -> tuple[list[list[Output]], list[list[DeadLetter]], list[Output], list[DeadLetter]]:
    out, dead = MemorySink(), MemorySink()
    with state_dir() as d:
        app = build_app(d, make_source(values, partitions), out, dead, cfg, batch_size=batch_size)
        await run_to_end(app.runner())
    outs: list[list[Output]] = [[] for _ in range(partitions)]
    for o in out.outputs:
        outs[partition_for(o.key, partitions)].append(o)
    deads: list[list[DeadLetter]] = [[] for _ in range(partitions)]
    for letter in dead.dead:
        deads[letter.partition].append(letter)
    return outs, deads, out.outputs, dead.dead


@settings(max_examples=30, deadline=None)
@given(
    st.sampled_from(ASSIGNERS).flatmap(scenarios),
    st.sampled_from([2, 3, 7, 50]),
)
def test_batch_size_does_not_matter(
    scenario: tuple[Config, int, list[dict[str, Any]]], middle: int
) -> None:
    cfg, partitions, values = scenario
    describe(cfg, partitions, values)
    runs = [asyncio.run(_run_with_batch(cfg, partitions, values, b)) for b in (1, middle, 1000)]
    ones = runs[0]
    check_outputs(values, partitions, cfg, ones[2], ones[3])
    for other, size in zip(runs[1:], (middle, 1000), strict=True):
        # Partitions interleave differently; each partition's own sequence is the same.
        assert other[0] == ones[0], f"outputs with batch_size={size} differ from batch_size=1"
        assert other[1] == ones[1], f"late records with batch_size={size} differ"


# -- 3. snapshot, crash, restore --------------------------------------------------------------

Phase = tuple[int, frozenset[int]]  # (crash after this many steps, checkpoint after these steps)


async def _crash_scenario(
    cfg: Config,
    partitions: int,
    values: Sequence[dict[str, Any]],
    batch_size: int,
    phases: Sequence[Phase],
) -> None:
    source = make_source(values, partitions)

    # The uninterrupted run.
    out, dead = MemorySink(), MemorySink()
    with state_dir() as d:
        await run_to_end(build_app(d, source, out, dead, cfg, batch_size=batch_size).runner())
    expected, expected_dead = list(out.outputs), list(dead.dead)
    check_outputs(values, partitions, cfg, expected, expected_dead)

    # The same input, crashing and restoring.
    out, dead = MemorySink(), MemorySink()
    resumed = 0  # restarts from a snapshot taken mid-stream
    with state_dir() as d:
        for crash_after, checkpoints in phases:
            runner = build_app(d, source, out, dead, cfg, batch_size=batch_size).runner()
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
        await run_to_end(build_app(d, source, out, dead, cfg, batch_size=batch_size).runner())
    _event(f"restarts from a mid-stream snapshot: {min(resumed, 3)}")
    assert out.outputs == expected
    assert [(x.partition, x.offset, x.reason) for x in dead.dead] == [
        (x.partition, x.offset, x.reason) for x in expected_dead
    ]


phases_st = st.lists(
    st.integers(0, 40).flatmap(
        lambda n: st.tuples(st.just(n), st.frozensets(st.integers(0, max(0, n - 1)), max_size=4))
    ),
    min_size=1,
    max_size=4,
)


@settings(max_examples=40, deadline=None)
@given(
    st.sampled_from(ASSIGNERS).flatmap(lambda a: scenarios(a, max_size=100)),
    st.sampled_from([1, 2, 3, 5, 8, 1000]),
    phases_st,
)
def test_crash_and_restore_changes_nothing(
    scenario: tuple[Config, int, list[dict[str, Any]]], batch_size: int, phases: list[Phase]
) -> None:
    cfg, partitions, values = scenario
    describe(cfg, partitions, values)
    asyncio.run(_crash_scenario(cfg, partitions, values, batch_size, phases))


# -- 4. hand-written examples -----------------------------------------------------------------


def rec(ts: int, amount: int = 1, user: str = "ann", seq: int = 0) -> dict[str, Any]:
    return {"user": user, "ts": ts, "amount": amount, "seq": seq}


def run_steps(
    cfg: Config, values: list[dict[str, Any]]
) -> tuple[list[list[dict[str, Any]]], list[DeadLetter]]:
    """One partition, batch size 1: the output values of each step (record i, then the end)."""
    for seq, v in enumerate(values):
        v["seq"] = seq
    out, dead = MemorySink(), MemorySink()
    with state_dir() as d:
        app = build_app(d, make_source(values, 1), out, dead, cfg, batch_size=1)
        steps = asyncio.run(run_stepwise(app, out, 1))[0]
    # The model agrees with every example below.
    ref = check_outputs(values, 1, cfg, out.outputs, dead.dead)
    check_steps(values, 1, cfg, [steps], ref)
    return [[o.value for o in step] for step in steps], dead.dead


def fin(start: int, end: int, value: Any, user: str = "ann") -> dict[str, Any]:
    return {"key": user, "start": start, "end": end, "value": value, "kind": "final"}


def upd(start: int, end: int, value: Any, *replaces: str, user: str = "ann") -> dict[str, Any]:
    out = {"key": user, "start": start, "end": end, "value": value, "kind": "update"}
    if replaces:
        out["replaces"] = list(replaces)
    return out


def test_window_fires_exactly_when_the_watermark_reaches_end_minus_one() -> None:
    cfg = Config("tumbling", 10, ooo=2)
    # W after each record: 6, 6, 7, 8, 9 (= end - 1: [0, 10) fires), 10
    steps, dead = run_steps(cfg, [rec(9), rec(8), rec(10), rec(11), rec(12), rec(13)])
    assert steps == [[], [], [], [], [fin(0, 10, 2)], [], [fin(10, 20, 4)]]
    assert not dead


def test_record_exactly_at_the_lateness_boundary_is_late() -> None:
    cfg = Config("tumbling", 10, lateness=5)
    # [0, 10) is dropped at W = 9 + 5 = 14. W = 13: a record still counts (UPDATE).
    steps, dead = run_steps(cfg, [rec(3), rec(14), rec(4, 10)])
    assert steps == [[], [fin(0, 10, 1)], [upd(0, 10, 11)], [fin(10, 20, 1)]]
    assert not dead
    # W = 14: the same record is late, to the dead-letter output.
    steps, dead = run_steps(cfg, [rec(3), rec(15), rec(4, 10)])
    assert steps == [[], [fin(0, 10, 1)], [], [fin(10, 20, 1)]]
    assert [(d.reason, d.offset, d.timestamp) for d in dead] == [(DeadLetterReason.LATE, 2, 4)]


def test_record_at_watermark_plus_one_is_on_time_without_lateness() -> None:
    cfg = Config("tumbling", 10)
    # W = 8 after ts 9: [0, 10) has not fired, a record at 0 still joins it.
    steps, dead = run_steps(cfg, [rec(9), rec(0, 5), rec(10)])
    assert steps == [[], [], [fin(0, 10, 6)], [fin(10, 20, 1)]]
    # W = 9: fired and (lateness 0) dropped: late.
    steps, dead = run_steps(cfg, [rec(10), rec(9, 5)])
    assert steps == [[], [], [fin(10, 20, 1)]]
    assert [d.offset for d in dead] == [1]


def test_late_record_within_lateness_updates_with_the_recomputed_value() -> None:
    cfg = Config("tumbling", 10, lateness=10, aggregate="collect")
    values = [rec(1), rec(2), rec(12), rec(5), rec(7), rec(30), rec(6)]
    steps, dead = run_steps(cfg, values)
    assert steps == [
        [],
        [],
        [fin(0, 10, [0, 1])],
        [upd(0, 10, [0, 1, 3])],
        [upd(0, 10, [0, 1, 3, 4])],
        [fin(10, 20, [2])],  # W = 29: [0, 10) is gone (9 + 10 <= 29)
        [],
        [fin(30, 40, [5])],
    ]
    assert [d.offset for d in dead] == [6]


def test_late_record_creates_a_window_within_lateness() -> None:
    # [0, 10) never had a record; at W = 12 a record for it opens and emits it at once.
    cfg = Config("tumbling", 10, lateness=5, aggregate="sum")
    steps, dead = run_steps(cfg, [rec(13), rec(4, 7)])
    assert steps == [[], [fin(0, 10, 7)], [fin(10, 20, 1)]]
    assert not dead


def test_sliding_windows_with_gaps_give_no_window_and_no_late_record() -> None:
    cfg = Config("sliding", 5, slide=10, aggregate="count")
    # [0, 5), [10, 15), ...; ts 7 is in no window, neither counted nor late (but it moves the
    # watermark to 6, which fires [0, 5)).
    steps, dead = run_steps(cfg, [rec(1), rec(7), rec(30), rec(7)])
    assert steps == [[], [fin(0, 5, 1)], [], [], [fin(30, 35, 1)]]
    assert not dead


def test_sliding_record_late_for_some_windows_only() -> None:
    cfg = Config("sliding", 10, slide=5, aggregate="count")
    # W = 10 after ts 11: [-5, 5) and [0, 10) fired and dropped, [5, 15) open. A record at 7
    # joins [5, 15) only, and is not late.
    steps, dead = run_steps(cfg, [rec(3), rec(11), rec(7)])
    assert steps == [
        [],
        [fin(-5, 5, 1), fin(0, 10, 1)],
        [],
        [fin(5, 15, 2), fin(10, 20, 1)],
    ]
    assert not dead


def test_session_merge_across_a_late_record_updates_with_replaces() -> None:
    cfg = Config("session", 10, lateness=100, aggregate="sum")
    values = [rec(0, 1), rec(18, 2), rec(40, 4), rec(9, 8)]
    steps, dead = run_steps(cfg, values)
    assert steps == [
        [],
        [fin(0, 10, 1)],  # W = 17
        [fin(18, 28, 2)],  # W = 39
        # [9, 19) bridges [0, 10) and [18, 28): one session [0, 28), both emitted before.
        [upd(0, 28, 11, "ann@0-10", "ann@18-28")],
        [fin(40, 50, 4)],
    ]
    assert not dead


def test_session_record_exactly_at_the_lateness_boundary_is_late() -> None:
    cfg = Config("session", 10, lateness=5, aggregate="count")
    # W = 29: a record at 15 would open [15, 25), gone at W = 24 + 5 = 29: late.
    steps, dead = run_steps(cfg, [rec(0), rec(30), rec(15)])
    assert steps == [[], [fin(0, 10, 1)], [], [fin(30, 40, 1)]]
    assert [(d.reason, d.offset) for d in dead] == [(DeadLetterReason.LATE, 2)]
    # A record at 16 opens [16, 26), still within lateness: emitted at once.
    steps, dead = run_steps(cfg, [rec(0), rec(30), rec(16)])
    assert steps == [[], [fin(0, 10, 1)], [fin(16, 26, 1)], [fin(30, 40, 1)]]
    assert not dead


def test_late_records_go_to_the_late_sink_when_given() -> None:
    cfg = Config("tumbling", 10)
    values = [rec(1, seq=0), rec(20, seq=1), rec(5, seq=2), rec(21, seq=3)]
    out, dead, late = MemorySink(), MemorySink(), MemorySink()
    with state_dir() as d:
        app = build_app(d, make_source(values, 1), out, dead, cfg, late=late)
        asyncio.run(run_to_end(app.runner()))
    assert [o.value for o in out.outputs] == [fin(0, 10, 1), fin(20, 30, 2)]
    assert [(o.value, o.timestamp) for o in late.outputs] == [(values[2], 5)]
    assert not dead.dead


def test_session_late_record_inside_a_session_updates_it_without_replaces() -> None:
    cfg = Config("session", 10, lateness=50, aggregate="count")
    steps, dead = run_steps(cfg, [rec(0), rec(5), rec(30), rec(3)])
    assert steps == [[], [], [fin(0, 15, 2)], [upd(0, 15, 3)], [fin(30, 40, 1)]]
    # Without lateness the same record is late.
    steps, dead = run_steps(
        Config("session", 10, aggregate="count"), [rec(0), rec(5), rec(30), rec(3)]
    )
    assert steps == [[], [], [fin(0, 15, 2)], [], [fin(30, 40, 1)]]
    assert [d.offset for d in dead] == [3]


def test_session_replaces_names_only_emitted_ids() -> None:
    # [0, 10) is emitted (W = 14); a record at 8 grows it into [0, 18), not yet due; a record at
    # 16 grows that into [0, 26). Only [0, 10) was ever emitted: [0, 18) must not be "replaced".
    cfg = Config("session", 10, ooo=15, lateness=100, aggregate="count")
    steps, dead = run_steps(cfg, [rec(0), rec(30), rec(8), rec(16)])
    assert steps == [
        [],
        [fin(0, 10, 1)],
        [],
        [],
        [upd(0, 26, 3, "ann@0-10"), fin(30, 40, 1)],
    ]
    assert not dead


def test_session_collect_concatenates_merged_sessions_by_start() -> None:
    cfg = Config("session", 10, ooo=100, aggregate="collect")
    # Sessions [20, 30) then [0, 10) (out of order), bridged by a record at 10.
    steps, _ = run_steps(cfg, [rec(20), rec(0), rec(10)])
    assert steps == [[], [], [], [fin(0, 30, [1, 0, 2])]]


def test_session_touching_windows_merge() -> None:
    cfg = Config("session", 10, aggregate="count")
    # [0, 10) and [10, 20) touch: one session [0, 20).
    steps, _ = run_steps(cfg, [rec(0), rec(10), rec(40)])
    assert steps == [[], [], [fin(0, 20, 2)], [fin(40, 50, 1)]]


def test_emitted_results_do_not_change_afterwards() -> None:
    # A sink that keeps what it was given (a buffer flushed later) must not see a result change
    # when a late record updates the window afterwards.
    cfg = Config("tumbling", 10, lateness=100, aggregate="collect")
    values = [rec(1), rec(20), rec(2), rec(3)]
    for seq, v in enumerate(values):
        v["seq"] = seq
    out, dead = MemorySink(), MemorySink()
    with state_dir() as d:
        app = build_app(d, make_source(values, 1), out, dead, cfg, batch_size=1000)
        asyncio.run(run_to_end(app.runner()))
    assert [o.value for o in out.outputs] == [
        fin(0, 10, [0]),
        upd(0, 10, [0, 2]),
        upd(0, 10, [0, 2, 3]),
        fin(20, 30, [1]),
    ]


@pytest.mark.parametrize("assigner", ASSIGNERS)
def test_crash_right_after_a_checkpoint_and_at_the_end(assigner: str) -> None:
    cfg = Config(assigner, 10, slide=5 if assigner == "sliding" else 0, ooo=3, lateness=7)
    values = [
        rec(t, user=u, seq=i)
        for i, (t, u) in enumerate(
            [
                (1, "ann"),
                (5, "bob"),
                (12, "ann"),
                (3, "bob"),
                (30, "ann"),
                (8, "ann"),
                (31, "bob"),
                (22, "ann"),
                (45, "bob"),
                (44, "ann"),
                (2, "ann"),
                (60, "ann"),
            ]
        )
    ]
    phases = [
        (3, frozenset({0, 2})),
        (0, frozenset()),
        (100, frozenset({4})),
        (100, frozenset({20})),
    ]
    asyncio.run(_crash_scenario(cfg, 2, values, 1, phases))
