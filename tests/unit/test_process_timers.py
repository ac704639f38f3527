"""Keyed process functions: timers and state, against a brute-force model, across restarts.

The engine runs for real (MemorySource -> process function -> MemorySink, one
RocksDB per partition task). The models are the contract written the slow,
obvious way:

* event time: after each record the watermark is
  ``max(previous, max_ts - max_out_of_orderness - 1)``; every registered timer
  whose time is ``<=`` the watermark has fired, exactly once, the earliest
  ``(time, key)`` first (Flink's priority queue: a timer registered by a
  callback joins the queue and fires in order if it is due); at the end of a
  bounded input every remaining timer fires;
* processing time: a timer fires at the first step whose clock reaches it;
* a crash (``LocalRunner.abandon``) loses what followed the last checkpoint,
  outputs included, and the restored run continues as if nothing happened.
"""

from __future__ import annotations

import asyncio
import copy
import os
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st

from evtime import App, ManualClock, ProcessContext, Record, TimeDomain, Timer
from evtime.connectors.local import MemorySink, MemorySource, partition_for
from evtime.runtime.local import LocalRunner
from evtime.runtime.task import task_path
from evtime.state import TaskDB
from evtime.time import MAX_TIMESTAMP, MIN_TIMESTAMP

KEYS = ("a", "b", "c", "d")
Op = tuple[str, int]  # ("r", t): register a timer at t; ("d", t): delete it
Table = dict[tuple[str, int], list[Op]]  # what on_timer does when (key, t) fires


# -- the app under test ---------------------------------------------------------------


def timer_app(
    state_dir: str | Path,
    source: MemorySource,
    out: MemorySink,
    *,
    ooo: int = 0,
    table: Table | None = None,
    batch_size: int = 1,
    clock: ManualClock | None = None,
    dead: MemorySink | None = None,
) -> App:
    """Records carry ``ops`` on the record's key's timers (``domain``: "event" or "proc");
    ``on_timer`` emits ``{"key", "ts", "domain", "wm"}`` and applies ``table``'s ops.
    The same declarations every time: a restart rebuilds the app."""
    app = App(
        "timers",
        state_dir=state_dir,
        checkpoint_interval="1h",
        batch_size=batch_size,
        clock=clock or ManualClock(),
        dead_letter=dead if dead is not None else MemorySink(),
    )
    events = app.source("events", source, key="user", timestamp="ts", max_out_of_orderness=ooo)
    rules = table or {}

    def apply(ctx: ProcessContext, domain: str, ops: Sequence[Sequence[Any]]) -> None:
        timers = ctx.timers
        for op, t in ops:
            if domain == "event":
                if op == "r":
                    timers.register_event_time(t)
                else:
                    timers.delete_event_time(t)
            elif op == "r":
                timers.register_processing_time(t)
            else:
                timers.delete_processing_time(t)

    @app.process(events, sink=out, name="timers")
    def handle(record: Record, ctx: ProcessContext) -> None:
        apply(ctx, record.value.get("domain", "event"), record.value["ops"])

    @handle.on_timer
    def fired(timer: Timer, ctx: ProcessContext) -> None:
        domain = "event" if timer.domain is TimeDomain.EVENT_TIME else "proc"
        ctx.emit(
            {"key": timer.key, "ts": timer.timestamp, "domain": domain, "wm": ctx.watermark},
            id=f"{domain}:{timer.key}@{timer.timestamp}",
        )
        apply(ctx, domain, rules.get((str(timer.key), timer.timestamp), []))

    return app


def fired_of(out: MemorySink, partitions: int = 1, partition: int | None = None) -> list[Any]:
    """(key, ts) of every fired timer, in firing order (of one partition's keys if given)."""
    return [
        (o.value["key"], o.value["ts"])
        for o in out.outputs
        if partition is None or partition_for(o.key, partitions) == partition
    ]


@contextmanager
def fresh_dir() -> Iterator[str]:
    """A state directory for one hypothesis example (tmpfs when there is one)."""
    base = "/dev/shm" if os.access("/dev/shm", os.W_OK) else None
    with tempfile.TemporaryDirectory(prefix="evtime-timers-", dir=base) as path:
        yield path


async def drain(runner: LocalRunner) -> None:
    while not runner.finished:
        await runner.step()


def rec(user: str, ts: int, *ops: Op, domain: str = "event") -> dict[str, Any]:
    return {"user": user, "ts": ts, "domain": domain, "ops": [list(op) for op in ops]}


# -- the event-time model ---------------------------------------------------------------


class EventModel:
    """One partition task's event-time timers, the obvious way."""

    def __init__(self, ooo: int, table: Table) -> None:
        self.ooo = ooo
        self.table = table
        self.wm = MIN_TIMESTAMP
        self.timers: set[tuple[int, str]] = set()
        self.fired: list[tuple[str, int]] = []

    def _apply(self, key: str, ops: Sequence[Sequence[Any]]) -> None:
        for op, t in ops:
            if op == "r":
                self.timers.add((t, key))
            else:
                self.timers.discard((t, key))

    def _fire(self) -> None:
        while self.timers:
            t, key = min(self.timers)
            if t > self.wm:
                return
            self.timers.remove((t, key))
            self.fired.append((key, t))
            self._apply(key, self.table.get((key, t), []))

    def record(self, value: dict[str, Any]) -> None:
        self._apply(value["user"], value["ops"])
        self.wm = max(self.wm, value["ts"] - self.ooo - 1)
        self._fire()

    def end(self) -> None:
        self.wm = MAX_TIMESTAMP
        self._fire()


# -- strategies -------------------------------------------------------------------------

TIMES = st.integers(0, 60)


@st.composite
def event_scenarios(draw: st.DrawFn) -> dict[str, Any]:
    n = draw(st.integers(1, 40))
    ooo = draw(st.sampled_from([0, 3, 10]))
    ops = st.lists(st.tuples(st.sampled_from("rrd"), TIMES), max_size=3)
    records = [
        rec(draw(st.sampled_from(KEYS)), draw(TIMES), *draw(ops)) for _ in range(n)
    ]
    # on_timer of (key, t) registers / deletes timers of key after t: chains end.
    table: Table = {}
    for _ in range(draw(st.integers(0, 8))):
        key, t = draw(st.sampled_from(KEYS)), draw(TIMES)
        later = st.integers(t + 1, 70)
        table[(key, t)] = draw(st.lists(st.tuples(st.sampled_from("rrd"), later), max_size=2))
    partitions = draw(st.sampled_from([1, 2]))
    steps = n + 2
    checkpoints = draw(st.sets(st.integers(0, steps), max_size=3))
    crashes = draw(st.sets(st.integers(0, steps), max_size=2))
    return {
        "records": records,
        "ooo": ooo,
        "table": table,
        "partitions": partitions,
        "checkpoints": checkpoints,
        "crashes": crashes,
    }


def _describe(s: dict[str, Any]) -> None:
    note(f"ooo={s['ooo']} partitions={s['partitions']} table={s['table']}")
    note(f"checkpoints after steps {sorted(s['checkpoints'])}, crashes {sorted(s['crashes'])}")
    for i, r in enumerate(s["records"]):
        note(f"  {i}: {r['user']} ts={r['ts']} ops={r['ops']}")


async def _run_event_scenario(s: dict[str, Any], path: str) -> None:
    """Step the engine (batch size 1) and compare every partition after every step."""
    parts = s["partitions"]
    source = MemorySource.of("events", s["records"], partitions=parts, key="user")
    per_part = [[r.value for r in source.read(p, 0, 10**6)] for p in range(parts)]
    out = MemorySink()

    def build() -> LocalRunner:
        app = timer_app(path, source, out, ooo=s["ooo"], table=s["table"])
        runner: LocalRunner = app.runner()
        return runner

    models = [EventModel(s["ooo"], s["table"]) for _ in range(parts)]
    consumed = [0] * parts
    ended = [False] * parts
    saved = (copy.deepcopy(models), list(consumed), list(ended), 0)
    runner = build()
    step = 0
    while not runner.finished:
        await runner.step()
        for p in range(parts):
            if consumed[p] < len(per_part[p]):
                models[p].record(per_part[p][consumed[p]])
                consumed[p] += 1
            elif not ended[p]:
                models[p].end()
                ended[p] = True
            got = fired_of(out, parts, p)
            assert got == models[p].fired, (
                f"step {step}, partition {p} (watermark {models[p].wm}): fired {got}, "
                f"expected {models[p].fired}"
            )
        if step in s["checkpoints"]:
            await runner.checkpoint()
            saved = (copy.deepcopy(models), list(consumed), list(ended), len(out.outputs))
        if step in s["crashes"]:
            runner.abandon()
            models = copy.deepcopy(saved[0])
            consumed, ended = list(saved[1]), list(saved[2])
            del out.outputs[saved[3] :]  # what the crash took back: replayed from the checkpoint
            runner = build()
        step += 1
    await runner.close()
    for p in range(parts):
        assert fired_of(out, parts, p) == models[p].fired
        assert not models[p].timers


# -- event-time timers ----------------------------------------------------------------------


@settings(
    max_examples=int(os.environ.get("EVTIME_TIMER_EXAMPLES", "80")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(event_scenarios())
def test_event_timers_fire_in_order_exactly_once_when_the_watermark_passes_them(
    s: dict[str, Any],
) -> None:
    _describe(s)
    with fresh_dir() as path:
        asyncio.run(_run_event_scenario(s, path))


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(event_scenarios(), st.sampled_from([2, 7, 1000]))
def test_event_timers_do_not_depend_on_the_batch_size(s: dict[str, Any], batch: int) -> None:
    _describe(s)

    async def run(path: str, size: int) -> list[Any]:
        out = MemorySink()
        source = MemorySource.of("events", s["records"], partitions=s["partitions"], key="user")
        runner = timer_app(
            path, source, out, ooo=s["ooo"], table=s["table"], batch_size=size
        ).runner()
        await drain(runner)
        await runner.close()
        return sorted(fired_of(out))

    with fresh_dir() as one, fresh_dir() as many:
        assert asyncio.run(run(many, batch)) == asyncio.run(run(one, 1))


async def test_event_timer_fires_when_the_watermark_reaches_it_not_before(tmp_path: Path) -> None:
    # ooo = 0: the watermark after a record at ts is ts - 1.
    source = MemorySource.of(
        "events",
        [rec("a", 0, ("r", 100)), rec("a", 100), rec("a", 101), rec("a", 300)],
    )
    out = MemorySink()
    runner = timer_app(tmp_path, source, out).runner()
    await runner.step()
    await runner.step()  # watermark 99
    assert out.values == []
    await runner.step()  # watermark 100
    assert out.values == [{"key": "a", "ts": 100, "domain": "event", "wm": 100}]
    await drain(runner)
    await runner.close()
    assert len(out.values) == 1


async def test_event_timers_of_many_keys_fire_in_timestamp_order(tmp_path: Path) -> None:
    source = MemorySource.of(
        "events",
        [
            rec("c", 0, ("r", 30), ("r", 10)),
            rec("a", 0, ("r", 20), ("r", 10)),
            rec("b", 0, ("r", 10)),
            rec("z", 1_000),
        ],
    )
    out = MemorySink()
    runner = timer_app(tmp_path, source, out, batch_size=100).runner()
    await drain(runner)
    await runner.close()
    assert fired_of(out) == [("a", 10), ("b", 10), ("c", 10), ("a", 20), ("c", 30)]


async def test_registering_the_same_timer_twice_fires_it_once(tmp_path: Path) -> None:
    source = MemorySource.of(
        "events", [rec("a", 0, ("r", 50), ("r", 50)), rec("a", 10, ("r", 50)), rec("a", 100)]
    )
    out = MemorySink()
    runner = timer_app(tmp_path, source, out).runner()
    await runner.step()
    await runner.checkpoint()  # the timer is now persisted: the next registration too
    await drain(runner)
    await runner.close()
    assert fired_of(out) == [("a", 50)]


async def test_deleting_a_timer_prevents_it(tmp_path: Path) -> None:
    source = MemorySource.of(
        "events",
        [
            rec("a", 0, ("r", 50), ("r", 60)),
            rec("b", 0, ("r", 50)),
            rec("a", 10, ("d", 50)),
            rec("a", 20, ("d", 999)),  # deleting a timer that does not exist is a no-op
            rec("a", 100),
        ],
    )
    out = MemorySink()
    runner = timer_app(tmp_path, source, out).runner()
    await drain(runner)
    await runner.close()
    assert fired_of(out) == [("b", 50), ("a", 60)]


async def test_deleting_a_persisted_timer_that_was_registered_again_prevents_it(
    tmp_path: Path,
) -> None:
    # register -> snapshot -> register again -> delete: both copies must go.
    source = MemorySource.of(
        "events", [rec("a", 0, ("r", 50)), rec("a", 10, ("r", 50), ("d", 50)), rec("a", 100)]
    )
    out = MemorySink()
    runner = timer_app(tmp_path, source, out).runner()
    await runner.step()
    await runner.checkpoint()
    await drain(runner)
    await runner.close()
    assert fired_of(out) == []


async def test_a_timer_registered_again_after_it_fired_fires_again(tmp_path: Path) -> None:
    # The first firing popped a persisted timer; registering the same (time, key) later is a
    # new timer and is due at once.
    source = MemorySource.of(
        "events", [rec("a", 0, ("r", 50)), rec("a", 100), rec("a", 100, ("r", 50)), rec("a", 101)]
    )
    out = MemorySink()
    runner = timer_app(tmp_path, source, out).runner()
    await runner.step()
    await runner.checkpoint()
    await runner.step()  # watermark 99: fires 50
    assert fired_of(out) == [("a", 50)]
    await runner.step()  # registers 50 again: already due
    assert fired_of(out) == [("a", 50), ("a", 50)]
    await drain(runner)
    await runner.close()
    assert fired_of(out) == [("a", 50), ("a", 50)]


async def test_a_timer_registered_behind_the_watermark_fires_right_away(tmp_path: Path) -> None:
    source = MemorySource.of(
        "events", [rec("a", 100), rec("a", 50, ("r", 20)), rec("a", 60), rec("a", 1_000)]
    )
    out = MemorySink()
    runner = timer_app(tmp_path, source, out).runner()
    await runner.step()
    await runner.step()  # the record does not move the watermark (99), the timer is due
    assert fired_of(out) == [("a", 20)]
    await drain(runner)
    await runner.close()
    assert fired_of(out) == [("a", 20)]


async def test_a_due_timer_is_not_lost_by_a_checkpoint_and_restore(tmp_path: Path) -> None:
    # Registered behind the watermark, then a snapshot: the restored task must not fire it
    # while restoring (where outputs are discarded) without it having been emitted before.
    source = MemorySource.of("events", [rec("a", 100), rec("a", 50, ("r", 20)), rec("a", 60)])
    out = MemorySink()
    runner = timer_app(tmp_path, source, out).runner()
    await runner.step()
    await runner.step()
    await runner.checkpoint()
    runner.abandon()
    runner = timer_app(tmp_path, source, out).runner()
    await drain(runner)
    await runner.close()
    assert fired_of(out) == [("a", 20)]


async def test_a_timer_registered_from_on_timer_that_is_already_due_fires_too(
    tmp_path: Path,
) -> None:
    # When a@10 fires (watermark 99) it registers a@15 (due: fires in order, before b@20),
    # a@5 (behind the timer that fired: due, fires in the same round) and a@200 (not due).
    table: Table = {("a", 10): [("r", 15), ("r", 5), ("r", 200)]}
    source = MemorySource.of(
        "events", [rec("a", 0, ("r", 10)), rec("b", 0, ("r", 20)), rec("a", 100), rec("a", 150)]
    )
    out = MemorySink()
    runner = timer_app(tmp_path, source, out, table=table).runner()
    for _ in range(3):
        await runner.step()
    # a@5 did not exist before a@10 fired; then the queue holds a@5, a@15, b@20.
    assert fired_of(out) == [("a", 10), ("a", 5), ("a", 15), ("b", 20)]
    assert [v["wm"] for v in out.values] == [99] * 4
    await drain(runner)
    await runner.close()
    assert fired_of(out)[4:] == [("a", 200)]


async def test_on_timer_deleting_a_due_timer_of_its_key_prevents_it(tmp_path: Path) -> None:
    table: Table = {("a", 10): [("d", 20)]}
    source = MemorySource.of(
        "events", [rec("a", 0, ("r", 10), ("r", 20), ("r", 30)), rec("a", 100)]
    )
    out = MemorySink()
    runner = timer_app(tmp_path, source, out, table=table).runner()
    await drain(runner)
    await runner.close()
    assert fired_of(out) == [("a", 10), ("a", 30)]


async def test_remaining_event_timers_fire_at_the_end_of_a_bounded_input(tmp_path: Path) -> None:
    source = MemorySource.of("events", [rec("a", 0, ("r", 10**12)), rec("b", 5, ("r", 7))])
    out = MemorySink()
    runner = timer_app(tmp_path, source, out).runner()
    await drain(runner)
    await runner.close()
    assert fired_of(out) == [("b", 7), ("a", 10**12)]
    assert [v["wm"] for v in out.values] == [MAX_TIMESTAMP, MAX_TIMESTAMP]


# -- processing-time timers ------------------------------------------------------------------


async def test_processing_time_timers_fire_when_the_clock_reaches_them_not_before(
    tmp_path: Path,
) -> None:
    clock = ManualClock(1_000)
    source = MemorySource("events", bounded=False)
    out = MemorySink()
    runner = timer_app(tmp_path, source, out, clock=clock).runner()
    source.add(rec("a", 0, ("r", 1_500), ("r", 2_000), domain="proc"), key="a")
    source.add(rec("b", 0, ("r", 1_500), domain="proc"), key="b")
    await runner.step()
    assert out.values == []
    clock.advance(499)  # 1_499
    await runner.step()
    assert out.values == []
    clock.advance(1)  # 1_500
    await runner.step()
    assert fired_of(out) == [("a", 1_500), ("b", 1_500)]
    assert {v["domain"] for v in out.values} == {"proc"}
    await runner.step()  # nothing fires twice
    clock.advance("499ms")
    await runner.step()
    assert len(out.values) == 2
    clock.advance(1)  # 2_000
    await runner.step()
    assert fired_of(out)[2:] == [("a", 2_000)]
    clock.advance("1h")
    await runner.step()
    await runner.close()
    assert len(out.values) == 3


async def test_processing_time_timers_ignore_the_watermark(tmp_path: Path) -> None:
    # A bounded input ends (watermark +inf) without firing processing-time timers.
    clock = ManualClock(0)
    source = MemorySource.of("events", [rec("a", 10**9, ("r", 100), domain="proc")])
    out = MemorySink()
    runner = timer_app(tmp_path, source, out, clock=clock).runner()
    await drain(runner)
    assert out.values == []
    clock.set(100)
    await runner.step()
    await runner.close()
    assert fired_of(out) == [("a", 100)]


async def test_deleting_a_processing_time_timer_prevents_it(tmp_path: Path) -> None:
    clock = ManualClock(0)
    source = MemorySource("events", bounded=False)
    out = MemorySink()
    runner = timer_app(tmp_path, source, out, clock=clock).runner()
    source.add(rec("a", 0, ("r", 100), ("r", 200), domain="proc"), key="a")
    await runner.step()
    await runner.checkpoint()
    source.add(rec("a", 0, ("d", 100), domain="proc"), key="a")
    await runner.step()
    clock.set(500)
    await runner.step()
    await runner.close()
    assert fired_of(out) == [("a", 200)]


class ProcModel:
    """Processing-time timers of one task: each step, after its record, fires what is due."""

    def __init__(self) -> None:
        self.timers: set[tuple[int, str]] = set()
        self.fired: list[tuple[str, int]] = []

    def record(self, value: dict[str, Any]) -> None:
        for op, t in value["ops"]:
            if op == "r":
                self.timers.add((t, value["user"]))
            else:
                self.timers.discard((t, value["user"]))

    def tick(self, now: int) -> None:
        for t, key in sorted(x for x in self.timers if x[0] <= now):
            self.timers.remove((t, key))
            self.fired.append((key, t))


@st.composite
def proc_scenarios(draw: st.DrawFn) -> dict[str, Any]:
    n = draw(st.integers(1, 30))
    ops = st.lists(st.tuples(st.sampled_from("rrd"), st.integers(0, 300)), max_size=3)
    records = [rec(draw(st.sampled_from(KEYS)), 0, *draw(ops), domain="proc") for _ in range(n)]
    steps = n + 6
    advances = draw(st.lists(st.integers(0, 40), min_size=steps, max_size=steps))
    checkpoints = draw(st.sets(st.integers(0, steps), max_size=3))
    crashes = draw(st.sets(st.integers(0, steps), max_size=2))
    return {
        "records": records,
        "advances": advances,
        "checkpoints": checkpoints,
        "crashes": crashes,
    }


@settings(
    max_examples=int(os.environ.get("EVTIME_TIMER_EXAMPLES", "80")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(proc_scenarios())
def test_processing_time_timers_fire_on_the_clock_exactly_once_across_crashes(
    s: dict[str, Any],
) -> None:
    note(f"advances {s['advances']}")
    note(f"checkpoints {sorted(s['checkpoints'])}, crashes {sorted(s['crashes'])}")
    for i, r in enumerate(s["records"]):
        note(f"  {i}: {r['user']} ops={r['ops']}")

    async def scenario(path: str) -> None:
        clock = ManualClock(0)
        source = MemorySource.of("events", s["records"])
        out = MemorySink()

        def build() -> LocalRunner:
            runner: LocalRunner = timer_app(path, source, out, clock=clock).runner()
            return runner

        runner = build()
        model, consumed = ProcModel(), 0
        saved = (copy.deepcopy(model), consumed, 0)
        for step, advance in enumerate(s["advances"]):
            clock.advance(advance)
            await runner.step()
            if consumed < len(s["records"]):
                model.record(s["records"][consumed])
                consumed += 1
            model.tick(clock.now_ms())
            assert fired_of(out) == model.fired, f"step {step} at {clock.now_ms()}"
            assert all(t <= clock.now_ms() for _k, t in fired_of(out))
            if step in s["checkpoints"]:
                await runner.checkpoint()
                saved = (copy.deepcopy(model), consumed, len(out.outputs))
            if step in s["crashes"]:
                runner.abandon()
                model, consumed = copy.deepcopy(saved[0]), saved[1]
                del out.outputs[saved[2] :]
                runner = build()
        clock.advance(10_000)
        await drain(runner)  # one record a step, each step ticks at the same time
        for value in s["records"][consumed:]:
            model.record(value)
            model.tick(clock.now_ms())
        await runner.step()
        await runner.close()
        model.tick(clock.now_ms())
        assert fired_of(out) == model.fired
        assert not model.timers

    with fresh_dir() as path:
        asyncio.run(scenario(path))


# -- timers survive a snapshot and restore --------------------------------------------------


async def test_event_time_timers_survive_a_restore_and_fire_exactly_once(tmp_path: Path) -> None:
    values = [rec(k, i * 10, ("r", i * 10 + 25)) for i, k in enumerate("abcabcabca")]
    values.append(rec("z", 1_000))

    async def uninterrupted() -> list[Any]:
        out = MemorySink()
        runner = timer_app(tmp_path / "ref", MemorySource.of("events", values), out).runner()
        await drain(runner)
        await runner.close()
        return fired_of(out)

    expected = await uninterrupted()
    assert sorted(t for _k, t in expected) == [i * 10 + 25 for i in range(10)]

    source = MemorySource.of("events", values)
    out = MemorySink()
    runner = timer_app(tmp_path / "run", source, out).runner()
    for _ in range(5):
        await runner.step()
    before = fired_of(out)
    assert 0 < len(before) < 10, "some timers fired, some are still pending at the checkpoint"
    await runner.checkpoint()
    runner.abandon()

    runner = timer_app(tmp_path / "run", source, out).runner()
    runner.open()
    assert runner.tasks[0].restored
    assert fired_of(out) == before, "restoring fires nothing"
    await drain(runner)
    await runner.close()
    assert fired_of(out) == expected


async def test_event_time_timers_fired_after_the_checkpoint_fire_again_after_a_crash(
    tmp_path: Path,
) -> None:
    # At-least-once: what fired after the last snapshot is replayed, nothing is lost and the
    # outputs of the checkpointed prefix plus the restored run equal an uninterrupted run.
    values = [rec("a", i * 10, ("r", i * 10 + 15)) for i in range(10)] + [rec("a", 1_000)]
    ref = MemorySink()
    r = timer_app(tmp_path / "ref", MemorySource.of("events", values), ref).runner()
    await drain(r)
    await r.close()

    source = MemorySource.of("events", values)
    out = MemorySink()
    runner = timer_app(tmp_path / "run", source, out).runner()
    for _ in range(4):
        await runner.step()
    await runner.checkpoint()
    committed = len(out.outputs)
    for _ in range(4):
        await runner.step()
    assert len(out.outputs) > committed
    runner.abandon()
    replayed = {o.id for o in out.outputs[committed:]}
    del out.outputs[committed:]

    runner = timer_app(tmp_path / "run", source, out).runner()
    await drain(runner)
    await runner.close()
    assert fired_of(out) == fired_of(ref)
    assert replayed <= {o.id for o in out.outputs[committed:]}


async def test_processing_time_timers_survive_a_restore_and_fire_exactly_once(
    tmp_path: Path,
) -> None:
    clock = ManualClock(0)
    source = MemorySource.of(
        "events",
        [
            rec("a", 0, ("r", 100), ("r", 300), domain="proc"),
            rec("b", 0, ("r", 200), ("r", 300), domain="proc"),
        ],
    )
    out = MemorySink()
    runner = timer_app(tmp_path, source, out, clock=clock).runner()
    await drain(runner)
    clock.set(150)
    await runner.step()
    assert fired_of(out) == [("a", 100)]
    await runner.checkpoint()
    runner.abandon()

    runner = timer_app(tmp_path, source, out, clock=clock).runner()
    await runner.step()
    assert fired_of(out) == [("a", 100)], "nothing new is due at 150, a@100 does not refire"
    clock.set(299)
    await runner.step()
    assert fired_of(out) == [("a", 100), ("b", 200)]
    clock.set(300)
    await runner.step()
    await runner.step()
    await runner.close()
    assert fired_of(out) == [("a", 100), ("b", 200), ("a", 300), ("b", 300)]


async def test_processing_time_timers_due_during_the_outage_fire_once_on_restart(
    tmp_path: Path,
) -> None:
    clock = ManualClock(0)
    source = MemorySource.of("events", [rec("a", 0, ("r", 100), ("r", 5_000), domain="proc")])
    out = MemorySink()
    runner = timer_app(tmp_path, source, out, clock=clock).runner()
    await drain(runner)
    await runner.checkpoint()
    runner.abandon()
    clock.set(10_000)  # the worker was down while both became due
    runner = timer_app(tmp_path, source, out, clock=clock).runner()
    await runner.step()
    await runner.step()
    await runner.close()
    assert fired_of(out) == [("a", 100), ("a", 5_000)]


# -- value and map state ------------------------------------------------------------------------


def state_app(
    state_dir: str | Path,
    source: MemorySource,
    out: MemorySink,
    *,
    clock: ManualClock | None = None,
    ttl: int | None = None,
) -> App:
    """Counts records per key (value state) and per key and ``kind`` (map state); a record
    with ``"read": true`` only reports what the state holds."""
    app = App(
        "state",
        state_dir=state_dir,
        checkpoint_interval="1h",
        batch_size=1,
        clock=clock or ManualClock(),
        dead_letter=MemorySink(),
    )
    events = app.source("events", source, key="user", timestamp="ts")

    @app.process(events, sink=out, name="counts")
    def count(record: Record, ctx: ProcessContext) -> None:
        total = ctx.value_state("total", ttl=ttl)
        kinds = ctx.map_state("kinds", ttl=ttl)
        kind = record.value.get("kind", "x")
        if not record.value.get("read"):
            total.set(total.get(0) + 1)
            kinds.put(kind, kinds.get(kind, 0) + 1)
        ctx.emit(
            {
                "total": total.get(0),
                "kinds": dict(kinds.items()),
                "has": kind in kinds,
                "seq": record.value.get("seq"),
            }
        )

    return app


def state_values(n: int) -> list[dict[str, Any]]:
    return [
        {"user": "abc"[i % 3], "kind": "pq"[i % 2], "ts": i, "seq": i} for i in range(n)
    ]


async def test_value_and_map_state_survive_a_snapshot_and_restore(tmp_path: Path) -> None:
    values = state_values(30)
    ref = MemorySink()
    r = state_app(tmp_path / "ref", MemorySource.of("events", values), ref).runner()
    await drain(r)
    await r.close()
    assert ref.values[-1]["total"] == 10
    assert ref.values[-1]["kinds"] == {"p": 5, "q": 5}

    source = MemorySource.of("events", values)
    out = MemorySink()
    runner = state_app(tmp_path / "run", source, out).runner()
    for _ in range(12):
        await runner.step()
    await runner.checkpoint()
    committed = len(out.outputs)
    for _ in range(7):  # state written here is lost with the crash, and rebuilt by the replay
        await runner.step()
    runner.abandon()
    del out.outputs[committed:]

    runner = state_app(tmp_path / "run", source, out).runner()
    await drain(runner)
    await runner.close()
    assert out.values == ref.values


async def test_state_written_between_checkpoints_of_a_closed_runner_is_kept(
    tmp_path: Path,
) -> None:
    source = MemorySource.of("events", state_values(9))
    out = MemorySink()
    runner = state_app(tmp_path, source, out).runner()
    await drain(runner)
    await runner.close()  # checkpoints
    more = MemorySource.of(
        "events", [*state_values(9), {"user": "a", "kind": "p", "ts": 99, "read": True}]
    )
    out2 = MemorySink()
    runner = state_app(tmp_path, more, out2).runner()
    await drain(runner)
    await runner.close()
    assert out2.values == [{"total": 3, "kinds": {"p": 2, "q": 1}, "has": True, "seq": None}]


def _persisted_state_entries(tmp_path: Path, app: App) -> int:
    """Keys of the process function's state column family in RocksDB (app closed)."""
    db = TaskDB(task_path(app.plan, ("events",), 0), [])
    try:
        return db.store("counts.state").count_persisted()
    finally:
        db.close()


async def test_state_with_ttl_expires_and_is_removed_from_rocksdb(tmp_path: Path) -> None:
    clock = ManualClock(10_000)
    source = MemorySource("events", bounded=False)
    out = MemorySink()
    app = state_app(tmp_path, source, out, clock=clock, ttl=1_000)
    runner = app.runner()
    source.add({"user": "a", "kind": "p", "ts": 1})
    source.add({"user": "b", "kind": "q", "ts": 2})
    await runner.step()
    await runner.step()
    await runner.checkpoint()
    op = runner.tasks[0].operators[0]
    assert op.live_state() == 4  # total and kinds.p of a, total and kinds.q of b

    clock.set(10_999)  # one ms before expiry: still there
    source.add({"user": "a", "kind": "p", "ts": 3, "read": True})
    await runner.step()
    assert out.values[-1] == {"total": 1, "kinds": {"p": 1}, "has": True, "seq": None}

    clock.set(11_000)  # expired: reads give the default, even before the cleanup ran
    source.add({"user": "a", "kind": "p", "ts": 4, "read": True})
    await runner.step()
    assert out.values[-1] == {"total": 0, "kinds": {}, "has": False, "seq": None}

    await runner.step()
    await runner.checkpoint()
    assert op.live_state() == 0, "expired entries are removed, not just hidden"
    source.close_input()
    await drain(runner)
    await runner.close()
    assert _persisted_state_entries(tmp_path, app) == 0


async def test_expired_state_that_is_never_read_again_is_removed(tmp_path: Path) -> None:
    clock = ManualClock(0)
    values = [{"user": f"u{i}", "kind": "p", "ts": i} for i in range(50)]
    source = MemorySource.of("events", values)
    app = state_app(tmp_path, source, MemorySink(), clock=clock, ttl=60_000)
    runner = app.runner()
    await drain(runner)
    await runner.checkpoint()
    assert runner.tasks[0].operators[0].live_state() == 100
    clock.advance("59s")
    await runner.step()
    await runner.checkpoint()
    assert runner.tasks[0].operators[0].live_state() == 100
    clock.advance("1s")
    await runner.step()
    await runner.close()
    assert _persisted_state_entries(tmp_path, app) == 0


async def test_rewriting_a_ttl_value_extends_its_life(tmp_path: Path) -> None:
    clock = ManualClock(0)
    source = MemorySource("events", bounded=False)
    out = MemorySink()
    app = state_app(tmp_path, source, out, clock=clock, ttl=1_000)
    runner = app.runner()
    source.add({"user": "a", "kind": "p", "ts": 1})
    await runner.step()
    clock.set(800)
    source.add({"user": "a", "kind": "p", "ts": 2})  # rewritten: expires at 1_800
    await runner.step()
    clock.set(1_500)  # the first write's cleanup timer fires and must not remove it
    await runner.step()
    source.add({"user": "a", "kind": "p", "ts": 3, "read": True})
    await runner.step()
    assert out.values[-1]["total"] == 2
    clock.set(1_800)
    await runner.step()
    await runner.checkpoint()
    assert runner.tasks[0].operators[0].live_state() == 0
    await runner.close()


async def test_ttl_cleanup_survives_a_restore(tmp_path: Path) -> None:
    clock = ManualClock(0)
    source = MemorySource.of("events", [{"user": "a", "kind": "p", "ts": 1}])
    app = state_app(tmp_path, source, MemorySink(), clock=clock, ttl=1_000)
    runner = app.runner()
    await drain(runner)
    await runner.checkpoint()
    runner.abandon()
    clock.set(5_000)
    app = state_app(tmp_path, source, MemorySink(), clock=clock, ttl=1_000)
    runner = app.runner()
    await runner.step()
    await runner.close()
    assert _persisted_state_entries(tmp_path, app) == 0


@pytest.mark.parametrize("ttl", [None, 1_000])
async def test_map_state_clear_and_delete_remove_entries(tmp_path: Path, ttl: int | None) -> None:
    app = App(
        "maps",
        state_dir=tmp_path,
        batch_size=1,
        clock=ManualClock(0),
        dead_letter=MemorySink(),
    )
    values = [
        {"user": "a", "ts": 1, "op": "put", "f": "x"},
        {"user": "a", "ts": 2, "op": "put", "f": "y"},
        {"user": "b", "ts": 3, "op": "put", "f": "x"},
        {"user": "a", "ts": 4, "op": "delete", "f": "x"},
        {"user": "a", "ts": 5, "op": "read"},
        {"user": "a", "ts": 6, "op": "clear"},
        {"user": "a", "ts": 7, "op": "read"},
        {"user": "b", "ts": 8, "op": "read"},
    ]
    events = app.source("events", MemorySource.of("events", values), key="user", timestamp="ts")
    out = MemorySink()

    @app.process(events, sink=out)
    def maps(record: Record, ctx: ProcessContext) -> None:
        m = ctx.map_state("m", ttl=ttl)
        op = record.value["op"]
        if op == "put":
            m.put(record.value["f"], record.timestamp)
        elif op == "delete":
            m.delete(record.value["f"])
        elif op == "clear":
            m.clear()
        else:
            ctx.emit(sorted(m.keys()))

    await app.run_async()
    assert out.values == [["y"], [], ["x"]]
