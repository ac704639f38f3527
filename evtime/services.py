"""Local services: a real Apache Kafka broker and OpenSearch node, run from Maven jars.

``evtime services up`` brings up each requested service as a detached JVM:

1. Resolve its jars once with Maven (``copy-dependencies`` on a small pom from
   ``services_data``) into the cache directory; a marker keyed by the versions and
   the pom skips this afterwards. OpenSearch's entry point is compiled once too.
2. If a live process of ours (pid file, and a command line carrying our markers)
   already answers, do nothing.
3. Check that the ports are free, wipe the data directory (every ``up`` starts from
   an empty broker and node), write the config, format Kafka's storage.
4. Start the JVM in a new session, output to ``<cache>/logs/<name>.log``, pid to
   ``<cache>/run/<name>.pid``.
5. Wait until it really serves: Kafka answers metadata and a transactional round
   trip; OpenSearch reports cluster health yellow or green. If the process dies or
   the deadline passes, stop it and fail with the tail of its log.

Both services go through these steps concurrently; only the Maven runs are serialised,
because Maven's local repository is not safe for concurrent writers.
``down`` stops exactly the pids in the pid files: SIGTERM, then SIGKILL after a timeout.
``restart`` stops a running service the same way (a stopped one is just started) and
starts it again on the data directory it had, keeping its topics, offsets and Kafka's
cluster id (steps 4 and 5, the log appended to); the fault tests restart the broker.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import logging
import os
import re
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol

import aiohttp
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient

from evtime import services_build as build
from evtime import services_process as process
from evtime.errors import ConfigError, EvtimeError, ServiceError

KAFKA_VERSION = "4.1.2"
KAFKA_LOG4J_VERSION = "2.25.3"  # the log4j-core that kafka-server 4.1.2 itself depends on
# 2.19.7 exists for the server jar, but not for transport-netty4-client & co.
OPENSEARCH_VERSION = "2.19.6"
OPENSEARCH_LOG4J_VERSION = "2.25.4"  # the log4j-api that opensearch 2.19.6 declares

SERVICE_NAMES = ("kafka", "opensearch")
READY_TOPIC = "evtime-services-ready"

_STOP_TIMEOUT_S = 30.0
_PROBE_TIMEOUT_S = 15.0
_REPORT_EVERY_S = 10.0


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


# --- The two services ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Check:
    """One readiness step: ``run`` raises until the service passes it."""

    name: str
    run: Callable[[], Awaitable[None]]


class _Service(Protocol):
    """What ``up``, ``down`` and ``status`` need to know about one service."""

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

    def ready_checks(self) -> list[_Check]: ...

    def health_checks(self) -> list[_Check]: ...


@dataclass(frozen=True, slots=True)
class _Kafka:
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

    def _properties(self) -> str:
        return build.render(
            "kafka-server.properties",
            {
                "KAFKA_PORT": str(self.config.kafka_port),
                "CONTROLLER_PORT": str(self.config.kafka_controller_port),
                "DATA_DIR": str(self.run / "data"),
            },
        )

    def configure(self, java: str) -> list[str]:
        run = build.fresh_dir(self.run)
        properties = run / "server.properties"
        properties.write_text(self._properties())
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
        # The KRaft quorum recorded the controller's address when the storage was formatted.
        if properties.read_text() != self._properties():
            raise ServiceError(
                f"{self.name}: the storage in {self.run} was set up for other ports than "
                f"configured now; restart with the same EVTIME_KAFKA_* settings, or run "
                f"`evtime services down {self.name}` and `up` (which starts an empty broker)."
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
            *_markers(self.config, self.name),
            "-cp", classpath, "kafka.Kafka", str(properties),
        ]  # fmt: skip

    def ready_checks(self) -> list[_Check]:
        bootstrap, port = self.address, self.config.kafka_port
        return [
            _Check("the broker port", lambda: _tcp_connect(port)),
            _Check("metadata", lambda: _kafka_metadata(bootstrap)),
            _Check("a transactional round trip", lambda: _kafka_transaction(bootstrap)),
        ]

    def health_checks(self) -> list[_Check]:
        return self.ready_checks()[:2]  # no writes from `status`


@dataclass(frozen=True, slots=True)
class _OpenSearch:
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
            *_markers(self.config, self.name),
            "-cp", classpath, "EmbeddedOpenSearch", str(run / "home"),
            str(self.config.opensearch_port), str(self.config.opensearch_transport_port),
        ]  # fmt: skip

    def ready_checks(self) -> list[_Check]:
        url, port = self.address, self.config.opensearch_port
        return [
            _Check("the HTTP port", lambda: _tcp_connect(port)),
            _Check("cluster health yellow", lambda: _opensearch_health(url)),
        ]

    def health_checks(self) -> list[_Check]:
        return self.ready_checks()


def _services(names: Sequence[str], config: ServicesConfig) -> list[_Service]:
    unknown = [name for name in names if name not in SERVICE_NAMES]
    if unknown:
        raise ConfigError(
            f"unknown service {', '.join(unknown)}; choose from {', '.join(SERVICE_NAMES)}."
        )
    known: dict[str, _Service] = {"kafka": _Kafka(config), "opensearch": _OpenSearch(config)}
    return [known[name] for name in dict.fromkeys(names)]


# --- Probes ----------------------------------------------------------------------------


async def _tcp_connect(port: int) -> None:
    _, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.close()
    await writer.wait_closed()


async def _kafka_metadata(bootstrap: str) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=5000)
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


async def _opensearch_health(url: str) -> None:
    timeout = aiohttp.ClientTimeout(total=_PROBE_TIMEOUT_S)
    health = f"{url}/_cluster/health?wait_for_status=yellow&timeout=10s"
    async with aiohttp.ClientSession(timeout=timeout) as session, session.get(health) as resp:
        body = await resp.json()
        if resp.status != 200 or body.get("status") not in ("yellow", "green"):
            raise ServiceError(f"cluster health is {body.get('status')!r} (HTTP {resp.status})")


def _random_cluster_id() -> str:
    """What ``kafka-storage random-uuid`` prints: 16 random bytes, base64url, unpadded."""
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cluster_id.startswith("-"):  # Kafka redraws these, as they look like flags
            return cluster_id


# --- Processes -------------------------------------------------------------------------

# Popen objects of the JVMs started by this process, kept so that they are not
# garbage-collected (and reported as "still running") while this process lives.
_STARTED: list[subprocess.Popen[bytes]] = []


def _markers(config: ServicesConfig, name: str) -> list[str]:
    """System properties that tell our JVMs apart from any other process."""
    return [f"-Devtime.service={name}", f"-Devtime.cache={config.cache_dir}"]


def _pid_file(service: _Service) -> Path:
    return service.config.run_dir / f"{service.name}.pid"


def _log_file(service: _Service) -> Path:
    return service.config.logs_dir / f"{service.name}.log"


def _our_pid(service: _Service) -> int | None:
    """The pid in the service's pid file, if that process is alive and is ours."""
    try:
        pid = int(_pid_file(service).read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    if not process.is_alive(pid):
        return None
    cmdline = process.command_line(pid)
    if not all(marker in cmdline for marker in _markers(service.config, service.name)):
        return None
    return pid


def _check_ports_free(service: _Service, grace_s: float = 10.0) -> None:
    """Fail unless the service's ports are free, allowing ``grace_s`` for a process that
    has just stopped to release them."""
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline and any(
        process.port_taken(port) for port in service.ports().values()
    ):
        time.sleep(0.2)
    for role, port in service.ports().items():
        if process.port_taken(port):
            env = _PORT_ENV[(service.name, role)]
            raise ServiceError(
                f"{service.name}: port {port} ({role}) on 127.0.0.1 is already in use by a "
                f"process that evtime did not start (see `ss -ltnp 'sport = :{port}'`). "
                f"Stop it, or set {env} to a free port."
            )


_PORT_ENV = {
    ("kafka", "broker"): "EVTIME_KAFKA_PORT",
    ("kafka", "controller"): "EVTIME_KAFKA_CONTROLLER_PORT",
    ("opensearch", "http"): "EVTIME_OPENSEARCH_PORT",
    ("opensearch", "transport"): "EVTIME_OPENSEARCH_TRANSPORT_PORT",
}


# --- up / down / status ----------------------------------------------------------------


def up(names: Sequence[str] = SERVICE_NAMES) -> None:
    """Start the named services (if not running) and return once each really serves."""
    services = _services(names, ServicesConfig.from_env())
    java = build.require_java()
    with _quiet("aiokafka"):
        asyncio.run(_each(services, lambda service, maven: _up_one(service, java, maven)))


def restart(names: Sequence[str] = SERVICE_NAMES) -> None:
    """Stop the named services (those running) and start them again on their data.

    Unlike ``up`` of a stopped service, nothing is wiped: Kafka keeps its topics,
    committed offsets and cluster id. Returns once each really serves again.
    """
    services = _services(names, ServicesConfig.from_env())
    java = build.require_java()
    with _quiet("aiokafka"):
        asyncio.run(_each(services, lambda service, maven: _restart_one(service, java, maven)))


async def _each(
    services: list[_Service], one: Callable[[_Service, asyncio.Lock], Awaitable[None]]
) -> None:
    """Run ``one`` for every service concurrently; the lock serialises the Maven runs."""
    maven = asyncio.Lock()
    results = await asyncio.gather(
        *(one(service, maven) for service in services), return_exceptions=True
    )
    failures: list[str] = []
    for result in results:
        if isinstance(result, EvtimeError):
            failures.append(str(result))
        elif isinstance(result, BaseException):
            raise result
    if failures:
        raise ServiceError("\n\n".join(failures))


async def _up_one(service: _Service, java: str, maven: asyncio.Lock) -> None:
    started = time.monotonic()
    timeout = service.config.startup_timeout_s
    pid = _our_pid(service)
    if pid is not None:
        running_at = _pid_file(service).read_text().split()[1:]
        if running_at != [service.address]:
            raise ServiceError(
                f"{service.name}: already running (pid {pid}) at {' '.join(running_at)}, "
                f"not at {service.address} as configured now; "
                f"run `evtime services down {service.name}` first."
            )
        if await _passes(service.health_checks()):
            print(f"{service.name}: already running at {service.address} (pid {pid})")
            return
        print(f"{service.name}: pid {pid} is running but not ready yet; waiting ...", flush=True)
        await _wait_ready(service, pid, lambda: process.is_alive(pid), time.monotonic() + timeout)
        print(f"{service.name}: ready at {service.address} (pid {pid})")
        return
    _pid_file(service).unlink(missing_ok=True)  # stale: that process is gone or not ours
    await asyncio.to_thread(_check_ports_free, service)
    async with maven:
        await asyncio.to_thread(service.resolve)
    command = await asyncio.to_thread(service.configure, java)
    await _launch(service, command, started, log_mode="wb")


async def _restart_one(service: _Service, java: str, maven: asyncio.Lock) -> None:
    started = time.monotonic()
    service.check_kept_data()
    pid = _our_pid(service)
    if pid is not None:
        running_at = _pid_file(service).read_text().split()[1:]
        if running_at != [service.address]:
            raise ServiceError(
                f"{service.name}: running (pid {pid}) at {' '.join(running_at)}, "
                f"not at {service.address} as configured now; restart it with the settings "
                f"it was started with."
            )
        killed = await asyncio.to_thread(process.stop_pid, pid, _STOP_TIMEOUT_S)
        how = f"killed after {_STOP_TIMEOUT_S:.0f} s" if killed else "stopped"
        print(f"{service.name}: {how} pid {pid} in {time.monotonic() - started:.1f} s", flush=True)
    else:
        print(f"{service.name}: not running; starting it on its kept data", flush=True)
    _pid_file(service).unlink(missing_ok=True)
    await asyncio.to_thread(_check_ports_free, service)
    async with maven:
        await asyncio.to_thread(service.resolve)  # a no-op once the jars are cached
    # The log is appended to: what the service said before the restart stays readable.
    await _launch(service, service.command(java), started, log_mode="ab")


async def _launch(
    service: _Service, command: list[str], started: float, log_mode: Literal["wb", "ab"]
) -> None:
    """Start the JVM detached, record its pid, and wait until it serves (or stop it)."""
    timeout = service.config.startup_timeout_s
    log_path = _log_file(service)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open(log_mode) as log:
        jvm = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=service.config.run_dir / service.name,
            start_new_session=True,  # detached: survives this command and its terminal
        )
    _STARTED.append(jvm)
    _pid_file(service).write_text(f"{jvm.pid} {service.address}\n")
    print(f"{service.name}: started pid {jvm.pid}, log {log_path}", flush=True)
    # The deadline counts from the JVM's start: a first Maven run may take minutes.
    launched = time.monotonic()
    try:
        await _wait_ready(service, jvm.pid, lambda: jvm.poll() is None, launched + timeout)
    except BaseException:
        if jvm.poll() is None:
            await asyncio.to_thread(process.stop_pid, jvm.pid, _STOP_TIMEOUT_S)
            print(f"{service.name}: stopped pid {jvm.pid}, which did not become ready")
        _pid_file(service).unlink(missing_ok=True)
        raise
    now = time.monotonic()
    print(
        f"{service.name}: ready at {service.address} in {now - launched:.1f} s "
        f"({now - started:.1f} s with setup; pid {jvm.pid})"
    )


async def _wait_ready(
    service: _Service, pid: int, alive: Callable[[], bool], deadline: float
) -> None:
    started = time.monotonic()
    for check in service.ready_checks():
        last_error = ""
        next_report = 0.0
        while True:
            if not alive():
                raise ServiceError(
                    f"{service.name}: the process (pid {pid}) exited while starting. "
                    f"Last lines of {_log_file(service)}:\n{build.tail(_log_file(service))}"
                )
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise ServiceError(
                    f"{service.name}: not ready after {service.config.startup_timeout_s:.0f} s, "
                    f"still waiting for {check.name}{last_error}; "
                    f"raise EVTIME_SERVICES_TIMEOUT on a slow machine. "
                    f"Last lines of {_log_file(service)}:\n{build.tail(_log_file(service))}"
                )
            try:
                await asyncio.wait_for(check.run(), timeout=min(remaining, _PROBE_TIMEOUT_S))
                break
            # Any failure of a probe only means "not yet"; the deadline bounds the retries.
            except Exception as exc:
                last_error = f" ({type(exc).__name__}: {exc})".replace(": )", ")")
            now = time.monotonic()
            if now >= next_report:
                waited = now - started
                print(f"{service.name}: waiting for {check.name} ({waited:.0f} s) ...", flush=True)
                next_report = now + _REPORT_EVERY_S
            await asyncio.sleep(0.5)


async def _passes(checks: list[_Check], timeout_s: float = 5.0) -> bool:
    for check in checks:
        try:
            await asyncio.wait_for(check.run(), timeout=timeout_s)
        except Exception:  # a failing probe is the answer, not an error
            return False
    return True


def down(names: Sequence[str] = SERVICE_NAMES) -> None:
    """Stop the named services that evtime started, by the pids in their pid files."""
    for service in _services(names, ServicesConfig.from_env()):
        pid_file = _pid_file(service)
        pid = _our_pid(service)
        if pid is None:
            note = " (removed a stale pid file)" if pid_file.exists() else ""
            pid_file.unlink(missing_ok=True)
            print(f"{service.name}: not running{note}")
            continue
        started = time.monotonic()
        killed = process.stop_pid(pid, _STOP_TIMEOUT_S)
        pid_file.unlink(missing_ok=True)
        how = f"killed after {_STOP_TIMEOUT_S:.0f} s" if killed else "stopped"
        print(f"{service.name}: {how} pid {pid} in {time.monotonic() - started:.1f} s")


def status(names: Sequence[str] = SERVICE_NAMES) -> int:
    """Print what runs; 0 if every named service runs and is healthy, else 1."""
    services = _services(names, ServicesConfig.from_env())
    with _quiet("aiokafka"):
        healthy = asyncio.run(_status_all(services))
    return 0 if all(healthy) else 1


async def _status_all(services: list[_Service]) -> list[bool]:
    results: list[bool] = []
    for service in services:
        pid = _our_pid(service)
        if pid is None:
            taken = [str(port) for port in service.ports().values() if process.port_taken(port)]
            other = f" (port {', '.join(taken)} used by another process)" if taken else ""
            print(f"{service.name:<11} stopped{other}")
            results.append(False)
            continue
        ok = await _passes(service.health_checks())
        state = "healthy" if ok else "NOT healthy"
        running_at = " ".join(_pid_file(service).read_text().split()[1:])
        if running_at != service.address:
            state += f" (started at {running_at}; run `evtime services down {service.name}`)"
        print(f"{service.name:<11} running  pid {pid:<8} {service.address:<24} {state}")
        results.append(ok)
    return results


@contextlib.contextmanager
def _quiet(logger_name: str) -> Iterator[None]:
    """Silence a client library's connection errors while we poll a starting service."""
    logger = logging.getLogger(logger_name)
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(level)


def cli_main(argv: list[str]) -> int:
    """``evtime services up|down|restart|status [kafka|opensearch ...]``; the exit code."""
    parser = argparse.ArgumentParser(
        prog="evtime services",
        description="Run a local Apache Kafka broker and OpenSearch node from Maven jars.",
    )
    parser.add_argument("action", choices=("up", "down", "restart", "status"))
    parser.add_argument(
        "names", nargs="*", metavar="SERVICE", help="kafka and/or opensearch (default: both)"
    )
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help or a usage error
        return exc.code if isinstance(exc.code, int) else 2
    names = tuple(args.names) or SERVICE_NAMES
    try:
        if args.action == "up":
            up(names)
        elif args.action == "down":
            down(names)
        elif args.action == "restart":
            restart(names)
        else:
            return status(names)
    except EvtimeError as exc:
        print(f"evtime services {args.action}: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"evtime services {args.action}: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(cli_main(sys.argv[1:]))
