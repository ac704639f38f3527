"""A brute-force reference model of evtime's interval join (DESIGN.md section 5).

Declarative and independent of the engine: no state store, no timers, no
incremental matching. It takes the input as the engine processes it (a list
of *events*: a record, or nothing but a watermark move, each with the task
watermark right after it) and derives every output from whole-stream facts:

* a row is *accepted* when its event time is after the watermark before it
  (``ts > W_{i-1}``); a row at or behind it is late;
* every pair of accepted rows, left ``a`` and right ``b`` of the same key with
  ``a.ts + lower <= b.ts <= a.ts + upper``, is emitted once, at the event of the
  later of the two (arrival order: event index, a left row before a right
  row of the same record);
* ids: a row with no partner arriving before it, and at least one after it,
  gives its own id ``<key>|L|<identity>`` (``|R|``) to the pair with its
  earliest later partner; every other pair's id is
  ``<key>|<left identity>|<right identity>``;
* a row's *point* is ``a.ts + upper`` (left) or ``b.ts - lower`` (right): the
  first event whose watermark reaches it drops the row;
* a row of an outer side with ``emit_unmatched_after=t``: its partial
  unmatched row (``early``) is emitted at the first event whose watermark
  reaches ``ts + t``, provided that event comes before both its first partner
  and the event reaching its point; the pair with that partner is then an
  ``update``. A row of an outer side with no partner at all and no partial row
  is emitted unmatched (``final``) at the event reaching its point.

The model's output is one list of emissions per event, then one for the end
of input (watermark ``MAX``), plus the late records and the number of rows in
state after every event.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from evtime.connectors.local import partition_for

MIN_TS = -(2**63)
MAX_TS = 2**63 - 1

HOWS = ("inner", "left", "right", "outer")


@dataclass(frozen=True)
class JoinConfig:
    """One interval join: bounds, type, early unmatched rows, watermark delay."""

    lower: int
    upper: int
    how: str = "inner"
    unmatched_after: int | None = None
    ooo: int = 0

    def outer(self, side: str) -> bool:
        return self.how == "outer" or (self.how == "left" and side == "L") or (
            self.how == "right" and side == "R"
        )


@dataclass(frozen=True)
class Arrival:
    """A record as the join sees it: its sides (``"L"``, ``"R"``, both or none)."""

    sides: tuple[str, ...]
    key: str
    ts: int
    ident: str  # topic-partition@offset
    value: Any


@dataclass(frozen=True)
class Event:
    """One thing the task processes: a record (or None: a watermark move only)."""

    arrival: Arrival | None
    watermark: int  # the task watermark right after the event


@dataclass(frozen=True)
class Emission:
    id: str
    kind: str  # "joined" | "unmatched"
    emit: str  # "final" | "update" | "early"
    key: str
    left: Any
    right: Any
    left_ts: int | None
    right_ts: int | None


@dataclass
class JoinRun:
    """What the model says one task produces."""

    steps: list[list[Emission]]  # one per event, then one for the end of input
    late: list[str]  # identities of late records
    live: list[int]  # rows in state after each event (and after the end)
    pairs: int = 0
    partials: int = 0


@dataclass(eq=False)
class _Row:
    side: str
    key: str
    ts: int
    ident: str
    value: Any
    event: int
    seq: int  # arrival order
    partners: list[_Row] = field(default_factory=list)


def run_events(events: Sequence[Event], cfg: JoinConfig) -> JoinRun:
    """The model's output for one task's event sequence."""
    n = len(events)
    marks = [e.watermark for e in events] + [MAX_TS]  # W after event i; the end is event n
    late: list[str] = []
    rows: list[_Row] = []
    before = MIN_TS
    for i, e in enumerate(events):
        a = e.arrival
        if a is not None and a.sides:
            if a.ts <= before:
                late.append(a.ident)
            else:
                for side in ("L", "R"):
                    if side in a.sides:
                        rows.append(_Row(side, a.key, a.ts, a.ident, a.value, i, len(rows)))
        before = max(before, e.watermark)

    def point(r: _Row) -> int:
        return r.ts + cfg.upper if r.side == "L" else r.ts - cfg.lower

    def first_event(r: _Row, at: int) -> int:
        """The first event (from the row's own) whose watermark reaches ``at``."""
        return next(i for i in range(r.event, n + 1) if marks[i] >= min(at, MAX_TS))

    lefts = [r for r in rows if r.side == "L"]
    rights = [r for r in rows if r.side == "R"]
    pairs = [
        (a, b)
        for a in lefts
        for b in rights
        if a.key == b.key and a.ts + cfg.lower <= b.ts <= a.ts + cfg.upper
    ]
    for a, b in pairs:
        a.partners.append(b)
        b.partners.append(a)

    steps: list[list[Emission]] = [[] for _ in range(n + 1)]
    claimed: dict[tuple[int, int], tuple[str, str]] = {}  # (left seq, right seq) -> (id, emit)
    partials = 0
    for r in rows:
        earlier = [p for p in r.partners if p.seq < r.seq]
        later = sorted((p for p in r.partners if p.seq > r.seq), key=lambda p: p.seq)
        own_id = f"{r.key}|{r.side}|{r.ident}"
        if earlier:
            continue  # matched on arrival: never alone, its id unused
        at_point = first_event(r, point(r))
        partial_at = None
        if cfg.outer(r.side) and cfg.unmatched_after is not None:
            partial_at = first_event(r, r.ts + cfg.unmatched_after)
            if partial_at >= at_point or (later and partial_at >= later[0].event):
                partial_at = None
        if partial_at is not None:
            partials += 1
            steps[partial_at].append(_alone(r, own_id, "early"))
        if later:
            slot = (r.seq, later[0].seq) if r.side == "L" else (later[0].seq, r.seq)
            claimed[slot] = (own_id, "update" if partial_at is not None else "final")
        elif partial_at is None and cfg.outer(r.side):
            steps[at_point].append(_alone(r, own_id, "final"))
    for a, b in pairs:
        pid, emit = claimed.get((a.seq, b.seq), (f"{a.key}|{a.ident}|{b.ident}", "final"))
        steps[max(a, b, key=lambda r: r.seq).event].append(
            Emission(pid, "joined", emit, a.key, a.value, b.value, a.ts, b.ts)
        )
    live = [sum(1 for r in rows if r.event <= i and marks[i] < point(r)) for i in range(n + 1)]
    return JoinRun(steps, late, live, len(pairs), partials)


def _alone(r: _Row, rid: str, emit: str) -> Emission:
    if r.side == "L":
        return Emission(rid, "unmatched", emit, r.key, r.value, None, r.ts, None)
    return Emission(rid, "unmatched", emit, r.key, None, r.value, None, r.ts)


# -- the two ways the engine feeds a join ------------------------------------------------


def _sides_of_type(value: dict[str, Any]) -> tuple[str, ...] | None:
    """One topic split by type: A is left, B right, anything else neither; no type: bad."""
    if "type" not in value:
        return None
    return {"A": ("L",), "B": ("R",)}.get(value["type"], ())


def split(values: Sequence[dict[str, Any]], partitions: int) -> list[list[dict[str, Any]]]:
    """Records by partition (``MemorySource.of(..., key="id")``), in offset order."""
    parts: list[list[dict[str, Any]]] = [[] for _ in range(partitions)]
    for v in values:
        parts[partition_for(v["id"], partitions)].append(v)
    return parts


def one_topic_events(
    records: Sequence[dict[str, Any]], partition: int, cfg: JoinConfig, topic: str = "events"
) -> tuple[list[Event], list[int]]:
    """One partition of one topic, split by type; also the offsets of bad records (no type)."""
    events: list[Event] = []
    bad: list[int] = []
    wm = MIN_TS
    max_ts: int | None = None
    for offset, v in enumerate(records):
        sides = _sides_of_type(v)
        if sides is None:
            bad.append(offset)
            sides = ()
        max_ts = v["ts"] if max_ts is None else max(max_ts, v["ts"])
        wm = max(wm, max_ts - cfg.ooo - 1)
        ident = f"{topic}-{partition}@{offset}"
        events.append(Event(Arrival(sides, v["id"], v["ts"], ident, v), wm))
    return events, bad


def two_topic_events(
    lefts: Sequence[dict[str, Any]], rights: Sequence[dict[str, Any]], partition: int,
    cfg: JoinConfig,
) -> tuple[list[Event], list[int]]:
    """Partition ``partition`` of topics "left" and "right", as the local runner interleaves
    them with batch size 1: step ``k`` reads left record ``k`` (or ends the left input),
    then right record ``k``. The task watermark is the minimum of the two inputs' watermarks
    (``MIN`` before an input's first record, ``MAX`` once it ended), never going back.
    Returns the events and, for each one, the runner step it belongs to."""
    events: list[Event] = []
    step_of: list[int] = []
    inputs = (("left", lefts, "L"), ("right", rights, "R"))
    part_wm = {"left": MIN_TS, "right": MIN_TS}
    max_ts: dict[str, int] = {}
    ended: set[str] = set()
    wm = MIN_TS
    for step in range(max(len(lefts), len(rights)) + 1):
        for topic, records, side in inputs:
            if topic in ended:
                continue
            arrival = None
            if step < len(records):
                v = records[step]
                max_ts[topic] = max(max_ts.get(topic, v["ts"]), v["ts"])
                part_wm[topic] = max(part_wm[topic], max_ts[topic] - cfg.ooo - 1)
                ident = f"{topic}-{partition}@{step}"
                arrival = Arrival((side,), v["id"], v["ts"], ident, v)
            else:
                ended.add(topic)
                part_wm[topic] = MAX_TS
            wm = max(wm, min(part_wm.values()))
            events.append(Event(arrival, wm))
            step_of.append(step)
    return events, step_of
