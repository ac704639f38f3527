"""The local broker's SASL_SSL listener, reached as evtime's clients reach a secured cluster.

`evtime services up` starts it next to PLAINTEXT (docs/services.md): TLS with a
certificate signed by a test CA made at setup, SCRAM-SHA-512 and SCRAM-SHA-256 users
created when the storage was formatted. Every client here is made from a
KafkaConnection's `client_kwargs()`, like the worker's. These tests only use the
running services; they never restart them.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import subprocess
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaConnectionError

from evtime.connectors.kafka_connection import KafkaConnection
from evtime.services import ServicesConfig
from evtime.services.config import SecuredKafka
from evtime.services.tls import find_keytool

pytestmark = pytest.mark.kafka

READ_TIMEOUT_S = 30.0
FAIL_FAST_S = 5.0


@pytest.fixture(scope="module")
def secured() -> SecuredKafka:
    """The listener's address, user and files; fails if `services up` did not make them."""
    listener = ServicesConfig.from_env().kafka_sasl()
    if not listener.password_file.is_file() or not listener.ca_file.is_file():
        pytest.fail(
            f"no SASL_SSL listener files in {listener.ca_file.parent}: the running broker was "
            "set up by an older evtime; run `evtime services down kafka` then "
            "`evtime services up kafka`",
            pytrace=False,
        )
    return listener


def connection(
    secured: SecuredKafka,
    mechanism: str = "SCRAM-SHA-512",
    password: str | None = None,
    ca_file: Path | None = None,
) -> KafkaConnection:
    return KafkaConnection(
        secured.bootstrap,
        "SASL_SSL",
        mechanism,
        secured.username,
        secured.password() if password is None else password,
        ca_file=str(ca_file or secured.ca_file),
    )


@pytest.fixture
async def secured_topic(secured: SecuredKafka, unique_name: str) -> AsyncIterator[str]:
    """A two-partition topic, created and deleted through the secured listener."""
    admin = AIOKafkaAdminClient(**connection(secured).client_kwargs())
    await admin.start()
    try:
        response = await admin.create_topics([NewTopic(unique_name, 2, 1)])
        assert [code for _, code, _ in response.topic_errors] == [0]
        deadline = time.monotonic() + READ_TIMEOUT_S
        while unique_name not in await admin.list_topics():
            assert time.monotonic() < deadline, "the new topic did not show up in metadata"
            await asyncio.sleep(0.1)
        yield unique_name
        await admin.delete_topics([unique_name])
    finally:
        await admin.close()


async def round_trip(kwargs: dict[str, Any], topic: str, count: int = 10) -> list[str]:
    """Produce ``count`` records with an idempotent producer, read them back in a group."""
    producer = AIOKafkaProducer(**kwargs, enable_idempotence=True)
    await producer.start()
    try:
        for i in range(count):
            await producer.send_and_wait(topic, f"record-{i}".encode(), partition=i % 2)
    finally:
        await producer.stop()
    consumer = AIOKafkaConsumer(
        topic,
        **kwargs,
        group_id=f"{topic}-group",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    read: list[str] = []
    try:
        deadline = time.monotonic() + READ_TIMEOUT_S
        while len(read) < count:
            assert time.monotonic() < deadline, f"read {len(read)} of {count} records in time"
            for batch in (await consumer.getmany(timeout_ms=500)).values():
                read.extend(record.value.decode() for record in batch if record.value)
        await consumer.commit()
    finally:
        await consumer.stop()
    return sorted(read)


@pytest.mark.parametrize("mechanism", ["SCRAM-SHA-512", "SCRAM-SHA-256"])
async def test_records_go_through_the_sasl_ssl_listener(
    secured: SecuredKafka, secured_topic: str, mechanism: str
) -> None:
    kwargs = connection(secured, mechanism).client_kwargs()
    assert kwargs["security_protocol"] == "SASL_SSL"
    assert await round_trip(kwargs, secured_topic) == sorted(f"record-{i}" for i in range(10))


async def test_plaintext_listener_still_serves_the_same_topics(
    secured: SecuredKafka, secured_topic: str, kafka_bootstrap: str
) -> None:
    plain = KafkaConnection(kafka_bootstrap).client_kwargs()
    assert await round_trip(plain, secured_topic, count=4) == [f"record-{i}" for i in range(4)]


async def fails_fast(kwargs: dict[str, Any], caplog: pytest.LogCaptureFixture) -> str:
    """Start a producer that must be refused: the time it took is bounded, and the
    returned text is what aiokafka logged about the refused connection."""
    producer = AIOKafkaProducer(**kwargs, request_timeout_ms=10000)
    started = time.monotonic()
    with caplog.at_level(logging.ERROR, logger="aiokafka"):
        try:
            with pytest.raises(KafkaConnectionError):
                await asyncio.wait_for(producer.start(), timeout=FAIL_FAST_S)
        finally:
            await producer.stop()
    assert time.monotonic() - started < FAIL_FAST_S
    return caplog.text


async def test_a_wrong_password_is_refused_at_once_as_an_authentication_failure(
    secured: SecuredKafka, caplog: pytest.LogCaptureFixture
) -> None:
    kwargs = connection(secured, password="not-" + secured.password()).client_kwargs()
    logged = await fails_fast(kwargs, caplog)
    assert "SaslAuthenticationFailed" in logged
    assert "invalid credentials" in logged


async def test_a_client_trusting_another_ca_rejects_the_brokers_certificate(
    secured: SecuredKafka, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    other_ca = make_other_ca(tmp_path)
    kwargs = connection(secured, ca_file=other_ca).client_kwargs()
    logged = await fails_fast(kwargs, caplog)
    assert "CERTIFICATE_VERIFY_FAILED" in logged


def make_other_ca(directory: Path) -> Path:
    """A CA certificate (PEM) that did not sign the broker's certificate."""
    java = shutil.which("java")
    assert java is not None, "the services run on Java; it must be on PATH"
    keytool, store, pem = find_keytool(java), directory / "other.p12", directory / "other.pem"
    password = uuid.uuid4().hex
    common = ["-keystore", str(store), "-storetype", "PKCS12", "-storepass", password]
    subprocess.run(
        [keytool, "-genkeypair", "-alias", "ca", "-keyalg", "RSA", "-keysize", "2048",
         "-dname", "CN=another CA", "-ext", "bc:c", "-validity", "2", *common,
         "-keypass", password],
        check=True, capture_output=True,
    )  # fmt: skip
    subprocess.run(
        [keytool, "-exportcert", "-alias", "ca", *common, "-rfc", "-file", str(pem)],
        check=True,
        capture_output=True,
    )
    return pem


def test_no_log_of_the_services_holds_a_password(secured: SecuredKafka) -> None:
    config = ServicesConfig.from_env()
    keystore_password = (secured.ca_file.parent / "keystore.password").read_text().strip()
    logs = sorted(config.logs_dir.glob("kafka*.log"))
    assert config.logs_dir / "kafka-format.log" in logs
    for log in logs:
        text = log.read_text(errors="replace")
        assert secured.password() not in text, log
        assert keystore_password not in text, log
    for secret in (secured.password_file, secured.ca_file.parent / "keystore.password"):
        assert secret.stat().st_mode & 0o077 == 0, f"{secret} is readable by others"
