"""An outage is one warning when it begins and one when it ends; repeats of a
third-party log line are held back."""

from __future__ import annotations

import logging

import pytest

from evtime.logs import Outage, RepeatFilter


def test_an_outage_is_two_warnings_whatever_the_retries(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="evtime.outage")
    outage = Outage.of("Kafka broker 127.0.0.1:1")
    assert Outage.of("Kafka broker 127.0.0.1:1") is outage  # shared by every client
    for i in range(25):
        outage.failed(f"KafkaConnectionError: attempt {i}", "waiting up to 600 s")
    outage.recovered()
    outage.recovered()  # no outage any more: nothing to say
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2
    assert warnings[0].startswith("Kafka broker 127.0.0.1:1 unreachable (KafkaConnectionError")
    assert "reachable again after" in warnings[1] and "25 failed attempts" in warnings[1]
    assert sum(r.levelno == logging.DEBUG for r in caplog.records) == 24


def test_repeats_of_an_aiokafka_line_are_held_back() -> None:
    f = RepeatFilter(hold_s=60)

    def rec(name: str, msg: str) -> logging.LogRecord:
        return logging.LogRecord(name, logging.ERROR, __file__, 1, msg, ("x",), None)

    assert f.filter(rec("aiokafka.conn", "Unable to connect to %s"))
    assert not any(f.filter(rec("aiokafka.conn", "Unable to connect to %s")) for _ in range(9))
    assert f.filter(rec("aiokafka.client", "Unable to connect to %s"))  # another logger
    assert f.filter(rec("evtime.worker", "Unable to connect to %s"))  # not third-party
    f.hold_s = 0
    later = rec("aiokafka.conn", "Unable to connect to %s")
    assert f.filter(later)
    assert later.getMessage() == "Unable to connect to x (and 9 more like it in the last 0 s)"
