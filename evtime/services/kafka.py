"""The local Apache Kafka broker: KRaft, one combined broker and controller, from Maven jars."""

from __future__ import annotations

import base64
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.helpers import create_ssl_context

from evtime.errors import ServiceError
from evtime.services import build, tls
from evtime.services.config import SecuredKafka, ServicesConfig
from evtime.services.service import Check, markers, tcp_connect

KAFKA_VERSION = "4.1.2"
KAFKA_LOG4J_VERSION = "2.25.3"  # the log4j-core that kafka-server 4.1.2 itself depends on
READY_TOPIC = "evtime-services-ready"


@dataclass(frozen=True, slots=True)
class Kafka:
    config: ServicesConfig
    name: str = "kafka"

    @property
    def home(self) -> Path:
        return self.config.cache_dir / f"kafka-{KAFKA_VERSION}"

    @property
    def address(self) -> str:
        return self.config.kafka_bootstrap

    def ports(self) -> dict[str, int]:
        return {
            "broker": self.config.kafka_port,
            "controller": self.config.kafka_controller_port,
            "sasl_ssl": self.config.kafka_sasl_port,
        }

    def resolve(self) -> None:
        build.resolve_jars(
            self.name,
            self.home,
            "kafka-pom.xml",
            {"KAFKA_VERSION": KAFKA_VERSION, "LOG4J_VERSION": KAFKA_LOG4J_VERSION},
        )

    @property
    def run(self) -> Path:
        return self.config.run_dir / self.name

    @property
    def tls_files(self) -> tls.TlsFiles:
        return tls.TlsFiles(self.config.kafka_sasl())

    def server_properties(self) -> str:
        """server.properties as the current settings and the kept keystore make it."""
        files = self.tls_files
        return build.render(
            "kafka-server.properties",
            {
                "KAFKA_PORT": str(self.config.kafka_port),
                "CONTROLLER_PORT": str(self.config.kafka_controller_port),
                "SASL_PORT": str(self.config.kafka_sasl_port),
                "DATA_DIR": str(self.run / "data"),
                "KEYSTORE": str(files.keystore),
                "KEYSTORE_PASSWORD": files.keystore_password(),
            },
        )

    def configure(self, java: str) -> list[str]:
        run = build.fresh_dir(self.run)
        files = self.tls_files
        keytool = tls.find_keytool(java)
        tls.create(keytool, files, self.config.logs_dir / "kafka-keytool.log")
        properties = run / "server.properties"
        tls.write_private(properties, self.server_properties())  # it holds the keystore password
        log4j = run / "log4j2.properties"
        log4j.write_text(build.render("kafka-log4j2.properties", {}))
        classpath = str(self.home / "libs" / "*")
        # Dynamic KRaft quorum: one voter, this node, taken from the config (--standalone).
        build.run_tool(
            self.name,
            "formatting Kafka's storage",
            [
                java,
                "-Xmx256m",
                f"-Dlog4j2.configurationFile={log4j}",
                "-cp",
                classpath,
                "kafka.tools.StorageTool",
                "format",
                "--standalone",
                "--cluster-id",
                _random_cluster_id(),
                "--config",
                str(properties),
                *tls.scram_arguments(files.scram_password()),
            ],
            self.config.logs_dir / "kafka-format.log",
        )
        return self.command(java)

    def check_kept_data(self) -> None:
        properties = self.run / "server.properties"
        if not (self.run / "data" / "meta.properties").is_file() or not properties.is_file():
            raise ServiceError(
                f"{self.name}: no formatted storage in {self.run} to restart on; "
                f"run `evtime services up {self.name}` (which starts an empty broker)."
            )
        # The KRaft quorum recorded the controller's address when the storage was formatted,
        # and the SCRAM users and certificates were made then: an older evtime's storage
        # has no SASL_SSL listener and cannot get one by a restart.
        if not self.tls_files.complete() or properties.read_text() != self.server_properties():
            raise ServiceError(
                f"{self.name}: the storage in {self.run} was set up for other ports than "
                f"configured now, or by an older evtime (without the SASL_SSL listener); "
                f"restart with the same EVTIME_KAFKA_* settings, or start an empty broker "
                f"with the current setup: `evtime services down {self.name}` then "
                f"`evtime services up {self.name}`."
            )

    def command(self, java: str) -> list[str]:
        properties, log4j = self.run / "server.properties", self.run / "log4j2.properties"
        classpath = str(self.home / "libs" / "*")
        heap = self.config.kafka_heap
        return [
            java, f"-Xms{heap}", f"-Xmx{heap}",
            "-XX:+UseG1GC", "-XX:MaxGCPauseMillis=20", "-XX:InitiatingHeapOccupancyPercent=35",
            "-XX:+ExplicitGCInvokesConcurrent", "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={log4j}",
            *markers(self.config, self.name),
            "-cp", classpath, "kafka.Kafka", str(properties),
        ]  # fmt: skip

    def ready_checks(self) -> list[Check]:
        return [*self.health_checks(), self._transaction_check()]

    def health_checks(self) -> list[Check]:  # no writes from `status`
        bootstrap, port = self.address, self.config.kafka_port
        secured = self.config.kafka_sasl()
        return [
            Check("the broker port", lambda: tcp_connect(port)),
            Check("metadata", lambda: _kafka_metadata(bootstrap=bootstrap)),
            Check(
                "metadata on the SASL_SSL listener",
                lambda: _kafka_metadata(**_secured_kwargs(secured)),
            ),
        ]

    def _transaction_check(self) -> Check:
        bootstrap = self.address
        return Check("a transactional round trip", lambda: _kafka_transaction(bootstrap))

    def details(self) -> list[str]:
        return [self.config.kafka_sasl().describe()]


def _secured_kwargs(secured: SecuredKafka) -> dict[str, Any]:
    """aiokafka options for the SASL_SSL listener as its SCRAM user (SHA-512)."""
    return {
        "bootstrap": secured.bootstrap,
        "security_protocol": "SASL_SSL",
        "ssl_context": create_ssl_context(cafile=str(secured.ca_file)),
        "sasl_mechanism": secured.mechanisms[0],
        "sasl_plain_username": secured.username,
        "sasl_plain_password": secured.password(),
    }


async def _kafka_metadata(bootstrap: str, **security: Any) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=5000, **security)
    try:
        await admin.start()
        cluster = await admin.describe_cluster()
        if not cluster.get("brokers"):
            raise ServiceError("no broker in the metadata yet")
    finally:
        await admin.close()


async def _kafka_transaction(bootstrap: str) -> None:
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        transactional_id="evtime-services-ready",
        request_timeout_ms=10000,
    )
    try:
        await producer.start()
        async with producer.transaction():
            await producer.send_and_wait(READY_TOPIC, b"ready")
    finally:
        await producer.stop()


def _random_cluster_id() -> str:
    """What ``kafka-storage random-uuid`` prints: 16 random bytes, base64url, unpadded."""
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cluster_id.startswith("-"):  # Kafka redraws these, as they look like flags
            return cluster_id
