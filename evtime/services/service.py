"""What ``up``, ``down`` and ``status`` need to know about one local service."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

from evtime.services.config import ServicesConfig

PROBE_TIMEOUT_S = 15.0


@dataclass(frozen=True, slots=True)
class Check:
    """One readiness step: ``run`` raises until the service passes it."""

    name: str
    run: Callable[[], Awaitable[None]]


class Service(Protocol):
    """A JVM service that evtime runs from Maven jars (Kafka, OpenSearch)."""

    @property
    def name(self) -> str: ...

    @property
    def config(self) -> ServicesConfig: ...

    @property
    def address(self) -> str: ...

    def ports(self) -> dict[str, int]: ...

    def resolve(self) -> None:
        """Fetch the jars (and build what is built once); skipped when already done."""

    def configure(self, java: str) -> list[str]:
        """Prepare a fresh data directory and return the command that starts the JVM."""

    def check_kept_data(self) -> None:
        """Raise ServiceError unless the data directory left by ``configure`` can be started
        on again as configured now (``restart``)."""

    def command(self, java: str) -> list[str]:
        """The command that starts the JVM on the data directory as it is."""

    def ready_checks(self) -> list[Check]: ...

    def health_checks(self) -> list[Check]: ...

    def details(self) -> list[str]:
        """More endpoints to show under the service's address (never a secret)."""


def markers(config: ServicesConfig, name: str) -> list[str]:
    """System properties that tell our JVMs apart from any other process."""
    return [f"-Devtime.service={name}", f"-Devtime.cache={config.cache_dir}"]


async def tcp_connect(port: int) -> None:
    _, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.close()
    await writer.wait_closed()
