"""What every operator sees: a batch of records, its state, timers, and a collector.

Operators never see Kafka or RocksDB types; they are driven synchronously, a
batch at a time, by their partition task.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import orjson

from evtime.errors import DeadLetterPolicyError
from evtime.records import Batch, DeadLetter, DeadLetterReason, ErrorPolicy, Output


class Collector:
    """Gathers what operators emit during one batch: outputs per output name, dead letters."""

    def __init__(self, policy: ErrorPolicy = ErrorPolicy.DEAD_LETTER) -> None:
        self.policy = policy
        self.outputs: dict[str, list[Output]] = {}
        self.dead: list[DeadLetter] = []
        self.late: dict[str, list[Output]] = {}
        self.dead_count = 0
        self.late_count = 0

    def emit(self, output_name: str, output: Output) -> None:
        """Queue ``output`` for the sink named ``output_name``."""
        bucket = self.outputs.get(output_name)
        if bucket is None:
            bucket = self.outputs[output_name] = []
        bucket.append(output)

    def bucket(self, output_name: str) -> list[Output]:
        """The list collecting ``output_name``'s outputs (append to it directly on hot paths)."""
        bucket = self.outputs.get(output_name)
        if bucket is None:
            bucket = self.outputs[output_name] = []
        return bucket

    def dead_letter(self, letter: DeadLetter) -> None:
        """Queue a bad record for the dead-letter output, or stop under fail-fast."""
        self.dead_count += 1
        if self.policy is ErrorPolicy.FAIL_FAST and letter.reason is not DeadLetterReason.LATE:
            raise DeadLetterPolicyError(
                f"bad record at {letter.topic}[{letter.partition}]@{letter.offset} "
                f"({letter.reason.value}): {letter.error}. The error policy is fail_fast; use "
                "ErrorPolicy.DEAD_LETTER to route bad records to the dead-letter output instead"
            )
        self.dead.append(letter)

    def take(self) -> tuple[dict[str, list[Output]], list[DeadLetter]]:
        """Hand over (and forget) everything gathered so far."""
        outputs, dead = self.outputs, self.dead
        self.outputs, self.dead = {}, []
        return outputs, dead


class Operator(Protocol):
    """A stateful step of a dataflow, instantiated once per partition task."""

    name: str

    def process(self, batch: Batch) -> None:
        """Handle every record of ``batch``, in order, firing timers as watermarks pass."""

    def on_watermark(self, watermark: int) -> None:
        """The task watermark moved to ``watermark`` without a record (idleness, end of input)."""

    def on_processing_time(self, now_ms: int) -> None:
        """The wall clock reached ``now_ms``: fire due processing-time timers."""

    def next_processing_time(self) -> int | None:
        """When :meth:`on_processing_time` next has work, or None."""


def batch_dead_letter(
    batch: Batch, i: int, reason: DeadLetterReason, error: str, operator: str
) -> DeadLetter:
    """The dead letter of record ``i`` of ``batch``: its position and original value."""
    raw = batch.raw[i]
    return DeadLetter(
        reason,
        error,
        batch.topic,
        batch.partition,
        raw.offset,
        batch.keys[i],
        raw.value,
        batch.timestamps[i],
        operator,
    )


def send_late(
    collector: Collector,
    late_output: str | None,
    batch: Batch,
    i: int,
    error: str,
    operator: str,
) -> None:
    """Route late record ``i`` to the ``late_output`` sink, or to the dead letters; count it."""
    collector.late_count += 1
    if late_output is not None:
        collector.emit(
            late_output, Output(batch.keys[i], batch.values[i], batch.timestamps[i], None)
        )
        return
    collector.dead_letter(batch_dead_letter(batch, i, DeadLetterReason.LATE, error, operator))


@dataclass(slots=True)
class ResultEmitter:
    """How an operator emits its results (window or join results): shaped by the user's
    result function (``result.to_dict()`` without one; None from it emits nothing) to
    one output, and counted; a result whose function raised becomes a dead letter."""

    collector: Collector
    operator: str
    output: str
    fn: Callable[[Any], Any] | None
    topic: str
    """Where a dead letter says the result came from (the operator's input)."""
    partition: int
    count: int = 0
    """Results emitted (or attempted: a raising result function counts)."""

    def emit(self, result: Any, timestamp: int) -> None:
        """Emit ``result`` at event time ``timestamp``."""
        value = self.shape(result, timestamp)
        if value is not None:
            self.collector.emit(self.output, Output(result.key, value, timestamp, result.id))

    def shape(self, result: Any, timestamp: int) -> Any:
        """The value to emit for ``result`` (counted), or None to emit nothing."""
        self.count += 1
        fn = self.fn
        if fn is None:
            return result.to_dict()
        try:
            value = fn(result)
        except Exception as exc:
            self.failed(result, timestamp, exc)
            return None
        # A type check, no encoding, for the usual values: a dict (its fields' types too, for
        # the first results: a function returning a set in a field does so from the start),
        # a list, a string, a number. Anything else is encoded once here, so that a value the
        # sinks cannot write is a dead letter naming the operator, not a sink's traceback.
        kind = type(value)
        if kind is dict:
            if self.count > _CHECKED_FIELDS or _PLAIN.issuperset(map(type, value.values())):
                return value
        elif kind in _PLAIN:
            return value
        try:
            orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS)
        except TypeError as exc:
            self.failed(result, timestamp, exc, DeadLetterReason.ENCODE)
            return None
        return value

    def failed(
        self,
        result: Any,
        timestamp: int,
        exc: Exception,
        reason: DeadLetterReason = DeadLetterReason.USER_CODE,
    ) -> None:
        """The result function raised ``exc`` on ``result`` (or returned a value JSON
        cannot encode, the ``encode`` reason): a dead letter."""
        if reason is DeadLetterReason.ENCODE:
            what = f"returned a value JSON cannot encode ({exc})"
        else:
            what = f"raised {describe_error(exc)}"
        self.collector.dead_letter(
            DeadLetter(
                reason,
                f"result function of {self.operator!r} {what}",
                self.topic,
                self.partition,
                -1,
                result.key,
                result.to_dict(),
                timestamp,
                self.operator,
            )
        )


_CHECKED_FIELDS = 1_000
"""Results of an emitter whose fields' types are checked."""
_PLAIN = frozenset({str, int, float, bool, type(None), list, dict})
"""Types of a result (and of a result dict's fields) that are not checked before emitting:
those JSON encodes, or whose items the sinks' encoding checks (nested lists and dicts)."""


def describe_error(exc: BaseException) -> str:
    """A one-line description of a user-code exception for a dead letter."""
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


OutputFn = Callable[[Any], Any]
