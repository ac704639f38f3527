"""Tumbling and sliding windows: every window of a key has its own accumulator.

Timers are per window *start*, not per key, and the common case (a tumbling
Sum or Count without early firing) adds a whole segment of a batch in one
lean loop: this is the engine's fastest path (see :mod:`evtime.operators.window`
for the semantics every window shares).
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterable
from typing import TYPE_CHECKING

from evtime.aggregates import Count, Sum
from evtime.errors import ConfigError
from evtime.operators.base import Collector
from evtime.operators.window_base import WindowOperatorBase
from evtime.records import Batch, EmitKind, KeyObj, Output, WindowResult, window_id
from evtime.state import TaskDB
from evtime.state.codec import decode_int, encode_int, encode_key
from evtime.state.windowed import WindowEntry, WindowStore
from evtime.time import Clock
from evtime.windows import Sliding, Tumbling

if TYPE_CHECKING:
    from evtime.operators.window import WindowSpec

_FIRE = 0
_CLEANUP = 1
_NUMBERS = frozenset({int, float})


class FixedWindowOperator(WindowOperatorBase):
    """Tumbling and sliding windows: every window of a key has its own accumulator.

    State: a :class:`~evtime.state.windowed.WindowStore` of
    ``(start, key) -> WindowEntry(acc, emissions, since_early)``. Timers: one per
    window *start*, not per key: fire at ``end - 1`` (every key's window of
    that start is emitted, in key order) and cleanup at
    ``end - 1 + allowed_lateness``.
    """

    def __init__(self, spec: WindowSpec, db: TaskDB, collector: Collector, clock: Clock):
        super().__init__(spec, db, collector, clock)
        assigner = spec.assigner
        if not isinstance(assigner, Tumbling | Sliding):
            raise ConfigError(f"window {spec.name!r}: expected a tumbling or sliding assigner")
        self._size: int = assigner.size
        self._slide: int = assigner.slide if isinstance(assigner, Sliding) else assigner.size
        self._offset: int = assigner.offset
        self._store = WindowStore(db, f"{spec.name}.windows")
        # Window starts whose fire / cleanup timer is registered in this run.
        self._fire_starts: set[int] = set()
        self._cleanup_starts: set[int] = set()
        self._touched: set[tuple[int, KeyObj]] = set()
        self._next_early: int | None = None
        if spec.early_interval is not None:
            self._next_early = clock.now_ms() + spec.early_interval
        agg = self._agg
        self._sum_field: str | None = (
            agg.field if type(agg) is Sum and isinstance(agg.field, str) else None
        )
        self._fast = (
            self._slide == self._size
            and spec.early_every is None
            and not spec.early_interval
            and (self._sum_field is not None or type(agg) is Count)
        )

    def process(self, batch: Batch) -> None:
        wm = max(batch.watermark_before, self._events.watermark)
        if self._fast:
            self._process_segments(batch, wm)
        else:
            self._process_range(batch, 0, len(batch.timestamps), wm)

    def _process_segments(self, batch: Batch, wm: int) -> None:
        """Tumbling Sum / Count, the common case: the batch is cut where timers fire (the
        watermarks of a batch never decrease, so a bisection finds the cuts). A segment in
        which no record can be late, which is nearly every one, is added in one lean loop;
        any other segment takes the record-by-record path."""
        tss, wms = batch.timestamps, batch.watermarks
        n = len(tss)
        events = self._events
        size = self._size
        offset = self._offset
        starts = [ts - (ts - offset) % size for ts in tss]
        i = 0
        while i < n:
            cut = bisect_left(wms, events.next_due, i)
            end = cut + 1 if cut < n else n
            # The watermark before the segment's last record bounds every record's.
            before_last = wms[end - 2] if end - 1 > i else wm
            if min(starts[i:end]) + size - 1 <= before_last or not self._add_lean(
                batch, i, end, starts, wm
            ):
                self._process_range(batch, i, end, wm)
            else:
                wm = wms[end - 1]
                if events.advance(wm):
                    events.fire(self._on_timer)
            wm = max(wm, events.watermark)
            i = end

    def _add_lean(self, batch: Batch, lo: int, hi: int, starts: list[int], wm: int) -> bool:
        """Add records ``lo..hi`` (none of them late) to their windows; False (and nothing
        done) if a value is not a plain number, for the careful path to sort out."""
        seg_starts = starts[lo:hi]
        if self._sum_field is not None:
            field = self._sum_field
            try:
                amounts = [v[field] for v in batch.values[lo:hi]]
            except Exception:
                return False
            if not set(map(type, amounts)) <= _NUMBERS:
                return False
        else:
            amounts = [1] * (hi - lo)
        store = self._store
        opened = store.open
        persisted = store.persisted
        size = self._size
        buckets: dict[int, dict[KeyObj, WindowEntry]] = {}
        for start in set(seg_starts):
            bucket = opened.get(start)
            if bucket is None:
                bucket = opened[start] = {}
                if start not in self._fire_starts:
                    self._register_start(start, start + size - 1, wm)
            store.touched.add(start)
            buckets[start] = bucket
        zero = self._agg.init()
        for start, key, amount in zip(seg_starts, batch.keys[lo:hi], amounts, strict=True):
            bucket = buckets[start]
            entry = bucket.get(key)
            if entry is None:
                if start in persisted:
                    entry = store.load(start, key)
                if entry is None:
                    bucket[key] = WindowEntry(zero + amount, 0, 0, True)
                    continue
            entry.acc = entry.acc + amount
            entry.dirty = True
        return True

    def _process_range(self, batch: Batch, lo: int, hi: int, wm: int) -> None:
        """Records ``lo..hi`` one by one; ``wm`` is the watermark before record ``lo``."""
        keys, values, tss, wms = batch.keys, batch.values, batch.timestamps, batch.watermarks
        size = self._size
        slide = self._slide
        tumbling = slide == size and self.spec.early_every is None and not self.spec.early_interval
        offset = self._offset
        lateness = self._lateness
        store = self._store
        events = self._events
        opened = store.open
        touched_starts = store.touched
        persisted = store.persisted
        init = self._agg.init
        add = self._agg.add
        # Sum of a field and Count are added inline (same expression as their add()).
        agg = self._agg
        sum_field = agg.field if type(agg) is Sum and isinstance(agg.field, str) else None
        counting = type(agg) is Count
        cur_start: int | None = None
        bucket: dict[KeyObj, WindowEntry] = {}
        for i in range(lo, hi):
            ts = tss[i]
            last_start = ts - (ts - offset) % slide
            if tumbling:
                # The common case, kept lean: one window per record.
                fire_at = last_start + size - 1
                if fire_at + lateness <= wm:
                    self._late_record(batch, i, wm)
                elif fire_at <= wm:
                    self._add_late(batch, i, last_start)
                else:
                    if last_start != cur_start:
                        cur_start = last_start
                        b = opened.get(last_start)
                        if b is None:
                            b = opened[last_start] = {}
                            if last_start not in self._fire_starts:
                                self._register_start(last_start, fire_at, wm)
                        bucket = b
                        touched_starts.add(last_start)
                    key = keys[i]
                    entry = bucket.get(key)
                    try:
                        if entry is None:
                            if last_start in persisted:
                                entry = store.load(last_start, key)
                            if entry is None:
                                bucket[key] = WindowEntry(add(init(), values[i], ts), 0, 0, True)
                                entry = None
                            else:
                                entry.acc = add(entry.acc, values[i], ts)
                                entry.dirty = True
                        else:
                            if sum_field is not None:
                                entry.acc = entry.acc + values[i][sum_field]
                            elif counting:
                                entry.acc += 1
                            else:
                                entry.acc = add(entry.acc, values[i], ts)
                            entry.dirty = True
                    except Exception as exc:
                        self._bad_record(batch, i, exc)
            else:
                self._add_general(batch, i, range(last_start, ts - size, -slide), wm)
            wm = wms[i]
            if wm >= events.next_due:
                events.advance(wm)
                events.fire(self._on_timer)
                cur_start = None
        if wm > events.watermark:
            events.watermark = wm

    def _add_general(self, batch: Batch, i: int, starts: range, wm: int) -> None:
        """Sliding windows, early firing: every window of record ``i``."""
        size = self._size
        ts = batch.timestamps[i]
        key = batch.keys[i]
        value = batch.values[i]
        store = self._store
        accepted = False
        for start in starts:
            fire_at = start + size - 1
            if fire_at + self._lateness <= wm:
                continue  # this window is gone
            accepted = True
            bucket = store.bucket(start)
            store.touched.add(start)
            entry = bucket.get(key)
            if entry is None and start in store.persisted:
                entry = store.load(start, key)
            try:
                if entry is None:
                    acc = self._agg.add(self._agg.init(), value, ts)
                    entry = bucket[key] = WindowEntry(acc, 0, 0, True)
                    if start not in self._fire_starts:
                        self._register_start(start, fire_at, wm)
                else:
                    entry.acc = self._agg.add(entry.acc, value, ts)
                    entry.dirty = True
            except Exception as exc:
                self._bad_record(batch, i, exc)
                return
            if fire_at <= wm:
                self._fire_window(key, start, entry)
            else:
                if self.spec.early_every is not None:
                    entry.since_early += 1
                    if entry.since_early >= self.spec.early_every:
                        entry.since_early = 0
                        self._emit_early(key, start, entry)
                if self.spec.early_interval is not None:
                    self._touched.add((start, key))
        if not accepted and starts:
            self._late_record(batch, i, wm)

    def _add_late(self, batch: Batch, i: int, start: int) -> None:
        """A record for a tumbling window that already fired but is kept for lateness."""
        self._add_general(batch, i, range(start, start - 1, -1), self._wm_before(batch, i))

    @staticmethod
    def _wm_before(batch: Batch, i: int) -> int:
        return batch.watermarks[i - 1] if i else batch.watermark_before

    def _register_start(self, start: int, fire_at: int, wm: int) -> None:
        if fire_at > wm:
            self._fire_starts.add(start)
            self._events.register(fire_at, bytes((_FIRE,)) + encode_int(start))
        if self._lateness and start not in self._cleanup_starts:
            self._cleanup_starts.add(start)
            self._events.register(
                fire_at + self._lateness, bytes((_CLEANUP,)) + encode_int(start)
            )

    def _fire_window(self, key: KeyObj, start: int, entry: WindowEntry) -> None:
        kind = EmitKind.FINAL if entry.emissions == 0 else EmitKind.UPDATE
        entry.emissions += 1
        entry.dirty = True
        self._store.touched.add(start)
        self._emit(WindowResult(key, start, start + self._size, self._agg.result(entry.acc), kind))

    def _emit_early(self, key: KeyObj, start: int, entry: WindowEntry) -> None:
        result = self._agg.result(entry.acc)
        self._emit(WindowResult(key, start, start + self._size, result, EmitKind.EARLY))

    def _on_timer(self, ts: int, payload: bytes) -> None:
        start = decode_int(payload[1:9])
        if payload[0] == _FIRE:
            self._fire_start(start)
        else:
            self._cleanup_starts.discard(start)
            self._forget_start(start)

    def _fire_start(self, start: int) -> None:
        """Emit the window ``start`` of every key (the on-time firing), in key order."""
        self._fire_starts.discard(start)
        keep = self._lateness > 0
        # A window kept for its lateness is cached whole; one dropped once fired is read
        # as it is emitted, so that its keys need not all be in memory at once.
        if keep:
            entries = self._store.load_all(start)
            items: Iterable[tuple[KeyObj, WindowEntry]] = (
                (key, entries[key]) for key in _sorted_keys(entries)
            )
        else:
            items = self._store.iter_all(start)
        result = self._agg.result
        shape = self._results.shape
        bucket = self._collector.bucket(self.spec.output)
        end = start + self._size
        ts = end - 1
        suffix = f"@{start}-{end}"
        final, update = EmitKind.FINAL, EmitKind.UPDATE
        for key, entry in items:
            kind = final if entry.emissions == 0 else update
            wr = WindowResult(key, start, end, result(entry.acc), kind)
            entry.emissions += 1
            entry.dirty = True
            value = shape(wr, ts)
            if value is not None:
                wid = key + suffix if type(key) is str else window_id(key, start, end)
                bucket.append(Output(key, value, ts, wid))
        if keep:
            self._store.touched.add(start)
        else:
            self._forget_start(start)

    def _forget_start(self, start: int) -> None:
        self._store.drop(start)
        if self._touched:
            self._touched = {slot for slot in self._touched if slot[0] != start}

    def on_processing_time(self, now_ms: int) -> None:
        if self._next_early is None or now_ms < self._next_early:
            return
        interval = self.spec.early_interval or 1
        self._next_early = now_ms + interval
        touched, self._touched = self._touched, set()
        for start, key in sorted(touched, key=_slot_order):
            if start + self._size - 1 <= self._events.watermark:
                continue
            entry = self._store.bucket(start).get(key)
            if entry is None and start in self._store.persisted:
                entry = self._store.load(start, key)
            if entry is not None:
                self._emit_early(key, start, entry)

    def next_processing_time(self) -> int | None:
        return self._next_early

    def live_windows(self) -> int:
        """Windows with state (walks RocksDB: for tests and metrics, not the hot path)."""
        return self._store.live_count()


def _sorted_keys(entries: dict[KeyObj, WindowEntry]) -> list[KeyObj]:
    keys = list(entries)
    if all(type(k) is str for k in keys):
        # UTF-8 preserves code point order: the same order as the encoded keys.
        return sorted(keys)  # type: ignore[type-var]
    return sorted(keys, key=encode_key)


def _slot_order(slot: tuple[int, KeyObj]) -> tuple[int, bytes]:
    return slot[0], encode_key(slot[1])
