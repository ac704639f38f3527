"""An Elasticsearch outage is two warnings, when it begins and when it ends, whatever the
number of retries in between."""

from __future__ import annotations

import logging
import random

import pytest

from evtime.connectors.elasticsearch_http import Backoff


async def test_retries_of_a_sink_log_one_warning_at_each_end(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    target = "Elasticsearch http://127.0.0.1:1 (backoff test)"
    backoff = Backoff(
        "_bulk to http://127.0.0.1:1", first=0.001, cap=0.001, budget=None,
        rng=random.Random(1), target=target,
    )  # fmt: skip
    for _ in range(4):
        await backoff.wait("ClientConnectorError: refused", pending=10)
    backoff.succeeded()
    backoff.succeeded()  # nothing more to say
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 2, warnings
    assert warnings[0].startswith(f"{target} unreachable (ClientConnectorError: refused)")
    assert "retry 1 in" in warnings[0] and "10 documents waiting" in warnings[0]
    assert warnings[1].startswith(f"{target} reachable again after ")
    assert "(4 failed attempts" in warnings[1]
