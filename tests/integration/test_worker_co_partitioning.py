"""Topics joined in one task must be co-partitioned: the Kafka worker checks the partition
counts on the real broker before it joins the group, and names the topics that differ."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from evtime import App
from evtime.connectors.kafka import KafkaSource
from evtime.connectors.local import MemorySink
from evtime.errors import ConfigError
from evtime.runtime.worker import Worker
from tests.integration.kafka_helpers import create_topics

pytestmark = pytest.mark.kafka


def _join_app(name: str, bootstrap: str, left: str, right: str, state_dir: Path) -> App:
    app = App(name, state_dir=state_dir)
    orders = app.source(left, KafkaSource(left, bootstrap), key="user", timestamp="ts")
    payments = app.source(right, KafkaSource(right, bootstrap), key="user", timestamp="ts")

    @app.join(orders, payments, within="1m", sink=MemorySink())
    def matched(result: Any) -> dict[str, object]:
        return {"left": result.left, "right": result.right}

    return app


async def test_joined_topics_with_different_partition_counts_fail_the_worker_at_start(
    kafka_bootstrap: str, unique_name: str, tmp_path: Path
) -> None:
    left, right = f"{unique_name}-orders", f"{unique_name}-payments"
    await create_topics(kafka_bootstrap, {left: 3, right: 2})
    worker: Worker = _join_app(unique_name, kafka_bootstrap, left, right, tmp_path).worker(
        handle_signals=False
    )
    with pytest.raises(ConfigError) as info:
        await asyncio.wait_for(worker.run(), timeout=60)
    message = str(info.value)
    assert f"{left!r} has 3" in message and f"{right!r} has 2" in message
    assert "equal partition counts" in message and "repartition" in message
    assert worker.assignments == 0  # it never joined the group


async def test_joined_topics_with_equal_partition_counts_pass_the_check(
    kafka_bootstrap: str, unique_name: str, tmp_path: Path
) -> None:
    left, right = f"{unique_name}-orders", f"{unique_name}-payments"
    await create_topics(kafka_bootstrap, {left: 2, right: 2})
    worker: Worker = _join_app(unique_name, kafka_bootstrap, left, right, tmp_path).worker(
        handle_signals=False
    )
    await worker._check_co_partitioned()
    assert await KafkaSource(left, kafka_bootstrap).partition_counts([left, right]) == {
        left: 2,
        right: 2,
    }


async def test_a_missing_joined_topic_is_named(
    kafka_bootstrap: str, unique_name: str, tmp_path: Path
) -> None:
    left, right = f"{unique_name}-orders", f"{unique_name}-payments"
    await create_topics(kafka_bootstrap, {left: 2})
    worker: Worker = _join_app(unique_name, kafka_bootstrap, left, right, tmp_path).worker(
        handle_signals=False
    )
    with pytest.raises(ConfigError, match=f"{right!r} does not exist"):
        await asyncio.wait_for(worker.run(), timeout=60)
