"""Session windows: a record opens [ts, ts + gap) and merges every session it touches
(see :mod:`evtime.operators.window` for the semantics every window shares)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from evtime.errors import ConfigError
from evtime.operators.base import Collector
from evtime.operators.window_base import WindowOperatorBase
from evtime.records import Batch, EmitKind, KeyObj, WindowResult, window_id
from evtime.state import TaskDB
from evtime.state.codec import decode_int, decode_key, encode_int, encode_key
from evtime.time import Clock
from evtime.windows import Session

if TYPE_CHECKING:
    from evtime.operators.window import WindowSpec


class SessionWindowOperator(WindowOperatorBase):
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
        events = self._events
        wm = max(batch.watermark_before, events.watermark)
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
            if wm >= events.next_due:
                events.advance(wm)
                events.fire(self._on_timer)
        if wm > events.watermark:
            events.watermark = wm

    def _schedule(self, key: KeyObj, session: list[Any]) -> None:
        """Make sure a timer fires no later than the session's next due time."""
        due = session[1] - 1 + (self._lateness if session[5] else 0)
        timer_at = session[6]
        if timer_at is None or timer_at > due:
            self._events.register(due, _session_payload(session[0], key))
            session[6] = due

    def _fire_session(self, key: KeyObj, session: list[Any]) -> None:
        start, end, acc, emissions, replaced = session[:5]
        kind = EmitKind.FINAL if emissions == 0 and not replaced else EmitKind.UPDATE
        session[3] = emissions + 1
        session[4] = []
        session[5] = True
        self._emit(WindowResult(key, start, end, self._agg.result(acc), kind, tuple(replaced)))

    def _on_timer(self, ts: int, payload: bytes) -> None:
        watermark = self._events.watermark
        start = decode_int(payload[:8])
        key = decode_key(payload[8:])
        sessions: list[list[Any]] = self._store.get(key) or []
        session = next((s for s in sessions if s[0] == start), None)
        if session is None or session[6] != ts:
            return  # merged away, or a newer timer of the session is pending
        session[6] = None
        if not session[5] and session[1] - 1 <= watermark:
            self._fire_session(key, session)
        if session[5] and session[1] - 1 + self._lateness <= watermark:
            sessions.remove(session)
        else:
            self._schedule(key, session)
        if sessions:
            self._store.put(key, sessions)
        else:
            self._store.delete(key)

    def live_windows(self) -> int:
        """Sessions with state (walks RocksDB: for tests and metrics)."""
        return sum(len(sessions) for _key, sessions in self._store.items())


def _session_start(session: list[Any]) -> int:
    start: int = session[0]
    return start


def _session_payload(start: int, key: KeyObj) -> bytes:
    return encode_int(start) + encode_key(key)
