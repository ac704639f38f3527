"""Waiting for an unreachable broker: retried while unreachable, bounded by a deadline
whose error says what to do; any other error is raised at once."""

from __future__ import annotations

import logging

import pytest
from aiokafka.errors import KafkaConnectionError, TopicAuthorizationFailedError

from evtime.connectors.kafka_retry import (
    BROKER_WAIT_ENV,
    BrokerUnreachableError,
    broker_wait_s,
    while_unreachable,
)
from evtime.errors import ConfigError


async def test_an_unreachable_broker_is_retried_until_it_answers() -> None:
    calls = 0

    async def attempt() -> str:
        nonlocal calls
        calls += 1
        if calls < 4:
            raise KafkaConnectionError("Unable to bootstrap from [('127.0.0.1', 1)]")
        return "started"

    assert await while_unreachable("starting", attempt, wait_s=60) == "started"
    assert calls == 4


async def test_past_the_deadline_the_error_names_the_step_and_the_setting() -> None:
    calls = 0

    async def attempt() -> None:
        nonlocal calls
        calls += 1
        raise KafkaConnectionError("Unable to bootstrap")

    with pytest.raises(BrokerUnreachableError) as info:
        await while_unreachable("creating the changelog topic 'x'", attempt, wait_s=0.5)
    message = str(info.value)
    assert message.startswith("creating the changelog topic 'x': the Kafka broker stayed")
    assert BROKER_WAIT_ENV in message and "restart resumes" in message
    assert isinstance(info.value.__cause__, KafkaConnectionError)
    assert calls >= 2  # it did retry before giving up


async def test_an_error_that_retrying_cannot_fix_is_raised_at_once() -> None:
    calls = 0

    async def attempt() -> None:
        nonlocal calls
        calls += 1
        raise TopicAuthorizationFailedError()

    with pytest.raises(TopicAuthorizationFailedError):
        await while_unreachable("producing", attempt, wait_s=60)
    assert calls == 1


def test_the_wait_is_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(BROKER_WAIT_ENV, raising=False)
    assert broker_wait_s() == 600
    monkeypatch.setenv(BROKER_WAIT_ENV, "90")
    assert broker_wait_s() == 90
    monkeypatch.setenv(BROKER_WAIT_ENV, "inf")
    assert broker_wait_s() == float("inf")
    for bad in ("0", "-5", "soon", "nan"):
        monkeypatch.setenv(BROKER_WAIT_ENV, bad)
        with pytest.raises(ConfigError, match=BROKER_WAIT_ENV):
            broker_wait_s()


async def test_an_outage_is_two_warnings_whatever_the_retries(
    caplog: pytest.LogCaptureFixture,
) -> None:
    calls = 0

    async def attempt() -> str:
        nonlocal calls
        calls += 1
        if calls <= 5:
            raise KafkaConnectionError("Unable to bootstrap from [('127.0.0.1', 1)]")
        return "started"

    caplog.set_level(logging.DEBUG)
    target = "Kafka broker 127.0.0.1:1 (outage test)"
    assert await while_unreachable("starting", attempt, wait_s=60, target=target) == "started"
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 2, warnings
    assert warnings[0].startswith(f"{target} unreachable (KafkaConnectionError")
    assert "starting, retrying in 0.1 s" in warnings[0]
    assert warnings[1].startswith(f"{target} reachable again after ")
    assert "(5 failed attempts; the last: KafkaConnectionError" in warnings[1]
    debug = [r for r in caplog.records if r.levelno == logging.DEBUG and target in r.getMessage()]
    assert len(debug) == 4  # the retries in between
