"""Watermark strategy and tracker (evtime.watermarks), checked against a naive model."""

from __future__ import annotations

from collections.abc import Hashable, Iterable
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from evtime.errors import ConfigError, EvtimeError, StateError
from evtime.time import MAX_TIMESTAMP, MIN_TIMESTAMP
from evtime.watermarks import (
    WatermarkStrategy,
    WatermarkTracker,
    decode_partition,
    encode_partition,
    is_late,
)

# -- the naive model -----------------------------------------------------------


class Model:
    """The tracker's rules written the slow, obvious way: recompute everything each time."""

    def __init__(self, ooo: int, idle: int | None, partitions: Iterable[Hashable]) -> None:
        self.ooo = ooo
        self.idle_timeout = idle
        self.max_ts: dict[Hashable, int | None] = {p: None for p in partitions}
        self.last: dict[Hashable, int | None] = dict.fromkeys(self.max_ts)
        self.ended: set[Hashable] = set()
        self.now: int | None = None
        self.current = MIN_TIMESTAMP

    def wm(self, p: Hashable) -> int:
        if p in self.ended:
            return MAX_TIMESTAMP
        max_ts = self.max_ts[p]
        return MIN_TIMESTAMP if max_ts is None else max(max_ts - self.ooo - 1, MIN_TIMESTAMP)

    def idle(self, p: Hashable) -> bool:
        last = self.last[p]
        return (
            self.idle_timeout is not None
            and p not in self.ended
            and self.now is not None
            and last is not None
            and self.now - last > self.idle_timeout
        )

    def observe(self, now: int) -> None:
        self.now = now if self.now is None else max(self.now, now)
        for p, last in self.last.items():
            if last is None:
                self.last[p] = self.now

    def evaluate(self) -> int:
        active = [p for p in self.max_ts if p not in self.ended and not self.idle(p)]
        if active:
            self.current = max(self.current, min(self.wm(p) for p in active))
        elif self.max_ts and all(p in self.ended for p in self.max_ts):
            self.current = MAX_TIMESTAMP
        return self.current

    def event(self, p: Hashable, ts: int, now: int) -> int:
        self.observe(now)
        if p not in self.ended:
            self.last[p] = self.now
            old = self.max_ts[p]
            self.max_ts[p] = ts if old is None else max(old, ts)
        return self.evaluate()

    def tick(self, now: int) -> int:
        self.observe(now)
        return self.evaluate()

    def end(self, p: Hashable) -> int:
        self.ended.add(p)
        return self.evaluate()

    def add(self, p: Hashable) -> int:
        self.max_ts[p] = None
        self.last[p] = self.now
        return self.evaluate()

    def remove(self, p: Hashable) -> int:
        del self.max_ts[p]
        del self.last[p]
        self.ended.discard(p)
        return self.evaluate()

    def restored(self) -> int:
        """What a restore into a fresh tracker means: idle clocks restart, the clock floor too."""
        self.now = None
        for p in self.last:
            self.last[p] = None
        return self.evaluate()


# -- model-based property ------------------------------------------------------------

PIDS = [0, 1, 2, ("orders", 0), ("orders", 1)]
timestamps = st.one_of(
    st.integers(-100, 400),
    st.sampled_from([MIN_TIMESTAMP, MIN_TIMESTAMP + 3, MAX_TIMESTAMP - 1, MAX_TIMESTAMP]),
)
operations = st.one_of(
    st.tuples(st.just("event"), st.sampled_from(PIDS), timestamps, st.integers(-5, 40)),
    st.tuples(st.just("event"), st.sampled_from(PIDS), timestamps, st.integers(-5, 40)),
    st.tuples(st.just("event"), st.sampled_from(PIDS), timestamps, st.integers(-5, 40)),
    st.tuples(st.just("tick"), st.integers(-5, 80)),
    st.tuples(st.just("end"), st.sampled_from(PIDS)),
    st.tuples(st.just("add"), st.sampled_from(PIDS)),
    st.tuples(st.just("remove"), st.sampled_from(PIDS)),
    st.tuples(st.just("restore")),
)


def check_same(tracker: WatermarkTracker, model: Model) -> None:
    assert tracker.current == model.current
    for p in model.max_ts:
        assert tracker.partition_watermark(p) == model.wm(p), p
        assert tracker.is_idle(p) == model.idle(p), p
        assert tracker.is_ended(p) == (p in model.ended), p


@settings(max_examples=400, deadline=None)
@given(
    ooo=st.integers(0, 30),
    idle=st.one_of(st.none(), st.integers(1, 60)),
    initial=st.lists(st.sampled_from(PIDS), min_size=1, max_size=4, unique=True),
    start=st.integers(0, 10**12),
    ops=st.lists(operations, max_size=80),
)
def test_tracker_matches_the_naive_model(
    ooo: int, idle: int | None, initial: list[Hashable], start: int, ops: list[tuple[Any, ...]]
) -> None:
    strategy = WatermarkStrategy(ooo, idle)
    tracker = WatermarkTracker(strategy, initial)
    model = Model(ooo, idle, initial)
    now = start
    previous = tracker.current
    for op in ops:
        kind = op[0]
        if kind == "event":
            _, p, ts, dt = op
            now += dt
            if p not in model.max_ts:
                with pytest.raises(EvtimeError, match="not tracked"):
                    tracker.on_event(p, ts, now)
                continue
            assert tracker.on_event(p, ts, now) == model.event(p, ts, now)
        elif kind == "tick":
            now += op[1]
            assert tracker.on_tick(now) == model.tick(now)
        elif kind == "end":
            if op[1] in model.max_ts:
                assert tracker.end_of_input(op[1]) == model.end(op[1])
        elif kind == "add":
            if op[1] in model.max_ts:
                with pytest.raises(EvtimeError, match="already tracked"):
                    tracker.add_partition(op[1])
                continue
            assert tracker.add_partition(op[1]) == model.add(op[1])
        elif kind == "remove":
            if op[1] in model.max_ts:
                assert tracker.remove_partition(op[1]) == model.remove(op[1])
        else:
            snap = orjson.loads(orjson.dumps(tracker.snapshot()))
            tracker = WatermarkTracker(strategy, list(model.max_ts))
            tracker.restore(snap)
            model.restored()
        check_same(tracker, model)
        assert tracker.current >= previous, "the task watermark went backwards"
        previous = tracker.current


@settings(max_examples=200, deadline=None)
@given(
    ooo=st.integers(0, 20),
    events=st.lists(
        st.tuples(st.sampled_from([0, 1, 2]), st.integers(0, 500), st.integers(0, 10)),
        min_size=2,
        max_size=60,
    ),
    cut=st.integers(0, 60),
)
def test_snapshot_and_restore_continue_identically(
    ooo: int, events: list[tuple[int, int, int]], cut: int
) -> None:
    strategy = WatermarkStrategy.bounded(ooo)
    original = WatermarkTracker(strategy, [0, 1, 2])
    cut = min(cut, len(events))
    now = 0
    for p, ts, dt in events[:cut]:
        now += dt
        original.on_event(p, ts, now)
    restored = WatermarkTracker(strategy, [2, 1, 0])
    restored.restore(orjson.loads(orjson.dumps(original.snapshot())))
    assert restored.current == original.current
    for p, ts, dt in events[cut:]:
        now += dt
        assert restored.on_event(p, ts, now) == original.on_event(p, ts, now)
    assert restored.snapshot()["watermark"] == original.snapshot()["watermark"]


# -- exact examples ------------------------------------------------------------------


def test_single_partition_trails_the_max_timestamp_by_out_of_orderness_plus_one() -> None:
    tracker = WatermarkTracker(WatermarkStrategy.bounded("5s"), [0])
    assert tracker.current == MIN_TIMESTAMP
    assert tracker.on_event(0, 10_000, now_ms=0) == 4_999
    assert tracker.on_event(0, 7_000, now_ms=0) == 4_999  # out of order: no change
    assert tracker.on_event(0, 12_000, now_ms=0) == 6_999
    assert tracker.partition_watermark(0) == 6_999


def test_monotonous_strategy_trails_by_one_millisecond() -> None:
    tracker = WatermarkTracker(WatermarkStrategy.for_monotonous(), ["p"])
    assert tracker.on_event("p", 100, now_ms=0) == 99


def test_watermark_near_min_timestamp_does_not_underflow() -> None:
    tracker = WatermarkTracker(WatermarkStrategy.bounded(1_000), [0])
    assert tracker.on_event(0, MIN_TIMESTAMP, now_ms=0) == MIN_TIMESTAMP
    assert tracker.partition_watermark(0) == MIN_TIMESTAMP
    assert tracker.snapshot()["partitions"] == [[0, MIN_TIMESTAMP, False]]


def test_task_watermark_is_the_minimum_over_partitions() -> None:
    tracker = WatermarkTracker(WatermarkStrategy.bounded(0), [0, 1])
    assert tracker.on_event(0, 100, now_ms=0) == MIN_TIMESTAMP  # 1 has no record: holds
    assert tracker.on_event(1, 50, now_ms=0) == 49
    assert tracker.on_event(1, 300, now_ms=0) == 99
    assert tracker.on_event(0, 200, now_ms=0) == 199


def test_idle_partition_stops_holding_and_rejoins_without_going_back() -> None:
    tracker = WatermarkTracker(WatermarkStrategy.bounded(0, idle_timeout="10s"), [0, 1])
    tracker.on_event(0, 1_000, now_ms=0)
    tracker.on_event(1, 500, now_ms=0)
    assert tracker.current == 499
    assert tracker.on_tick(10_000) == 499  # exactly the timeout: not idle yet (Flink: >)
    assert tracker.on_tick(10_001) == 499  # both idle now: the watermark holds
    assert tracker.is_idle(0) and tracker.is_idle(1)
    assert tracker.on_event(0, 2_000, now_ms=10_002) == 1_999  # 1 still idle
    assert tracker.on_event(1, 600, now_ms=10_003) == 1_999  # 1 is back, behind: holds
    assert not tracker.is_idle(1)
    assert tracker.on_event(1, 3_000, now_ms=10_004) == 1_999
    assert tracker.on_event(0, 5_000, now_ms=10_005) == 2_999


def test_partition_without_records_goes_idle_after_the_timeout() -> None:
    tracker = WatermarkTracker(WatermarkStrategy.bounded(0, idle_timeout=100), [0, 1])
    assert tracker.on_event(0, 1_000, now_ms=5_000) == MIN_TIMESTAMP
    assert tracker.on_event(0, 1_001, now_ms=5_100) == MIN_TIMESTAMP
    assert tracker.on_event(0, 1_002, now_ms=5_101) == 1_001


def test_without_idle_timeout_a_silent_partition_holds_forever() -> None:
    tracker = WatermarkTracker(WatermarkStrategy.bounded(0), [0, 1])
    tracker.on_event(0, 1_000, now_ms=0)
    assert tracker.on_tick(10**12) == MIN_TIMESTAMP
    assert tracker.on_event(0, 2_000, now_ms=10**12) == MIN_TIMESTAMP


def test_a_clock_stepping_back_counts_as_no_time_passing() -> None:
    tracker = WatermarkTracker(WatermarkStrategy.bounded(0, idle_timeout=100), [0, 1])
    tracker.on_event(1, 10, now_ms=1_000)
    tracker.on_event(0, 50, now_ms=1_090)
    tracker.on_event(0, 60, now_ms=0)  # stepped back: read as 1_090
    assert not tracker.is_idle(0)
    assert tracker.on_tick(1_101) == 59  # partition 1 idle since > 1_100
    assert tracker.is_idle(1)


def test_end_of_input_on_every_partition_gives_max_timestamp() -> None:
    tracker = WatermarkTracker(WatermarkStrategy.bounded(0), [0, 1])
    tracker.on_event(0, 100, now_ms=0)
    tracker.on_event(1, 50, now_ms=0)
    assert tracker.end_of_input(1) == 99
    assert tracker.partition_watermark(1) == MAX_TIMESTAMP
    assert tracker.on_event(1, 10**6, now_ms=0) == 99  # records after the end are ignored
    assert tracker.end_of_input(0) == MAX_TIMESTAMP


def test_ended_partition_with_the_others_idle_holds_like_a_finished_flink_split() -> None:
    tracker = WatermarkTracker(WatermarkStrategy.bounded(0, idle_timeout=10), [0, 1])
    tracker.on_event(0, 100, now_ms=0)
    tracker.on_event(1, 50, now_ms=0)
    tracker.on_tick(11)
    assert tracker.end_of_input(0) == 49  # 1 is idle, not ended: hold, do not jump to MAX
    assert tracker.on_event(1, 80, now_ms=12) == 79


def test_rebalance_adds_and_removes_partitions() -> None:
    tracker = WatermarkTracker(WatermarkStrategy.bounded(0), [0])
    tracker.on_event(0, 100, now_ms=0)
    assert tracker.add_partition(1) == 99  # holds at 99: never goes back
    assert tracker.on_event(0, 200, now_ms=0) == 99  # 1 holds the minimum at MIN
    assert tracker.remove_partition(1) == 199
    assert tracker.partitions == (0,)
    with pytest.raises(EvtimeError, match=r"partition 1 is not tracked .*add_partition"):
        tracker.remove_partition(1)
    with pytest.raises(EvtimeError, match="already tracked"):
        tracker.add_partition(0)


def test_added_partition_starts_its_idle_clock_at_the_given_time() -> None:
    tracker = WatermarkTracker(WatermarkStrategy.bounded(0, idle_timeout=100), [0])
    tracker.on_event(0, 10, now_ms=0)
    tracker.add_partition(1, now_ms=50)
    assert tracker.on_event(0, 20, now_ms=150) == 9
    assert tracker.on_event(0, 30, now_ms=151) == 29


def test_unknown_partition_is_reported_with_what_to_do() -> None:
    tracker = WatermarkTracker(WatermarkStrategy.bounded(0), [("t", 0)])
    with pytest.raises(EvtimeError, match=r"partition \('t', 1\) is not tracked"):
        tracker.on_event(("t", 1), 0, now_ms=0)


def test_partition_ids_must_be_encodable_in_snapshots() -> None:
    with pytest.raises(ConfigError, match="unsupported partition id"):
        WatermarkTracker(WatermarkStrategy.bounded(0), [frozenset({1})])
    with pytest.raises(ConfigError, match="unsupported partition id"):
        WatermarkTracker(WatermarkStrategy.bounded(0), [True])


@pytest.mark.parametrize("pid", [0, 7, "p", ("orders", 3), ("a", ("b", 1))])
def test_partition_encoding_round_trips_through_json(pid: Hashable) -> None:
    assert decode_partition(orjson.loads(orjson.dumps(encode_partition(pid)))) == pid


def test_snapshot_is_json_and_restore_keeps_ended_and_unknown_partitions_apart() -> None:
    strategy = WatermarkStrategy.bounded(10)
    old = WatermarkTracker(strategy, [("t", 0), ("t", 1), ("t", 2)])
    old.on_event(("t", 0), 1_000, now_ms=0)
    old.on_event(("t", 1), 500, now_ms=0)
    old.end_of_input(("t", 2))
    snap = orjson.loads(orjson.dumps(old.snapshot()))
    assert snap == {
        "version": 1,
        "watermark": 489,
        "partitions": [[["t", 0], 1_000, False], [["t", 1], 500, False], [["t", 2], None, True]],
    }
    new = WatermarkTracker(strategy, [("t", 0), ("t", 2), ("t", 3)])
    new.restore(snap)
    assert new.current == 489  # the stored watermark, although ("t", 3) is new and holds MIN
    assert new.partition_watermark(("t", 0)) == 989
    assert new.partition_watermark(("t", 2)) == MAX_TIMESTAMP
    assert new.partition_watermark(("t", 3)) == MIN_TIMESTAMP
    assert new.on_event(("t", 3), 2_000, now_ms=0) == 989


@pytest.mark.parametrize(
    "snap",
    [
        {},
        {"version": 2, "watermark": 0, "partitions": []},
        {"version": 1, "watermark": "0", "partitions": []},
        {"version": 1, "watermark": 0, "partitions": [[0, 1]]},
        {"version": 1, "watermark": 0, "partitions": [[0, "1", False]]},
        {"version": 1, "watermark": 0, "partitions": [[{"p": 0}, 1, False]]},
    ],
)
def test_restore_rejects_corrupt_snapshots(snap: dict[str, Any]) -> None:
    tracker = WatermarkTracker(WatermarkStrategy.bounded(0), [0])
    with pytest.raises(StateError, match="snapshot"):
        tracker.restore(snap)


def test_hot_path_recomputes_the_minimum_only_when_its_holder_advances(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls = 0
    original = WatermarkTracker._recompute

    def counting(self: WatermarkTracker) -> None:
        nonlocal calls
        calls += 1
        original(self)

    partitions = list(range(50))
    tracker = WatermarkTracker(WatermarkStrategy.bounded(0, idle_timeout="1h"), partitions)
    monkeypatch.setattr(WatermarkTracker, "_recompute", counting)
    rounds = 40
    for r in range(rounds):
        for p in partitions:
            tracker.on_event(p, r * 10 + 5, now_ms=r)
    assert tracker.current == (rounds - 1) * 10 + 4
    # One recompute per round (when the last holder advances), not one per record.
    assert calls <= rounds + 1


def test_strategy_validates_its_durations() -> None:
    assert WatermarkStrategy.bounded("5s", "1m") == WatermarkStrategy(5_000, 60_000)
    with pytest.raises(ConfigError, match="invalid max_out_of_orderness '-5s'"):
        WatermarkStrategy.bounded("-5s")
    with pytest.raises(ConfigError, match="invalid idle_timeout 0: must be positive"):
        WatermarkStrategy.bounded(0, idle_timeout=0)
    with pytest.raises(ConfigError, match=r"invalid max_out_of_orderness '5s'.*bounded"):
        WatermarkStrategy("5s")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="invalid max_out_of_orderness -1"):
        WatermarkStrategy(-1)
    assert str(WatermarkStrategy.bounded("5s", "1m")) == (
        "bounded out-of-orderness 5s, idle after 1m"
    )


def test_is_late_means_at_or_behind_the_watermark() -> None:
    assert is_late(10, 10)
    assert is_late(9, 10)
    assert not is_late(11, 10)
    assert not is_late(MIN_TIMESTAMP + 1, MIN_TIMESTAMP)
