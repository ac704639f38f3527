"""Event-time windows and the assigners that put records into them (Flink semantics).

A :class:`Window` is the half-open interval ``[start, end)`` of event time in
ms. An assigner maps a record's timestamp to the windows it belongs to:

* :class:`Tumbling` -- fixed-size, non-overlapping windows;
* :class:`Sliding` -- fixed-size windows starting every ``slide``;
* :class:`Session` -- per-record windows ``[ts, ts + gap)`` that merge when
  they intersect (:func:`merge_windows`, :func:`merge_into`).

A window fires when the watermark reaches :attr:`Window.max_timestamp`
(``end - 1``) and its state is dropped when the watermark reaches
:meth:`Window.cleanup_time` (``end - 1 + allowed_lateness``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from evtime.errors import ConfigError
from evtime.time import MAX_TIMESTAMP, Duration, format_millis, to_millis

__all__ = [
    "Session",
    "Sliding",
    "Tumbling",
    "Window",
    "WindowAssigner",
    "merge_into",
    "merge_windows",
]


@dataclass(frozen=True, slots=True, order=True, init=False)
class Window:
    """The event-time interval ``[start, end)`` in ms.

    Windows order by ``(start, end)``. Like Flink's ``TimeWindow``, two windows
    :meth:`intersect` when they overlap *or touch*, which is what makes session
    windows ``[0, 10)`` and ``[10, 20)`` merge.

    >>> w = Window(0, 60_000)
    >>> w.max_timestamp, w.contains(59_999), w.contains(60_000)
    (59999, True, False)
    >>> w.intersects(Window(60_000, 120_000))
    True
    >>> w.cover(Window(30_000, 90_000))
    Window(start=0, end=90000)
    """

    start: int
    end: int

    def __init__(self, start: int, end: int) -> None:
        """The window ``[start, end)``; ``end`` must be greater than ``start``."""
        if end <= start:
            raise ConfigError(
                f"invalid window [{start}, {end}): end must be greater than start; "
                "windows are half-open intervals [start, end)"
            )
        # Assigners build windows per record: the slot descriptors set the fields
        # in half the time of the frozen dataclass's object.__setattr__ calls.
        _set_start(self, start)
        _set_end(self, end)

    @property
    def max_timestamp(self) -> int:
        """The largest timestamp inside the window: ``end - 1``; it fires at this watermark."""
        return self.end - 1

    @property
    def size(self) -> int:
        """``end - start`` in ms."""
        return self.end - self.start

    def contains(self, ts: int) -> bool:
        """Whether ``start <= ts < end``."""
        return self.start <= ts < self.end

    def intersects(self, other: Window) -> bool:
        """Flink's rule, under which touching windows intersect.

        ``self.start <= other.end and self.end >= other.start``
        """
        return self.start <= other.end and self.end >= other.start

    def cover(self, other: Window) -> Window:
        """The smallest window containing both."""
        return Window(min(self.start, other.start), max(self.end, other.end))

    def cleanup_time(self, allowed_lateness: int = 0) -> int:
        """The watermark at which the window's state is dropped and later records are late.

        ``max_timestamp + allowed_lateness``, capped at ``MAX_TIMESTAMP`` (Flink's
        ``cleanupTime``).

        >>> Window(0, 10).cleanup_time(5)
        14
        """
        return min(self.end - 1 + allowed_lateness, MAX_TIMESTAMP)

    def is_late(self, watermark: int, allowed_lateness: int = 0) -> bool:
        """Whether a record for this window arriving at ``watermark`` is too late to count.

        Flink's ``isWindowLate``: ``cleanup_time(allowed_lateness) <= watermark``.

        >>> Window(0, 10).is_late(8), Window(0, 10).is_late(9), Window(0, 10).is_late(9, 1)
        (False, True, False)
        """
        return self.cleanup_time(allowed_lateness) <= watermark

    def __str__(self) -> str:
        return f"[{self.start}, {self.end})"


_set_start: Callable[[Window, int], None] = Window.__dict__["start"].__set__
_set_end: Callable[[Window, int], None] = Window.__dict__["end"].__set__


@runtime_checkable
class WindowAssigner(Protocol):
    """Maps a record's timestamp to the windows it belongs to."""

    @property
    def is_merging(self) -> bool:
        """Whether windows merge when they intersect (session windows)."""
        ...

    @property
    def size(self) -> int | None:
        """The fixed window size in ms, or ``None`` when windows vary (sessions)."""
        ...

    def assign(self, ts: int) -> list[Window]:
        """The windows containing ``ts``, ordered by start; may be empty (sliding with gaps)."""
        ...


def _window_start(ts: int, offset: int, slide: int) -> int:
    # Python's % is non-negative for a positive divisor, so this is also right
    # for timestamps before the epoch (Flink needs an extra branch for that).
    return ts - (ts - offset) % slide


def _normalise_offset(offset: Duration, period: int, period_name: str) -> int:
    value = to_millis(offset, name="window offset", allow_negative=True)
    if abs(value) >= period:
        raise ConfigError(
            f"invalid window offset {format_millis(value)}: its absolute value must be less "
            f"than the {period_name} ({format_millis(period)}); e.g. use offset='-8h' to align "
            "daily windows to UTC+8"
        )
    return value % period


@dataclass(frozen=True, slots=True, init=False)
class Tumbling:
    """Fixed-size, non-overlapping windows ``[k * size + offset, (k + 1) * size + offset)``.

    ``offset`` shifts the window boundaries (e.g. ``"-8h"`` for daily windows in
    UTC+8); like Flink, it must satisfy ``abs(offset) < size`` and is stored
    normalised to ``0 <= offset < size``.

    >>> t = Tumbling("1m")
    >>> t.assign(125_000)
    [Window(start=120000, end=180000)]
    >>> t.assign(-1)
    [Window(start=-60000, end=0)]
    >>> Tumbling("1d", offset="-8h").offset == to_millis("16h")
    True
    """

    size: int
    offset: int

    def __init__(self, size: Duration, offset: Duration = 0) -> None:
        """Windows of ``size``, shifted by ``offset``."""
        size_ms = to_millis(size, name="tumbling window size", allow_zero=False)
        object.__setattr__(self, "size", size_ms)
        object.__setattr__(self, "offset", _normalise_offset(offset, size_ms, "window size"))

    @property
    def is_merging(self) -> bool:
        """Tumbling windows never merge."""
        return False

    def window_start(self, ts: int) -> int:
        """The start of the one window containing ``ts``."""
        return ts - (ts - self.offset) % self.size

    def assign(self, ts: int) -> list[Window]:
        """The one window containing ``ts``."""
        start = ts - (ts - self.offset) % self.size
        return [Window(start, start + self.size)]

    def __str__(self) -> str:
        offset = f", offset={format_millis(self.offset)}" if self.offset else ""
        return f"tumbling({format_millis(self.size)}{offset})"


@dataclass(frozen=True, slots=True, init=False)
class Sliding:
    """Windows of ``size`` starting every ``slide``: ``[s, s + size)`` for ``s % slide == offset``.

    A timestamp is in about ``size / slide`` windows. ``slide > size`` is allowed
    (sampling windows with gaps): timestamps in a gap belong to no window.
    ``offset`` is normalised like :class:`Tumbling`'s, modulo ``slide``.

    >>> Sliding("10s", "5s").assign(12_000)
    [Window(start=5000, end=15000), Window(start=10000, end=20000)]
    >>> Sliding("1s", "5s").assign(3_000)
    []
    """

    size: int
    slide: int
    offset: int

    def __init__(self, size: Duration, slide: Duration, offset: Duration = 0) -> None:
        """Windows of ``size`` every ``slide``, shifted by ``offset``."""
        size_ms = to_millis(size, name="sliding window size", allow_zero=False)
        slide_ms = to_millis(slide, name="sliding window slide", allow_zero=False)
        object.__setattr__(self, "size", size_ms)
        object.__setattr__(self, "slide", slide_ms)
        object.__setattr__(self, "offset", _normalise_offset(offset, slide_ms, "slide"))

    @property
    def is_merging(self) -> bool:
        """Sliding windows never merge."""
        return False

    def assign(self, ts: int) -> list[Window]:
        """Every window containing ``ts``, ordered by start."""
        size = self.size
        slide = self.slide
        last = ts - (ts - self.offset) % slide
        # Starts s = last - k * slide for k = 0.. while s > ts - size.
        count = (last - ts + size - 1) // slide
        return [Window(s, s + size) for s in range(last - count * slide, last + 1, slide)]

    def __str__(self) -> str:
        offset = f", offset={format_millis(self.offset)}" if self.offset else ""
        return f"sliding({format_millis(self.size)}, {format_millis(self.slide)}{offset})"


@dataclass(frozen=True, slots=True, init=False)
class Session:
    """Session windows: each record opens ``[ts, ts + gap)``; intersecting windows merge.

    A session therefore ends ``gap`` after its last record, and two records
    belong to the same session when no more than ``gap`` ms separate them
    (windows that touch merge, as in Flink).

    >>> s = Session("30m")
    >>> s.assign(0), s.is_merging, s.size
    ([Window(start=0, end=1800000)], True, None)
    """

    gap: int

    def __init__(self, gap: Duration) -> None:
        """Sessions that close after ``gap`` without records."""
        object.__setattr__(self, "gap", to_millis(gap, name="session gap", allow_zero=False))

    @property
    def is_merging(self) -> bool:
        """Session windows merge."""
        return True

    @property
    def size(self) -> None:
        """Sessions have no fixed size."""
        return None

    def assign(self, ts: int) -> list[Window]:
        """The record's own window ``[ts, ts + gap)``, to be merged with the key's others."""
        return [Window(ts, ts + self.gap)]

    def __str__(self) -> str:
        return f"session({format_millis(self.gap)})"


def merge_windows(windows: Iterable[Window]) -> list[tuple[Window, list[Window]]]:
    """Group windows that intersect, transitively, as Flink's ``TimeWindow.mergeWindows``.

    Returns one ``(cover, originals)`` pair per group, ordered by start:
    ``cover`` spans the group and ``originals`` lists its distinct input windows
    in order. A group with a single original is a window that merged with
    nothing (its cover is itself); callers that only care about merges keep
    ``len(originals) > 1``.

    >>> merge_windows([Window(10, 20), Window(0, 5), Window(20, 25), Window(30, 40)])
    ... # doctest: +NORMALIZE_WHITESPACE
    [(Window(start=0, end=5), [Window(start=0, end=5)]),
     (Window(start=10, end=25), [Window(start=10, end=20), Window(start=20, end=25)]),
     (Window(start=30, end=40), [Window(start=30, end=40)])]
    """
    groups: list[tuple[Window, list[Window]]] = []
    cover: Window | None = None
    members: list[Window] = []
    for window in sorted(set(windows)):
        if cover is not None and window.start <= cover.end:
            # Sorted by start, so window.start >= cover.start: this is intersects().
            if window.end > cover.end:
                cover = Window(cover.start, window.end)
            members.append(window)
        else:
            if cover is not None:
                groups.append((cover, members))
            cover = window
            members = [window]
    if cover is not None:
        groups.append((cover, members))
    return groups


def merge_into(existing: Sequence[Window], new: Window) -> tuple[Window, list[Window]]:
    """The window ``new`` ends up in when added to a key's ``existing`` session windows.

    Returns ``(result, absorbed)``: ``result`` is the cover of ``new`` and every
    existing window connected to it through intersections, and ``absorbed`` lists
    (by start) the existing windows it replaces, whose accumulators are merged
    into ``result``. ``absorbed`` is empty when ``new`` intersects nothing, and it
    is ``[result]`` when ``new`` falls inside an existing window, which then just
    takes the record. ``existing`` is normally pairwise disjoint (as this
    function keeps it); if not, windows chained to ``new`` are absorbed too.

    >>> merge_into([Window(0, 10), Window(30, 40)], Window(8, 18))
    (Window(start=0, end=18), [Window(start=0, end=10)])
    >>> merge_into([Window(0, 10), Window(15, 25)], Window(5, 15))
    (Window(start=0, end=25), [Window(start=0, end=10), Window(start=15, end=25)])
    >>> merge_into([Window(0, 10)], Window(2, 5))
    (Window(start=0, end=10), [Window(start=0, end=10)])
    >>> merge_into([Window(0, 10)], Window(20, 30))
    (Window(start=20, end=30), [])
    """
    originals = set(existing)
    # Every input window lands in exactly one group, so this finds one.
    cover, members = next(g for g in merge_windows([*originals, new]) if new in g[1])
    return cover, [w for w in members if w in originals]
