"""The keyed process function: user code with per-key state and timers.

For every record, ``fn(record, ctx)`` runs with ``ctx`` bound to the
record's key: ``ctx.state`` gives value and map state (optionally with a
time-to-live), ``ctx.timers`` registers event-time and processing-time
timers, and ``ctx.emit`` sends results to one of the operator's outputs.
Timers fire in time order, exactly once, through ``on_timer(timer, ctx)``;
state and timers are part of the task's snapshot.
"""

from __future__ import annotations

import enum
import heapq
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from evtime.errors import ConfigError
from evtime.operators.base import Collector, describe_error
from evtime.operators.timers import EventTimers
from evtime.records import Batch, DeadLetter, DeadLetterReason, KeyObj, Output, Record
from evtime.state import KeyValueStore, TaskDB, TimerQueue
from evtime.state.codec import decode_key, encode_key
from evtime.time import MIN_TIMESTAMP, Clock


class TimeDomain(enum.Enum):
    """Which clock a timer follows."""

    EVENT_TIME = "event_time"
    PROCESSING_TIME = "processing_time"


@dataclass(frozen=True, slots=True)
class Timer:
    """A timer that fired: its time, the key it belongs to, and its clock."""

    timestamp: int
    key: KeyObj
    domain: TimeDomain


@dataclass(frozen=True, slots=True)
class ProcessSpec:
    """A declared keyed process function (built by ``App.process``)."""

    name: str
    source: str
    fn: Callable[[Record, ProcessContext], Any]
    on_timer: Callable[[Timer, ProcessContext], Any] | None = None
    outputs: tuple[tuple[str, str], ...] = (("main", "main"),)
    """(name used in ``ctx.emit(to=...)``, output id the task routes to a sink) pairs."""


# State keys: (state name, record key, map key or None) -> encoded with length prefixes
# so that a map's entries of one key are one contiguous, prefix-scannable range.
_StateKey = tuple[str, KeyObj, KeyObj]


def _state_prefix(name: str, key: KeyObj) -> bytes:
    n = name.encode()
    k = encode_key(key)
    return bytes((len(n),)) + n + len(k).to_bytes(4, "big") + k


def _encode_state_key(sk: _StateKey) -> bytes:
    name, key, sub = sk
    return _state_prefix(name, key) + (b"" if sub is None else encode_key(sub))


def _decode_state_key(raw: bytes) -> _StateKey:
    n = raw[0]
    name = raw[1 : 1 + n].decode()
    pos = 1 + n
    klen = int.from_bytes(raw[pos : pos + 4], "big")
    key = decode_key(raw[pos + 4 : pos + 4 + klen])
    rest = raw[pos + 4 + klen :]
    return name, key, decode_key(rest) if rest else None


class ValueState:
    """One value per key (``get`` / ``set`` / ``clear``), optionally expiring after ``ttl``."""

    def __init__(self, ctx: ProcessContext, name: str, ttl: int | None) -> None:
        self._ctx = ctx
        self._name = name
        self._ttl = ttl

    def get(self, default: Any = None) -> Any:
        """The key's value, or ``default`` (also once it expired)."""
        return self._ctx._op._read((self._name, self._ctx.key, None), default)

    def set(self, value: Any) -> None:
        """Store ``value`` for the current key (JSON-like values only)."""
        self._ctx._op._write((self._name, self._ctx.key, None), value, self._ttl)

    def clear(self) -> None:
        """Remove the key's value."""
        self._ctx._op._store.delete((self._name, self._ctx.key, None))


class MapState:
    """A map per key, optionally with a time-to-live per entry."""

    def __init__(self, ctx: ProcessContext, name: str, ttl: int | None) -> None:
        self._ctx = ctx
        self._name = name
        self._ttl = ttl

    def get(self, field: KeyObj, default: Any = None) -> Any:
        return self._ctx._op._read((self._name, self._ctx.key, field), default)

    def put(self, field: KeyObj, value: Any) -> None:
        if field is None:
            raise ConfigError("MapState keys cannot be None; use a str, bytes or int")
        self._ctx._op._write((self._name, self._ctx.key, field), value, self._ttl)

    def delete(self, field: KeyObj) -> None:
        self._ctx._op._store.delete((self._name, self._ctx.key, field))

    def __contains__(self, field: KeyObj) -> bool:
        return self.get(field, _MISSING) is not _MISSING

    def items(self) -> Iterator[tuple[KeyObj, Any]]:
        """The key's live entries, in key order."""
        op = self._ctx._op
        now = op._clock.now_ms()
        prefix = _state_prefix(self._name, self._ctx.key)
        for (_n, _k, field), stored in op._store.scan_prefix(prefix):
            if field is None:
                continue
            value, expires = stored
            if expires is None or expires > now:
                yield field, value

    def keys(self) -> Iterator[KeyObj]:
        return (k for k, _ in self.items())

    def clear(self) -> None:
        for field in list(self.keys()):
            self.delete(field)


_MISSING: Any = object()


class TimerService:
    """Registers and deletes the current key's timers."""

    def __init__(self, ctx: ProcessContext) -> None:
        self._ctx = ctx

    def register_event_time(self, timestamp: int) -> None:
        """Fire ``on_timer`` once the watermark reaches ``timestamp``."""
        self._ctx._op._register_event(timestamp, self._ctx.key)

    def register_processing_time(self, timestamp: int) -> None:
        """Fire ``on_timer`` once the wall clock reaches ``timestamp``."""
        self._ctx._op._register_proc(timestamp, b"u" + encode_key(self._ctx.key))

    def delete_event_time(self, timestamp: int) -> None:
        op = self._ctx._op
        payload = encode_key(self._ctx.key)
        op._leave_round(TimeDomain.EVENT_TIME, timestamp, payload)
        op._events.delete(timestamp, payload)

    def delete_processing_time(self, timestamp: int) -> None:
        op = self._ctx._op
        payload = b"u" + encode_key(self._ctx.key)
        op._leave_round(TimeDomain.PROCESSING_TIME, timestamp, payload)
        op._ptimers.delete(timestamp, payload)


class ProcessContext:
    """What user code gets with each record or timer: key, time, state, timers, emit."""

    def __init__(self, op: ProcessOperator) -> None:
        self._op = op
        self.key: KeyObj = None
        self.timestamp: int = MIN_TIMESTAMP
        self.timers = TimerService(self)
        self._values: dict[str, ValueState] = {}
        self._maps: dict[str, MapState] = {}

    @property
    def watermark(self) -> int:
        """The task's current event-time watermark."""
        return self._op._events.watermark

    def processing_time(self) -> int:
        """The wall clock (the app's clock), in ms."""
        return self._op._clock.now_ms()

    def value_state(self, name: str, ttl: int | None = None) -> ValueState:
        """The value state ``name`` of the current key."""
        state = self._values.get(name)
        if state is None:
            state = self._values[name] = ValueState(self, name, ttl)
        return state

    def map_state(self, name: str, ttl: int | None = None) -> MapState:
        """The map state ``name`` of the current key."""
        state = self._maps.get(name)
        if state is None:
            state = self._maps[name] = MapState(self, name, ttl)
        return state

    def emit(
        self,
        value: Any,
        *,
        key: KeyObj | type[_MISSING] = _MISSING,
        timestamp: int | None = None,
        to: str = "main",
        id: str | None = None,
    ) -> None:
        """Send ``value`` to output ``to`` (key and event time default to the current ones)."""
        target = self._op._outputs.get(to)
        if target is None:
            raise ConfigError(
                f"{self._op.name!r} emitted to output {to!r}, but it declares only "
                f"{sorted(self._op._outputs)}; add it to the sink= mapping"
            )
        out_key = self.key if key is _MISSING else key
        self._op._collector.emit(
            target,
            Output(
                out_key,  # type: ignore[arg-type]
                value,
                self.timestamp if timestamp is None else timestamp,
                id,
            ),
        )


def column_families(spec: ProcessSpec) -> list[str]:
    """The RocksDB column families the operator of ``spec`` uses (declared at open)."""
    return [f"{spec.name}.state", f"{spec.name}.etimers", f"{spec.name}.ptimers"]


@dataclass(slots=True)
class _Round:
    """The due timers of one domain being fired (a heap), while callbacks run."""

    domain: TimeDomain
    until: int
    heap: list[tuple[int, bytes]]
    members: set[tuple[int, bytes]]


class ProcessOperator:
    """Runs a :class:`ProcessSpec` in one partition task."""

    def __init__(self, spec: ProcessSpec, db: TaskDB, collector: Collector, clock: Clock):
        self.spec = spec
        self.name = spec.name
        self._collector = collector
        self._clock = clock
        self._store: KeyValueStore[Any] = db.store(
            f"{spec.name}.state", _encode_state_key, _decode_state_key
        )
        self._events = EventTimers(db, f"{spec.name}.etimers")
        self._ptimers = TimerQueue(db, f"{spec.name}.ptimers")
        self._outputs = dict(spec.outputs)
        self._ctx = ProcessContext(self)
        self._round: _Round | None = None

    # -- state with TTL -------------------------------------------------------
    def _read(self, sk: _StateKey, default: Any) -> Any:
        stored = self._store.get(sk)
        if stored is None:
            return default
        value, expires = stored
        if expires is not None and expires <= self._clock.now_ms():
            self._store.delete(sk)
            return default
        return value

    def _write(self, sk: _StateKey, value: Any, ttl: int | None) -> None:
        expires = None
        if ttl is not None:
            expires = self._clock.now_ms() + ttl
            # One cleanup timer per entry, so expired state goes even if never read again.
            self._register_proc(expires, b"t" + _encode_state_key(sk))
        self._store.put(sk, [value, expires])

    def _register_event(self, timestamp: int, key: KeyObj) -> None:
        payload = encode_key(key)
        if self._join_round(TimeDomain.EVENT_TIME, timestamp, payload):
            return
        self._events.register(timestamp, payload)

    def _register_proc(self, timestamp: int, payload: bytes) -> None:
        if not self._join_round(TimeDomain.PROCESSING_TIME, timestamp, payload):
            self._ptimers.register(timestamp, payload)

    def _join_round(self, domain: TimeDomain, timestamp: int, payload: bytes) -> bool:
        """Whether a timer registered by a timer callback is due now: it then joins the
        round being fired, in order, instead of the queue."""
        rnd = self._round
        if rnd is None or rnd.domain is not domain or timestamp > rnd.until:
            return False
        timer = (timestamp, payload)
        if timer not in rnd.members:
            rnd.members.add(timer)
            heapq.heappush(rnd.heap, timer)
        return True

    def _leave_round(self, domain: TimeDomain, timestamp: int, payload: bytes) -> None:
        """A timer callback deleted a timer that is due in the round being fired."""
        rnd = self._round
        timer = (timestamp, payload)
        if rnd is not None and rnd.domain is domain and timer in rnd.members:
            rnd.members.discard(timer)
            rnd.heap.remove(timer)
            heapq.heapify(rnd.heap)

    # -- driving ------------------------------------------------------------------
    def process(self, batch: Batch) -> None:
        ctx = self._ctx
        fn = self.spec.fn
        wms = batch.watermarks
        events = self._events
        if batch.watermark_before > events.watermark:
            events.watermark = batch.watermark_before
        for i in range(len(wms)):
            record = batch.record(i)
            ctx.key = record.key
            ctx.timestamp = record.timestamp
            try:
                fn(record, ctx)
            except Exception as exc:
                self._collector.dead_letter(
                    DeadLetter(
                        DeadLetterReason.USER_CODE,
                        f"{self.name!r} raised {describe_error(exc)}",
                        batch.topic,
                        batch.partition,
                        record.offset,
                        record.key,
                        batch.raw[i].value,
                        record.timestamp,
                        self.name,
                    )
                )
            # Also when the watermark did not move: fn may have registered a timer behind it.
            if events.advance(wms[i]):
                self._fire_event_timers()

    def on_watermark(self, watermark: int) -> None:
        if self._events.advance(watermark):
            self._fire_event_timers()

    def _fire_event_timers(self) -> None:
        events = self._events
        self._fire_round(events.queue, TimeDomain.EVENT_TIME, events.watermark)
        events.refresh()

    def on_processing_time(self, now_ms: int) -> None:
        self._fire_round(self._ptimers, TimeDomain.PROCESSING_TIME, now_ms)
        # A processing-time callback may have registered an event-time timer that is due.
        if self._events.due:
            self._fire_event_timers()

    def _fire_round(self, queue: TimerQueue, domain: TimeDomain, until: int) -> None:
        """Fire every timer of ``queue`` due at ``until``, one at a time, earliest
        (time, key) first. Callbacks may register or delete timers that are due too: they
        join or leave the round (Flink's priority-queue order)."""
        due = queue.pop_due(until)
        if not due:
            return
        # pop_due returns a sorted list, which is a heap.
        rnd = self._round = _Round(domain, until, due, set(due))
        try:
            while due:
                timer = heapq.heappop(due)
                rnd.members.discard(timer)
                ts, payload = timer
                if domain is TimeDomain.EVENT_TIME:
                    self._call_timer(Timer(ts, decode_key(payload), domain))
                elif payload[:1] == b"t":
                    sk = _decode_state_key(payload[1:])
                    stored = self._store.get(sk)
                    if stored is not None and stored[1] is not None and stored[1] <= until:
                        self._store.delete(sk)
                else:
                    self._call_timer(Timer(ts, decode_key(payload[1:]), domain))
        finally:
            self._round = None

    def next_processing_time(self) -> int | None:
        return self._ptimers.next_time()

    def _call_timer(self, timer: Timer) -> None:
        handler = self.spec.on_timer
        if handler is None:
            return
        ctx = self._ctx
        ctx.key = timer.key
        ctx.timestamp = timer.timestamp
        try:
            handler(timer, ctx)
        except Exception as exc:
            self._collector.dead_letter(
                DeadLetter(
                    DeadLetterReason.USER_CODE,
                    f"on_timer of {self.name!r} raised {describe_error(exc)}",
                    self.spec.source,
                    -1,
                    -1,
                    timer.key,
                    None,
                    timer.timestamp,
                    self.name,
                )
            )

    @property
    def watermark(self) -> int:
        return self._events.watermark

    def live_state(self) -> int:
        """Entries of state (walks RocksDB: for tests and metrics)."""
        return sum(1 for _ in self._store.items())
