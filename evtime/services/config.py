"""Where the local services live and listen: the one place their environment is read.

``ServicesConfig.from_env`` reads every ``EVTIME_*`` variable the services use; the rest
of ``evtime.services`` takes a ``ServicesConfig`` and never looks at ``os.environ``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from evtime.errors import ConfigError

# The variable that sets each port, by (service, role): named in "port in use" errors.
PORT_VARIABLES = {
    ("kafka", "broker"): "EVTIME_KAFKA_PORT",
    ("kafka", "controller"): "EVTIME_KAFKA_CONTROLLER_PORT",
    ("opensearch", "http"): "EVTIME_OPENSEARCH_PORT",
    ("opensearch", "transport"): "EVTIME_OPENSEARCH_TRANSPORT_PORT",
}


@dataclass(frozen=True, slots=True)
class ServicesConfig:
    """Where the services live and listen; each field is read from an env variable."""

    cache_dir: Path  # EVTIME_CACHE_DIR (default ~/.cache/evtime): jars, data, logs, pids
    kafka_port: int = 9092  # EVTIME_KAFKA_PORT
    kafka_controller_port: int = 9093  # EVTIME_KAFKA_CONTROLLER_PORT
    opensearch_port: int = 9200  # EVTIME_OPENSEARCH_PORT
    opensearch_transport_port: int = 9300  # EVTIME_OPENSEARCH_TRANSPORT_PORT
    kafka_heap: str = "512m"  # EVTIME_KAFKA_HEAP
    opensearch_heap: str = "768m"  # EVTIME_OPENSEARCH_HEAP
    startup_timeout_s: float = 120.0  # EVTIME_SERVICES_TIMEOUT, per service

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> ServicesConfig:
        env = os.environ if environ is None else environ
        cache = env.get("EVTIME_CACHE_DIR") or str(Path.home() / ".cache" / "evtime")
        return cls(
            cache_dir=Path(cache).expanduser().resolve(),
            kafka_port=_env_port(env, "EVTIME_KAFKA_PORT", 9092),
            kafka_controller_port=_env_port(env, "EVTIME_KAFKA_CONTROLLER_PORT", 9093),
            opensearch_port=_env_port(env, "EVTIME_OPENSEARCH_PORT", 9200),
            opensearch_transport_port=_env_port(env, "EVTIME_OPENSEARCH_TRANSPORT_PORT", 9300),
            kafka_heap=_env_heap(env, "EVTIME_KAFKA_HEAP", "512m"),
            opensearch_heap=_env_heap(env, "EVTIME_OPENSEARCH_HEAP", "768m"),
            startup_timeout_s=_env_seconds(env, "EVTIME_SERVICES_TIMEOUT", 120.0),
        )

    @property
    def kafka_bootstrap(self) -> str:
        return f"127.0.0.1:{self.kafka_port}"

    @property
    def opensearch_url(self) -> str:
        return f"http://127.0.0.1:{self.opensearch_port}"

    @property
    def run_dir(self) -> Path:
        return self.cache_dir / "run"

    @property
    def logs_dir(self) -> Path:
        return self.cache_dir / "logs"


def _env_port(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name)
    if not raw:
        return default
    if not raw.isdigit() or not 0 < int(raw) < 65536:
        raise ConfigError(f"{name}={raw!r} is not a TCP port; set it to a number in 1..65535.")
    return int(raw)


def _env_heap(env: Mapping[str, str], name: str, default: str) -> str:
    raw = env.get(name) or default
    if not re.fullmatch(r"\d+[kmgKMG]?", raw):
        raise ConfigError(f"{name}={raw!r} is not a JVM heap size; use e.g. 512m or 1g.")
    return raw


def _env_seconds(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name)
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if value <= 0:
        raise ConfigError(f"{name}={raw!r} is not a positive number of seconds.")
    return value
