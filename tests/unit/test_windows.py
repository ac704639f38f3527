"""Windows and assigners (evtime.windows), checked against brute force."""

from __future__ import annotations

import itertools
from datetime import timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from evtime.errors import ConfigError
from evtime.time import MAX_TIMESTAMP
from evtime.windows import (
    Session,
    Sliding,
    Tumbling,
    Window,
    WindowAssigner,
    merge_into,
    merge_windows,
)

timestamps = st.integers(-(10**13), 10**13)


def brute_force_windows(ts: int, size: int, slide: int, offset: int) -> list[Window]:
    """Every [s, s + size) with s = offset (mod slide) that contains ts, by enumeration."""
    first = ts - size - 2 * slide
    first -= (first - offset) % slide
    found = []
    s = first
    while s <= ts + slide:
        assert (s - offset) % slide == 0
        if s <= ts < s + size:
            found.append(Window(s, s + size))
        s += slide
    return found


# -- Window ------------------------------------------------------------------------------


def test_window_is_half_open_and_fires_at_its_max_timestamp() -> None:
    w = Window(10, 20)
    assert w.max_timestamp == 19
    assert w.size == 10
    assert w.contains(10) and w.contains(19)
    assert not w.contains(9) and not w.contains(20)
    assert str(w) == "[10, 20)"


def test_window_rejects_an_empty_interval() -> None:
    with pytest.raises(ConfigError, match=r"invalid window \[5, 5\)"):
        Window(5, 5)
    with pytest.raises(ConfigError, match="end must be greater than start"):
        Window(5, 4)


def test_windows_intersect_when_they_overlap_or_touch_like_flink() -> None:
    assert Window(0, 10).intersects(Window(10, 20))
    assert Window(10, 20).intersects(Window(0, 10))
    assert Window(0, 10).intersects(Window(5, 6))
    assert not Window(0, 10).intersects(Window(11, 20))
    assert not Window(11, 20).intersects(Window(0, 10))


def test_window_cover_and_order() -> None:
    assert Window(0, 10).cover(Window(20, 30)) == Window(0, 30)
    assert Window(5, 8).cover(Window(0, 10)) == Window(0, 10)
    assert sorted([Window(5, 6), Window(0, 20), Window(0, 10)]) == [
        Window(0, 10),
        Window(0, 20),
        Window(5, 6),
    ]


def test_window_lateness_follows_flinks_cleanup_time() -> None:
    w = Window(0, 100)
    assert w.cleanup_time() == 99
    assert w.cleanup_time(50) == 149
    assert Window(MAX_TIMESTAMP - 10, MAX_TIMESTAMP).cleanup_time(100) == MAX_TIMESTAMP
    assert not w.is_late(98)
    assert w.is_late(99)
    assert not w.is_late(148, allowed_lateness=50)
    assert w.is_late(149, allowed_lateness=50)


@settings(max_examples=200)
@given(timestamps, st.integers(1, 10**6), timestamps, st.integers(1, 10**6))
def test_intersects_is_symmetric_and_means_no_gap_between(
    s1: int, n1: int, s2: int, n2: int
) -> None:
    a, b = Window(s1, s1 + n1), Window(s2, s2 + n2)
    assert a.intersects(b) == b.intersects(a)
    gap = max(a.start, b.start) - min(a.end, b.end)
    assert a.intersects(b) == (gap <= 0)
    cover = a.cover(b)
    assert cover.start <= min(a.start, b.start) and cover.end >= max(a.end, b.end)
    assert cover.size == max(a.end, b.end) - min(a.start, b.start)


# -- Tumbling ------------------------------------------------------------------------------


def test_tumbling_examples() -> None:
    t = Tumbling("1m")
    assert (t.size, t.offset, t.is_merging) == (60_000, 0, False)
    assert t.assign(0) == [Window(0, 60_000)]
    assert t.assign(59_999) == [Window(0, 60_000)]
    assert t.assign(60_000) == [Window(60_000, 120_000)]
    assert t.assign(-1) == [Window(-60_000, 0)]
    assert Tumbling(timedelta(seconds=10), offset=3_000).assign(2_000) == [Window(-7_000, 3_000)]
    assert str(Tumbling("1d", "-8h")) == "tumbling(1d, offset=16h)"


def test_tumbling_negative_offset_is_normalised() -> None:
    daily_utc8 = Tumbling("1d", offset="-8h")
    assert daily_utc8.offset == 16 * 3_600_000
    assert daily_utc8 == Tumbling("1d", offset="16h")
    assert daily_utc8.assign(0) == [Window(-8 * 3_600_000, 16 * 3_600_000)]


@pytest.mark.parametrize(
    ("size", "offset", "message"),
    [
        (0, 0, "invalid tumbling window size 0: must be positive"),
        ("-1m", 0, "invalid tumbling window size '-1m': must not be negative"),
        ("1m", "1m", "absolute value must be less than the window size"),
        ("1m", "-2m", "absolute value must be less than the window size"),
        ("1m", "1x", "invalid window offset '1x'"),
    ],
)
def test_tumbling_validates_size_and_offset(size: object, offset: object, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        Tumbling(size, offset)  # type: ignore[arg-type]


@settings(max_examples=300)
@given(st.integers(1, 10**7), st.data(), timestamps)
def test_tumbling_assigns_exactly_the_brute_force_window(
    size: int, data: st.DataObject, ts: int
) -> None:
    offset = data.draw(st.integers(-size + 1, size - 1), label="offset")
    t = Tumbling(size, offset)
    assert 0 <= t.offset < size
    assert t.assign(ts) == brute_force_windows(ts, size, size, offset)
    assert t.window_start(ts) == t.assign(ts)[0].start


@settings(max_examples=200)
@given(st.integers(1, 1_000), st.integers(0, 999), timestamps, st.integers(1, 3_000))
def test_tumbling_windows_partition_the_time_line(
    size: int, offset: int, ts: int, step: int
) -> None:
    t = Tumbling(size, offset % size)
    (here,) = t.assign(ts)
    (nxt,) = t.assign(ts + 1)
    assert nxt == here or nxt.start == here.end  # adjacent, no gap, no overlap
    (later,) = t.assign(ts + step)
    assert later == here or later.start >= here.end
    assert (later.start - here.start) % size == 0


# -- Sliding --------------------------------------------------------------------------------


def test_sliding_examples() -> None:
    s = Sliding("10s", "5s")
    assert (s.size, s.slide, s.offset, s.is_merging) == (10_000, 5_000, 0, False)
    assert s.assign(12_000) == [Window(5_000, 15_000), Window(10_000, 20_000)]
    assert s.assign(10_000) == [Window(5_000, 15_000), Window(10_000, 20_000)]
    assert s.assign(9_999) == [Window(0, 10_000), Window(5_000, 15_000)]
    assert Sliding("1h", "15m").assign(0) == [
        Window(start, start + 3_600_000) for start in range(-2_700_000, 1, 900_000)
    ]
    assert str(Sliding("1h", "15m", "5m")) == "sliding(1h, 15m, offset=5m)"


def test_sliding_with_gaps_assigns_no_window_between_them() -> None:
    s = Sliding(size=1_000, slide=5_000)
    assert s.assign(999) == [Window(0, 1_000)]
    assert s.assign(1_000) == []
    assert s.assign(4_999) == []
    assert s.assign(5_000) == [Window(5_000, 6_000)]


@pytest.mark.parametrize(
    ("size", "slide", "offset", "message"),
    [
        (0, 1, 0, "invalid sliding window size 0"),
        (10, 0, 0, "invalid sliding window slide 0"),
        (10, 5, 5, "less than the slide"),
        (10, 5, -5, "less than the slide"),
    ],
)
def test_sliding_validates(size: int, slide: int, offset: int, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        Sliding(size, slide, offset)


@settings(max_examples=400)
@given(st.integers(1, 5_000), st.integers(1, 5_000), st.data(), timestamps)
def test_sliding_assigns_exactly_the_brute_force_windows(
    size: int, slide: int, data: st.DataObject, ts: int
) -> None:
    offset = data.draw(st.integers(-slide + 1, slide - 1), label="offset")
    s = Sliding(size, slide, offset)
    windows = s.assign(ts)
    assert windows == brute_force_windows(ts, size, slide, offset)
    assert windows == sorted(windows)
    # floor(size / slide) or one more, depending on where ts falls.
    assert size // slide <= len(windows) <= -(-size // slide)
    if size % slide == 0:
        assert len(windows) == size // slide


@settings(max_examples=100)
@given(st.integers(1, 2_000), st.data(), timestamps)
def test_sliding_with_slide_equal_to_size_is_tumbling(
    size: int, data: st.DataObject, ts: int
) -> None:
    offset = data.draw(st.integers(0, size - 1))
    assert Sliding(size, size, offset).assign(ts) == Tumbling(size, offset).assign(ts)


# -- Session ---------------------------------------------------------------------------------


def test_session_assigns_the_records_own_window() -> None:
    s = Session("30m")
    assert s.gap == 1_800_000
    assert s.is_merging and s.size is None
    assert s.assign(5) == [Window(5, 1_800_005)]
    assert str(s) == "session(30m)"
    with pytest.raises(ConfigError, match="invalid session gap 0: must be positive"):
        Session(0)


def test_assigners_satisfy_the_protocol() -> None:
    assigners: list[WindowAssigner] = [Tumbling(10), Sliding(10, 5), Session(10)]
    for assigner in assigners:
        assert isinstance(assigner, WindowAssigner)
    assert [a.size for a in assigners] == [10, 10, None]
    assert [a.is_merging for a in assigners] == [False, False, True]


def naive_merge(windows: list[Window]) -> list[tuple[Window, list[Window]]]:
    """Connected components of the 'intersects' graph, by union-find."""
    nodes = sorted(set(windows))
    parent = list(range(len(nodes)))

    def find(i: int) -> int:
        while parent[i] != i:
            i = parent[i]
        return i

    for i, a in enumerate(nodes):
        for j, b in enumerate(nodes):
            if a.intersects(b):
                parent[find(i)] = find(j)
    groups: dict[int, list[Window]] = {}
    for i, w in enumerate(nodes):
        groups.setdefault(find(i), []).append(w)
    result = []
    for members in groups.values():
        cover = members[0]
        for w in members[1:]:
            cover = cover.cover(w)
        result.append((cover, sorted(members)))
    return sorted(result)


small_windows = st.builds(
    lambda start, size: Window(start, start + size), st.integers(-200, 200), st.integers(1, 40)
)


@settings(max_examples=300)
@given(st.lists(small_windows, max_size=25))
def test_merge_windows_equals_the_union_find_model(windows: list[Window]) -> None:
    merged = merge_windows(windows)
    assert merged == naive_merge(windows)
    covers = [cover for cover, _ in merged]
    for a, b in itertools.pairwise(covers):
        assert a.end < b.start  # results are disjoint and do not touch


@settings(max_examples=300)
@given(st.lists(small_windows, max_size=15), small_windows)
def test_merge_into_matches_the_component_of_the_new_window(
    windows: list[Window], new: Window
) -> None:
    existing = [cover for cover, _ in naive_merge(windows)]  # a key's disjoint sessions
    result, absorbed = merge_into(existing, new)
    (expected,) = [(c, m) for c, m in naive_merge([*existing, new]) if new in m]
    assert result == expected[0]
    assert absorbed == [w for w in expected[1] if w in existing]
    assert all(w in existing for w in absorbed)
    assert new.start >= result.start and new.end <= result.end


@settings(max_examples=300)
@given(st.lists(st.integers(0, 500), min_size=1, max_size=40), st.integers(1, 30))
def test_sessions_built_record_by_record_equal_merging_all_at_once(
    timestamps: list[int], gap: int
) -> None:
    session = Session(gap)
    sessions: list[Window] = []
    for ts in timestamps:
        (window,) = session.assign(ts)
        result, absorbed = merge_into(sessions, window)
        sessions = sorted([w for w in sessions if w not in absorbed] + [result])
    expected = [
        cover for cover, _ in merge_windows(w for ts in timestamps for w in session.assign(ts))
    ]
    assert sessions == expected
    # Two records share a session exactly when no gap > `gap` separates them.
    ordered = sorted(set(timestamps))
    breaks = sum(1 for a, b in itertools.pairwise(ordered) if b - a > gap)
    assert len(sessions) == breaks + 1


def test_merge_into_reports_a_window_inside_an_existing_one_as_absorbing_it() -> None:
    assert merge_into([Window(0, 10)], Window(2, 5)) == (Window(0, 10), [Window(0, 10)])
    assert merge_into([Window(0, 10)], Window(0, 10)) == (Window(0, 10), [Window(0, 10)])
    assert merge_into([], Window(0, 10)) == (Window(0, 10), [])
