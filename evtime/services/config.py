"""Where the local services live and listen.

``ServicesConfig.from_env`` takes the services' options from evtime.settings, which
declares them with the others and reads the environment; the rest of ``evtime.services``
takes a ``ServicesConfig``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from evtime.errors import ConfigError
from evtime.settings import Settings

# The variable that sets each port, by (service, role): named in "port in use" errors.
PORT_VARIABLES = {
    ("kafka", "broker"): "EVTIME_KAFKA_PORT",
    ("kafka", "controller"): "EVTIME_KAFKA_CONTROLLER_PORT",
    ("kafka", "sasl_ssl"): "EVTIME_KAFKA_SASL_PORT",
    ("opensearch", "http"): "EVTIME_OPENSEARCH_PORT",
    ("opensearch", "transport"): "EVTIME_OPENSEARCH_TRANSPORT_PORT",
}


SCRAM_USER = "evtime"
SCRAM_MECHANISMS = ("SCRAM-SHA-512", "SCRAM-SHA-256")


@dataclass(frozen=True, slots=True)
class SecuredKafka:
    """The local broker's SASL_SSL listener: where it is and who may log in.

    The password and the CA are made at ``evtime services up`` (kept by ``restart``);
    ``password()`` reads the password from its file. Any of ``mechanisms`` works.
    """

    bootstrap: str
    username: str
    password_file: Path
    ca_file: Path
    mechanisms: tuple[str, ...] = SCRAM_MECHANISMS

    def password(self) -> str:
        try:
            return self.password_file.read_text().strip()
        except OSError as exc:
            raise ConfigError(
                f"no password for the SASL_SSL listener at {self.password_file} "
                f"({exc.strerror}): run `evtime services up kafka`."
            ) from None

    def describe(self) -> str:
        """One line for people: address, user, mechanisms, files (never the password)."""
        return (
            f"SASL_SSL {self.bootstrap}, user {self.username} "
            f"({' or '.join(self.mechanisms)}), password in {self.password_file}, "
            f"CA {self.ca_file}"
        )


@dataclass(frozen=True, slots=True)
class ServicesConfig:
    """Where the services live and listen; each field is read from an env variable."""

    cache_dir: Path  # EVTIME_CACHE_DIR (default ~/.cache/evtime): jars, data, logs, pids
    kafka_port: int = 9092  # EVTIME_KAFKA_PORT
    kafka_controller_port: int = 9093  # EVTIME_KAFKA_CONTROLLER_PORT
    kafka_sasl_port: int = 9094  # EVTIME_KAFKA_SASL_PORT: the SASL_SSL (SCRAM) listener
    opensearch_port: int = 9200  # EVTIME_OPENSEARCH_PORT
    opensearch_transport_port: int = 9300  # EVTIME_OPENSEARCH_TRANSPORT_PORT
    kafka_heap: str = "512m"  # EVTIME_KAFKA_HEAP
    opensearch_heap: str = "768m"  # EVTIME_OPENSEARCH_HEAP
    startup_timeout_s: float = 120.0  # EVTIME_SERVICES_TIMEOUT, per service

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> ServicesConfig:
        """The services' options as evtime.settings resolves them from the environment
        (the one place it is read)."""
        settings = Settings.load(environ=environ)
        return cls(
            cache_dir=settings.cache_dir,
            kafka_port=settings.kafka_port,
            kafka_controller_port=settings.kafka_controller_port,
            kafka_sasl_port=settings.kafka_sasl_port,
            opensearch_port=settings.opensearch_port,
            opensearch_transport_port=settings.opensearch_transport_port,
            kafka_heap=settings.kafka_heap,
            opensearch_heap=settings.opensearch_heap,
            startup_timeout_s=settings.services_timeout,
        )

    @property
    def kafka_bootstrap(self) -> str:
        return f"127.0.0.1:{self.kafka_port}"

    @property
    def kafka_sasl_bootstrap(self) -> str:
        """The broker's SASL_SSL listener (SCRAM users, the test CA's certificate)."""
        return f"127.0.0.1:{self.kafka_sasl_port}"

    def kafka_sasl(self) -> SecuredKafka:
        """How to reach the SASL_SSL listener as the user created at ``up``."""
        tls = self.run_dir / "kafka" / "tls"
        return SecuredKafka(
            bootstrap=self.kafka_sasl_bootstrap,
            username=SCRAM_USER,
            password_file=tls / "scram.password",
            ca_file=tls / "ca.pem",
        )

    @property
    def opensearch_url(self) -> str:
        return f"http://127.0.0.1:{self.opensearch_port}"

    @property
    def run_dir(self) -> Path:
        return self.cache_dir / "run"

    @property
    def logs_dir(self) -> Path:
        return self.cache_dir / "logs"

