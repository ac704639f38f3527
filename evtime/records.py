"""The values that flow through evtime: records, batches, outputs, dead letters."""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

KeyObj = str | bytes | int | None
Headers = tuple[tuple[str, bytes], ...]


# Output, WindowResult and Record are built on the hot path: they are slotted but not
# frozen, because a frozen dataclass costs about four times as much to create.
# Treat them as immutable.


@dataclass(slots=True)
class Record:
    """One input event, as user code sees it.

    ``timestamp`` is the event time in int milliseconds since the epoch.
    """

    key: KeyObj
    value: Any
    timestamp: int
    topic: str
    partition: int
    offset: int
    headers: Headers = ()


@dataclass(slots=True)
class RawRecord:
    """A record as a source delivers it, before decoding.

    ``value`` is bytes for byte-oriented sources (Kafka, files) or an already
    decoded object for in-memory sources. ``timestamp`` is the source's own
    timestamp (Kafka's record timestamp), used when the app declares no
    event-time field.
    """

    offset: int
    key: Any
    value: Any
    timestamp: int | None = None
    headers: Headers = ()


class FetchedRecord(Protocol):
    """A record as a source hands it over: what the engine reads of it.

    :class:`RawRecord` is one; so is a Kafka client's own record object, handed over as
    it is (no per-record copy on the hot path).
    """

    @property
    def offset(self) -> int: ...

    @property
    def key(self) -> Any: ...

    @property
    def value(self) -> Any: ...

    @property
    def timestamp(self) -> int | None: ...

    @property
    def headers(self) -> Sequence[tuple[str, bytes]]: ...


@dataclass(slots=True)
class Batch:
    """Decoded records of one input partition, as parallel lists.

    ``raw[i]`` is the source record of ``keys[i]``, ``values[i]`` and
    ``timestamps[i]``; ``watermarks[i]`` is the task watermark right after
    record ``i``, ``watermark_before`` the one before the first record.
    Operators walk the lists in a plain loop: no per-record objects are built
    on the hot path.
    """

    topic: str
    partition: int
    raw: Sequence[FetchedRecord]
    keys: list[KeyObj]
    values: list[Any]
    timestamps: list[int]
    watermarks: list[int]
    watermark_before: int

    def __len__(self) -> int:
        return len(self.timestamps)

    def offset(self, i: int) -> int:
        """The source offset of record ``i``."""
        return self.raw[i].offset

    def record(self, i: int) -> Record:
        """Record ``i`` as a :class:`Record` (built on demand, for user code)."""
        raw = self.raw[i]
        return Record(
            self.keys[i],
            self.values[i],
            self.timestamps[i],
            self.topic,
            self.partition,
            raw.offset,
            tuple(raw.headers or ()),
        )


@dataclass(slots=True)
class Output:
    """One result on its way to a sink.

    ``id`` is stable across replays (an upserting sink turns a replay into a
    no-op); ``timestamp`` is the event time the result belongs to.
    """

    key: KeyObj
    value: Any
    timestamp: int
    id: str | None = None


class EmitKind(enum.Enum):
    """Why a window (or join) result was emitted."""

    FINAL = "final"
    """The window's first result once the watermark passed its end; a join's row emitted
    for good (a new joined pair, or an unmatched row once no match is possible)."""
    UPDATE = "update"
    """A later result of a window already emitted (a late record within allowed lateness);
    a joined row replacing the partial unmatched row of the same id."""
    EARLY = "early"
    """A provisional result before the window closes (early firing); a join's partial
    unmatched row (``emit_unmatched_after``), which a later match may update."""


@dataclass(slots=True)
class WindowResult:
    """The aggregate of one key over one window.

    ``replaces`` lists the ids of earlier results this one supersedes when a
    late record merged session windows; it is empty otherwise.
    """

    key: KeyObj
    start: int
    end: int
    value: Any
    kind: EmitKind
    replaces: tuple[str, ...] = ()

    @property
    def id(self) -> str:
        """Stable id of the window: the same for its final result and every update."""
        return window_id(self.key, self.start, self.end)

    def to_dict(self) -> dict[str, Any]:
        """The result as a JSON-ready dict (what sinks get by default)."""
        out: dict[str, Any] = {
            "key": self.key.decode(errors="replace") if isinstance(self.key, bytes) else self.key,
            "start": self.start,
            "end": self.end,
            "value": self.value,
            "kind": self.kind.value,
        }
        if self.replaces:
            out["replaces"] = list(self.replaces)
        return out


def window_id(key: KeyObj, start: int, end: int) -> str:
    """The stable id of a window of a key."""
    if isinstance(key, bytes):
        key = key.hex()
    return f"{key}@{start}-{end}"


class JoinKind(enum.Enum):
    """What a join result holds."""

    JOINED = "joined"
    """A matched pair: a left row and a right row within the join's bounds."""
    UNMATCHED = "unmatched"
    """A row of an outer side (``how="left"``, ``"right"``, ``"outer"``) alone."""


@dataclass(slots=True)
class JoinResult:
    """One row of an interval join.

    ``left`` / ``right`` are the values of the matched rows (one of them is None
    for an unmatched row); ``emit`` tells a first emission (FINAL), a partial
    unmatched row that a later match may still replace (EARLY), and the joined
    row replacing it (UPDATE, same ``id``). ``id`` is stable across replays:
    see :mod:`evtime.operators.join` for the rule.
    """

    key: KeyObj
    left: Any
    right: Any
    kind: JoinKind
    emit: EmitKind
    left_ts: int | None
    right_ts: int | None
    id: str

    @property
    def timestamp(self) -> int:
        """The event time of the result: the later of the two rows (the match's time)."""
        if self.left_ts is None:
            return self.right_ts if self.right_ts is not None else 0
        if self.right_ts is None or self.left_ts >= self.right_ts:
            return self.left_ts
        return self.right_ts

    @property
    def is_update(self) -> bool:
        """Whether the result replaces an earlier (partial) result with the same id."""
        return self.emit is EmitKind.UPDATE

    def to_dict(self) -> dict[str, Any]:
        """The result as a JSON-ready dict (what sinks get by default)."""
        return {
            "key": self.key.decode(errors="replace") if isinstance(self.key, bytes) else self.key,
            "left": self.left,
            "right": self.right,
            "kind": self.kind.value,
            "emit": self.emit.value,
            "left_ts": self.left_ts,
            "right_ts": self.right_ts,
            "id": self.id,
        }


class DeadLetterReason(enum.Enum):
    """Why a record went to the dead-letter output."""

    DECODE = "decode"
    """The value's bytes could not be decoded."""
    KEY = "key"
    """The key could not be extracted."""
    TIMESTAMP = "timestamp"
    """No usable event timestamp."""
    USER_CODE = "user_code"
    """A user function raised."""
    LATE = "late"
    """Later than the watermark plus allowed lateness."""
    SINK = "sink"
    """A sink rejected the document."""
    ENCODE = "encode"
    """A result function returned a value JSON cannot encode."""


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A record that could not be processed, with the reason and its source position."""

    reason: DeadLetterReason
    error: str
    topic: str
    partition: int
    offset: int
    key: Any
    value: Any
    timestamp: int | None = None
    operator: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form; bytes are decoded as UTF-8 where possible, else hex."""
        return {
            "reason": self.reason.value,
            "error": self.error,
            "topic": self.topic,
            "partition": self.partition,
            "offset": self.offset,
            "key": _jsonable(self.key),
            "value": _jsonable(self.value),
            "timestamp": self.timestamp,
            "operator": self.operator,
        }


def _jsonable(value: Any) -> Any:
    if isinstance(value, bytes):
        try:
            return value.decode()
        except UnicodeDecodeError:
            return {"hex": value.hex()}
    return value


class Guarantee(enum.Enum):
    """The processing guarantee of an app running on Kafka."""

    AT_LEAST_ONCE = "at_least_once"
    """Sinks flushed, then snapshot, then offsets committed: a crash may repeat outputs
    (identically). The default."""
    EXACTLY_ONCE = "exactly_once"
    """Kafka outputs, changelog entries and input offsets commit in one Kafka transaction
    per task: a ``read_committed`` consumer sees every result once."""


class ErrorPolicy(enum.Enum):
    """What happens to a bad record."""

    DEAD_LETTER = "dead_letter"
    """Send it to the dead-letter output with its reason; keep running (default)."""
    FAIL_FAST = "fail_fast"
    """Stop the run with an error naming the record."""


@dataclass(frozen=True, slots=True)
class ChangelogRecord:
    """A record read back from a state changelog partition."""

    offset: int
    key: bytes
    value: bytes | None
    checkpoint: dict[str, int] | None
    """The input offsets of the checkpoint the record belongs to (None for markers)."""
    epoch: str | None = None
    """The run of the task that wrote the record (None for markers and older records)."""
