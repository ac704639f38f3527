"""A rebalance callback that fails (e.g. a changelog restore while the broker is away)
must stop the worker: aiokafka only logs such an exception and keeps the assignment,
which would leave partitions assigned to no task, their records silently dropped."""

from __future__ import annotations

import pytest

from evtime.connectors.kafka import KafkaSource
from evtime.errors import EvtimeError
from evtime.io import TopicPartition
from tests.integration.kafka_helpers import create_topics

pytestmark = pytest.mark.kafka


async def test_a_failed_assignment_fails_the_next_poll_instead_of_stalling(
    kafka_bootstrap: str, unique_name: str
) -> None:
    await create_topics(kafka_bootstrap, {unique_name: 2})
    source = KafkaSource(unique_name, kafka_bootstrap).group_source(unique_name, [unique_name])

    async def on_assigned(partitions: list[TopicPartition]) -> dict[TopicPartition, int]:
        raise RuntimeError("restoring the state failed")

    async def on_revoked(partitions: list[TopicPartition]) -> None:
        return None

    await source.start(on_assigned, on_revoked)
    try:
        expected = r"assignment of .*\[0\].*restoring the state failed"
        with pytest.raises(EvtimeError, match=expected) as info:
            for _ in range(300):  # the group forms within a few polls
                await source.poll(100, 10)
        assert isinstance(info.value.__cause__, RuntimeError)
    finally:
        await source.stop()
