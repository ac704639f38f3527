"""Durations, timestamps and clocks (evtime.time)."""

from __future__ import annotations

import re
import time
from datetime import timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from evtime.errors import ConfigError
from evtime.time import (
    MAX_TIMESTAMP,
    MIN_TIMESTAMP,
    Clock,
    ManualClock,
    SystemClock,
    format_millis,
    format_timestamp,
    to_millis,
)

UNITS = {"d": 86_400_000, "h": 3_600_000, "m": 60_000, "s": 1_000, "ms": 1}


def test_timestamp_bounds_are_the_int64_range() -> None:
    assert MIN_TIMESTAMP == -9_223_372_036_854_775_808
    assert MAX_TIMESTAMP == 9_223_372_036_854_775_807


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("250ms", 250),
        ("10s", 10_000),
        ("15m", 900_000),
        ("6h", 21_600_000),
        ("1d", 86_400_000),
        ("1h30m", 5_400_000),
        ("1d2h3m4s5ms", 93_784_005),
        ("1h 30m", 5_400_000),
        ("10 s", 10_000),
        ("  10s\n", 10_000),
        ("1.5s", 1_500),
        ("0.25s", 250),
        ("1.5h", 5_400_000),
        ("0s", 0),
        ("0ms", 0),
        (0, 0),
        (1234, 1234),
        (timedelta(minutes=15), 900_000),
        (timedelta(days=1, milliseconds=1), 86_400_001),
        (timedelta(microseconds=3000), 3),
    ],
)
def test_to_millis_accepts_the_documented_forms(
    value: str | int | timedelta, expected: int
) -> None:
    assert to_millis(value) == expected


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("10x", "use int milliseconds"),
        ("", "use int milliseconds"),
        ("   ", "use int milliseconds"),
        ("s", "use int milliseconds"),
        ("1w", "use int milliseconds"),
        ("10S", "use int milliseconds"),
        ("1..5s", "use int milliseconds"),
        ("1.s", "use int milliseconds"),
        (".5s", "use int milliseconds"),
        ("1h30", "use int milliseconds"),
        ("1h-30m", "use int milliseconds"),
        ("--5s", "use int milliseconds"),
        ("\u0661\u0660s", "use int milliseconds"),  # Arabic-Indic digits
        ("10", "needs a unit"),
        ("30m1h", "largest to smallest"),
        ("1h1h", "largest to smallest"),
        ("1.5ms", "whole number of milliseconds"),
        ("0.0001s", "whole number of milliseconds"),
        ("-5s", "must not be negative"),
        (-1, "must not be negative"),
        (timedelta(seconds=-1), "must not be negative"),
        (timedelta(microseconds=1500), "whole number of milliseconds"),
        (True, "use int milliseconds"),
        (1.5, "use int milliseconds"),
        (None, "use int milliseconds"),
        (2**63, "larger than the largest timestamp"),
        ("200000000000d", "larger than the largest timestamp"),
    ],
)
def test_to_millis_rejects_bad_values_naming_the_setting(value: object, reason: str) -> None:
    with pytest.raises(ConfigError) as info:
        to_millis(value, name="allowed_lateness")  # type: ignore[arg-type]
    message = str(info.value)
    assert message.startswith(f"invalid allowed_lateness {value!r}: ")
    assert reason in message


def test_to_millis_error_message_matches_the_contract() -> None:
    with pytest.raises(ConfigError) as info:
        to_millis("10x", name="allowed_lateness")
    assert str(info.value) == (
        "invalid allowed_lateness '10x': use int milliseconds, a timedelta, "
        "or a string like '250ms', '10s', '15m', '6h', '1d'"
    )


@pytest.mark.parametrize("value", [0, "0s", "0ms", timedelta(0)])
def test_to_millis_rejects_zero_when_asked(value: str | int | timedelta) -> None:
    with pytest.raises(ConfigError, match=r"invalid size .*must be positive"):
        to_millis(value, name="size", allow_zero=False)


def test_to_millis_accepts_negative_only_when_allowed() -> None:
    assert to_millis("-8h", allow_negative=True) == -28_800_000
    assert to_millis(" - 1h30m", allow_negative=True) == -5_400_000
    assert to_millis(timedelta(hours=-1), allow_negative=True) == -3_600_000
    assert to_millis(-5, allow_negative=True) == -5


@pytest.mark.parametrize(
    ("ms", "text"),
    [
        (0, "0ms"),
        (1, "1ms"),
        (250, "250ms"),
        (1_000, "1s"),
        (1_500, "1s500ms"),
        (900_000, "15m"),
        (5_400_000, "1h30m"),
        (86_400_000, "1d"),
        (93_784_005, "1d2h3m4s5ms"),
        (-60_000, "-1m"),
    ],
)
def test_format_millis_renders_like_users_write(ms: int, text: str) -> None:
    assert format_millis(ms) == text


@settings(max_examples=300)
@given(st.integers(min_value=-MAX_TIMESTAMP, max_value=MAX_TIMESTAMP))
def test_format_millis_round_trips_through_to_millis(ms: int) -> None:
    text = format_millis(ms)
    assert re.fullmatch(r"-?(\d+d)?(\d+h)?(\d+m)?(\d+s)?(\d+ms)?", text)
    assert to_millis(text, allow_negative=True) == ms
    if abs(ms) < timedelta.max // timedelta(milliseconds=1):
        assert to_millis(timedelta(milliseconds=ms), allow_negative=True) == ms


@settings(max_examples=300)
@given(
    st.dictionaries(st.sampled_from(list(UNITS)), st.integers(0, 10_000), min_size=1),
    st.sampled_from(["", " "]),
)
def test_compound_strings_add_up_their_parts(parts: dict[str, int], sep: str) -> None:
    ordered = [unit for unit in UNITS if unit in parts]
    text = sep.join(f"{parts[unit]}{unit}" for unit in ordered)
    assert to_millis(text) == sum(parts[unit] * UNITS[unit] for unit in ordered)


@settings(max_examples=200)
@given(st.integers(0, 10**9), st.sampled_from(["s", "m", "h", "d"]), st.integers(1, 6))
def test_decimal_strings_are_exact_or_rejected(numerator: int, unit: str, digits: int) -> None:
    whole, frac = divmod(numerator, 10**digits)
    text = f"{whole}.{frac:0{digits}d}{unit}"
    exact = numerator * UNITS[unit]
    if exact % 10**digits == 0:
        assert to_millis(text) == exact // 10**digits
    else:
        with pytest.raises(ConfigError, match="whole number of milliseconds"):
            to_millis(text)


@settings(max_examples=200)
@given(st.text(alphabet="0123456789.smhdxw -", max_size=8))
def test_to_millis_never_raises_anything_but_config_error(text: str) -> None:
    try:
        ms = to_millis(text, name="gap")
    except ConfigError as exc:
        assert str(exc).startswith(f"invalid gap {text!r}: ")
    else:
        assert ms >= 0


def test_format_timestamp_renders_iso_utc_and_sentinels() -> None:
    assert format_timestamp(0) == "1970-01-01T00:00:00.000Z"
    assert format_timestamp(-1) == "1969-12-31T23:59:59.999Z"
    assert format_timestamp(MIN_TIMESTAMP) == "MIN_TIMESTAMP"
    assert format_timestamp(MAX_TIMESTAMP) == "MAX_TIMESTAMP"
    assert format_timestamp(10**18) == f"{10**18}ms"


def test_manual_clock_moves_only_when_told() -> None:
    clock = ManualClock(start_ms=100)
    assert clock.now_ms() == 100
    assert clock.now_ms() == 100
    assert clock.advance(50) == 150
    assert clock.advance("1s") == 1_150
    assert clock.advance(timedelta(milliseconds=5)) == 1_155
    clock.set(7)
    assert clock.now_ms() == 7
    with pytest.raises(ConfigError, match="invalid clock advance -1: must not be negative"):
        clock.advance(-1)
    assert clock.now_ms() == 7


def test_system_clock_reads_the_wall_clock_in_ms() -> None:
    before = time.time_ns() // 1_000_000
    now = SystemClock().now_ms()
    after = time.time_ns() // 1_000_000
    assert before <= now <= after


def test_clocks_satisfy_the_clock_protocol() -> None:
    assert isinstance(SystemClock(), Clock)
    assert isinstance(ManualClock(), Clock)
    assert not isinstance(object(), Clock)
