"""Event time and wall-clock time: timestamps, durations and clocks.

Every time value inside evtime is an ``int`` of milliseconds: timestamps are
milliseconds since the Unix epoch, durations are milliseconds. Users may write
durations as ``timedelta``, int milliseconds or strings like ``"15m"``;
:func:`to_millis` turns all of them into ints once, when a setting is declared,
so that nothing on the per-record path ever parses or converts time.

The wall clock is never read implicitly: code that needs "now" takes a
:class:`Clock` (or a ``now_ms`` argument), so tests drive time with a
:class:`ManualClock` and are exact.
"""

from __future__ import annotations

import re
import time as _stdlib_time
from datetime import UTC, datetime, timedelta
from fractions import Fraction
from typing import Protocol, TypeAlias, runtime_checkable

from evtime.errors import ConfigError

__all__ = [
    "MAX_TIMESTAMP",
    "MIN_TIMESTAMP",
    "Clock",
    "Duration",
    "ManualClock",
    "SystemClock",
    "format_millis",
    "format_timestamp",
    "to_millis",
]

MIN_TIMESTAMP: int = -(2**63)
"""The smallest timestamp (ms); every watermark starts here (Flink's ``Long.MIN_VALUE``)."""

MAX_TIMESTAMP: int = 2**63 - 1
"""The largest timestamp (ms); a watermark at this value means end of input."""

Duration: TypeAlias = timedelta | int | str
"""A span of time as users write it: int milliseconds, a ``timedelta``, or ``"10s"``."""

_UNIT_MS: dict[str, int] = {
    "d": 86_400_000,
    "h": 3_600_000,
    "m": 60_000,
    "s": 1_000,
    "ms": 1,
}
# Largest unit first: the order in which compound strings must list units.
_UNIT_ORDER: tuple[str, ...] = ("d", "h", "m", "s", "ms")

# "ms" is tried before "m" and "s" so that "250ms" is not read as "250m" + "s".
_PART = re.compile(r"([0-9]+(?:\.[0-9]+)?)\s*(ms|d|h|m|s)\s*")
_COMPOUND = re.compile(r"(?:[0-9]+(?:\.[0-9]+)?\s*(?:ms|d|h|m|s)\s*)+")

_HOW = "use int milliseconds, a timedelta, or a string like '250ms', '10s', '15m', '6h', '1d'"


def _invalid(name: str, value: object, why: str = _HOW) -> ConfigError:
    return ConfigError(f"invalid {name} {value!r}: {why}")


def _parse(text: str, name: str, original: object) -> int:
    """Parse a duration string (sign already removed) into milliseconds."""
    if not text:
        raise _invalid(name, original)
    if text.isdigit():
        raise _invalid(
            name,
            original,
            f"a duration string needs a unit, e.g. '{text}ms' or '{text}s' "
            f"(or pass the int {int(text)} for milliseconds)",
        )
    if _COMPOUND.fullmatch(text) is None:
        raise _invalid(name, original)
    total = Fraction(0)
    last_rank = -1
    for number, unit in _PART.findall(text):
        rank = _UNIT_ORDER.index(unit)
        if rank <= last_rank:
            raise _invalid(
                name,
                original,
                "list each unit once, from largest to smallest, like '1h30m' or '1m30s500ms'",
            )
        last_rank = rank
        total += Fraction(number) * _UNIT_MS[unit]
    if total.denominator != 1:
        raise _invalid(
            name,
            original,
            f"{text!r} is not a whole number of milliseconds; "
            "durations have millisecond resolution, e.g. '1.5s' or '1500ms'",
        )
    return int(total)


def to_millis(
    value: Duration,
    *,
    name: str = "duration",
    allow_zero: bool = True,
    allow_negative: bool = False,
) -> int:
    """Convert a user-written duration to int milliseconds.

    Accepted forms:

    * ``int`` milliseconds (``bool`` is rejected: ``True`` is not a duration);
    * ``timedelta``, which must be a whole number of milliseconds (sub-millisecond
      parts are rejected rather than rounded, so no setting silently changes);
    * a string of one or more ``<number><unit>`` parts with units ``d``, ``h``,
      ``m``, ``s``, ``ms``, listed from largest to smallest, each at most once:
      ``"250ms"``, ``"10s"``, ``"1h30m"``, ``"1.5s"``. Surrounding whitespace
      and spaces between parts are allowed. A bare number string (``"250"``)
      is rejected as ambiguous: pass the int or add a unit.

    Negative durations are rejected unless ``allow_negative`` (window offsets use
    it: ``"-8h"``); zero is rejected when ``allow_zero`` is false. Every error is a
    :class:`~evtime.errors.ConfigError` whose message names the setting ``name``.

    >>> to_millis("1h30m")
    5400000
    >>> to_millis(" 1.5s ")
    1500
    >>> to_millis(timedelta(minutes=15))
    900000
    >>> to_millis(250)
    250
    >>> to_millis("10x", name="allowed_lateness")
    Traceback (most recent call last):
    ...
    evtime.errors.ConfigError: invalid allowed_lateness '10x': use int milliseconds, \
a timedelta, or a string like '250ms', '10s', '15m', '6h', '1d'
    """
    if isinstance(value, bool):
        raise _invalid(name, value)
    if isinstance(value, int):
        ms = value
    elif isinstance(value, timedelta):
        micros = (value.days * 86_400 + value.seconds) * 1_000_000 + value.microseconds
        ms, rest = divmod(micros, 1_000)
        if rest:
            raise _invalid(
                name,
                value,
                "not a whole number of milliseconds; durations have millisecond "
                "resolution, round the timedelta to milliseconds",
            )
    elif isinstance(value, str):
        text = value.strip()
        if text.startswith("-"):
            ms = -_parse(text[1:].lstrip(), name, value)
        else:
            ms = _parse(text, name, value)
    else:
        raise _invalid(name, value)
    if ms < 0 and not allow_negative:
        raise _invalid(name, value, "must not be negative; use 0 or a positive duration like '10s'")
    if ms == 0 and not allow_zero:
        raise _invalid(name, value, "must be positive; use a duration like '250ms' or '10s'")
    if abs(ms) > MAX_TIMESTAMP:
        raise _invalid(
            name, value, f"larger than the largest timestamp ({MAX_TIMESTAMP} ms); use less"
        )
    return ms


def format_millis(ms: int) -> str:
    """Render a duration in milliseconds the way users write it; inverse of :func:`to_millis`.

    >>> format_millis(900_000)
    '15m'
    >>> format_millis(5_400_000)
    '1h30m'
    >>> format_millis(250)
    '250ms'
    >>> format_millis(0)
    '0ms'
    >>> format_millis(-1500)
    '-1s500ms'
    """
    if ms == 0:
        return "0ms"
    if ms < 0:
        return "-" + format_millis(-ms)
    parts: list[str] = []
    rest = ms
    for unit in _UNIT_ORDER:
        count, rest = divmod(rest, _UNIT_MS[unit])
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts)


def format_timestamp(ms: int) -> str:
    """Render a timestamp (ms since epoch) as ISO-8601 UTC, for logs and error messages.

    The sentinels read as ``MIN_TIMESTAMP`` and ``MAX_TIMESTAMP``; values beyond
    what ``datetime`` can show are printed as raw milliseconds.

    >>> format_timestamp(1_700_000_000_123)
    '2023-11-14T22:13:20.123Z'
    >>> format_timestamp(MIN_TIMESTAMP)
    'MIN_TIMESTAMP'
    """
    if ms == MIN_TIMESTAMP:
        return "MIN_TIMESTAMP"
    if ms == MAX_TIMESTAMP:
        return "MAX_TIMESTAMP"
    try:
        moment = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=ms)
    except OverflowError:
        return f"{ms}ms"
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


@runtime_checkable
class Clock(Protocol):
    """A source of wall-clock time in milliseconds since the epoch.

    The runtime passes a clock (or the ``now_ms`` it read) to everything that
    needs wall-clock time: idleness, processing-time timers, early firing.
    """

    def now_ms(self) -> int:
        """The current wall-clock time in milliseconds since the epoch."""
        ...


class SystemClock:
    """The machine's wall clock (``time.time_ns() // 1_000_000``).

    >>> SystemClock().now_ms() > 1_600_000_000_000
    True
    """

    __slots__ = ()

    def now_ms(self) -> int:
        """The current wall-clock time in milliseconds since the epoch."""
        return _stdlib_time.time_ns() // 1_000_000

    def __repr__(self) -> str:
        return "SystemClock()"


class ManualClock:
    """A clock that moves only when told to; tests use it to make time exact.

    >>> clock = ManualClock(1_000)
    >>> clock.advance("1.5s")
    2500
    >>> clock.set(10)
    >>> clock.now_ms()
    10
    """

    __slots__ = ("_now",)

    def __init__(self, start_ms: int = 0) -> None:
        """Start the clock at ``start_ms`` milliseconds since the epoch."""
        self._now = start_ms

    def now_ms(self) -> int:
        """The time this clock was last set or advanced to."""
        return self._now

    def advance(self, ms: Duration) -> int:
        """Move the clock forward by a non-negative duration; return the new time."""
        self._now += to_millis(ms, name="clock advance")
        return self._now

    def set(self, ms: int) -> None:
        """Set the clock to ``ms``; it may go backwards, as a real wall clock can."""
        self._now = ms

    def __repr__(self) -> str:
        return f"ManualClock({self._now})"
