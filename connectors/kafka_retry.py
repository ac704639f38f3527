"""Waiting for an unreachable Kafka broker: retries with backoff, up to a deadline.

A broker that goes away is waited for, never a reason to drop anything (DESIGN.md §8).
What aiokafka does not retry by itself (starting a client, creating a topic, queuing a
batch behind one that cannot be sent) is retried here, with exponential backoff, until
the broker answers or ``EVTIME_KAFKA_BROKER_WAIT`` seconds (default 600) have passed;
then :class:`BrokerUnreachableError` says what was being done and what to do. An outage
is two log lines, when it begins and when it ends (evtime/logs.py).

A broker that refuses the client (authentication, TLS) is not unreachable: aiokafka
reports it as the same retriable "Unable to bootstrap", so the clients check a secured
connection first (connectors/kafka_probe.py), which raises a ConfigError, never retried.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import Awaitable, Callable
from typing import Any, Protocol, TypeVar

from aiokafka import AIOKafkaProducer
from aiokafka.errors import (
    KafkaError,
    KafkaTimeoutError,
    OutOfOrderSequenceNumber,
    UnknownProducerId,
)

from evtime.errors import EvtimeError
from evtime.logs import Outage
from evtime.settings import Settings

_T = TypeVar("_T")
_C = TypeVar("_C", bound="_Client")


class _Client(Protocol):
    async def start(self) -> None: ...

    async def stop(self) -> None: ...


async def started(client: _C) -> _C:
    """``client`` (an aiokafka consumer or producer), started; if its start fails it is
    stopped before the error is raised: a failed start leaves a client and its tasks behind."""
    try:
        await client.start()
    except BaseException:
        await client.stop()
        raise
    return client


async def stopped(client: _Client, timeout_s: float = 10.0) -> None:
    """Stop a client that gave up on deliveries (its failures are already known): within
    ``timeout_s``, and whatever its stop raises."""
    with contextlib.suppress(Exception):
        await asyncio.wait_for(client.stop(), timeout=timeout_s)
BACKOFF_FIRST_S = 0.1
BACKOFF_MAX_S = 5.0
BROKER_WAIT_ENV = "EVTIME_KAFKA_BROKER_WAIT"


class BrokerUnreachableError(EvtimeError):
    """The Kafka broker stayed unreachable longer than the configured wait."""


def producer_overrides() -> dict[str, int]:
    """Settings every producer of the worker takes from the environment:
    ``EVTIME_KAFKA_REQUEST_TIMEOUT_MS`` (aiokafka's ``request_timeout_ms``, 40 s by
    default), after which a batch that found no leader is given up on (and sent again)."""
    timeout_ms = Settings.load().kafka_request_timeout_ms
    return {} if timeout_ms is None else {"request_timeout_ms": timeout_ms}


def broker_wait_s() -> float:
    """``EVTIME_KAFKA_BROKER_WAIT`` in seconds (``inf`` waits for ever), default 600."""
    return Settings.load().kafka_broker_wait


def unreachable(exc: BaseException) -> bool:
    """Whether ``exc`` means "the broker cannot be reached now" rather than "this is wrong".

    Retriable aiokafka errors (connection refused or closed, node not ready, request
    timed out, no leader yet) and KafkaTimeoutError (metadata not available in time).
    """
    return isinstance(exc, KafkaTimeoutError) or (
        isinstance(exc, KafkaError) and bool(getattr(exc, "retriable", False))
    )


def given_up(exc: BaseException) -> bool:
    """Whether a produced batch failed because the broker was away: :func:`unreachable`
    (its delivery timed out, its partition had no leader), or refused for a gap in the
    idempotent producer's sequence that an earlier given-up batch left. Sent again by a
    new producer, in order, it lands."""
    return unreachable(exc) or isinstance(exc, OutOfOrderSequenceNumber | UnknownProducerId)


async def while_unreachable(
    what: str,
    attempt: Callable[[], Awaitable[_T]],
    wait_s: float | None = None,
    retry_if: Callable[[BaseException], bool] = unreachable,
    target: str = "the Kafka broker",
) -> _T:
    """``await attempt()`` until it succeeds, waiting with exponential backoff (0.1 s up
    to 5 s) while the broker is unreachable, for at most ``wait_s`` seconds in all
    (default :func:`broker_wait_s`). Every other error (any for which ``retry_if`` is
    false) is raised at once.

    An outage of ``target`` (e.g. "Kafka broker 127.0.0.1:9092") is logged once when it
    begins and once when it ends, with its duration (evtime/logs.py :class:`Outage`); each
    failed attempt in between goes to DEBUG. Past the deadline, BrokerUnreachableError
    (with the last error chained) tells what to check.
    """
    limit = wait_s  # resolved at the first failure: the settings are not read per send
    began = time.monotonic()
    delay = BACKOFF_FIRST_S
    outage: Outage | None = None  # looked up at the first failure: none per send
    while True:
        try:
            result = await attempt()
        except Exception as exc:
            if not retry_if(exc):
                raise
            waited = time.monotonic() - began
            if limit is None:
                limit = broker_wait_s()
            if waited + delay > limit:
                raise BrokerUnreachableError(
                    f"{what}: the Kafka broker stayed unreachable for {waited:.0f} s "
                    f"({type(exc).__name__}: {exc}); check that it runs and that this machine "
                    f"reaches it, or wait longer with {BROKER_WAIT_ENV} (now "
                    f"{'inf' if math.isinf(limit) else f'{limit:.0f}'} s). Nothing after "
                    "the last checkpoint is committed: a restart resumes there"
                ) from exc
            if outage is None:
                outage = Outage.of(target)
            outage.failed(f"{type(exc).__name__}: {exc}", f"{what}, retrying in {delay:.1f} s")
        else:
            if outage is not None:
                outage.recovered()
            return result
        await asyncio.sleep(delay)
        delay = min(delay * 2, BACKOFF_MAX_S)


async def send_batch(
    producer: AIOKafkaProducer, batch: Any, topic: str, partition: int, what: str, target: str
) -> asyncio.Future[Any]:
    """Queue ``batch`` (a BatchBuilder) for ``topic[partition]``; the future of its delivery.

    aiokafka queues a partition's batch only once the previous one is drained: while the
    broker is down, send_batch gives up after request_timeout_ms (40 s) with a
    KafkaTimeoutError and without queuing the batch, so it is retried as it is."""
    sent: asyncio.Future[Any] = await while_unreachable(
        f"{what} {topic!r}[{partition}]",
        lambda: producer.send_batch(batch, topic, partition=partition),
        target=target,
    )
    return sent
