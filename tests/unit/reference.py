"""A brute-force reference model of evtime's window semantics (Flink's rules).

Deliberately naive and independent of the engine: no timer queue, no state
store, no incremental accumulators. Every window keeps the plain list of the
records assigned to it and its result is recomputed from that list at every
emission. The rules it follows (DESIGN.md sections 3-4, Flink's
``WindowOperator`` / ``MergingWindowSet``):

* each partition is processed on its own, in offset order;
* watermark ``W_0 = MIN``; after record ``i``,
  ``W_i = max(W_{i-1}, max_ts_so_far - max_out_of_orderness - 1)``; at the end
  of a bounded input it goes to ``MAX``;
* a record is judged against the watermark *before* it (``W_{i-1}``): a
  window ``w`` of the record is gone when ``w.end - 1 + lateness <= W_{i-1}``;
  otherwise the record joins ``w``, and if ``w.end - 1 <= W_{i-1}`` the window
  is emitted at once (FINAL the first time, UPDATE afterwards);
* a record with at least one window that joined none is late (a sliding
  assigner with ``slide > size`` can give a record no window: not late);
* after the record, every window with state and ``end - 1 <= W_i`` that was
  never emitted fires (FINAL); state is dropped at ``end - 1 + lateness <= W_i``;
* sessions: a record opens ``[ts, ts + gap)`` and merges every live session of
  its key that intersects or touches it; merged records are the absorbed
  sessions' records (by start) followed by the new one. ``replaces`` names the
  ids that were actually emitted by absorbed sessions whose bounds changed.

The model's output, per partition, is one list of emissions per step: step
``i`` is what record ``i`` caused (its own immediate emissions and the
windows its watermark fired), and the last step is the end of input.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from evtime.connectors.local import partition_for

MIN_TS = -(2**63)
MAX_TS = 2**63 - 1

FINAL = "final"
UPDATE = "update"


# -- aggregates, recomputed from the records -------------------------------------


def _amounts(records: Sequence[dict[str, Any]]) -> list[int]:
    return [r["amount"] for r in records]


AGGREGATES: dict[str, Callable[[Sequence[dict[str, Any]]], Any]] = {
    "sum": lambda rs: sum(_amounts(rs)),
    "count": len,
    "collect": lambda rs: [r["seq"] for r in rs],
    "min": lambda rs: min(_amounts(rs)),
    "max": lambda rs: max(_amounts(rs)),
    "mean": lambda rs: sum(_amounts(rs)) / len(rs),
}
"""Reference results by aggregate name; records carry ``amount`` and ``seq``."""


# -- configuration ---------------------------------------------------------------------


@dataclass(frozen=True)
class Config:
    """One window aggregation: assigner, watermark delay, lateness, aggregate."""

    assigner: str  # "tumbling" | "sliding" | "session"
    size: int  # window size, or the session gap
    slide: int = 0  # sliding only
    offset: int = 0  # tumbling / sliding, already normalised (0 <= offset < size / slide)
    ooo: int = 0  # max_out_of_orderness
    lateness: int = 0
    aggregate: str = "sum"


def window_id(key: str, start: int, end: int) -> str:
    return f"{key}@{start}-{end}"


def assign(ts: int, cfg: Config) -> list[tuple[int, int]]:
    """The fixed windows ``[start, end)`` containing ``ts``, by brute force."""
    if cfg.assigner == "tumbling":
        start = ts - (ts - cfg.offset) % cfg.size
        return [(start, start + cfg.size)]
    assert cfg.assigner == "sliding"
    # Walk every aligned start from the last one at or before ts down to ts - size.
    last = ts - (ts - cfg.offset) % cfg.slide
    windows = []
    s = last
    while s > ts - cfg.size:
        assert s % cfg.slide == cfg.offset % cfg.slide and s <= ts < s + cfg.size
        windows.append((s, s + cfg.size))
        s -= cfg.slide
    return sorted(windows)


# -- emissions -------------------------------------------------------------------------


@dataclass(frozen=True)
class Emission:
    key: str
    start: int
    end: int
    value: Any
    kind: str
    replaces: tuple[str, ...] = ()

    @property
    def id(self) -> str:
        return window_id(self.key, self.start, self.end)


@dataclass
class PartitionRun:
    """What the model says one partition produces."""

    steps: list[list[Emission]]  # one per record, then one for the end of input
    late: list[int]  # offsets of late records
    watermarks: list[int]  # W_i after each record


@dataclass(eq=False)
class _Window:
    key: str
    start: int
    end: int
    records: list[dict[str, Any]] = field(default_factory=list)
    emitted: int = 0


@dataclass(eq=False)
class _Session:
    key: str
    start: int
    end: int
    records: list[dict[str, Any]]
    lineage_emitted: bool  # this session or one it absorbed was ever emitted
    own_emitted: bool  # a result with exactly these bounds (this id) was emitted
    replaced: set[str]  # emitted ids this session supersedes, named at its next emission
    pending: bool  # waiting for the watermark to reach end - 1

    @property
    def id(self) -> str:
        return window_id(self.key, self.start, self.end)


def _watermark(prev: int, max_ts: int, ooo: int) -> int:
    return max(prev, max_ts - ooo - 1)


def run_fixed(records: Sequence[dict[str, Any]], cfg: Config) -> PartitionRun:
    """Tumbling / sliding windows over one partition's records (in offset order)."""
    agg = AGGREGATES[cfg.aggregate]
    lateness = cfg.lateness
    live: dict[tuple[str, int], _Window] = {}
    steps: list[list[Emission]] = []
    late: list[int] = []
    marks: list[int] = []
    wm = MIN_TS
    max_ts: int | None = None

    def emit(w: _Window) -> Emission:
        kind = FINAL if w.emitted == 0 else UPDATE
        w.emitted += 1
        return Emission(w.key, w.start, w.end, agg(w.records), kind)

    def advance(wm: int) -> list[Emission]:
        out = [
            emit(w)
            for w in sorted(live.values(), key=lambda w: (w.end, w.start, w.key))
            if w.emitted == 0 and w.end - 1 <= wm
        ]
        for slot, w in list(live.items()):
            if w.end - 1 + lateness <= wm:
                del live[slot]
        return out

    for offset, rec in enumerate(records):
        ts, key = rec["ts"], rec["user"]
        out: list[Emission] = []
        windows = assign(ts, cfg)
        joined = False
        for start, end in windows:
            if end - 1 + lateness <= wm:
                continue
            w = live.setdefault((key, start), _Window(key, start, end))
            w.records.append(rec)
            joined = True
            if end - 1 <= wm:
                out.append(emit(w))
        if windows and not joined:
            late.append(offset)
        max_ts = ts if max_ts is None else max(max_ts, ts)
        wm = _watermark(wm, max_ts, cfg.ooo)
        marks.append(wm)
        out += advance(wm)
        steps.append(out)
    steps.append(advance(MAX_TS))
    return PartitionRun(steps, late, marks)


def run_session(records: Sequence[dict[str, Any]], cfg: Config) -> PartitionRun:
    """Session windows over one partition's records (in offset order)."""
    agg = AGGREGATES[cfg.aggregate]
    gap = cfg.size
    lateness = cfg.lateness
    sessions: dict[str, list[_Session]] = {}
    steps: list[list[Emission]] = []
    late: list[int] = []
    marks: list[int] = []
    wm = MIN_TS
    max_ts: int | None = None

    def emit(s: _Session) -> Emission:
        kind = FINAL if not s.lineage_emitted and not s.replaced else UPDATE
        e = Emission(s.key, s.start, s.end, agg(s.records), kind, tuple(sorted(s.replaced)))
        s.lineage_emitted = True
        s.own_emitted = True
        s.replaced = set()
        s.pending = False
        return e

    def advance(wm: int) -> list[Emission]:
        every = sorted(
            (s for ss in sessions.values() for s in ss), key=lambda s: (s.end, s.start, s.key)
        )
        out = []
        for s in every:
            if s.pending and s.end - 1 <= wm:
                out.append(emit(s))
        for key, ss in list(sessions.items()):
            ss[:] = [s for s in ss if s.end - 1 + lateness > wm]
            if not ss:
                del sessions[key]
        return out

    for offset, rec in enumerate(records):
        ts, key = rec["ts"], rec["user"]
        out: list[Emission] = []
        start, end = ts, ts + gap
        live = sessions.setdefault(key, [])
        absorbed = sorted(
            (s for s in live if s.start <= end and s.end >= start), key=lambda s: s.start
        )
        if not absorbed and end - 1 + lateness <= wm:
            late.append(offset)
        else:
            start = min([start] + [s.start for s in absorbed])
            end = max([end] + [s.end for s in absorbed])
            replaced: set[str] = set()
            for s in absorbed:
                replaced |= s.replaced
                if s.own_emitted and (s.start, s.end) != (start, end):
                    replaced.add(s.id)
            merged = _Session(
                key,
                start,
                end,
                [r for s in absorbed for r in s.records] + [rec],
                any(s.lineage_emitted for s in absorbed),
                any(s.own_emitted and (s.start, s.end) == (start, end) for s in absorbed),
                replaced,
                pending=end - 1 > wm,
            )
            live[:] = [s for s in live if s not in absorbed] + [merged]
            if not merged.pending:
                out.append(emit(merged))
                if not lateness:
                    live.remove(merged)
        if not live:
            del sessions[key]
        max_ts = ts if max_ts is None else max(max_ts, ts)
        wm = _watermark(wm, max_ts, cfg.ooo)
        marks.append(wm)
        out += advance(wm)
        steps.append(out)
    steps.append(advance(MAX_TS))
    return PartitionRun(steps, late, marks)


def run_partition(records: Sequence[dict[str, Any]], cfg: Config) -> PartitionRun:
    if cfg.assigner == "session":
        return run_session(records, cfg)
    return run_fixed(records, cfg)


def split(values: Sequence[dict[str, Any]], partitions: int) -> list[list[dict[str, Any]]]:
    """Records by partition (``MemorySource.of(..., key="user")``), in offset order."""
    parts: list[list[dict[str, Any]]] = [[] for _ in range(partitions)]
    for v in values:
        parts[partition_for(v["user"], partitions)].append(v)
    return parts


def run(values: Sequence[dict[str, Any]], partitions: int, cfg: Config) -> list[PartitionRun]:
    """The model's output for every partition."""
    return [run_partition(records, cfg) for records in split(values, partitions)]
