"""Window aggregation on event time: tumbling, sliding and session windows.

A window [start, end) fires when the watermark reaches ``end - 1``. With
``allowed_lateness`` its state is kept until the watermark reaches
``end - 1 + allowed_lateness``; a record arriving in between updates the
window and re-fires it at once (an UPDATE of the same window id). A record
whose every window has been cleaned up is late: it goes to the late output
(or the dead-letter output) and is counted, never silently dropped.

Only accumulators are stored. The watermark advances after every record
(``Batch.watermarks``), so results do not depend on how input is batched.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from evtime.aggregates import Aggregate, Count, Sum
from evtime.errors import ConfigError
from evtime.operators.base import (
    Collector,
    batch_dead_letter,
    describe_error,
    emit_shaped,
    send_late,
)
from evtime.records import (
    Batch,
    DeadLetter,
    DeadLetterReason,
    EmitKind,
    KeyObj,
    Output,
    WindowResult,
    window_id,
)
from evtime.state import TaskDB, TimerQueue
from evtime.state.codec import decode_int, decode_key, encode_int, encode_key
from evtime.state.windowed import DIRTY, WindowStore
from evtime.time import MAX_TIMESTAMP, MIN_TIMESTAMP, Clock
from evtime.windows import Session, Sliding, Tumbling, WindowAssigner

NO_TIMER = MAX_TIMESTAMP + 1
_FIRE = 0
_CLEANUP = 1
_NUMBERS = frozenset({int, float})


@dataclass(frozen=True, slots=True)
class WindowSpec:
    """A declared window aggregation (built by ``App.window``)."""

    name: str
    source: str
    assigner: WindowAssigner
    aggregate: Aggregate[Any, Any]
    allowed_lateness: int = 0
    early_every: int | None = None
    early_interval: int | None = None
    result_fn: Callable[[WindowResult], Any] | None = None
    output: str = "main"
    late_output: str | None = None

    def __post_init__(self) -> None:
        if self.allowed_lateness < 0:
            raise ConfigError(f"window {self.name!r}: allowed_lateness must be >= 0")
        if self.early_every is not None and self.early_every < 1:
            raise ConfigError(f"window {self.name!r}: early_every must be a positive count")
        if self.early_interval is not None and self.early_interval < 1:
            raise ConfigError(f"window {self.name!r}: early_interval must be a positive duration")
        if isinstance(self.assigner, Session) and (self.early_every or self.early_interval):
            raise ConfigError(
                f"window {self.name!r}: early firing is supported on tumbling and sliding "
                "windows; session windows fire when the session closes"
            )


class _WindowBase:
    """What tumbling/sliding and session operators share: emission, late records, timers."""

    def __init__(self, spec: WindowSpec, db: TaskDB, collector: Collector, clock: Clock):
        self.spec = spec
        self.name = spec.name
        self._collector = collector
        self._clock = clock
        self._agg = spec.aggregate
        self._lateness = spec.allowed_lateness
        self._timers = TimerQueue(db, f"{spec.name}.timers")
        next_time = self._timers.next_time()
        self._next_timer = NO_TIMER if next_time is None else next_time
        self._wm = MIN_TIMESTAMP
        self.late_count = 0
        self.emitted_count = 0

    # -- emission -----------------------------------------------------------
    def _emit(self, result: WindowResult) -> None:
        self.emitted_count += 1
        emit_shaped(
            self._collector,
            self.spec.output,
            self.spec.result_fn,
            result,
            result.end - 1,
            self._result_failed,
        )

    def _result_failed(self, result: WindowResult, exc: Exception) -> None:
        self._collector.dead_letter(
            DeadLetter(
                DeadLetterReason.USER_CODE,
                f"result function of {self.name!r} raised {describe_error(exc)}",
                self.spec.source,
                -1,
                -1,
                result.key,
                result.to_dict(),
                result.end - 1,
                self.name,
            )
        )

    def _late_record(self, batch: Batch, i: int, watermark: int) -> None:
        self.late_count += 1
        send_late(
            self._collector,
            self.spec.late_output,
            batch,
            i,
            f"event time {batch.timestamps[i]} is behind the watermark {watermark} by more "
            f"than the allowed lateness ({self._lateness} ms) of {self.name!r}",
            self.name,
        )

    def _bad_record(self, batch: Batch, i: int, exc: Exception) -> None:
        self._collector.dead_letter(
            batch_dead_letter(
                batch,
                i,
                DeadLetterReason.USER_CODE,
                f"aggregate {self._agg.name!r} of {self.name!r} raised {describe_error(exc)}",
                self.name,
            )
        )

    def _register(self, ts: int, payload: bytes) -> None:
        self._timers.register(ts, payload)
        if ts < self._next_timer:
            self._next_timer = ts

    def _refresh_next_timer(self) -> None:
        next_time = self._timers.next_time()
        self._next_timer = NO_TIMER if next_time is None else next_time

    # -- driving ------------------------------------------------------------
    def on_watermark(self, watermark: int) -> None:
        if watermark > self._wm:
            self._wm = watermark
        if self._wm >= self._next_timer:
            self._fire_due(self._wm)

    def _fire_due(self, watermark: int) -> None:
        raise NotImplementedError  # pragma: no cover - both subclasses define it

    def on_processing_time(self, now_ms: int) -> None:
        return None

    def next_processing_time(self) -> int | None:
        return None

    @property
    def watermark(self) -> int:
        return self._wm

    @property
    def timers(self) -> TimerQueue:
        return self._timers


class FixedWindowOperator(_WindowBase):
    """Tumbling and sliding windows: every window of a key has its own accumulator.

    State: a :class:`~evtime.state.windowed.WindowStore` of
    ``(start, key) -> [acc, emissions, records_since_early]``. Timers: one per
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
        wm = max(batch.watermark_before, self._wm)
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
        size = self._size
        offset = self._offset
        starts = [ts - (ts - offset) % size for ts in tss]
        i = 0
        while i < n:
            cut = bisect_left(wms, self._next_timer, i)
            end = cut + 1 if cut < n else n
            # The watermark before the segment's last record bounds every record's.
            before_last = wms[end - 2] if end - 1 > i else wm
            if min(starts[i:end]) + size - 1 <= before_last or not self._add_lean(
                batch, i, end, starts, wm
            ):
                self._process_range(batch, i, end, wm)
            else:
                wm = wms[end - 1]
                if wm > self._wm:
                    self._wm = wm
                if wm >= self._next_timer:
                    self._fire_due(wm)
            wm = max(wm, self._wm)
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
        buckets: dict[int, dict[KeyObj, list[Any]]] = {}
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
                    bucket[key] = [zero + amount, 0, 0, True]
                    continue
            entry[0] = entry[0] + amount
            entry[DIRTY] = True
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
        bucket: dict[KeyObj, list[Any]] = {}
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
                                bucket[key] = [add(init(), values[i], ts), 0, 0, True]
                                entry = None
                            else:
                                entry[0] = add(entry[0], values[i], ts)
                                entry[DIRTY] = True
                        else:
                            if sum_field is not None:
                                entry[0] = entry[0] + values[i][sum_field]
                            elif counting:
                                entry[0] += 1
                            else:
                                entry[0] = add(entry[0], values[i], ts)
                            entry[DIRTY] = True
                    except Exception as exc:
                        self._bad_record(batch, i, exc)
            else:
                self._add_general(batch, i, range(last_start, ts - size, -slide), wm)
            wm = wms[i]
            if wm >= self._next_timer:
                self._wm = wm
                self._fire_due(wm)
                cur_start = None
        if wm > self._wm:
            self._wm = wm

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
                    entry = bucket[key] = [self._agg.add(self._agg.init(), value, ts), 0, 0, True]
                    if start not in self._fire_starts:
                        self._register_start(start, fire_at, wm)
                else:
                    entry[0] = self._agg.add(entry[0], value, ts)
                    entry[DIRTY] = True
            except Exception as exc:
                self._bad_record(batch, i, exc)
                return
            if fire_at <= wm:
                self._fire_window(key, start, entry)
            else:
                if self.spec.early_every is not None:
                    entry[2] += 1
                    if entry[2] >= self.spec.early_every:
                        entry[2] = 0
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
            self._register(fire_at, bytes((_FIRE,)) + encode_int(start))
        if self._lateness and start not in self._cleanup_starts:
            self._cleanup_starts.add(start)
            self._register(fire_at + self._lateness, bytes((_CLEANUP,)) + encode_int(start))

    def _fire_window(self, key: KeyObj, start: int, entry: list[Any]) -> None:
        kind = EmitKind.FINAL if entry[1] == 0 else EmitKind.UPDATE
        entry[1] += 1
        entry[DIRTY] = True
        self._store.touched.add(start)
        self._emit(WindowResult(key, start, start + self._size, self._agg.result(entry[0]), kind))

    def _emit_early(self, key: KeyObj, start: int, entry: list[Any]) -> None:
        self._emit(
            WindowResult(key, start, start + self._size, self._agg.result(entry[0]), EmitKind.EARLY)
        )

    def _fire_due(self, watermark: int) -> None:
        for _ts, payload in self._timers.pop_due(watermark):
            start = decode_int(payload[1:9])
            if payload[0] == _FIRE:
                self._fire_start(start)
            else:
                self._cleanup_starts.discard(start)
                self._forget_start(start)
        self._refresh_next_timer()

    def _fire_start(self, start: int) -> None:
        """Emit the window ``start`` of every key (the on-time firing), in key order."""
        self._fire_starts.discard(start)
        keep = self._lateness > 0
        entries = self._store.load_all(start)
        result = self._agg.result
        fn = self.spec.result_fn
        bucket = self._collector.bucket(self.spec.output)
        end = start + self._size
        ts = end - 1
        suffix = f"@{start}-{end}"
        final, update = EmitKind.FINAL, EmitKind.UPDATE
        for key in _sorted_keys(entries):
            entry = entries[key]
            kind = final if entry[1] == 0 else update
            wr = WindowResult(key, start, end, result(entry[0]), kind)
            entry[1] += 1
            entry[DIRTY] = True
            self.emitted_count += 1
            if fn is None:
                value: Any = wr.to_dict()
            else:
                try:
                    value = fn(wr)
                except Exception as exc:
                    self._result_failed(wr, exc)
                    continue
                if value is None:
                    continue
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
            if start + self._size - 1 <= self._wm:
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


def _sorted_keys(entries: dict[KeyObj, list[Any]]) -> list[KeyObj]:
    keys = list(entries)
    if all(type(k) is str for k in keys):
        # UTF-8 preserves code point order: the same order as the encoded keys.
        return sorted(keys)  # type: ignore[type-var]
    return sorted(keys, key=encode_key)


def _slot_order(slot: tuple[int, KeyObj]) -> tuple[int, bytes]:
    return slot[0], encode_key(slot[1])


class SessionWindowOperator(_WindowBase):
    """Session windows: a record opens [ts, ts + gap) and merges every session it touches.

    State: ``key -> [[start, end, acc, emissions, [replaced ids], fired, timer_at], ...]``
    (the key's live sessions, pairwise apart; ``emissions`` counts results
    emitted under the session's own id; ``fired`` says whether the current
    content was emitted; ``timer_at`` is when the session's pending timer
    fires). Two windows merge when they intersect or touch, as in Flink. A
    merged session that absorbed an already emitted one is emitted as an
    UPDATE naming the ids it replaces (only ids that were emitted).
    Accumulators merge in start order.

    Timers are lazy: a session keeps one pending timer, named by its start.
    Extending a session does not move its timer; when the timer fires early,
    it is registered again at the session's new due time (``end - 1``, or
    ``end - 1 + allowed_lateness`` once fired). Timers of sessions merged
    away find no session with their start and do nothing.
    """

    def __init__(self, spec: WindowSpec, db: TaskDB, collector: Collector, clock: Clock):
        super().__init__(spec, db, collector, clock)
        if not isinstance(spec.assigner, Session):
            raise ConfigError(f"window {spec.name!r}: expected a session assigner")
        self._gap: int = spec.assigner.gap
        self._store = db.store(f"{spec.name}.sessions")

    def process(self, batch: Batch) -> None:
        keys, values, tss, wms = batch.keys, batch.values, batch.timestamps, batch.watermarks
        wm = max(batch.watermark_before, self._wm)
        gap = self._gap
        lateness = self._lateness
        get = self._store.get
        put = self._store.put
        agg = self._agg
        for i in range(len(tss)):
            ts = tss[i]
            key = keys[i]
            start, end = ts, ts + gap
            sessions: list[list[Any]] = get(key) or []
            absorbed = [s for s in sessions if s[0] <= end and s[1] >= start]
            if not absorbed and end - 1 + lateness <= wm:
                self._late_record(batch, i, wm)
            else:
                try:
                    own = agg.add(agg.init(), values[i], ts)
                    # Absorbed sessions in start order, then the record (Collect: by time).
                    acc = None
                    replaced: list[str] = []
                    for s in absorbed:
                        acc = s[2] if acc is None else agg.merge(acc, s[2])
                        start = min(start, s[0])
                        end = max(end, s[1])
                        replaced.extend(s[4])
                    acc = own if acc is None else agg.merge(acc, own)
                except Exception as exc:
                    self._bad_record(batch, i, exc)
                else:
                    # s[3] counts emissions under s's own id: only a session with the same
                    # bounds carries them over; an emitted one with other bounds is replaced.
                    # The pending timer of the absorbed session with the same start stays.
                    emissions = 0
                    timer_at = None
                    for s in absorbed:
                        if s[0] == start:
                            timer_at = s[6]
                        if (s[0], s[1]) == (start, end):
                            emissions += s[3]
                        sessions.remove(s)
                        if s[3] and (s[0], s[1]) != (start, end):
                            replaced.append(window_id(key, s[0], s[1]))
                    session = [start, end, acc, emissions, sorted(set(replaced)), False, timer_at]
                    sessions.append(session)
                    sessions.sort(key=_session_start)
                    if end - 1 <= wm:
                        self._fire_session(key, session)
                        if not lateness:
                            sessions.remove(session)
                    if session in sessions:
                        self._schedule(key, session)
                    if sessions:
                        put(key, sessions)
                    else:
                        self._store.delete(key)
            wm = wms[i]
            if wm >= self._next_timer:
                self._wm = wm
                self._fire_due(wm)
        if wm > self._wm:
            self._wm = wm

    def _schedule(self, key: KeyObj, session: list[Any]) -> None:
        """Make sure a timer fires no later than the session's next due time."""
        due = session[1] - 1 + (self._lateness if session[5] else 0)
        timer_at = session[6]
        if timer_at is None or timer_at > due:
            self._register(due, _session_payload(session[0], key))
            session[6] = due

    def _fire_session(self, key: KeyObj, session: list[Any]) -> None:
        start, end, acc, emissions, replaced = session[:5]
        kind = EmitKind.FINAL if emissions == 0 and not replaced else EmitKind.UPDATE
        session[3] = emissions + 1
        session[4] = []
        session[5] = True
        self._emit(WindowResult(key, start, end, self._agg.result(acc), kind, tuple(replaced)))

    def _fire_due(self, watermark: int) -> None:
        lateness = self._lateness
        for ts, payload in self._timers.pop_due(watermark):
            start = decode_int(payload[:8])
            key = decode_key(payload[8:])
            sessions: list[list[Any]] = self._store.get(key) or []
            session = next((s for s in sessions if s[0] == start), None)
            if session is None or session[6] != ts:
                continue  # merged away, or a newer timer of the session is pending
            session[6] = None
            if not session[5] and session[1] - 1 <= watermark:
                self._fire_session(key, session)
            if session[5] and session[1] - 1 + lateness <= watermark:
                sessions.remove(session)
            else:
                self._schedule(key, session)
            if sessions:
                self._store.put(key, sessions)
            else:
                self._store.delete(key)
        self._refresh_next_timer()

    def live_windows(self) -> int:
        """Sessions with state (walks RocksDB: for tests and metrics)."""
        return sum(len(sessions) for _key, sessions in self._store.items())


def _session_start(session: list[Any]) -> int:
    start: int = session[0]
    return start


def _session_payload(start: int, key: KeyObj) -> bytes:
    return encode_int(start) + encode_key(key)


def column_families(spec: WindowSpec) -> list[str]:
    """The RocksDB column families the operator of ``spec`` uses (declared at open)."""
    store = "sessions" if isinstance(spec.assigner, Session) else "windows"
    return [f"{spec.name}.{store}", f"{spec.name}.timers"]


def make_window_operator(
    spec: WindowSpec, db: TaskDB, collector: Collector, clock: Clock
) -> FixedWindowOperator | SessionWindowOperator:
    """The operator that runs ``spec`` in one partition task."""
    if isinstance(spec.assigner, Session):
        return SessionWindowOperator(spec, db, collector, clock)
    return FixedWindowOperator(spec, db, collector, clock)
