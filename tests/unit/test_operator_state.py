"""The operators' building blocks: the event-time timer service, and state entries that
are slotted objects in memory but the same JSON lists on disk as before, so existing
state directories restore unchanged."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest

from evtime.aggregates import Count, Sum
from evtime.errors import StateError
from evtime.operators.base import Collector
from evtime.operators.join import JoinInput, JoinOperator, JoinSpec
from evtime.operators.join import column_families as join_families
from evtime.operators.timers import NO_TIMER, EventTimers
from evtime.operators.window import WindowSpec, column_families, make_window_operator
from evtime.records import Batch, EmitKind, RawRecord
from evtime.state import TaskDB, codec
from evtime.state.codec import encode_int, encode_key
from evtime.time import MIN_TIMESTAMP, ManualClock
from evtime.windows import Session, Tumbling


def batch(topic: str, rows: list[tuple[str, int, Any]], watermark: int) -> Batch:
    """Records (key, ts, value) with offsets 0.. and a watermark that stays at ``watermark``."""
    return Batch(
        topic,
        0,
        [RawRecord(i, key, value) for i, (key, _ts, value) in enumerate(rows)],
        [key for key, _ts, _value in rows],
        [value for _key, _ts, value in rows],
        [ts for _key, ts, _value in rows],
        [watermark] * len(rows),
        watermark,
    )


def stored(db: TaskDB, column: str, key: bytes) -> Any:
    raw = db._column(column).get(key)
    assert raw is not None
    return raw


def test_event_timers_fire_in_order_once_the_watermark_reaches_them(tmp_path: Path) -> None:
    db = TaskDB(tmp_path / "db", ["t"])
    timers = EventTimers(db, "t")
    assert (timers.watermark, timers.next_due) == (MIN_TIMESTAMP, NO_TIMER)
    timers.register(20, b"b")
    timers.register(10, b"a")
    timers.register(20, b"a")
    timers.register(30, b"c")
    assert timers.next_due == 10
    assert not timers.advance(5)
    assert timers.advance(20)
    assert timers.advance(7)  # the watermark never goes back: still due
    assert timers.watermark == 20
    fired: list[tuple[int, bytes]] = []
    timers.fire(lambda ts, payload: fired.append((ts, payload)))
    assert fired == [(10, b"a"), (20, b"a"), (20, b"b")]
    assert timers.next_due == 30 and not timers.due
    timers.delete(30, b"c")
    assert timers.next_due == NO_TIMER
    db.close()


def test_event_timers_read_their_next_time_back_from_a_snapshot(tmp_path: Path) -> None:
    db = TaskDB(tmp_path / "db", ["t"])
    EventTimers(db, "t").register(42, b"x")
    db.commit({})
    db.close()
    db = TaskDB(tmp_path / "db", ["t"])
    assert EventTimers(db, "t").next_due == 42
    db.close()


def test_a_fixed_window_entry_is_stored_as_the_list_acc_emissions_since_early(
    tmp_path: Path,
) -> None:
    spec = WindowSpec("w", "t", Tumbling(10), Sum("v"))
    db = TaskDB(tmp_path / "db", column_families(spec))
    op = make_window_operator(spec, db, Collector(), ManualClock(0))
    op.process(batch("t", [("k", 1, {"v": 3}), ("k", 2, {"v": 4})], 0))
    db.commit({})
    assert stored(db, "w.windows", encode_int(0) + encode_key("k")) == orjson.dumps([7, 0, 0])
    db.close()
    # Reopened (as after a restart), the entry is read back and fires.
    db = TaskDB(tmp_path / "db", column_families(spec))
    collector = Collector()
    op = make_window_operator(spec, db, collector, ManualClock(0))
    op.on_watermark(9)
    [out] = collector.outputs["main"]
    assert (out.value["value"], out.value["kind"]) == (7, EmitKind.FINAL.value)
    db.close()


def test_sessions_are_stored_as_lists_of_their_fields(tmp_path: Path) -> None:
    spec = WindowSpec("s", "t", Session(5), Count())
    db = TaskDB(tmp_path / "db", column_families(spec))
    op = make_window_operator(spec, db, Collector(), ManualClock(0))
    op.process(batch("t", [("k", 1, {}), ("k", 3, {})], 0))
    db.commit({})
    # [start, end, acc, emissions, replaced ids, fired, timer_at]
    legacy = [[1, 8, 2, 0, [], False, 5]]
    assert stored(db, "s.sessions", encode_key("k")) == orjson.dumps(legacy)
    db.close()
    db = TaskDB(tmp_path / "db", column_families(spec))
    collector = Collector()
    op = make_window_operator(spec, db, collector, ManualClock(0))
    op.process(batch("t", [("k", 8, {})], 0))  # touches [1, 8): merges into [1, 13)
    op.on_watermark(12)
    [out] = collector.outputs["main"]
    assert (out.value["start"], out.value["end"], out.value["value"]) == (1, 13, 3)
    db.close()


def test_join_rows_are_stored_as_lists_of_their_fields(tmp_path: Path) -> None:
    spec = JoinSpec("j", JoinInput("a"), JoinInput("b"), -5, 5)
    db = TaskDB(tmp_path / "db", join_families(spec))
    op = JoinOperator(spec, db, Collector(), ManualClock(0), 0)
    op.process(batch("a", [("k", 10, {"x": 1})], 0))
    db.commit({})
    # [left rows, right rows, timer_at], a row [ts, offset, value, status]
    legacy = [[[10, 0, {"x": 1}, 0]], [], 15]
    assert stored(db, "j.rows", encode_key("k")) == orjson.dumps(legacy)
    db.close()
    db = TaskDB(tmp_path / "db", join_families(spec))
    collector = Collector()
    op = JoinOperator(spec, db, collector, ManualClock(0), 0)
    assert op.live_rows() == 1
    op.process(batch("b", [("k", 12, {"y": 2})], 0))
    [out] = collector.outputs["main"]
    assert (out.value["left"], out.value["right"]) == ({"x": 1}, {"y": 2})
    op.on_watermark(20)
    assert op.live_rows() == 0
    db.close()


def test_a_value_that_is_not_json_like_still_cannot_be_stored() -> None:
    with pytest.raises(StateError, match="state value of type object cannot be stored"):
        codec.dumps(object())
