"""The dead-letter guard: a job whose input is all bad stops and says why.

A misspelt ``key=`` or ``timestamp=`` field sends every record to the
dead-letter output; without a guard the job runs on, producing nothing, and a
bounded run exits 0. The guard watches each source topic's records and the
dead letters they produced (decoding, key, timestamp and user-code failures;
late records and sink rejections are not input errors), a batch at a time:

1. **First records.** When the first ``first`` records of a topic (1,000 by
   default; all of them, if a bounded input ends sooner) all failed for one
   reason, the run stops naming it, e.g. ``key field 'usr' is missing from the
   value in 1,000 of 1,000 records of 'orders' (fields seen: amount, ts, user)``.
2. **Failure ratio.** When more than ``max_ratio`` of a topic's last
   ``window`` records failed (counted by batch), the run stops the same way.

Both are settings (``first=0`` or ``max_ratio=1`` switch a rule off). The
guard costs one dict update per batch, nothing per record.
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Iterable
from dataclasses import dataclass

import orjson

from evtime.errors import EvtimeError
from evtime.records import DeadLetter, DeadLetterReason

INPUT_REASONS = frozenset(
    {
        DeadLetterReason.DECODE,
        DeadLetterReason.KEY,
        DeadLetterReason.TIMESTAMP,
        DeadLetterReason.USER_CODE,
    }
)


class BadInputError(EvtimeError):
    """A source's records fail so often that the job would produce next to nothing."""


@dataclass(frozen=True, slots=True)
class GuardSettings:
    """When the guard stops a run (see the module doc)."""

    first: int = 1_000
    window: int = 10_000
    max_ratio: float = 0.5

    @property
    def off(self) -> bool:
        return self.first <= 0 and self.max_ratio >= 1


def configured_guard() -> DeadLetterGuard:
    """A guard with the settings of the environment (EVTIME_DEAD_LETTER_*)."""
    from evtime.settings import Settings

    settings = Settings.load()
    return DeadLetterGuard(
        GuardSettings(
            settings.dead_letter_guard_first,
            settings.dead_letter_window,
            settings.dead_letter_max_ratio,
        )
    )


class _Topic:
    __slots__ = (
        "batches",
        "failed",
        "first_errors",
        "first_failed",
        "first_reasons",
        "read",
        "sample",
        "seen",
    )

    def __init__(self) -> None:
        self.read = 0  # records of the topic seen while the first-records rule applies
        self.first_failed = 0
        self.first_reasons: Counter[DeadLetterReason] = Counter()
        self.first_errors: Counter[str] = Counter()
        self.batches: deque[tuple[int, int]] = deque()  # (records, failed) per batch
        self.seen = 0  # records in ``batches``
        self.failed = 0  # failures in ``batches``
        self.sample: bytes | str | None = None  # a failed record's value, for its fields


class DeadLetterGuard:
    """Watches a job's sources; :meth:`observe` raises :class:`BadInputError` to stop it."""

    def __init__(self, settings: GuardSettings | None = None) -> None:
        self.settings = settings or GuardSettings()
        self._topics: dict[str, _Topic] = {}

    def observe(self, topic: str, records: int, letters: Iterable[DeadLetter]) -> None:
        """``records`` of ``topic`` were processed in one batch and gave ``letters``
        (dead letters of any topic and reason: the others are ignored)."""
        settings = self.settings
        if settings.off or records <= 0:
            return
        t = self._topics.get(topic)
        if t is None:
            t = self._topics[topic] = _Topic()
        bad = [d for d in letters if d.topic == topic and d.reason in INPUT_REASONS]
        if bad and t.sample is None:
            value = bad[0].value
            t.sample = value if isinstance(value, bytes | str) else None
        if t.read < settings.first:
            take = min(records, settings.first - t.read)
            t.read += take
            t.first_failed += min(len(bad), take)
            t.first_reasons.update(d.reason for d in bad[:take])
            t.first_errors.update(_describe(d) for d in bad[:take])
            if t.read >= settings.first:
                self._check_first(topic, t)
        if settings.max_ratio < 1:
            t.batches.append((records, len(bad)))
            t.seen += records
            t.failed += len(bad)
            while t.batches and t.seen - t.batches[0][0] >= settings.window:
                n, f = t.batches.popleft()
                t.seen -= n
                t.failed -= f
            if t.seen >= settings.window and t.failed > settings.max_ratio * t.seen:
                raise BadInputError(
                    f"{t.failed:,} of the last {t.seen:,} records of {topic!r} failed "
                    f"(more than {settings.max_ratio:.0%}), {_most(bad, t)}; fix the input or "
                    "the source's declaration, or raise EVTIME_DEAD_LETTER_MAX_RATIO"
                )

    def end_of_input(self, topic: str) -> None:
        """A bounded input ended: the first-records rule applies to what it had."""
        t = self._topics.get(topic)
        if t is not None and 0 < t.read < self.settings.first:
            self._check_first(topic, t)

    def _check_first(self, topic: str, t: _Topic) -> None:
        if t.first_failed < t.read or len(t.first_reasons) != 1:
            return
        error = t.first_errors.most_common(1)[0][0]
        if len(t.first_errors) > 1:
            (reason,) = t.first_reasons
            error = f"the {reason.value} failed (e.g. {error})"
        raise BadInputError(
            f"{error} in {t.first_failed:,} of {t.read:,} records of {topic!r}"
            f"{_fields(t.sample)}; fix the source's declaration (key=, timestamp=, "
            "value_format=) or the input; EVTIME_DEAD_LETTER_GUARD_FIRST=0 turns this check off"
        )


def _describe(letter: DeadLetter) -> str:
    """One failure as the message shows it: the error's first line, without the name of
    evtime's own extraction errors (user code's exceptions keep theirs)."""
    text = letter.error.splitlines()[0] if letter.error else letter.reason.value
    if letter.reason is not DeadLetterReason.USER_CODE:
        name, sep, rest = text.partition(": ")
        if sep and name.endswith("Error") and " " not in name:
            text = rest
    return text if len(text) <= 200 else text[:197] + "..."


def _most(bad: list[DeadLetter], t: _Topic) -> str:
    if not bad:
        return "for several reasons"
    error, count = Counter(_describe(d) for d in bad).most_common(1)[0]
    return f"most recently: {error} ({count:,} in the last batch){_fields(t.sample)}"


def _fields(sample: bytes | str | None) -> str:
    """`` (fields seen: a, b)`` when a failed record's value is a JSON object."""
    if sample is None:
        return ""
    try:
        value = orjson.loads(sample)
    except orjson.JSONDecodeError:
        return ""
    if not isinstance(value, dict):
        return ""
    names = sorted(value)[:12]
    return f" (fields seen: {', '.join(map(str, names))})"
