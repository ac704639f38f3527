"""Fixtures for tests against the real Kafka broker and OpenSearch node.

Start them with `evtime services up`. An unreachable service fails the test (it is
never skipped): a green run must mean the real thing was exercised.
EVTIME_KAFKA_BOOTSTRAP / EVTIME_OPENSEARCH_URL point the tests at other instances;
otherwise the addresses come from the same env variables `evtime services` reads.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import urllib.request
import uuid

import pytest
from aiokafka.admin import AIOKafkaAdminClient

from evtime.services import ServicesConfig


async def _kafka_cluster(bootstrap: str) -> dict[str, object]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=5000)
    try:
        await asyncio.wait_for(admin.start(), timeout=10)
        cluster: dict[str, object] = await asyncio.wait_for(admin.describe_cluster(), timeout=10)
        return cluster
    finally:
        await admin.close()


@pytest.fixture(scope="session")
def kafka_bootstrap() -> str:
    """The bootstrap address of a Kafka broker that answers metadata requests."""
    bootstrap = os.environ.get("EVTIME_KAFKA_BOOTSTRAP") or (
        ServicesConfig.from_env().kafka_bootstrap
    )
    try:
        cluster = asyncio.run(_kafka_cluster(bootstrap))
    except Exception as exc:
        pytest.fail(
            f"Kafka is not reachable at {bootstrap} ({type(exc).__name__}: {exc}): "
            "run `evtime services up`",
            pytrace=False,
        )
    if not cluster.get("brokers"):
        pytest.fail(f"Kafka at {bootstrap} reports no broker: run `evtime services up`")
    return bootstrap


@pytest.fixture(scope="session")
def opensearch_url() -> str:
    """The base URL of an OpenSearch node whose cluster is at least yellow."""
    url = (
        os.environ.get("EVTIME_OPENSEARCH_URL") or ServicesConfig.from_env().opensearch_url
    ).rstrip("/")
    health_url = f"{url}/_cluster/health?wait_for_status=yellow&timeout=10s"
    try:
        with urllib.request.urlopen(health_url, timeout=15) as response:
            health = json.load(response)
    except Exception as exc:
        pytest.fail(
            f"OpenSearch is not reachable at {url} ({type(exc).__name__}: {exc}): "
            "run `evtime services up`",
            pytrace=False,
        )
    if health.get("status") not in ("yellow", "green"):
        pytest.fail(f"OpenSearch at {url} is {health.get('status')}: run `evtime services up`")
    return url


@pytest.fixture
def unique_name(request: pytest.FixtureRequest) -> str:
    """A topic / index name unique to this test run: lowercase letters, digits and '-'.

    Valid both as a Kafka topic and as an OpenSearch index (which must be lowercase).
    """
    base = re.sub(r"[^a-z0-9]+", "-", request.node.name.lower())[:40].strip("-")
    return f"t-{base}-{uuid.uuid4().hex[:8]}"
