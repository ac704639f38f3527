"""KafkaTransaction's producer survives a connection closed during a coordinator lookup.

aiokafka 0.14.0's transactional sender dies on a KafkaConnectionError in FindCoordinator
(a broker shutting down closes connections mid-request); connectors/kafka.py maps it to
NodeNotReadyError on the transaction's own client, which aiokafka retries. This drives
aiokafka's real Sender._find_coordinator with a lookup that fails once that way. No
broker is involved: the client is never started.
"""

from __future__ import annotations

from typing import Any

import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.client import AIOKafkaClient, CoordinationType
from aiokafka.errors import KafkaConnectionError, KafkaError

from evtime.connectors.kafka_transaction import KafkaTransaction


@pytest.fixture
def flaky_lookups(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every client's first coordinator lookup fails as a closed connection, then node 7."""
    calls: list[str] = []

    async def coordinator_lookup(self: AIOKafkaClient, kind: int, key: str) -> int:
        calls.append(key)
        if len(calls) == 1:
            raise KafkaConnectionError("Connection at 127.0.0.1:9092 closed")
        return 7

    async def force_metadata_update(self: AIOKafkaClient) -> bool:
        return True

    async def ready(self: AIOKafkaClient, node_id: int, **kwargs: Any) -> bool:
        return True

    monkeypatch.setattr(AIOKafkaClient, "coordinator_lookup", coordinator_lookup)
    monkeypatch.setattr(AIOKafkaClient, "force_metadata_update", force_metadata_update)
    monkeypatch.setattr(AIOKafkaClient, "ready", ready)
    return calls


async def test_a_connection_closed_during_a_coordinator_lookup_is_retried(
    flaky_lookups: list[str],
) -> None:
    txn = KafkaTransaction("127.0.0.1:9", "evtime-test-txn")
    sender: Any = txn.producer.producer._sender
    node = await sender._find_coordinator(CoordinationType.GROUP, "evtime-test-group")
    assert node == 7
    assert flaky_lookups == ["evtime-test-group", "evtime-test-group"]
    await txn.producer.producer.stop()


async def test_aiokafka_itself_still_fails_there(flaky_lookups: list[str]) -> None:
    """If this fails, aiokafka retries closed connections itself: drop the workaround
    (_retry_closed_connections_in_coordinator_lookups in connectors/kafka_transaction.py)."""
    producer = AIOKafkaProducer(bootstrap_servers="127.0.0.1:9", transactional_id="evtime-t")
    sender: Any = producer._sender
    with pytest.raises(KafkaError, match="KafkaConnectionError"):
        await sender._find_coordinator(CoordinationType.GROUP, "evtime-test-group")
    await producer.stop()
