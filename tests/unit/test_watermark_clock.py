"""Watermarks that follow the wall clock when a live partition is quiet
(``advance_when_idle``), with a manual clock so that every step is exact."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from evtime import App, Count, Tumbling, WindowResult
from evtime.connectors.local import MemorySink, MemorySource
from evtime.errors import ConfigError
from evtime.runtime.local import LocalRunner
from evtime.time import MIN_TIMESTAMP, ManualClock
from evtime.watermarks import WatermarkStrategy, WatermarkTracker, is_late

OOO = 2_000
IDLE = 30_000
LIVE = WatermarkStrategy.bounded(OOO, idle_timeout=IDLE, advance_when_idle=True)
NOW = 1_780_000_000_000


def _tracker(strategy: WatermarkStrategy = LIVE) -> tuple[WatermarkTracker, ManualClock]:
    clock = ManualClock(NOW)
    return WatermarkTracker(strategy, [0, 1], now_ms=clock.now_ms()), clock


def test_a_quiet_caught_up_partition_follows_the_clock_after_idle_timeout() -> None:
    tracker, clock = _tracker()
    tracker.on_event(0, NOW - 1_000, clock.now_ms())
    tracker.on_event(1, NOW - 1_000, clock.now_ms())
    held = NOW - 1_000 - OOO - 1
    assert tracker.current == held
    clock.advance(IDLE)  # quiet, but not for more than idle_timeout yet
    assert tracker.follow_clock(clock.now_ms(), caught_up={0, 1}) == held
    assert not tracker.follows_clock(0)
    clock.advance(1)
    assert tracker.follow_clock(clock.now_ms(), caught_up={0, 1}) == clock.now_ms() - OOO - 1
    assert tracker.follows_clock(0) and tracker.follows_clock(1)
    clock.advance("10s")
    assert tracker.follow_clock(clock.now_ms(), caught_up={0, 1}) == clock.now_ms() - OOO - 1


def test_a_lagging_partition_does_not_follow_the_clock() -> None:
    tracker, clock = _tracker()
    tracker.on_event(0, NOW, clock.now_ms())
    tracker.on_event(1, NOW, clock.now_ms())
    clock.advance("5m")
    # Partition 1 is behind its end (a backlog, a replay): it holds the task's watermark
    # at its own, however long the wall clock runs; partition 0 alone cannot move it.
    assert tracker.follow_clock(clock.now_ms(), caught_up={0}) == NOW - OOO - 1
    assert tracker.follows_clock(0) and not tracker.follows_clock(1)
    tracker.on_event(1, NOW + 10, clock.now_ms())  # the backlog's next record
    assert tracker.current == NOW + 10 - OOO - 1
    assert tracker.follow_clock(clock.now_ms(), caught_up={0}) == NOW + 10 - OOO - 1


def test_a_record_older_than_the_clocks_watermark_is_late() -> None:
    tracker, clock = _tracker()
    tracker.on_event(0, NOW, clock.now_ms())
    tracker.on_event(1, NOW, clock.now_ms())
    clock.advance("1m")
    watermark = tracker.follow_clock(clock.now_ms(), caught_up={0, 1})
    assert watermark == clock.now_ms() - OOO - 1
    old = NOW + 5_000  # produced a minute ago, arriving only now
    assert is_late(old, watermark)
    # It makes its partition an ordinary one again; the watermark does not go back.
    assert tracker.on_event(0, old, clock.now_ms()) == watermark
    assert not tracker.follows_clock(0)
    assert not is_late(clock.now_ms() - OOO, tracker.current)


def test_a_partition_that_never_had_a_record_follows_the_clock_once_idle() -> None:
    tracker, clock = _tracker()
    tracker.on_event(0, NOW, clock.now_ms())
    assert tracker.current == MIN_TIMESTAMP  # partition 1 holds it
    clock.advance(IDLE + 1)
    assert tracker.follow_clock(clock.now_ms(), caught_up={0, 1}) == clock.now_ms() - OOO - 1


def test_without_advance_when_idle_the_clock_moves_nothing() -> None:
    tracker, clock = _tracker(WatermarkStrategy.bounded(OOO, idle_timeout=IDLE))
    tracker.on_event(0, NOW, clock.now_ms())
    tracker.on_event(1, NOW, clock.now_ms())
    clock.advance("1h")
    assert tracker.follow_clock(clock.now_ms(), caught_up={0, 1}) == NOW - OOO - 1
    assert not tracker.follows_clock(0)


def test_advance_when_idle_needs_an_idle_timeout() -> None:
    with pytest.raises(ConfigError, match="needs idle_timeout"):
        WatermarkStrategy.bounded("5s", advance_when_idle=True)


steps = st.lists(
    st.tuples(
        st.sampled_from(["record", "tick"]),
        st.integers(0, 1),
        st.integers(-5_000, 60_000),  # event time offset
        st.integers(0, 40_000),  # wall-clock step
    ),
    max_size=60,
)


@given(steps)
def test_while_behind_the_clock_changes_nothing(script: list[tuple[str, int, int, int]]) -> None:
    """A replay (no partition ever caught up) gives exactly the watermarks of a tracker
    without idleness, whatever the wall clock does: nothing depends on the clock."""
    live, _ = _tracker()
    plain, _ = _tracker(WatermarkStrategy.bounded(OOO))
    now = NOW
    for kind, partition, ts, step in script:
        now += step
        if kind == "record":
            assert live.on_event(partition, NOW + ts, now) == plain.on_event(
                partition, NOW + ts, now
            )
        else:
            assert live.follow_clock(now, caught_up=()) == plain.on_tick(now)


@given(steps, st.sets(st.integers(0, 1)))
def test_the_clock_never_moves_a_watermark_back_nor_past_now_minus_the_bound(
    script: list[tuple[str, int, int, int]], caught_up: set[int]
) -> None:
    tracker, _ = _tracker()
    now = NOW
    last = tracker.current
    highest = MIN_TIMESTAMP
    for kind, partition, ts, step in script:
        now += step
        if kind == "record":
            tracker.on_event(partition, NOW + ts, now)
            highest = max(highest, NOW + ts)
        else:
            tracker.follow_clock(now, caught_up)
        assert tracker.current >= last
        assert tracker.current <= max(now, highest) - OOO - 1
        last = tracker.current


# -- through the embedded engine: a live, unbounded source that goes quiet ----------------


def _live_window_app(
    tmp_path: Path, clock: ManualClock, advance: bool
) -> tuple[App, MemorySource, MemorySink, MemorySink]:
    app = App("live", state_dir=tmp_path, clock=clock, dead_letter=MemorySink())
    src = MemorySource("clicks", partitions=2, bounded=False)
    clicks = app.source("clicks", src, key="user", timestamp="ts",
                        max_out_of_orderness="2s", idle_timeout="30s",
                        advance_when_idle=advance)
    out, late = MemorySink(), MemorySink()

    @app.window(clicks, Tumbling("10s"), aggregate=Count(), sink=out, late=late)
    def counts(result: WindowResult) -> dict[str, object]:
        return {"user": result.key, "start": result.start, "n": result.value}

    return app, src, out, late


async def _steps(runner: LocalRunner, clock: ManualClock, seconds: int) -> None:
    for _ in range(seconds):
        clock.advance("1s")
        await runner.step()


@pytest.mark.parametrize("advance", [True, False])
async def test_a_quiet_live_source_closes_its_windows_by_the_clock(
    tmp_path: Path, advance: bool
) -> None:
    clock = ManualClock(NOW)
    app, src, out, late = _live_window_app(tmp_path, clock, advance)
    # A record on partition 0 only, its event time the wall clock's; then silence.
    src.add({"user": "a", "ts": NOW}, partition=0)
    runner = app.runner()
    await runner.step()
    await _steps(runner, clock, 20)
    assert out.values == []  # idle_timeout (30 s) not reached yet
    await _steps(runner, clock, 15)
    if not advance:
        assert out.values == []  # without the option the window waits for a record
        await runner.close()
        return
    assert out.values == [{"user": "a", "start": NOW - NOW % 10_000, "n": 1}]
    task = runner.tasks[0]
    assert task.clock_driven() == frozenset({"clicks"})
    # A record from 20 s ago, arriving now: its window is closed, it is late, counted.
    src.add({"user": "b", "ts": clock.now_ms() - 20_000}, partition=1)
    await runner.step()
    assert [v["user"] for v in late.values] == ["b"]
    assert runner.tasks[1].clock_driven() == frozenset()
    await runner.close()


async def test_hours_of_wall_clock_move_nothing_while_records_come(tmp_path: Path) -> None:
    """A backlog read a batch a step, hours of wall clock between steps: the partitions are
    never quiet, so the clock moves no watermark and no record is late (whether a quiet
    partition is read to its end is the tracker's rule, tested above)."""
    clock = ManualClock(NOW)
    app, src, out, late = _live_window_app(tmp_path, clock, True)
    app.plan.batch_size = 10
    for i in range(100):
        src.add({"user": "a", "ts": NOW - 3_600_000 + i * 1_000}, partition=0)
        src.add({"user": "a", "ts": NOW - 3_600_000 + i * 1_000}, partition=1)
    runner = app.runner()
    for _ in range(9):  # 90 of 100 records per partition: behind all along
        clock.advance("1h")
        await runner.step()
    assert late.values == []
    closed = {v["start"] for v in out.values}
    assert max(closed) < NOW - 3_600_000 + 90_000
    assert all(t.clock_driven() == frozenset() for t in runner.tasks)
    await runner.close()
