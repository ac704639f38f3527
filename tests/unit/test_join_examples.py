"""Hand-written examples of the interval join, one rule each, the seed case first.

Every example runs on the engine record by record (batch size 1) and is also
checked against the reference model (``join_reference.py``).
"""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from evtime import (
    App,
    ConfigError,
    DeadLetter,
    DeadLetterReason,
    EmitKind,
    JoinKind,
    JoinResult,
    ManualClock,
    Output,
)
from evtime.connectors.local import MemorySink, MemorySource, partition_for

try:  # tests/unit is not a package: pytest puts this directory on sys.path
    from join_harness import (
        app_for,
        build_one_topic,
        check_dead,
        check_steps,
        check_totals,
        is_a,
        is_b,
        join_ops,
        one_topic_model,
        run_stepwise,
        run_to_end,
        state_dir,
    )
    from join_reference import JoinConfig
except ImportError:  # pragma: no cover - if tests/unit becomes a package
    from .join_harness import (
        app_for,
        build_one_topic,
        check_dead,
        check_steps,
        check_totals,
        is_a,
        is_b,
        join_ops,
        one_topic_model,
        run_stepwise,
        run_to_end,
        state_dir,
    )
    from .join_reference import JoinConfig

# -- the rules ----------------------------------------------------------------------

MIN = 60_000
HOUR = 60 * MIN


def ev(typ: str, key: str, ts: int) -> dict[str, Any]:
    return {"type": typ, "id": key, "ts": ts}


def run_steps(
    cfg: JoinConfig, values: list[dict[str, Any]], *, late: MemorySink | None = None
) -> tuple[list[list[Output]], list[int], list[DeadLetter]]:
    """One partition, batch size 1: the outputs of each step (record i, then the end), the rows
    in state after each step, and the dead letters. The model agrees with every example."""
    for seq, v in enumerate(values):
        v["seq"] = seq
    out, dead = MemorySink(), MemorySink()
    with state_dir() as d:
        app = build_one_topic(d, MemorySource.of("events", values, key="id"), out, dead, cfg,
                              late=late)
        steps, live = asyncio.run(run_stepwise(app, out, 1))
    if late is None:
        runs, bad, texts = one_topic_model(values, 1, cfg)
        check_totals(out.outputs, runs)
        check_dead(dead.dead, runs[0].late, bad)
        check_steps(0, steps[0], runs[0].steps, texts[0])
        assert live[0] == runs[0].live
    return steps[0], live[0], dead.dead


def row(o: Output) -> tuple[str, str, str]:
    """(kind, emit, id) of an output."""
    return (o.value["kind"], o.value["emit"], o.id)


SEED = JoinConfig(-6 * HOUR, 6 * HOUR, "outer", 15 * MIN)


def test_seed_pair_ten_minutes_apart_is_one_joined_row() -> None:
    steps, live, dead = run_steps(SEED, [ev("A", "k", 0), ev("B", "k", 10 * MIN)])
    assert [[row(o) for o in s] for s in steps] == [
        [],
        [("joined", "final", "k|L|events-0@0")],  # the A arrived first: its id
        [],  # the end: both matched, nothing unmatched
    ]
    [o] = steps[1]
    assert o.value["left"]["type"] == "A" and o.value["right"]["type"] == "B"
    assert o.timestamp == 10 * MIN
    assert live == [1, 2, 0]
    assert not dead


def test_seed_pair_three_hours_apart_updates_the_partial_row() -> None:
    # C events belong to no side; they move the watermark (ooo = 0: W = max ts - 1).
    values = [
        ev("A", "k", 0),
        ev("C", "x", 15 * MIN),  # W = 15m - 1: not yet
        ev("C", "x", 15 * MIN + 1),  # W = 15m: the partial row of the A
        ev("C", "x", 2 * HOUR),
        ev("B", "k", 3 * HOUR),
    ]
    steps, _, dead = run_steps(SEED, values)
    assert [[row(o) for o in s] for s in steps] == [
        [],
        [],
        [("unmatched", "early", "k|L|events-0@0")],
        [],
        [("joined", "update", "k|L|events-0@0")],  # the same id: an upsert replaces it
        [],
    ]
    partial, joined = steps[2][0].value, steps[4][0].value
    assert (partial["left"]["ts"], partial["right"]) == (0, None)
    assert (joined["left"]["ts"], joined["right"]["ts"]) == (0, 3 * HOUR)
    assert not dead


def test_seed_a_without_b_is_unmatched_and_its_state_goes_after_six_hours() -> None:
    values = [
        ev("A", "k", 0),
        ev("C", "x", 20 * MIN),  # W past 15m: the unmatched row
        ev("C", "x", 6 * HOUR),  # W = 6h - 1: the A could still match a B at 6h
        ev("C", "x", 6 * HOUR + 1),  # W = 6h: no match possible, the A is dropped
    ]
    steps, live, dead = run_steps(SEED, values)
    assert [[row(o) for o in s] for s in steps] == [
        [],
        [("unmatched", "early", "k|L|events-0@0")],
        [],
        [],  # not repeated when no match is possible any more
        [],
    ]
    assert live == [1, 1, 1, 0, 0]
    assert not dead


def test_a_b_before_its_a_gives_its_own_id_and_right_rows_are_outer_too() -> None:
    values = [ev("B", "k", 0), ev("C", "x", 16 * MIN), ev("A", "k", HOUR)]
    steps, _, _ = run_steps(SEED, values)
    assert [[row(o) for o in s] for s in steps] == [
        [],
        [("unmatched", "early", "k|R|events-0@0")],
        [("joined", "update", "k|R|events-0@0")],
        [],
    ]


def test_unmatched_row_is_final_when_the_watermark_jumps_past_the_point() -> None:
    # The watermark jumps from -1 past both ts + 15m and ts + 6h: no partial row, a final one.
    steps, _, _ = run_steps(SEED, [ev("A", "k", 0), ev("C", "x", 7 * HOUR)])
    assert [[row(o) for o in s] for s in steps] == [
        [],
        [("unmatched", "final", "k|L|events-0@0")],
        [],
    ]


def test_without_emit_unmatched_after_unmatched_rows_wait_for_the_point() -> None:
    cfg = JoinConfig(-10, 10, "left")
    values = [ev("A", "k", 0), ev("B", "j", 5), ev("C", "x", 10), ev("C", "x", 11)]
    steps, live, _ = run_steps(cfg, values)
    # Left join: the B of key j is never emitted alone; the A at W = 10 = 0 + upper.
    assert [[row(o) for o in s] for s in steps] == [
        [],
        [],
        [],
        [("unmatched", "final", "k|L|events-0@0")],
        [],
    ]
    assert live == [1, 2, 2, 1, 0]


def test_bounds_are_inclusive() -> None:
    cfg = JoinConfig(-3, 5, "inner", ooo=100)
    values = [
        ev("A", "k", 100),
        ev("B", "k", 105),  # b.ts = a.ts + upper: joins
        ev("B", "k", 106),  # one past: does not
        ev("B", "k", 97),  # b.ts = a.ts + lower: joins
        ev("B", "k", 96),  # one before: does not
    ]
    steps, _, _ = run_steps(cfg, values)
    assert [[(o.value["left_ts"], o.value["right_ts"]) for o in s] for s in steps] == [
        [],
        [(100, 105)],
        [],
        [(100, 97)],
        [],
        [],
    ]


def test_many_to_many_every_pair_once_and_the_id_rule() -> None:
    cfg = JoinConfig(-10, 10, "inner", ooo=100)
    values = [ev("A", "k", 1), ev("A", "k", 2), ev("B", "k", 3), ev("B", "k", 4)]
    steps, _, _ = run_steps(cfg, values)
    assert [[o.id for o in s] for s in steps] == [
        [],
        [],
        # The first B is each A's first match: each pair takes that A's id.
        ["k|L|events-0@0", "k|L|events-0@1"],
        # The second B: both A's had matched, so pair ids (left identity, right identity).
        ["k|events-0@0|events-0@3", "k|events-0@1|events-0@3"],
        [],
    ]


def test_asymmetric_bounds_behind_the_left_row() -> None:
    # b must precede a by 5..10 ms. A left row's point (a.ts - 5) is behind its own event
    # time: it is dropped (or emitted unmatched) as soon as the watermark passes it.
    cfg = JoinConfig(-10, -5, "outer")
    values = [ev("B", "k", 10), ev("A", "k", 18), ev("A", "k", 30)]
    steps, live, _ = run_steps(cfg, values)
    assert [
        [(o.value["kind"], o.value["left_ts"], o.value["right_ts"]) for o in s] for s in steps
    ] == [
        [],
        [("joined", 18, 10)],  # W = 17: the A (point 13) goes at once; the B (point 20) stays
        [("unmatched", 30, None)],  # W = 29: the B goes too, matched
        [],
    ]
    assert live == [1, 1, 0, 0]


def test_late_rows_go_to_the_dead_letter_output() -> None:
    cfg = JoinConfig(-100, 100, "outer", ooo=5)
    # W = 14 after ts 20: a row at 14 is late (even though partners at 14 +- 100 could
    # exist: its partners with earlier points may be gone); a row at 15 is on time.
    values = [ev("A", "k", 20), ev("B", "k", 14), ev("B", "k", 15)]
    steps, _, dead = run_steps(cfg, values)
    assert [[o.value["right_ts"] for o in s] for s in steps] == [[], [], [15], []]
    assert [(d.reason, d.offset, d.timestamp, d.operator) for d in dead] == [
        (DeadLetterReason.LATE, 1, 14, "j")
    ]


def test_late_rows_go_to_the_late_sink_when_given() -> None:
    late = MemorySink()
    values = [ev("A", "k", 20), ev("B", "k", 3)]
    _, _, dead = run_steps(JoinConfig(-100, 100), values, late=late)
    assert [(o.value["ts"], o.timestamp) for o in late.outputs] == [(3, 3)]
    assert not dead


def test_records_of_neither_side_are_ignored_and_a_raising_predicate_is_a_dead_letter() -> None:
    cfg = JoinConfig(-100, 100, "outer")
    values = [ev("C", "k", 1), {"id": "k", "ts": 2}, ev("A", "k", 3)]
    steps, _, dead = run_steps(cfg, values)
    assert [[row(o)[0] for o in s] for s in steps] == [[], [], [], ["unmatched"]]
    assert [(d.reason, d.offset) for d in dead] == [(DeadLetterReason.USER_CODE, 1)]
    assert "where() predicate" in dead[0].error and "KeyError" in dead[0].error


def test_inner_join_emits_no_unmatched_row_and_right_join_only_right_ones() -> None:
    values = [ev("A", "a", 0), ev("B", "b", 0), ev("C", "x", 1_000)]
    steps, _, _ = run_steps(JoinConfig(-10, 10, "inner"), values)
    assert not any(steps)
    steps, _, _ = run_steps(JoinConfig(-10, 10, "right"), values)
    assert [[row(o) for o in s] for s in steps] == [
        [], [], [("unmatched", "final", "b|R|events-0@1")], []
    ]


def test_the_result_function_shapes_drops_and_fails() -> None:
    values = [ev("A", "k", 0), ev("B", "k", 1), ev("A", "n", 2), ev("A", "z", 3)]

    def shape(r: JoinResult) -> Any:
        if r.key == "n":
            return None
        if r.key == "z":
            raise ValueError("no z")
        assert r.kind is JoinKind.JOINED and r.emit is EmitKind.FINAL and not r.is_update
        return {"id": r.key, "a": r.left["ts"], "b": r.right["ts"], "at": r.timestamp}

    out, dead = MemorySink(), MemorySink()
    with state_dir() as d:
        app = app_for(d, dead, 1)
        events = app.source("events", MemorySource.of("events", values), key="id", timestamp="ts")
        app.join(events.where(is_a), events.where(is_b), within=10, how="left", sink=out)(shape)
        asyncio.run(run_to_end(app.runner()))
    assert [(o.id, o.value, o.timestamp) for o in out.outputs] == [
        ("k|L|events-0@0", {"id": "k", "a": 0, "b": 1, "at": 1}, 1)
    ]
    [letter] = dead.dead
    assert letter.reason is DeadLetterReason.USER_CODE and letter.operator == "shape"
    assert "no z" in letter.error and letter.value["key"] == "z"


def test_a_self_join_pairs_every_row_with_itself_and_its_neighbours() -> None:
    values = [{"id": "k", "ts": 0}, {"id": "k", "ts": 5}]
    out, dead = MemorySink(), MemorySink()
    with state_dir() as d:
        app = app_for(d, dead, 1)
        events = app.source("events", MemorySource.of("events", values), key="id", timestamp="ts")
        app.join(events, events, within=5, sink=out, name="self")(None)
        asyncio.run(run_to_end(app.runner()))
    assert sorted((o.value["left_ts"], o.value["right_ts"]) for o in out.outputs) == [
        (0, 0), (0, 5), (5, 0), (5, 5)
    ]
    assert len({o.id for o in out.outputs}) == 4


def test_two_topics_join_in_one_task() -> None:
    left = MemorySource.of("orders", [{"id": "k", "ts": 0, "o": 1}], partitions=2, key="id")
    right = MemorySource.of(
        "payments", [{"id": "k", "ts": 7, "p": 2}, {"id": "q", "ts": 9}], partitions=2, key="id"
    )
    pk, pq = partition_for("k", 2), partition_for("q", 2)
    q_offset = 1 if pq == pk else 0
    out, dead = MemorySink(), MemorySink()
    with state_dir() as d:
        app = app_for(d, dead, 1000)
        orders = app.source("orders", left, key="id", timestamp="ts")
        payments = app.source("payments", right, key="id", timestamp="ts")

        @app.join(orders, payments, lower=0, upper="10ms", how="outer", sink=out)
        def paid(r: JoinResult) -> Any:
            return (r.kind.value, r.left, r.right)

        assert app.plan.groups() == [("orders", "payments")]
        runner = app.runner()
        runner.open()
        assert {"paid.rows", "paid.timers"} <= set(runner.tasks[0].db.column_family_names())
        asyncio.run(run_to_end(runner))
    assert sorted(out.outputs, key=lambda o: str(o.id)) == [
        Output(
            "k",
            ("joined", {"id": "k", "ts": 0, "o": 1}, {"id": "k", "ts": 7, "p": 2}),
            7,
            f"k|L|orders-{pk}@0",
        ),
        Output("q", ("unmatched", None, {"id": "q", "ts": 9}), 9, f"q|R|payments-{pq}@{q_offset}"),
    ]
    assert not dead.dead


def test_two_topics_with_different_partitions_are_a_config_error() -> None:
    with state_dir() as d:
        app = app_for(d, MemorySink(), 10)
        a = app.source("a", MemorySource("a", partitions=2), key="id", timestamp="ts")
        b = app.source("b", MemorySource("b", partitions=3), key="id", timestamp="ts")
        app.join(a, b, within="1m", name="j")(None)
        with pytest.raises(ConfigError, match=r"different partitions.*co-partition"):
            app.runner().open()


def test_two_topics_with_different_watermarks_are_a_config_error() -> None:
    with state_dir() as d:
        app = app_for(d, MemorySink(), 10)
        a = app.source("a", MemorySource("a"), key="id", timestamp="ts")
        b = app.source("b", MemorySource("b"), key="id", timestamp="ts", max_out_of_orderness=5)
        app.join(a, b, within="1m", name="j")(None)
        with pytest.raises(ConfigError, match="different watermark"):
            app.runner().open()


# -- bounded state on an endless stream ---------------------------------------------------------


async def test_join_state_stays_bounded_on_an_endless_stream(tmp_path: Path) -> None:
    # 40,000 events in time order, one every 10 ms, 4 partitions, 2,000 keys cycling (a key
    # comes back every 40 s). Each A's B comes 3.01 s later, except for a quarter of the keys
    # (a C then moves time on). within = 5 s: a row lives 5 s + the watermark delay of event
    # time, i.e. about 600 events, whatever the stream's length.
    n, keys, within, ooo = 40_000, 2_000, 5_000, 1_000
    values: list[dict[str, Any]] = []
    for i in range(n):
        if i % 2 == 0:
            values.append(ev("A", f"k{i // 2 % keys}", i * 10))
        elif i >= 301 and (k := (i - 301) // 2 % keys) % 4:
            values.append(ev("B", f"k{k}", i * 10))
        else:
            values.append(ev("C", f"c{i % 7}", i * 10))
    source = MemorySource("events", partitions=4, bounded=False)
    for v in values:
        source.add(v, key=v["id"])
    out, dead = MemorySink(), MemorySink()
    app = App("endless", state_dir=tmp_path, checkpoint_interval="1h", dead_letter=dead,
              batch_size=500, clock=ManualClock())
    events = app.source("events", source, key="id", timestamp="ts", max_out_of_orderness=ooo)
    app.join(events.where(is_a), events.where(is_b), within=within, how="left",
             emit_unmatched_after="1s", sink=out, name="j")(lambda r: r.emit.value)
    runner = app.runner()
    runner.open()
    ops = join_ops(runner)
    bound = (within + ooo) // 10 + 200
    peak = 0
    steps = 0
    while any(t.offsets["events"] < len(source.read(t.partition, 0, n)) for t in runner.tasks):
        await runner.step()
        steps += 1
        await runner.checkpoint()
        rows = sum(op.live_rows() for op in ops.values())
        persisted = sum(op.store.count_persisted() for op in ops.values())
        peak = max(peak, rows)
        assert rows <= bound, f"{rows} rows in state after {steps} steps"
        assert persisted <= bound, f"{persisted} keys in RocksDB after {steps} steps"
    # The watermark stands at the last ts - delay - 1: exactly the rows that can still match
    # are left (a row's point is ts + within).
    expected = sum(
        1
        for p, op in ops.items()
        for r in source.read(p, 0, n)
        if r.value["type"] != "C" and r.value["ts"] + within > op.watermark
    )
    assert sum(op.live_rows() for op in ops.values()) == expected
    assert 0 < expected <= bound and peak >= expected, (expected, peak)
    emitted = Counter(out.values)
    b_count = sum(1 for v in values if v["type"] == "B")
    assert emitted["update"] == b_count  # every B's A had emitted its partial row 2 s before
    assert emitted["early"] > b_count and not dead.dead
    await runner.close()
