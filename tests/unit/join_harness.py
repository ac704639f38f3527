"""The engine side of the join tests: building join apps on the local source, running them
record by record, and comparing their outputs with the reference model's."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections import Counter, defaultdict
from collections.abc import Iterator, Sequence
from typing import Any

from evtime import (
    App,
    DeadLetter,
    DeadLetterReason,
    JoinResult,
    ManualClock,
    Output,
)
from evtime.connectors.local import MemorySink, MemorySource, partition_for
from evtime.operators.join import JoinOperator
from evtime.runtime.local import LocalRunner

try:  # tests/unit is not a package: pytest puts this directory on sys.path
    from join_reference import Emission, JoinConfig, JoinRun, one_topic_events, run_events, split
except ImportError:  # pragma: no cover - if tests/unit becomes a package
    from .join_reference import Emission, JoinConfig, JoinRun, one_topic_events, run_events, split

# -- building and driving the engine ------------------------------------------------------


def is_a(value: dict[str, Any]) -> bool:
    return bool(value["type"] == "A")  # no "type": KeyError, a dead letter


def is_b(value: dict[str, Any]) -> bool:
    return bool(value["type"] == "B")


def join_kwargs(cfg: JoinConfig) -> dict[str, Any]:
    return {
        "lower": cfg.lower,
        "upper": cfg.upper,
        "how": cfg.how,
        "emit_unmatched_after": cfg.unmatched_after,
    }


def app_for(state_dir: str, dead: MemorySink, batch_size: int) -> App:
    return App(
        "joins",
        state_dir=state_dir,
        checkpoint_interval="1h",  # checkpoints only when a test asks
        dead_letter=dead,
        batch_size=batch_size,
        clock=ManualClock(),
    )


def build_one_topic(
    state_dir: str,
    source: MemorySource,
    out: MemorySink,
    dead: MemorySink,
    cfg: JoinConfig,
    *,
    batch_size: int = 1,
    late: MemorySink | None = None,
) -> App:
    """One topic of A/B events split by type; the same declarations every time."""
    app = app_for(state_dir, dead, batch_size)
    events = app.source("events", source, key="id", timestamp="ts", max_out_of_orderness=cfg.ooo)

    @app.join(
        events.where(is_a), events.where(is_b), sink=out, late=late, name="j", **join_kwargs(cfg)
    )
    def result(r: JoinResult) -> dict[str, Any]:
        return r.to_dict()

    return app


def build_two_topics(
    state_dir: str,
    left: MemorySource,
    right: MemorySource,
    out: MemorySink,
    dead: MemorySink,
    cfg: JoinConfig,
    *,
    batch_size: int = 1,
) -> App:
    """Two co-partitioned topics, "left" and "right"."""
    app = app_for(state_dir, dead, batch_size)
    lefts = app.source("left", left, key="id", timestamp="ts", max_out_of_orderness=cfg.ooo)
    rights = app.source("right", right, key="id", timestamp="ts", max_out_of_orderness=cfg.ooo)
    app.join(lefts, rights, sink=out, name="j", **join_kwargs(cfg))(None)
    return app


@contextlib.contextmanager
def state_dir() -> Iterator[str]:
    """A fresh state directory (on tmpfs when there is one: RocksDB opens 5x faster)."""
    base = "/dev/shm" if os.access("/dev/shm", os.W_OK) else None
    with tempfile.TemporaryDirectory(prefix="evtime-join-", dir=base) as path:
        yield path


def join_ops(runner: LocalRunner) -> dict[int, JoinOperator]:
    ops: dict[int, JoinOperator] = {}
    for task in runner.tasks:
        [op] = task.operators
        assert isinstance(op, JoinOperator)
        ops[task.partition] = op
    return ops


async def run_to_end(runner: LocalRunner) -> None:
    while not runner.finished:
        await runner.step()
    await runner.close()


async def run_to_empty(runner: LocalRunner) -> None:
    """Run to the end; then no row, key or timer may be left, in memory or in RocksDB."""
    runner.open()
    while not runner.finished:
        await runner.step()
    await runner.checkpoint()
    for p, op in join_ops(runner).items():
        assert op.live_rows() == 0, f"partition {p}: join rows left at the end"
        assert op.store.count_persisted() == 0, f"partition {p}: join rows left in RocksDB"
        assert len(op.timers) == 0, f"partition {p}: join timers left"
    await runner.close()


Stepwise = tuple[list[list[list[Output]]], list[list[int]]]


async def run_stepwise(app: App, out: MemorySink, partitions: int) -> Stepwise:
    """Run with batch size 1; return, per partition, the outputs of every step and the rows in
    state after it. At the end, a checkpoint must leave nothing in RocksDB."""
    assert app.plan.batch_size == 1
    runner: LocalRunner = app.runner()
    runner.open()
    ops = join_ops(runner)
    steps: list[list[list[Output]]] = [[] for _ in range(partitions)]
    live: list[list[int]] = [[] for _ in range(partitions)]
    seen = 0
    while not runner.finished:
        await runner.step()
        for p in range(partitions):
            steps[p].append([])
            live[p].append(ops[p].live_rows())
        for o in out.outputs[seen:]:
            steps[partition_for(o.key, partitions)][-1].append(o)
        seen = len(out.outputs)
    await runner.checkpoint()
    for p, op in ops.items():
        assert op.store.count_persisted() == 0, f"partition {p}: join rows left in RocksDB"
        assert len(op.timers) == 0, f"partition {p}: join timers left"
    await runner.close()
    assert len(out.outputs) == seen, "closing the runner emitted more"
    return steps, live


# -- comparing ------------------------------------------------------------------------------

Canon = tuple[str, str, str, str, str, str, Any, Any]


def canon_output(o: Output) -> Canon:
    """An engine output as the model's fields, after checking its envelope."""
    v = o.value
    assert set(v) == {"key", "left", "right", "kind", "emit", "left_ts", "right_ts", "id"}, v
    assert o.key == v["key"] and o.id == v["id"], o
    stamps = [t for t in (v["left_ts"], v["right_ts"]) if t is not None]
    assert o.timestamp == max(stamps), o
    return (
        v["id"],
        v["kind"],
        v["emit"],
        v["key"],
        repr(v["left"]),
        repr(v["right"]),
        v["left_ts"],
        v["right_ts"],
    )


def canon_emission(e: Emission) -> Canon:
    return (e.id, e.kind, e.emit, e.key, repr(e.left), repr(e.right), e.left_ts, e.right_ts)


def by_id(items: Sequence[Canon]) -> dict[str, list[Canon]]:
    seqs: dict[str, list[Canon]] = defaultdict(list)
    for item in items:
        seqs[item[0]].append(item)
    return dict(seqs)


def check_totals(outputs: Sequence[Output], runs: Sequence[JoinRun]) -> None:
    """Per-id sequences and the multiset of all emissions equal the model's."""
    got = [canon_output(o) for o in outputs]
    want = [canon_emission(e) for r in runs for step in r.steps for e in step]
    assert by_id(got) == by_id(want)
    assert Counter(got) == Counter(want)
    # Ids: a partial row and its update share one; no other two emissions do.
    for rid, seq in by_id(got).items():
        assert [c[2] for c in seq] in (["final"], ["early"], ["early", "update"]), (rid, seq)


def check_dead(
    dead: Sequence[DeadLetter], late: Sequence[str], bad: Sequence[str], topic: str = "events"
) -> None:
    got_late = sorted(
        f"{d.topic}-{d.partition}@{d.offset}" for d in dead if d.reason is DeadLetterReason.LATE
    )
    got_bad = sorted(
        f"{d.topic}-{d.partition}@{d.offset}"
        for d in dead
        if d.reason is DeadLetterReason.USER_CODE
    )
    assert all(d.operator == "j" for d in dead)
    assert len(got_late) + len(got_bad) == len(dead), [d.to_dict() for d in dead]
    assert got_late == sorted(late)
    assert got_bad == sorted(bad)


def check_steps(
    p: int, steps: list[list[Output]], want: list[list[Emission]], describe: list[str]
) -> None:
    """Each step's emissions (batch size 1) are exactly the model's for that step."""
    assert len(steps) >= len(want) - 1
    for i, expected in enumerate(want):
        got = steps[i] if i < len(steps) else []
        if got or expected:
            assert sorted(map(canon_output, got)) == sorted(map(canon_emission, expected)), (
                f"partition {p}: emissions of step {i}: {describe[i] if i < len(describe) else ''}"
            )
    assert not any(steps[len(want) :]), f"partition {p}: output after the end"


def one_topic_model(
    values: Sequence[dict[str, Any]], partitions: int, cfg: JoinConfig
) -> tuple[list[JoinRun], list[str], list[list[str]]]:
    runs, bad, texts = [], [], []
    for p, records in enumerate(split(values, partitions)):
        events, bad_offsets = one_topic_events(records, p, cfg)
        runs.append(run_events(events, cfg))
        bad += [f"events-{p}@{o}" for o in bad_offsets]
        texts.append(
            [f"{r} (W after: {e.watermark})" for r, e in zip(records, events, strict=True)]
        )
    return runs, bad, texts


