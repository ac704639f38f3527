"""The local OpenSearch node: one embedded node with the HTTP transport, from Maven jars."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from evtime.errors import ServiceError
from evtime.services import build
from evtime.services.config import ServicesConfig
from evtime.services.service import PROBE_TIMEOUT_S, Check, markers, tcp_connect

# 2.19.7 exists for the server jar, but not for transport-netty4-client & co.
OPENSEARCH_VERSION = "2.19.6"
OPENSEARCH_LOG4J_VERSION = "2.25.4"  # the log4j-api that opensearch 2.19.6 declares


@dataclass(frozen=True, slots=True)
class OpenSearch:
    config: ServicesConfig
    name: str = "opensearch"

    @property
    def home(self) -> Path:
        return self.config.cache_dir / f"opensearch-{OPENSEARCH_VERSION}"

    @property
    def address(self) -> str:
        return self.config.opensearch_url

    def ports(self) -> dict[str, int]:
        return {
            "http": self.config.opensearch_port,
            "transport": self.config.opensearch_transport_port,
        }

    def resolve(self) -> None:
        build.resolve_jars(
            self.name,
            self.home,
            "opensearch-pom.xml",
            {"OPENSEARCH_VERSION": OPENSEARCH_VERSION, "LOG4J_VERSION": OPENSEARCH_LOG4J_VERSION},
        )
        build.compile_entry_point(self.name, self.home, OPENSEARCH_VERSION)

    @property
    def run(self) -> Path:
        return self.config.run_dir / self.name

    def configure(self, java: str) -> list[str]:
        run = build.fresh_dir(self.run)
        (run / "log4j2.properties").write_text(build.render("opensearch-log4j2.properties", {}))
        return self.command(java)

    def check_kept_data(self) -> None:
        # The ports are on the command line, not in the data: any configured ports will do.
        if not (self.run / "log4j2.properties").is_file():
            raise ServiceError(
                f"{self.name}: no node directory in {self.run} to restart on; "
                f"run `evtime services up {self.name}` (which starts an empty node)."
            )

    def command(self, java: str) -> list[str]:
        run = self.run
        log4j = run / "log4j2.properties"
        classpath = os.pathsep.join([str(self.home / "classes"), str(self.home / "libs" / "*")])
        heap = self.config.opensearch_heap
        # The flags OpenSearch's own launcher adds that matter for an embedded node.
        return [
            java, f"-Xms{heap}", f"-Xmx{heap}",
            "-XX:+UseG1GC", "-XX:G1ReservePercent=25", "-XX:InitiatingHeapOccupancyPercent=30",
            "-Djava.locale.providers=SPI,COMPAT", "-Djava.awt.headless=true",
            "-Dfile.encoding=UTF-8", "-Djna.nosys=true",
            "-Dio.netty.noUnsafe=true", "-Dio.netty.noKeySetOptimization=true",
            "-Dio.netty.recycler.maxCapacityPerThread=0", "-Dio.netty.allocator.numDirectArenas=0",
            "-Dlog4j.shutdownHookEnabled=false", "-Dlog4j2.disable.jmx=true",
            f"-Dlog4j2.configurationFile={log4j}",
            *markers(self.config, self.name),
            "-cp", classpath, "EmbeddedOpenSearch", str(run / "home"),
            str(self.config.opensearch_port), str(self.config.opensearch_transport_port),
        ]  # fmt: skip

    def ready_checks(self) -> list[Check]:
        url, port = self.address, self.config.opensearch_port
        return [
            Check("the HTTP port", lambda: tcp_connect(port)),
            Check("cluster health yellow", lambda: _opensearch_health(url)),
        ]

    def health_checks(self) -> list[Check]:
        return self.ready_checks()

    def details(self) -> list[str]:
        return []


async def _opensearch_health(url: str) -> None:
    timeout = aiohttp.ClientTimeout(total=PROBE_TIMEOUT_S)
    health = f"{url}/_cluster/health?wait_for_status=yellow&timeout=10s"
    async with aiohttp.ClientSession(timeout=timeout) as session, session.get(health) as resp:
        body = await resp.json()
        if resp.status != 200 or body.get("status") not in ("yellow", "green"):
            raise ServiceError(f"cluster health is {body.get('status')!r} (HTTP {resp.status})")
