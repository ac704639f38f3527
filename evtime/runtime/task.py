"""A partition task: one partition of a group of topics, its operators and its RocksDB.

The task is synchronous and knows no Kafka: a driver hands it raw records, a
batch at a time, takes its outputs to the sinks, and asks it to snapshot.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Container, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TypedDict

import orjson

from evtime.errors import (
    ConfigError,
    KeyExtractionError,
    SerdeError,
    StateError,
    TimestampError,
)
from evtime.names import task_dir
from evtime.operators.base import Collector, Operator, describe_error
from evtime.operators.join import JoinOperator, JoinSpec
from evtime.operators.join import column_families as join_families
from evtime.operators.process import ProcessOperator
from evtime.operators.process import column_families as process_families
from evtime.operators.repartition import RepartitionOperator, RepartitionSpec
from evtime.operators.window import WindowSpec, make_window_operator
from evtime.operators.window import column_families as window_families
from evtime.plan import OperatorSpec, Plan, SourceSpec, operator_sources
from evtime.records import Batch, DeadLetter, DeadLetterReason, FetchedRecord, KeyObj, Output
from evtime.runtime.snapshot import PreparedSnapshot, SnapshotMeta
from evtime.serde import ValueFormat, decode_value, key_getter, timestamp_getter
from evtime.state import CommitStats, TaskDB
from evtime.time import MAX_TIMESTAMP, MIN_TIMESTAMP, Clock
from evtime.watermarks import WatermarkTracker
from evtime.wire import IDLE_MARK, ORIGIN_HEADER, ORIGINS_HEADER, WATERMARK_HEADER

log = logging.getLogger("evtime.task")
TaskId = tuple[tuple[str, ...], int]
"""A partition task's id: its topic group and its partition."""
ORIGINS_STORE = "__origins__"


class _OriginsState(TypedDict):
    """A repartitioned input's sources (stored per topic in ``__origins__``)."""

    count: int
    """The source partitions (the most any marker named)."""
    origins: dict[str, list[int]]
    """Per source partition: ``[last offset seen, watermark, idle]``."""


def _minimum(state: _OriginsState) -> int:
    """A repartitioned input's watermark: the least of its source partitions' that are not
    idle (MIN until every one of them has sent a watermark or said it is idle)."""
    entries = state["origins"].values()
    reported = [e for e in entries if e[2] or e[1] > MIN_TIMESTAMP]
    if not state["count"] or len(reported) < state["count"]:
        return MIN_TIMESTAMP
    active = [e[1] for e in reported if not e[2]]
    least: int = min(active) if active else MIN_TIMESTAMP
    return least


_KEYING_WARNED: set[tuple[str, str]] = set()


def task_path(plan: Plan, group: tuple[str, ...], partition: int) -> Path:
    """``state_dir/<app>/<topic-group>/<partition>`` (evtime/names.py)."""
    return task_dir(plan.state_dir, plan.app_name, group, partition)


def _families(spec: OperatorSpec) -> list[str]:
    if isinstance(spec, RepartitionSpec):
        return []
    if isinstance(spec, WindowSpec):
        return window_families(spec)
    if isinstance(spec, JoinSpec):
        return join_families(spec)
    return process_families(spec)


@dataclass(slots=True)
class _Input:
    spec: SourceSpec
    wm_partition: Hashable
    key_of: Callable[[object, FetchedRecord], KeyObj]
    ts_of: Callable[[object, FetchedRecord], int]
    key_field: str | None
    ts_field: str | None
    operators: list[Operator]


class PartitionTask:
    """Decodes records, tracks the watermark, drives operators, snapshots state.

    Snapshot metadata (written with the state in one WriteBatch): a
    :class:`~evtime.runtime.snapshot.SnapshotMeta`.
    """

    def __init__(self, plan: Plan, group: tuple[str, ...], partition: int, clock: Clock) -> None:
        self.plan = plan
        self.group = group
        self.partition = partition
        self.clock = clock
        strategies = {plan.sources[t].watermarks for t in group}
        if len(strategies) != 1:
            raise ConfigError(
                f"sources {list(group)} are processed together but declare different watermark "
                "settings; give them the same max_out_of_orderness and idle_timeout"
            )
        specs = plan.operators_of(group)
        families = [cf for s in specs for cf in _families(s)]
        repartitioned = [t for t in group if plan.sources[t].origin is not None]
        if repartitioned:
            families.append(ORIGINS_STORE)
        self.db = TaskDB(task_path(plan, group, partition), families)
        self.collector = Collector(plan.policy)
        self.operators: list[Operator] = []
        by_topic: dict[str, list[Operator]] = {t: [] for t in group}
        for op_spec in specs:
            op: Operator
            if isinstance(op_spec, WindowSpec):
                op = make_window_operator(op_spec, self.db, self.collector, clock)
            elif isinstance(op_spec, JoinSpec):
                op = JoinOperator(op_spec, self.db, self.collector, clock, partition)
            elif isinstance(op_spec, RepartitionSpec):
                op = RepartitionOperator(op_spec, self.collector)
            else:
                op = ProcessOperator(op_spec, self.db, self.collector, clock)
            self.operators.append(op)
            # A join reads both its topics (a join over one topic gets each batch once).
            for topic in operator_sources(op_spec):
                by_topic[topic].append(op)
        self.tracker = WatermarkTracker(strategies.pop(), [(t, partition) for t in group])
        self.inputs: dict[str, _Input] = {}
        for topic in group:
            spec = plan.sources[topic]
            self.inputs[topic] = _Input(
                spec,
                (topic, partition),
                key_getter(spec.key),
                timestamp_getter(spec.timestamp),
                spec.key if isinstance(spec.key, str) else None,
                spec.timestamp if isinstance(spec.timestamp, str) else None,
                by_topic[topic],
            )
        self._inline_watermarks = (
            len(group) == 1
            and self.tracker.strategy.idle_timeout is None
            and not repartitioned
        )
        # Per repartitioned input: each source partition's watermark and last offset seen.
        self._origins = self.db.store(ORIGINS_STORE) if repartitioned else None
        # The watermark last sent through each repartition (written by the worker).
        self.sent_watermark = MIN_TIMESTAMP
        self.offsets: dict[str, int] = {t: 0 for t in group}
        self.records_in = 0
        self.checkpoints = 0
        # Batches whose first record's source key is compared with its declared key (set by
        # the Kafka worker: a topic not partitioned by that key splits every key's state).
        self.key_checks = 0
        # The run of this task (named by its changelog epoch marker), set by the worker.
        self.epoch: str | None = None
        self.snapshot: SnapshotMeta | None = None
        """The last snapshot's metadata (None: the task has none)."""
        # The task watermark before its inputs ended (None: none ended): what snapshots
        # keep, so that a rerun on appended input resumes from there, not from +infinity.
        self._before_end: int | None = None
        self._restore()

    def _restore(self) -> None:
        meta = self.snapshot = SnapshotMeta.load(self.db)
        if meta is None:
            return
        for topic, offset in meta.offsets.items():
            if topic in self.offsets:
                self.offsets[topic] = offset
        if meta.watermarks:
            self.tracker.restore(meta.watermarks, self.clock.now_ms())
            for op in self.operators:
                op.on_watermark(self.tracker.current)
            # Restoring fires nothing new: every timer due at this watermark fired before the
            # snapshot, so outputs collected here would be duplicates.
            self.collector.take()
        self.records_in = meta.records_in

    @property
    def restored(self) -> bool:
        """Whether the task resumed from a snapshot."""
        return self.snapshot is not None

    @property
    def watermark(self) -> int:
        return self.tracker.current

    # -- the hot path -----------------------------------------------------------
    def process(self, topic: str, raws: Sequence[FetchedRecord]) -> None:
        """Decode ``raws`` (consecutive records of this task's partition of ``topic``) and run
        them through the operators."""
        if not raws:
            return
        if self._origins is not None and self.inputs[topic].spec.origin is not None:
            self._process_repartitioned(topic, raws)
        else:
            self._process(topic, raws)

    def _process_repartitioned(self, topic: str, raws: Sequence[FetchedRecord]) -> None:
        """Records of a repartition topic: watermark markers move each source partition's
        watermark (the input's is their minimum, once every source partition has sent one);
        a record whose source offset was seen already is a resend, and is dropped."""
        assert self._origins is not None
        state: _OriginsState = self._origins.get(topic) or _OriginsState(count=0, origins={})
        origins: dict[str, list[int]] = state["origins"]
        derived = _minimum(state)
        data: list[FetchedRecord] = []
        given: list[int] = []
        # Each source partition's entry, by the prefix of the origin header: a record's is
        # b"<source partition>:<offset>", a marker's b"<source partition>".
        seen: dict[bytes, list[int]] = {}
        for raw in raws:
            headers = raw.headers
            origin = marker = count = None
            if len(headers) == 1:  # a record: its origin only
                if headers[0][0] == ORIGIN_HEADER:
                    origin = headers[0][1]
            else:
                for name, header in headers:
                    if name == ORIGIN_HEADER:
                        origin = header
                    elif name == WATERMARK_HEADER:
                        marker = header
                    elif name == ORIGINS_HEADER:
                        count = header
            if origin is None:
                continue  # not written by a repartition: nothing to go by
            source, _, offset_text = origin.partition(b":")
            entry = seen.get(source)
            if entry is None:
                entry = seen[source] = origins.setdefault(source.decode(), [-1, MIN_TIMESTAMP, 0])
            if marker is not None:
                if marker == IDLE_MARK:
                    entry[2] = 1
                else:
                    entry[1] = max(entry[1], int(marker))
                    entry[2] = 0
                state["count"] = max(state["count"], int(count or 0))
                derived = _minimum(state)
                continue
            offset = int(offset_text)
            if offset <= entry[0]:
                continue  # sent again after a restart of its source task: seen already
            entry[0] = offset
            data.append(raw)
            given.append(derived)
        if data:
            self._process(topic, data, given)
        self.offsets[topic] = raws[-1].offset + 1
        self._origins.put(topic, state)
        before = self.tracker.current
        after = self.tracker.advance(self.inputs[topic].wm_partition, derived, self.clock.now_ms())
        if after > before:
            for op in self.operators:
                op.on_watermark(after)

    def _process(
        self, topic: str, raws: Sequence[FetchedRecord], given: list[int] | None = None
    ) -> None:
        """``process``; ``given``: the input's watermark at each record (a repartition's)."""
        inp = self.inputs[topic]
        fmt = inp.spec.value_format
        json = fmt is ValueFormat.JSON
        decode = fmt is ValueFormat.TEXT
        loads = orjson.loads
        kf, tf = inp.key_field, inp.ts_field
        key_of, ts_of = inp.key_of, inp.ts_of
        tracker = self.tracker
        wm_partition = inp.wm_partition
        now = self.clock.now_ms()
        watermark_before = tracker.current
        # One input partition and no idleness: the watermark after each record is
        # max(previous, ts - delay), computed inline; the tracker sees the batch's
        # maximum once at the end and must agree.
        inline = self._inline_watermarks and not tracker.is_ended(wm_partition)
        delay = tracker.strategy.max_out_of_orderness + 1
        on_event = tracker.on_event
        wm = watermark_before
        max_ts: int | None = None
        dropped: list[int] = []
        keys: list[KeyObj] = []
        values: list[object] = []
        timestamps: list[int] = []
        watermarks: list[int] = []
        bulk = (
            self._decode_bulk(raws, kf, tf, watermark_before, delay)
            if (inline or given is not None) and json and kf is not None and tf is not None
            else None
        )
        if bulk is not None:
            keys, values, timestamps, watermarks = bulk
            if given is not None:
                # The input's watermarks came with it: the task's follows them, a step at
                # each change (given is non-decreasing, and changes only at markers).
                watermarks = []
                step: int | None = None
                last = watermark_before
                for mark in given:
                    if mark != step:
                        step, last = mark, tracker.advance(wm_partition, mark, now)
                    watermarks.append(last)
            else:
                max_ts = max(timestamps)
            raws_iter: Sequence[FetchedRecord] = ()
        else:
            raws_iter = raws
        for n, raw in enumerate(raws_iter):
            value = raw.value
            try:
                if type(value) is bytes:
                    if json:
                        value = loads(value)
                    elif decode:
                        value = decode_value(value, fmt)
                if type(value) is dict:
                    key = value.get(kf) if kf is not None else None
                    ts = value.get(tf) if tf is not None else None
                else:
                    key = ts = None
                if key is None or (type(key) is not str and type(key) is not int):
                    key = key_of(value, raw)
                if type(ts) is not int:
                    ts = ts_of(value, raw)
            except Exception as exc:
                self._dead(topic, raw, value, exc)
                dropped.append(n)
                continue
            keys.append(key)
            values.append(value)
            timestamps.append(ts)
            if inline:
                if max_ts is None or ts > max_ts:
                    max_ts = ts
                    if ts - delay > wm:
                        wm = ts - delay
                watermarks.append(wm)
            elif given is not None:
                watermarks.append(tracker.advance(wm_partition, given[n], now))
            else:
                watermarks.append(on_event(wm_partition, ts, now))
        self.offsets[topic] = raws[-1].offset + 1
        if dropped:
            gone = set(dropped)
            kept = [raw for n, raw in enumerate(raws) if n not in gone]
        else:
            kept = raws if isinstance(raws, list) else list(raws)
        self.records_in += len(kept)
        if not kept:
            return
        if self.key_checks:
            self.key_checks -= 1
            self._check_keying(topic, kept[0], keys[0])
        if inline and max_ts is not None:
            tracked = on_event(wm_partition, max_ts, now)
            if tracked != watermarks[-1]:
                raise StateError(
                    f"watermark mismatch in task {self.group}[{self.partition}]: inline "
                    f"{watermarks[-1]} vs tracker {tracked}; please report this bug"
                )
        batch = Batch(
            topic,
            self.partition,
            kept,
            keys,
            values,
            timestamps,
            watermarks,
            watermark_before,
        )
        for op in inp.operators:
            op.process(batch)
        last = watermarks[-1]
        if last > watermark_before:
            for op in self.operators:
                if op not in inp.operators:
                    op.on_watermark(last)

    def _check_keying(self, topic: str, raw: FetchedRecord, key: KeyObj) -> None:
        """Warn (once per topic and process) when a record's Kafka key is not its declared key:
        records of one key may then sit in several partitions, each task holding part of its
        windows, joins and state."""
        spec = self.inputs[topic].spec
        if spec.key is None or (topic, "keying") in _KEYING_WARNED:
            return
        if any(isinstance(op, RepartitionOperator) for op in self.inputs[topic].operators):
            return  # repartitioned: keyed otherwise on purpose
        name = spec.key if isinstance(spec.key, str) else getattr(spec.key, "__name__", "key")
        if raw.key is None:
            problem = "have no Kafka key, so producers spread them over the partitions"
        elif raw.key != (key if isinstance(key, bytes) else str(key).encode()):
            problem = f"are keyed by something else (Kafka key {raw.key[:40]!r}, {name} {key!r})"
        else:
            return
        _KEYING_WARNED.add((topic, "keying"))
        log.warning(
            "records of %r %s: evtime keeps state per partition, so a key found in several "
            "partitions gets part of its windows, joins and state in each. Produce them with "
            "their %r as the Kafka key (the default partitioner then keeps a key in one "
            "partition); ignore this if the topic is partitioned by %r in another way",
            topic,
            problem,
            name,
            name,
        )

    @staticmethod
    def _decode_bulk(
        raws: Sequence[FetchedRecord], kf: str, tf: str, watermark_before: int, delay: int
    ) -> tuple[list[KeyObj], list[object], list[int], list[int]] | None:
        """The common case in C-level loops: every value is JSON bytes of an object with a
        str/int key field and an int timestamp field. Otherwise it returns None and the
        batch takes the record-by-record path (which gives bad records their reason)."""
        if type(raws[0].value) is not bytes:
            return None
        try:
            values = list(map(orjson.loads, [r.value for r in raws]))
            keys = [v[kf] for v in values]
            timestamps = [v[tf] for v in values]
        except Exception:
            return None
        if set(map(type, timestamps)) != {int} or not set(map(type, keys)) <= {str, int}:
            return None
        # max(watermark before, running maximum - delay), record by record: one pass, with
        # no call per record (itertools.accumulate with max costs 4 times as much).
        top = watermark_before + delay
        watermarks = [(top := t) - delay if t > top else top - delay for t in timestamps]
        return keys, values, timestamps, watermarks

    def _dead(self, topic: str, raw: FetchedRecord, value: object, exc: Exception) -> None:
        if isinstance(exc, TimestampError):
            reason = DeadLetterReason.TIMESTAMP
        elif isinstance(exc, KeyExtractionError):
            reason = DeadLetterReason.KEY
        elif isinstance(exc, SerdeError | orjson.JSONDecodeError | UnicodeDecodeError):
            reason = DeadLetterReason.DECODE
        else:
            reason = DeadLetterReason.USER_CODE
        self.collector.dead_letter(
            DeadLetter(
                reason,
                describe_error(exc),
                topic,
                self.partition,
                raw.offset,
                raw.key,
                raw.value,
                raw.timestamp,
            )
        )

    # -- time ---------------------------------------------------------------------
    def end_of_input(self, topic: str) -> None:
        """``topic``'s partition is exhausted (a bounded source): its watermark is +infinity."""
        before = self.tracker.current
        wm = self.tracker.end_of_input((topic, self.partition))
        if self._before_end is None or before < MAX_TIMESTAMP:
            self._before_end = before
        for op in self.operators:
            op.on_watermark(wm)

    def tick(self, now_ms: int, caught_up: Container[Hashable] = ()) -> None:
        """Let wall-clock time act: idleness, processing-time timers, early firing, and the
        watermarks of quiet inputs read to their end (``caught_up``: (topic, partition)
        pairs) under ``advance_when_idle``."""
        wm = self.tracker.follow_clock(now_ms, caught_up)
        for op in self.operators:
            op.on_watermark(wm)
            op.on_processing_time(now_ms)

    def clock_driven(self) -> frozenset[str]:
        """The input topics whose watermark follows the wall clock now (advance_when_idle)."""
        tracker = self.tracker
        return frozenset(t for t in self.group if tracker.follows_clock((t, self.partition)))

    def next_tick(self) -> int | None:
        """When :meth:`tick` next has processing-time work."""
        times = [t for op in self.operators if (t := op.next_processing_time()) is not None]
        return min(times) if times else None

    # -- output and snapshots ----------------------------------------------------------
    def take(self) -> tuple[dict[str, list[Output]], list[DeadLetter]]:
        """Outputs (by output id) and dead letters produced since the last call."""
        return self.collector.take()

    def prepare_snapshot(self, *, collect_changes: bool = True) -> PreparedSnapshot:
        """Gather the dirty state and timers (with the changes, for the changelog, if asked)
        and the metadata of a snapshot, writing nothing yet (evtime/runtime/checkpoint.py)."""
        meta = SnapshotMeta(
            dict(self.offsets),
            self._watermarks(),
            None,
            self.epoch,
            self.records_in,
        )
        return PreparedSnapshot(self.db.prepare(collect_changes=collect_changes), meta)

    def _watermarks(self) -> dict[str, Any]:
        """The tracker's snapshot, without the end of bounded inputs: an input's end holds
        for this run only (a rerun may find more records), so a snapshot keeps the
        watermark from before it and no partition marked ended."""
        snap = self.tracker.snapshot()
        if self._before_end is None:
            return snap
        for entry in snap["partitions"]:
            entry[2] = False
        if snap["watermark"] >= MAX_TIMESTAMP:
            snap["watermark"] = self._before_end
        return snap

    def apply_snapshot(self, prepared: PreparedSnapshot, changelog_end: int | None) -> CommitStats:
        """Write a prepared snapshot (state, timers, watermarks, next offsets and the
        changelog's end) in one synced WriteBatch.

        The driver must have delivered (and flushed) every output taken before it was
        prepared.
        """
        meta = replace(prepared.meta, changelog_end=changelog_end)
        stats = self.db.apply(prepared.batch, meta.encode())
        self.snapshot = meta
        self.checkpoints += 1
        return stats

    def close(self) -> None:
        """Close the database; what was not snapshotted is dropped."""
        self.db.close()

    def has_backlog(self) -> bool:
        """Whether the state cache holds so many unsaved entries that a snapshot is due."""
        return self.db.backlog()


def read_to_end(
    tasks: Iterable[PartitionTask], ends: Mapping[tuple[str, int], int]
) -> set[tuple[str, int]]:
    """The input partitions of ``tasks`` read to their end (``ends``: each partition's end
    offset as of its last fetch): only these may let the wall clock move their watermark
    (advance_when_idle)."""
    return {
        (topic, task.partition)
        for task in tasks
        for topic in task.group
        if (end := ends.get((topic, task.partition))) is not None and task.offsets[topic] >= end
    }
