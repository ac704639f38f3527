"""The interval join of two keyed inputs on event time (Flink's and Spark's semantics).

A row ``a`` of the LEFT input joins a row ``b`` of the RIGHT input with the
same key when ``a.ts + lower <= b.ts <= a.ts + upper`` (``within=d`` is
``lower=-d, upper=+d``). Every matching pair is emitted once, as soon as the
second of the two arrives (many-to-many).

Time, lateness and state:

* A row arriving at or behind the watermark before it (``ts <= W``) is late
  (Flink's and Spark's rule, :func:`evtime.watermarks.is_late`): it goes to the
  late output or the dead-letter output with reason ``late``. Only such a row
  could have partners that are already gone, so every pair of accepted rows
  within the bounds is emitted.
* A row is kept until the watermark reaches the last point at which it can
  still match: ``a.ts + upper`` for a left row, ``b.ts - lower`` for a right
  one (``ts + within`` for a symmetric join). Then it is dropped: state is
  bounded by the bounds and the watermark delay, whatever the stream's length.
* With ``how="left"`` / ``"right"`` / ``"outer"``, a row of an outer side that
  never matched is emitted alone (UNMATCHED, FINAL) when the watermark reaches
  that point; with ``emit_unmatched_after=t``, earlier: a partial unmatched row
  (EARLY) once the watermark reaches ``ts + t``, and the first later match is
  emitted as an UPDATE with the same id. A partial row is not repeated at the
  point (it was the last word if no match came).

Inputs: two co-partitioned topics (partition ``p`` of both meets in one task),
or two sides of one topic filtered by predicates of the value
(``events.where(...)``): a record enters every side whose predicate holds
(both sides: a self-join), none is ignored, a raising predicate sends the
record to the dead-letter output.

Ids (stable across replays; a row's identity is its ``topic-partition@offset``):

* A row that arrives and finds no partner is *open*. The first pair an open
  row forms (with a partner arriving later) takes the row's own id,
  ``<key>|L|<identity>`` or ``<key>|R|<identity>``, which is also the id of
  its unmatched (partial) row: an upserting sink replaces the unmatched row by
  the joined one. The row is then matched.
* Every other pair gets the pair id ``<key>|<left identity>|<right identity>``.

So every emitted row has its own id, and a row's unmatched document and its
first joined document share one. In a 1:1 join every joined row carries the
id of the row that arrived first.

State: one store entry per key, a :class:`KeyRows` (its left rows, its right
rows, its pending timer), a row being a :class:`JoinRow` (ts, offset, value,
status: open, partial emitted, matched). Timers are lazy, as for session
windows: a key keeps one pending timer at the earliest due time of its rows
(a partial emission or an expiry); when it fires, every due row of the key is
handled and the timer is armed again at the next due time. An inner join's
timers only drop rows, which no later row can match: they fire once per batch,
at its last watermark; an outer join's fire record by record, in order with the
pairs. Each batch's ``where`` predicates run over the whole batch first.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass
from itertools import starmap
from operator import attrgetter
from typing import Any

from evtime.errors import ConfigError
from evtime.operators.base import (
    Collector,
    ResultEmitter,
    batch_dead_letter,
    describe_error,
    send_late,
)
from evtime.operators.timers import NO_TIMER, EventTimeOperator, EventTimers
from evtime.records import (
    Batch,
    DeadLetterReason,
    EmitKind,
    JoinKind,
    JoinResult,
    KeyObj,
    Output,
)
from evtime.state import KeyValueStore, TaskDB
from evtime.state.codec import StateEntry, decode_key, encode_key
from evtime.time import MAX_TIMESTAMP, Clock

LEFT = 0
RIGHT = 1
_SIDE_TAG = ("L", "R")

# Row statuses.
OPEN = 0
"""Stored, never matched, nothing emitted for it."""
PARTIAL = 1
"""Never matched; its partial unmatched row was emitted (``emit_unmatched_after``)."""
MATCHED = 2
"""Matched at least once."""

# What a record is to the join (:meth:`JoinOperator._sides`): bits of the sides it
# enters, or a predicate raised on it.
_IN_LEFT = 1
_IN_RIGHT = 2
_RAISED = 4



class JoinRow:
    """A stored row of one side (stored as ``[ts, offset, value, status]``, by
    :class:`KeyRows`)."""

    __slots__ = ("offset", "status", "ts", "value")

    def __init__(self, ts: int, offset: int, value: Any, status: int) -> None:
        self.ts = ts
        self.offset = offset
        self.value = value
        self.status = status
        """:data:`OPEN`, :data:`PARTIAL` or :data:`MATCHED`."""


_row_state = attrgetter("ts", "offset", "value", "status")
"""A row's stored fields (a tuple: orjson writes it as the same array as a list)."""


class KeyRows(StateEntry):
    """A key's stored rows (stored as ``[left rows, right rows, timer_at]``)."""

    __slots__ = ("sides", "timer_at")

    def __init__(self, left: list[JoinRow], right: list[JoinRow], timer_at: int | None) -> None:
        self.sides = [left, right]
        """The rows of each side, indexed by :data:`LEFT` / :data:`RIGHT`."""
        self.timer_at = timer_at
        """When the key's pending timer fires (None: none pending)."""

    def to_state(self) -> list[Any]:
        left, right = self.sides
        return [list(map(_row_state, left)), list(map(_row_state, right)), self.timer_at]

    @classmethod
    def load(cls, stored: Any) -> KeyRows | None:
        """The entry as the store returned it: cached, or a list just read from RocksDB."""
        if stored is None or type(stored) is KeyRows:
            return stored
        return cls.decode(stored)

    @classmethod
    def decode(cls, stored: list[Any]) -> KeyRows:
        """The entry from its stored form."""
        left, right, timer_at = stored
        return cls(list(starmap(JoinRow, left)), list(starmap(JoinRow, right)), timer_at)


class JoinType(enum.Enum):
    """Which unmatched rows a join emits."""

    INNER = "inner"
    """Only matched pairs."""
    LEFT = "left"
    """Matched pairs, and left rows that never matched."""
    RIGHT = "right"
    """Matched pairs, and right rows that never matched."""
    OUTER = "outer"
    """Matched pairs, and rows of either side that never matched (full outer join)."""


@dataclass(frozen=True, slots=True)
class JoinInput:
    """One side of a join: a topic, optionally filtered by a predicate of the value."""

    topic: str
    predicate: Callable[[Any], Any] | None = None


@dataclass(frozen=True, slots=True)
class JoinSpec:
    """A declared interval join (built by ``App.join``)."""

    name: str
    left: JoinInput
    right: JoinInput
    lower: int
    upper: int
    how: JoinType = JoinType.INNER
    emit_unmatched_after: int | None = None
    result_fn: Callable[[JoinResult], Any] | None = None
    output: str = "main"
    late_output: str | None = None

    def __post_init__(self) -> None:
        if self.lower > self.upper:
            raise ConfigError(
                f"join {self.name!r}: lower ({self.lower} ms) is after upper ({self.upper} ms); "
                "a right row b matches a left row a when a.ts + lower <= b.ts <= a.ts + upper"
            )
        if self.emit_unmatched_after is not None:
            if self.how is JoinType.INNER:
                raise ConfigError(
                    f"join {self.name!r}: emit_unmatched_after needs unmatched rows to emit; "
                    "use how='left', 'right' or 'outer'"
                )
            if self.emit_unmatched_after < 0:
                raise ConfigError(f"join {self.name!r}: emit_unmatched_after must be >= 0")

    @property
    def topics(self) -> tuple[str, ...]:
        """The topics the join reads (one when both sides split one topic)."""
        if self.left.topic == self.right.topic:
            return (self.left.topic,)
        return (self.left.topic, self.right.topic)


def column_families(spec: JoinSpec) -> list[str]:
    """The RocksDB column families the operator of ``spec`` uses (declared at open)."""
    return [f"{spec.name}.rows", f"{spec.name}.timers"]


def row_identity(topic: str, partition: int, offset: int) -> str:
    """A row's identity: its source position, stable across replays."""
    return f"{topic}-{partition}@{offset}"


def _key_text(key: KeyObj) -> str:
    return key.hex() if isinstance(key, bytes) else f"{key}"


class JoinOperator(EventTimeOperator):
    """Runs a :class:`JoinSpec` in one partition task."""

    def __init__(
        self, spec: JoinSpec, db: TaskDB, collector: Collector, clock: Clock, partition: int
    ) -> None:
        self.spec = spec
        self.name = spec.name
        self._collector = collector
        self._lower = spec.lower
        self._upper = spec.upper
        self._after = spec.emit_unmatched_after
        self._outer = (
            spec.how in (JoinType.LEFT, JoinType.OUTER),
            spec.how in (JoinType.RIGHT, JoinType.OUTER),
        )
        self._topics = (spec.left.topic, spec.right.topic)
        self._after_ms = spec.emit_unmatched_after or 0
        # Per side: whether its open rows get a partial row at ts + emit_unmatched_after.
        self._partial = (
            self._after is not None and self._outer[LEFT],
            self._after is not None and self._outer[RIGHT],
        )
        self._store: KeyValueStore[Any] = db.store(f"{spec.name}.rows")
        self._events = EventTimers(db, f"{spec.name}.timers")
        self._partition = partition
        self.late_count = 0
        self._output = spec.output
        # Result ids (see the module's docstring), by side: what follows the key text and
        # precedes a row's offset in its own id, and in a pair id.
        topics = self._topics
        self._row_ids = tuple(
            f"|{_SIDE_TAG[side]}|{row_identity(topics[side], partition, 0)[:-1]}"
            for side in (LEFT, RIGHT)
        )
        self._pair_ids = tuple(
            f"|{row_identity(topics[side], partition, 0)[:-1]}" for side in (LEFT, RIGHT)
        )
        self._results = ResultEmitter(
            collector, spec.name, spec.output, spec.result_fn, spec.left.topic, partition
        )

    # -- driving ------------------------------------------------------------
    def process(self, batch: Batch) -> None:
        keys, values, tss, wms = batch.keys, batch.values, batch.timestamps, batch.watermarks
        raw = batch.raw
        sides, errors = self._sides(batch)
        events = self._events
        wm = events.watermark
        if batch.watermark_before > wm:
            wm = events.watermark = batch.watermark_before
        insert = self._insert
        fire = self._fire
        # An inner join's timers only drop rows that can no longer match (a row accepted
        # later has ts > watermark >= their point, out of their bounds): they fire once, at
        # the batch's last watermark. Timers of outer rows emit, in order with the pairs:
        # they fire as the watermark passes them, record by record.
        each = self._outer != (False, False)
        for i in range(len(tss)):
            where = sides[i]
            if where:
                ts = tss[i]
                if where == _RAISED:
                    self._bad_predicate(batch, i, errors[i])
                elif ts <= wm:
                    self._late_record(batch, i)
                else:
                    if where & _IN_LEFT:
                        insert(LEFT, keys[i], ts, raw[i].offset, values[i])
                    if where & _IN_RIGHT:
                        insert(RIGHT, keys[i], ts, raw[i].offset, values[i])
            w = wms[i]
            if w > wm:
                wm = events.watermark = w
            # Also when the watermark did not move: a row may be due at once (upper < 0).
            if each and wm >= events.next_due:
                fire()
        if wm >= events.next_due:
            fire()

    def _sides(self, batch: Batch) -> tuple[list[int], dict[int, Exception]]:
        """Which sides each record of ``batch`` enters (:data:`_IN_LEFT` | :data:`_IN_RIGHT`,
        or :data:`_RAISED`), with the exceptions of the predicates that raised, by index.

        Each predicate runs over the whole batch in one ``map``; only when one raises is the
        batch evaluated again record by record, to find which."""
        spec = self.spec
        values = batch.values
        codes: list[int] = []
        for inp, flag in ((spec.left, _IN_LEFT), (spec.right, _IN_RIGHT)):
            if batch.topic != inp.topic:
                continue
            pred = inp.predicate
            if pred is None:
                hits = [flag] * len(values)
            else:
                try:
                    hits = [flag if hit else 0 for hit in map(pred, values)]
                except Exception:
                    return self._sides_one_by_one(batch)
            codes = hits if not codes else [x | y for x, y in zip(codes, hits, strict=True)]
        return (codes or [0] * len(values)), {}

    def _sides_one_by_one(self, batch: Batch) -> tuple[list[int], dict[int, Exception]]:
        spec = self.spec
        inputs = [
            (inp.predicate, flag)
            for inp, flag in ((spec.left, _IN_LEFT), (spec.right, _IN_RIGHT))
            if batch.topic == inp.topic
        ]
        codes: list[int] = []
        errors: dict[int, Exception] = {}
        for i, value in enumerate(batch.values):
            code = 0
            try:
                for pred, flag in inputs:
                    if pred is None or pred(value):
                        code |= flag
            except Exception as exc:
                errors[i] = exc
                code = _RAISED
            codes.append(code)
        return codes, errors

    # -- rows -----------------------------------------------------------------
    def _insert(self, side: int, key: KeyObj, ts: int, offset: int, value: Any) -> None:
        """Match a new row against the other side's stored rows of its key, then store it."""
        store = self._store
        entry = store.get(key)
        if entry is None:
            entry = KeyRows([], [], None)
        elif type(entry) is not KeyRows:
            entry = KeyRows.decode(entry)  # just read from RocksDB
        status = OPEN
        others = entry.sides[1 - side]
        if others:
            lower, upper = self._lower, self._upper
            for other in others:
                # b.ts - a.ts, whichever side the new row is on.
                gap = other.ts - ts if side == LEFT else ts - other.ts
                if lower <= gap <= upper:
                    status = MATCHED
                    self._emit_pair(side, key, ts, offset, value, other)
        entry.sides[side].append(JoinRow(ts, offset, value, status))
        # When the row needs attention next: its partial emission, else its expiry.
        due = ts + self._upper if side == LEFT else ts - self._lower
        if due > MAX_TIMESTAMP:
            due = MAX_TIMESTAMP
        if status == OPEN and self._partial[side]:
            partial = ts + self._after_ms
            if partial < due:
                due = partial
        timer_at = entry.timer_at
        if timer_at is None or due < timer_at:
            entry.timer_at = due
            events = self._events
            events.queue.register(due, encode_key(key))
            if due < events.next_due:
                events.next_due = due
        store.put(key, entry)

    def _point(self, side: int, ts: int) -> int:
        """The watermark at which a row can no longer match (and is dropped)."""
        point = ts + self._upper if side == LEFT else ts - self._lower
        return point if point < MAX_TIMESTAMP else MAX_TIMESTAMP

    # -- timers -----------------------------------------------------------------
    def on_watermark(self, watermark: int) -> None:
        if self._events.advance(watermark):
            self._fire()

    def _fire(self) -> None:
        """Handle every key whose timer is due at the watermark, in (time, key) order."""
        events = self._events
        watermark = events.watermark
        store = self._store
        expire = self._expire
        for ts, payload in events.queue.pop_due(watermark):
            key = decode_key(payload)
            entry = store.get(key)
            if entry is None:
                continue
            if type(entry) is not KeyRows:
                entry = KeyRows.decode(entry)  # just read from RocksDB
            # Else superseded by an earlier timer of the key, which re-armed it.
            if entry.timer_at == ts:
                expire(key, payload, entry, watermark)
        events.refresh()

    def _on_timer(self, ts: int, payload: bytes) -> None:
        key = decode_key(payload)
        entry = KeyRows.load(self._store.get(key))
        if entry is not None and entry.timer_at == ts:
            self._expire(key, payload, entry, self._events.watermark)

    def _expire(self, key: KeyObj, payload: bytes, entry: KeyRows, watermark: int) -> None:
        """Emit the due unmatched rows of ``key``, drop its expired rows, re-arm its timer."""
        nxt = NO_TIMER
        after = self._after_ms
        for side in (LEFT, RIGHT):
            rows = entry.sides[side]
            if not rows:
                continue
            outer = self._outer[side]
            partial = self._partial[side]
            # A row's point is ts + shift: ts + upper (left) or ts - lower (right).
            shift = self._upper if side == LEFT else -self._lower
            keep: list[JoinRow] = []
            for row in rows:
                point = row.ts + shift
                if point > MAX_TIMESTAMP:
                    point = MAX_TIMESTAMP
                if point <= watermark:
                    if outer and row.status == OPEN:
                        self._emit_unmatched(side, key, row, EmitKind.FINAL)
                    continue
                if partial and row.status == OPEN:
                    if row.ts + after <= watermark:
                        self._emit_unmatched(side, key, row, EmitKind.EARLY)
                        row.status = PARTIAL
                    elif row.ts + after < point:
                        point = row.ts + after
                if point < nxt:
                    nxt = point
                keep.append(row)
            entry.sides[side] = keep
        if entry.sides[LEFT] or entry.sides[RIGHT]:
            entry.timer_at = nxt
            self._events.register(nxt, payload)
            self._store.put(key, entry)
        else:
            self._store.delete(key)

    # -- emission -----------------------------------------------------------
    def _emit_pair(
        self, side: int, key: KeyObj, ts: int, offset: int, value: Any, other: JoinRow
    ) -> None:
        """A new row (``side``) matched a stored row ``other`` of the other side."""
        status = other.status
        if status != MATCHED:
            # The stored row's first match takes its id (that of its partial row, if any).
            kt = key if type(key) is str else _key_text(key)
            rid = f"{kt}{self._row_ids[1 - side]}{other.offset}"
            emit = EmitKind.UPDATE if status == PARTIAL else EmitKind.FINAL
            other.status = MATCHED
        else:
            emit = EmitKind.FINAL
            if side == LEFT:
                lo, ro = offset, other.offset
            else:
                lo, ro = other.offset, offset
            kt = key if type(key) is str else _key_text(key)
            left_id, right_id = self._pair_ids
            rid = f"{kt}{left_id}{lo}{right_id}{ro}"
        other_ts = other.ts
        if side == LEFT:
            result = JoinResult(key, value, other.value, JoinKind.JOINED, emit, ts, other_ts, rid)
        else:
            result = JoinResult(key, other.value, value, JoinKind.JOINED, emit, other_ts, ts, rid)
        self._emit(result, ts if ts >= other_ts else other_ts)

    def _emit_unmatched(self, side: int, key: KeyObj, row: JoinRow, emit: EmitKind) -> None:
        rid = f"{_key_text(key)}{self._row_ids[side]}{row.offset}"
        if side == LEFT:
            result = JoinResult(
                key, row.value, None, JoinKind.UNMATCHED, emit, row.ts, None, rid
            )
        else:
            result = JoinResult(
                key, None, row.value, JoinKind.UNMATCHED, emit, None, row.ts, rid
            )
        self._emit(result, row.ts)

    def _emit(self, result: JoinResult, timestamp: int) -> None:
        """Emit ``result`` at ``timestamp`` (its :attr:`~JoinResult.timestamp`)."""
        value = self._results.shape(result, timestamp)
        if value is not None:
            self._collector.emit(self._output, Output(result.key, value, timestamp, result.id))

    # -- bad and late input -------------------------------------------------------

    def _bad_predicate(self, batch: Batch, i: int, exc: Exception) -> None:
        self._collector.dead_letter(
            batch_dead_letter(
                batch,
                i,
                DeadLetterReason.USER_CODE,
                f"a where() predicate of join {self.name!r} raised {describe_error(exc)}",
                self.name,
            )
        )

    def _late_record(self, batch: Batch, i: int) -> None:
        self.late_count += 1
        wm = self._events.watermark
        send_late(
            self._collector,
            self.spec.late_output,
            batch,
            i,
            f"event time {batch.timestamps[i]} is at or behind the watermark {wm} of "
            f"join {self.name!r}: its partners may be gone already; raise the source's "
            "max_out_of_orderness to wait longer for out-of-order rows",
            self.name,
        )

    # -- introspection (tests, metrics) ----------------------------------------------
    @property
    def emitted_count(self) -> int:
        return self._results.count

    @property
    def store(self) -> KeyValueStore[Any]:
        return self._store

    def live_rows(self) -> int:
        """Rows held in state (walks RocksDB: for tests and metrics, not the hot path)."""
        entries = (KeyRows.load(stored) for _key, stored in self._store.items())
        return sum(len(e.sides[LEFT]) + len(e.sides[RIGHT]) for e in entries if e is not None)
