"""Session windows: a record opens [ts, ts + gap) and merges every session it touches
(see :mod:`evtime.operators.window` for the semantics every window shares)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from evtime.errors import ConfigError
from evtime.operators.base import Collector
from evtime.operators.window_base import WindowOperatorBase
from evtime.records import Batch, EmitKind, KeyObj, WindowResult, window_id
from evtime.state import TaskDB
from evtime.state.codec import StateEntry, decode_int, decode_key, encode_int, encode_key
from evtime.time import Clock
from evtime.windows import Session

if TYPE_CHECKING:
    from evtime.operators.window import WindowSpec


class SessionWindowOperator(WindowOperatorBase):
    """Session windows: a record opens [ts, ts + gap) and merges every session it touches.

    State: ``key -> [SessionEntry, ...]``, the key's live sessions, pairwise
    apart, in start order. Two windows merge when they intersect or touch, as in Flink. A
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
            sessions: list[SessionEntry] = get(key) or []
            if sessions and type(sessions[0]) is not SessionEntry:
                sessions = _decode_sessions(sessions)  # lists just read from RocksDB
            absorbed = [s for s in sessions if s.start <= end and s.end >= start]
            if not absorbed and end - 1 + lateness <= wm:
                self._late_record(batch, i, wm)
            else:
                try:
                    own = agg.add(agg.init(), values[i], ts)
                    # Absorbed sessions in start order, then the record (Collect: by time).
                    acc = None
                    replaced: list[str] = []
                    for s in absorbed:
                        acc = s.acc if acc is None else agg.merge(acc, s.acc)
                        start = min(start, s.start)
                        end = max(end, s.end)
                        replaced.extend(s.replaced)
                    acc = own if acc is None else agg.merge(acc, own)
                except Exception as exc:
                    self._bad_record(batch, i, exc)
                else:
                    # Emissions count under a session's own id: only a session with the same
                    # bounds carries them over; an emitted one with other bounds is replaced.
                    # The pending timer of the absorbed session with the same start stays.
                    emissions = 0
                    timer_at = None
                    for s in absorbed:
                        if s.start == start:
                            timer_at = s.timer_at
                        same = s.start == start and s.end == end
                        if same:
                            emissions += s.emissions
                        sessions.remove(s)
                        if s.emissions and not same:
                            replaced.append(window_id(key, s.start, s.end))
                    session = SessionEntry(
                        start, end, acc, emissions, sorted(set(replaced)), False, timer_at
                    )
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

    def _schedule(self, key: KeyObj, session: SessionEntry) -> None:
        """Make sure a timer fires no later than the session's next due time."""
        due = session.end - 1 + (self._lateness if session.fired else 0)
        timer_at = session.timer_at
        if timer_at is None or timer_at > due:
            self._events.register(due, _session_payload(session.start, key))
            session.timer_at = due

    def _fire_session(self, key: KeyObj, session: SessionEntry) -> None:
        replaced = session.replaced
        kind = EmitKind.FINAL if session.emissions == 0 and not replaced else EmitKind.UPDATE
        session.emissions += 1
        session.replaced = []
        session.fired = True
        result = self._agg.result(session.acc)
        self._emit(WindowResult(key, session.start, session.end, result, kind, tuple(replaced)))

    def _on_timer(self, ts: int, payload: bytes) -> None:
        watermark = self._events.watermark
        start = decode_int(payload[:8])
        key = decode_key(payload[8:])
        sessions = _decode_sessions(self._store.get(key) or [])
        session = next((s for s in sessions if s.start == start), None)
        if session is None or session.timer_at != ts:
            return  # merged away, or a newer timer of the session is pending
        session.timer_at = None
        if not session.fired and session.end - 1 <= watermark:
            self._fire_session(key, session)
        if session.fired and session.end - 1 + self._lateness <= watermark:
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


class SessionEntry(StateEntry):
    """One live session of a key (stored as the list of its fields, in this order)."""

    __slots__ = ("acc", "emissions", "end", "fired", "replaced", "start", "timer_at")

    def __init__(
        self,
        start: int,
        end: int,
        acc: Any,
        emissions: int,
        replaced: list[str],
        fired: bool,
        timer_at: int | None,
    ) -> None:
        self.start = start
        self.end = end
        self.acc = acc
        self.emissions = emissions
        """Results emitted under the session's own id."""
        self.replaced = replaced
        """Ids of emitted sessions it absorbed, named by its next UPDATE."""
        self.fired = fired
        """Whether its current content was emitted."""
        self.timer_at = timer_at
        """When its pending timer fires (None: no timer pending)."""

    def to_state(self) -> list[Any]:
        return [
            self.start,
            self.end,
            self.acc,
            self.emissions,
            self.replaced,
            self.fired,
            self.timer_at,
        ]


def _decode_sessions(stored: list[Any]) -> list[SessionEntry]:
    """A key's sessions as the store returned them: entries if cached, lists if just read
    from RocksDB."""
    if stored and type(stored[0]) is list:
        return [SessionEntry(*fields) for fields in stored]
    return stored


def _session_start(session: SessionEntry) -> int:
    return session.start


def _session_payload(start: int, key: KeyObj) -> bytes:
    return encode_int(start) + encode_key(key)
