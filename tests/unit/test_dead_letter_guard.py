"""The dead-letter guard stops a job whose input is all (or mostly) bad, naming why."""

from __future__ import annotations

import orjson
import pytest

from evtime.records import DeadLetter, DeadLetterReason
from evtime.runtime.guard import BadInputError, DeadLetterGuard, GuardSettings

VALUE = orjson.dumps({"user": "u1", "ts": 1, "amount": 3})


def _letters(n: int, reason: DeadLetterReason, error: str, topic: str = "orders") -> list[
    DeadLetter
]:
    return [DeadLetter(reason, error, topic, 0, i, None, VALUE) for i in range(n)]


MISSING_KEY = "KeyExtractionError: key field 'usr' is missing from the value"


def test_the_first_records_all_failing_for_one_reason_stop_the_run() -> None:
    guard = DeadLetterGuard()
    for _ in range(4):
        guard.observe("orders", 200, _letters(200, DeadLetterReason.KEY, MISSING_KEY))
    with pytest.raises(BadInputError) as info:
        guard.observe("orders", 200, _letters(200, DeadLetterReason.KEY, MISSING_KEY))
    assert str(info.value).startswith(
        "key field 'usr' is missing from the value in 1,000 of 1,000 records of 'orders' "
        "(fields seen: amount, ts, user)"
    )
    assert "EVTIME_DEAD_LETTER_GUARD_FIRST" in str(info.value)


def test_one_good_record_among_the_first_is_enough() -> None:
    guard = DeadLetterGuard()
    for _ in range(5):
        guard.observe("orders", 200, _letters(199, DeadLetterReason.KEY, MISSING_KEY))


def test_two_reasons_among_the_first_records_do_not_trip_the_first_rule() -> None:
    guard = DeadLetterGuard(GuardSettings(first=100, max_ratio=1.0))
    guard.observe("orders", 50, _letters(50, DeadLetterReason.KEY, MISSING_KEY))
    guard.observe("orders", 50, _letters(50, DeadLetterReason.TIMESTAMP, "TimestampError: x"))


def test_timestamps_failing_with_different_values_count_as_one_reason() -> None:
    guard = DeadLetterGuard(GuardSettings(first=3))
    letters = [
        DeadLetter(DeadLetterReason.TIMESTAMP, f"TimestampError: timestamp field 'ts' is "
                   f"'x{i}', not a timestamp", "orders", 0, i, None, VALUE)
        for i in range(3)
    ]
    with pytest.raises(BadInputError, match=r"^the timestamp failed \(e.g. timestamp field"):
        guard.observe("orders", 3, letters)


def test_a_short_bounded_input_that_is_all_bad_stops_at_its_end() -> None:
    guard = DeadLetterGuard()
    guard.observe("orders", 10, _letters(10, DeadLetterReason.KEY, MISSING_KEY))
    with pytest.raises(BadInputError, match="in 10 of 10 records of 'orders'"):
        guard.end_of_input("orders")


def test_late_records_and_other_topics_letters_are_not_input_errors() -> None:
    guard = DeadLetterGuard(GuardSettings(first=10))
    guard.observe("orders", 10, _letters(10, DeadLetterReason.LATE, "late"))
    guard.observe("users", 10, _letters(10, DeadLetterReason.KEY, MISSING_KEY, topic="orders"))


def test_a_failure_ratio_past_the_threshold_over_the_window_stops_the_run() -> None:
    guard = DeadLetterGuard(GuardSettings(first=100, window=1_000, max_ratio=0.5))
    guard.observe("orders", 1_000, [])  # a good start
    for _ in range(5):
        guard.observe("orders", 100, _letters(60, DeadLetterReason.USER_CODE, "ZeroDivisionError"))
    with pytest.raises(BadInputError, match=r"of the last 1,000 records of 'orders' failed"):
        for _ in range(6):
            guard.observe(
                "orders", 100, _letters(60, DeadLetterReason.USER_CODE, "ZeroDivisionError")
            )


def test_a_ratio_under_the_threshold_runs_on() -> None:
    guard = DeadLetterGuard(GuardSettings(first=100, window=1_000, max_ratio=0.5))
    for _ in range(100):
        guard.observe("orders", 100, _letters(40, DeadLetterReason.DECODE, "SerdeError: bad"))


def test_the_guard_switched_off_never_stops() -> None:
    guard = DeadLetterGuard(GuardSettings(first=0, max_ratio=1.0))
    for _ in range(20):
        guard.observe("orders", 100, _letters(100, DeadLetterReason.KEY, MISSING_KEY))
    guard.end_of_input("orders")
