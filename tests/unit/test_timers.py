"""TimerQueue against a set of timers: random registers, deletes, firings, snapshots and
reopenings, with a read-ahead small enough that every path refills it."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from evtime.state.store import TaskDB
from evtime.state.timers import TimerQueue

TIMES = st.integers(min_value=0, max_value=40)
PAYLOADS = st.sampled_from([b"a", b"b", b"c", b"key-1", b"key-22"])
OPS = st.lists(
    st.one_of(
        st.tuples(st.just("register"), TIMES, PAYLOADS),
        st.tuples(st.just("delete"), TIMES, PAYLOADS),
        st.tuples(st.just("pop"), st.integers(min_value=0, max_value=6), st.just(b"")),
        st.tuples(st.just("peek"), st.just(0), st.just(b"")),
        st.tuples(st.just("commit"), st.just(0), st.just(b"")),
        st.tuples(st.just("reopen"), st.just(0), st.just(b"")),
    ),
    max_size=80,
)


@settings(max_examples=300, deadline=None)
@given(OPS, st.sampled_from([1, 2, 3, 1024]))
def test_timer_queue_equals_a_set_of_timers(
    ops: list[tuple[str, int, bytes]], read_ahead: int
) -> None:
    with tempfile.TemporaryDirectory() as d, pytest.MonkeyPatch.context() as mp:
        mp.setattr(TimerQueue, "_READ_AHEAD", read_ahead)
        path = Path(d) / "db"
        db = TaskDB(path, ["t"])
        queue = TimerQueue(db, "t")
        live: set[tuple[int, bytes]] = set()
        committed: set[tuple[int, bytes]] = set()
        watermark = -1
        try:
            for op, n, payload in ops:
                if op == "register":
                    queue.register(n, payload)
                    live.add((n, payload))
                elif op == "delete":
                    queue.delete(n, payload)
                    live.discard((n, payload))
                elif op == "pop":
                    watermark += n  # fired up to a watermark that never goes back
                    want = sorted(t for t in live if t[0] <= watermark)
                    assert queue.pop_due(watermark) == want
                    live -= set(want)
                elif op == "peek":
                    assert queue.next_time() == min((t for t, _ in live), default=None)
                elif op == "commit":
                    db.commit({"n": 1})
                    committed = set(live)
                else:  # a crash and restart: what the last snapshot holds comes back
                    db.close()
                    db = TaskDB(path, ["t"])
                    queue = TimerQueue(db, "t")
                    live = set(committed)
                    watermark = -1
            assert queue.pop_due(10**6) == sorted(live)
        finally:
            db.close()
