"""Watermarks with Flink's bounded-out-of-orderness semantics.

A watermark ``W`` is the assertion "no more records with timestamp ``<= W``
are expected". Each source partition has its own watermark

    ``wm_p = max_event_ts_seen_p - max_out_of_orderness - 1``

(``MIN_TIMESTAMP`` before its first record), and a partition task's watermark
is the minimum over its partitions that are not idle, never moving backwards.
:class:`WatermarkStrategy` is the declaration (a value); :class:`WatermarkTracker`
is the per-task runtime state that applies it, record by record.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Container, Hashable, Iterable, Mapping
from typing import Any

from evtime.errors import ConfigError, EvtimeError, StateError
from evtime.time import MAX_TIMESTAMP, MIN_TIMESTAMP
from evtime.watermark_strategy import WatermarkStrategy, is_late

__all__ = [
    "SNAPSHOT_VERSION",
    "WatermarkStrategy",
    "WatermarkTracker",
    "decode_partition",
    "encode_partition",
    "is_late",
]

SNAPSHOT_VERSION = 1
"""Format version written into :meth:`WatermarkTracker.snapshot`."""

# Larger than any real deadline: "no partition can go idle".
_NEVER = MAX_TIMESTAMP + 1
# Smaller than any real time: forces the next call through the idleness slow path.
_FORCE = MIN_TIMESTAMP - 2
# "The tracker has not seen the wall clock yet."
_NO_TIME = MIN_TIMESTAMP - 1
# max_ts of a partition that has not seen a record.
_NO_RECORD = MIN_TIMESTAMP - 1


def encode_partition(partition: Hashable) -> Any:
    """The JSON form of a partition id, as written in tracker snapshots.

    ints and strs stay as they are; tuples (e.g. ``(topic, partition)`` or an
    aiokafka ``TopicPartition``) become lists. Anything else is rejected, because
    it could not be recognised again after a restart.

    >>> encode_partition(("orders", 3))
    ['orders', 3]
    """
    if isinstance(partition, bool):
        pass
    elif isinstance(partition, int | str):
        return partition
    elif isinstance(partition, tuple):
        return [encode_partition(part) for part in partition]
    raise ConfigError(
        f"unsupported partition id {partition!r} of type {type(partition).__name__}: "
        "watermark snapshots need partition ids made of ints, strs and tuples; "
        "use the partition number or a (topic, partition) tuple"
    )


def decode_partition(data: Any) -> Hashable:
    """Inverse of :func:`encode_partition` (lists become tuples).

    >>> decode_partition(['orders', 3])
    ('orders', 3)
    """
    if isinstance(data, list):
        return tuple(decode_partition(part) for part in data)
    if isinstance(data, int | str) and not isinstance(data, bool):
        return data
    raise StateError(
        f"corrupt watermark snapshot: partition id {data!r} is not an int, str or list; "
        "the snapshot was not written by WatermarkTracker.snapshot()"
    )


class _Partition:
    """Mutable watermark state of one input partition."""

    __slots__ = ("active", "clock", "ended", "idle", "last", "max_ts", "wm")

    def __init__(self, last: int) -> None:
        self.max_ts = _NO_RECORD
        self.wm = MIN_TIMESTAMP
        self.last = last  # wall-clock ms of the last record (or of joining)
        self.active = True  # takes part in the task minimum: neither idle nor ended
        self.idle = False
        self.ended = False
        self.clock = False  # idle, read to its end, its watermark following the wall clock


class WatermarkTracker:
    """The watermark of one partition task, fed record by record.

    Rules (Flink's ``WatermarkOutputMultiplexer`` with bounded out-of-orderness):

    1. Each partition's watermark is ``max_ts - max_out_of_orderness - 1``, or
       ``MIN_TIMESTAMP`` before its first record.
    2. A partition is idle when more than ``idle_timeout`` ms of wall-clock time
       passed since its last record (or since it was added, if it has none).
       The idle clock of partitions added without a time starts at the first
       ``now_ms`` the tracker sees. A record makes an idle partition active again.
    3. The task watermark is ``max(previous, min(wm_p for active partitions))``,
       so it never goes backwards. When every remaining partition is idle it
       holds; a partition without records that is not idle holds it at
       ``MIN_TIMESTAMP``.
    4. Under ``advance_when_idle`` an idle partition is not taken out of the
       minimum: the wall clock alone never decides that a partition has
       nothing more (the consumer may be behind). :meth:`follow_clock`, told
       which partitions are read to their end, lets those of them that are idle
       follow the wall clock: their watermark becomes
       ``max(wm_p, now - max_out_of_orderness - 1)``. A record (or falling
       behind the end again) stops that; a watermark never goes back. So while
       a consumer is behind, wall-clock time moves no watermark at all.
    5. :meth:`end_of_input` sets a partition's watermark to ``MAX_TIMESTAMP``
       and takes it out of the minimum (like a finished Flink split); records
       that still arrive for it are ignored. Once every partition ended, the
       task watermark is ``MAX_TIMESTAMP``.

    Wall-clock times passed in are made monotone (a clock stepping back is read
    as no time passing).

    >>> tracker = WatermarkTracker(WatermarkStrategy.bounded(100, idle_timeout=1_000), [0, 1])
    >>> tracker.on_event(0, ts=5_000, now_ms=0)  # partition 1 has no record yet
    -9223372036854775808
    >>> tracker.on_event(1, ts=4_000, now_ms=10)
    3899
    >>> tracker.on_event(0, ts=6_000, now_ms=1_500)  # partition 1 idle since 1_010
    5899
    >>> tracker.on_event(1, ts=4_500, now_ms=1_600)  # back: holds, never goes back
    5899
    >>> tracker.end_of_input(0), tracker.end_of_input(1)
    (5899, 9223372036854775807)
    """

    __slots__ = (
        "_current",
        "_deadline",
        "_delay",
        "_hold_idle",
        "_holders",
        "_idle_timeout",
        "_min",
        "_now",
        "_order",
        "_parts",
        "_unstarted",
        "strategy",
    )

    def __init__(
        self,
        strategy: WatermarkStrategy,
        partitions: Iterable[Hashable],
        *,
        now_ms: int | None = None,
    ) -> None:
        """Track ``partitions`` under ``strategy``.

        ``now_ms`` starts the partitions' idle clocks; by default they start at
        the first ``now_ms`` passed to :meth:`on_event` or :meth:`on_tick`.
        """
        self.strategy = strategy
        self._delay = strategy.max_out_of_orderness + 1
        self._idle_timeout = strategy.idle_timeout
        # Idle partitions keep holding the minimum until follow_clock sees them caught up.
        self._hold_idle = strategy.advance_when_idle
        self._parts: dict[Hashable, _Partition] = {}
        # Active partitions by last activity, oldest first: only kept when
        # partitions can go idle, so expiry is O(1) per record.
        self._order: OrderedDict[Hashable, _Partition] | None = (
            None if strategy.idle_timeout is None else OrderedDict()
        )
        self._unstarted: list[Hashable] = []
        self._deadline = _NEVER
        self._now = _NO_TIME
        self._current = MIN_TIMESTAMP
        self._min = _NEVER
        self._holders = 0
        for partition in partitions:
            self._add(partition, now_ms)
        self._recompute()

    # -- reading -----------------------------------------------------------

    @property
    def current(self) -> int:
        """The task watermark (ms); ``MIN_TIMESTAMP`` at start, ``MAX_TIMESTAMP`` at the end."""
        return self._current

    @property
    def partitions(self) -> tuple[Hashable, ...]:
        """The partitions tracked, in the order they were added."""
        return tuple(self._parts)

    def partition_watermark(self, partition: Hashable) -> int:
        """The watermark of one partition (``MAX_TIMESTAMP`` once it ended)."""
        return self._get(partition).wm

    def is_idle(self, partition: Hashable) -> bool:
        """Whether ``partition`` was idle when the tracker last saw the wall clock."""
        return self._get(partition).idle

    def follows_clock(self, partition: Hashable) -> bool:
        """Whether ``partition``'s watermark follows the wall clock (see :meth:`follow_clock`)."""
        return self._get(partition).clock

    def is_ended(self, partition: Hashable) -> bool:
        """Whether :meth:`end_of_input` was called for ``partition``."""
        return self._get(partition).ended

    # -- the per-record path -------------------------------------------------

    def on_event(self, partition: Hashable, ts: int, now_ms: int) -> int:
        """Record a record of ``partition`` with event time ``ts`` seen at wall-clock
        ``now_ms``; return the task watermark.

        O(1) amortised: the minimum is recomputed only when the partition that
        held it advances and no other partition shares it, or when a partition
        goes idle or comes back.
        """
        p = self._parts.get(partition)
        if p is None:
            raise self._unknown(partition)
        if not p.active:
            return self._on_inactive_event(partition, p, ts, now_ms)
        order = self._order
        if order is not None:
            if now_ms > self._now:
                self._now = now_ms
            else:
                now_ms = self._now
            p.last = now_ms
            order.move_to_end(partition)
            if now_ms > self._deadline:
                self._expire(now_ms)
        if ts > p.max_ts:
            p.max_ts = ts
            # Below MIN_TIMESTAMP this is < p.wm, so no clamp is needed here.
            wm = ts - self._delay
            if wm > p.wm:
                old = p.wm
                p.wm = wm
                if old == self._min:
                    self._holders -= 1
                    if not self._holders:
                        self._recompute()
        return self._current

    def advance(self, partition: Hashable, watermark: int, now_ms: int) -> int:
        """Move ``partition``'s watermark up to ``watermark``, one that came with the input
        (through a repartition topic) rather than from its records; return the task's."""
        if watermark <= MIN_TIMESTAMP:
            return self._current
        return self.on_event(partition, watermark + self._delay, now_ms)

    def on_tick(self, now_ms: int) -> int:
        """Let wall-clock time pass without records; return the task watermark."""
        if self._order is not None:
            now = self._advance(now_ms)
            if now > self._deadline:
                self._expire(now)
        return self._current

    def follow_clock(self, now_ms: int, caught_up: Container[Hashable]) -> int:
        """Let wall-clock time pass (:meth:`on_tick`); then, under ``advance_when_idle``,
        every idle partition in ``caught_up`` (read to its end: nothing more to fetch)
        follows the clock, and every other one stops following it (and holds the
        minimum at its own watermark); return the task watermark.

        A partition whose consumer is behind never moves with the clock, so a replay
        as fast as it can read computes what the live run computed.
        """
        current = self.on_tick(now_ms)
        if not self.strategy.advance_when_idle:
            return current
        clock_wm = self._now - self._delay
        changed = False
        for key, p in self._parts.items():
            if not p.idle:
                continue
            if key in caught_up:
                if clock_wm > p.wm:
                    p.wm = clock_wm
                    changed = True
                if not p.clock:
                    p.clock = True
                    changed = True
            elif p.clock:
                p.clock = False
                changed = True
        if changed:
            self._recompute()
        return self._current

    def end_of_input(self, partition: Hashable) -> int:
        """Mark ``partition`` as exhausted (a bounded source ended); return the task watermark."""
        p = self._get(partition)
        if not p.ended:
            p.ended = True
            p.idle = False
            p.clock = False
            p.active = False
            p.wm = MAX_TIMESTAMP
            if self._order is not None:
                self._order.pop(partition, None)
            self._recompute()
        return self._current

    # -- rebalance -----------------------------------------------------------

    def add_partition(self, partition: Hashable, now_ms: int | None = None) -> int:
        """Start tracking a newly assigned partition; return the task watermark.

        The partition has no record yet, so unless it goes idle it holds the
        minimum at ``MIN_TIMESTAMP`` (the task watermark itself never goes back).
        Its idle clock starts at ``now_ms``, else at the latest wall-clock time
        the tracker saw.
        """
        if partition in self._parts:
            raise EvtimeError(
                f"partition {partition!r} is already tracked by this WatermarkTracker; "
                "remove_partition() it on revocation before adding it again"
            )
        self._add(partition, now_ms)
        self._recompute()
        return self._current

    def remove_partition(self, partition: Hashable) -> int:
        """Stop tracking a revoked partition; return the task watermark."""
        self._get(partition)
        del self._parts[partition]
        if self._order is not None:
            self._order.pop(partition, None)
        self._recompute()
        return self._current

    # -- snapshots -------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        """The tracker's restorable state as a JSON-serialisable dict.

        Format (``version`` 1)::

            {"version": 1, "watermark": <task watermark>,
             "partitions": [[<partition>, <max_ts or null>, <ended>], ...]}

        where ``<partition>`` is :func:`encode_partition` of the partition id
        (an int or str as is, a tuple as a list). Idleness is not stored: after
        a restart every partition counts as active from the restore time.

        >>> tracker = WatermarkTracker(WatermarkStrategy.bounded(10), [("t", 0)])
        >>> tracker.on_event(("t", 0), 100, now_ms=0)
        89
        >>> tracker.snapshot()
        {'version': 1, 'watermark': 89, 'partitions': [[['t', 0], 100, False]]}
        """
        return {
            "version": SNAPSHOT_VERSION,
            "watermark": self._current,
            "partitions": [
                [encode_partition(key), None if p.max_ts == _NO_RECORD else p.max_ts, p.ended]
                for key, p in self._parts.items()
            ],
        }

    def restore(self, snap: Mapping[str, Any], now_ms: int | None = None) -> None:
        """Load a :meth:`snapshot` (possibly after a JSON round trip).

        Partitions present in the snapshot and tracked here take their stored
        maximum timestamp and ended flag; tracked partitions missing from it
        start fresh; snapshot partitions not tracked here are ignored. The task
        watermark continues from the stored one and never goes below it. Every
        partition that has not ended counts as active from ``now_ms`` (default:
        the latest wall-clock time seen, or the next one).

        >>> old = WatermarkTracker(WatermarkStrategy.bounded(0), [0])
        >>> old.on_event(0, 1_000, now_ms=0)
        999
        >>> new = WatermarkTracker(WatermarkStrategy.bounded(0), [0])
        >>> new.restore(old.snapshot())
        >>> new.current, new.on_event(0, 500, now_ms=5)
        (999, 999)
        """
        version = snap.get("version")
        watermark = snap.get("watermark")
        entries = snap.get("partitions")
        if (
            version != SNAPSHOT_VERSION
            or not isinstance(watermark, int)
            or not isinstance(entries, list)
        ):
            raise StateError(
                f"cannot restore watermarks from {dict(snap)!r}: expected a version "
                f"{SNAPSHOT_VERSION} snapshot written by WatermarkTracker.snapshot(); "
                "delete the task's state to start over"
            )
        stored: dict[Hashable, tuple[int | None, bool]] = {}
        for entry in entries:
            if (
                not isinstance(entry, list)
                or len(entry) != 3
                or not (entry[1] is None or isinstance(entry[1], int))
                or not isinstance(entry[2], bool)
            ):
                raise StateError(
                    f"corrupt watermark snapshot entry {entry!r}: expected "
                    "[partition, max_ts or null, ended]; delete the task's state to start over"
                )
            stored[decode_partition(entry[0])] = (entry[1], entry[2])
        if now_ms is not None:
            self._advance(now_ms)
        if self._order is not None:
            self._order.clear()
        self._unstarted.clear()
        self._deadline = _NEVER
        for key in list(self._parts):
            max_ts, ended = stored.get(key, (None, False))
            p = self._fresh(key)
            if max_ts is not None:
                p.max_ts = max_ts
                p.wm = max(max_ts - self._delay, MIN_TIMESTAMP)
            if ended:
                p.ended = True
                p.active = False
                p.wm = MAX_TIMESTAMP
                if self._order is not None:
                    self._order.pop(key, None)
        if watermark > self._current:
            self._current = watermark
        self._recompute()

    # -- internals ---------------------------------------------------------------

    def __repr__(self) -> str:
        return (
            f"WatermarkTracker({self.strategy}, partitions={list(self._parts)!r}, "
            f"current={self._current})"
        )

    def _get(self, partition: Hashable) -> _Partition:
        p = self._parts.get(partition)
        if p is None:
            raise self._unknown(partition)
        return p

    def _unknown(self, partition: Hashable) -> EvtimeError:
        return EvtimeError(
            f"partition {partition!r} is not tracked by this WatermarkTracker "
            f"(tracked: {list(self._parts)!r}); call add_partition() when it is assigned"
        )

    def _advance(self, now_ms: int) -> int:
        """Make wall-clock time monotone; start idle clocks waiting for a first time."""
        if now_ms > self._now:
            self._now = now_ms
        if self._unstarted:
            self._start(self._now)
        return self._now

    def _start(self, now: int) -> None:
        """Start the idle clocks of partitions added before any wall-clock time was seen."""
        order = self._order
        if order is not None:
            for key in self._unstarted:
                p = order.get(key)
                if p is not None:
                    p.last = now
                    order.move_to_end(key)
        self._unstarted.clear()

    def _add(self, partition: Hashable, now_ms: int | None) -> None:
        encode_partition(partition)  # reject ids a snapshot could not name
        if now_ms is not None:
            self._advance(now_ms)
        self._fresh(partition)

    def _fresh(self, key: Hashable) -> _Partition:
        """Reset ``key`` to an active partition without records, idle clock starting now."""
        p = _Partition(self._now)
        self._parts[key] = p
        order = self._order
        if order is not None and self._idle_timeout is not None:
            order[key] = p
            order.move_to_end(key)
            if self._now == _NO_TIME:
                self._unstarted.append(key)
                self._deadline = _FORCE
            else:
                self._deadline = min(self._deadline, self._now + self._idle_timeout)
        return p

    def _on_inactive_event(self, key: Hashable, p: _Partition, ts: int, now_ms: int) -> int:
        """A record for an idle partition (it comes back) or an ended one (ignored)."""
        if p.ended:
            # The record moves no watermark, but wall-clock time still passes.
            return self.on_tick(now_ms)
        if self._order is None or self._idle_timeout is None:
            return self._current
        now = self._advance(now_ms)
        p.idle = False
        p.clock = False
        p.active = True
        p.last = now
        self._order[key] = p
        self._deadline = min(self._deadline, now + self._idle_timeout)
        if ts > p.max_ts:
            p.max_ts = ts
            p.wm = max(ts - self._delay, p.wm)
        if now > self._deadline:
            self._expire(now)
        self._recompute()
        return self._current

    def _expire(self, now: int) -> None:
        """Mark partitions idle whose last activity is more than idle_timeout before ``now``."""
        order = self._order
        timeout = self._idle_timeout
        if order is None or timeout is None:
            return
        if self._unstarted:
            self._start(now)
        changed = False
        self._deadline = _NEVER
        while order:
            key = next(iter(order))
            p = order[key]
            if now - p.last > timeout:
                order.popitem(last=False)
                p.active = False
                p.idle = True
                changed = True
            else:
                self._deadline = p.last + timeout
                break
        if changed:
            self._recompute()

    def _recompute(self) -> None:
        """Recompute the minimum over active partitions and advance the task watermark."""
        low = _NEVER
        holders = 0
        waiting = False  # some partition is idle (not ended): hold instead of ending
        hold_idle = self._hold_idle
        for p in self._parts.values():
            if p.active or (hold_idle and p.idle):
                if p.wm < low:
                    low = p.wm
                    holders = 1
                elif p.wm == low:
                    holders += 1
            elif not p.ended:
                waiting = True
        self._min = low
        self._holders = holders
        if holders:
            if low > self._current:
                self._current = low
        elif self._parts and not waiting:
            self._current = MAX_TIMESTAMP
