"""Local services: a real Apache Kafka broker and OpenSearch node, run from Maven jars.

``evtime services up`` brings up each requested service as a detached JVM:

1. Resolve its jars once with Maven (``copy-dependencies`` on a small pom from
   ``evtime/services/data``) into the cache directory; a marker keyed by the versions and
   the pom skips this afterwards. OpenSearch's entry point is compiled once too.
2. If a live process of ours (pid file, and a command line carrying our markers)
   already answers, do nothing; one set up otherwise than now (other ports, or an
   older evtime without Kafka's SASL_SSL listener) is refused with what to run.
3. Check that the ports are free, wipe the data directory (every ``up`` starts from
   an empty broker and node), make Kafka's test certificates (``tls``), write the
   config, format Kafka's storage with its SCRAM user.
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

import asyncio
import contextlib
import logging
import subprocess
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from pathlib import Path
from typing import Literal

from evtime.errors import ConfigError, EvtimeError, ServiceError
from evtime.services import build, processes
from evtime.services.config import PORT_VARIABLES, ServicesConfig
from evtime.services.kafka import Kafka
from evtime.services.opensearch import OpenSearch
from evtime.services.service import PROBE_TIMEOUT_S, Check, Service, markers

SERVICE_NAMES = ("kafka", "opensearch")

_STOP_TIMEOUT_S = 30.0
_REPORT_EVERY_S = 10.0


def _services(names: Sequence[str], config: ServicesConfig) -> list[Service]:
    unknown = [name for name in names if name not in SERVICE_NAMES]
    if unknown:
        raise ConfigError(
            f"unknown service {', '.join(unknown)}; choose from {', '.join(SERVICE_NAMES)}."
        )
    known: dict[str, Service] = {"kafka": Kafka(config), "opensearch": OpenSearch(config)}
    return [known[name] for name in dict.fromkeys(names)]


# --- Pid files and ports ---------------------------------------------------------------

# Popen objects of the JVMs started by this process, kept so that they are not
# garbage-collected (and reported as "still running") while this process lives.
_STARTED: list[subprocess.Popen[bytes]] = []


def _pid_file(service: Service) -> Path:
    return service.config.run_dir / f"{service.name}.pid"


def _log_file(service: Service) -> Path:
    return service.config.logs_dir / f"{service.name}.log"


def _our_pid(service: Service) -> int | None:
    """The pid in the service's pid file, if that process is alive and is ours."""
    try:
        pid = int(_pid_file(service).read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    if not processes.is_alive(pid):
        return None
    cmdline = processes.command_line(pid)
    if not all(marker in cmdline for marker in markers(service.config, service.name)):
        return None
    return pid


def _check_ports_free(service: Service, grace_s: float = 10.0) -> None:
    """Fail unless the service's ports are free, allowing ``grace_s`` for a process that
    has just stopped to release them."""
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline and any(
        processes.port_taken(port) for port in service.ports().values()
    ):
        time.sleep(0.2)
    for role, port in service.ports().items():
        if processes.port_taken(port):
            env = PORT_VARIABLES[(service.name, role)]
            raise ServiceError(
                f"{service.name}: port {port} ({role}) on 127.0.0.1 is already in use by a "
                f"process that evtime did not start (see `ss -ltnp 'sport = :{port}'`). "
                f"Stop it, or set {env} to a free port."
            )


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
    services: list[Service], one: Callable[[Service, asyncio.Lock], Awaitable[None]]
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


def _refuse_other_address(service: Service, pid: int, state: str, advice: str) -> None:
    """Fail if the running ``pid`` was started at another address than configured now."""
    running_at = _pid_file(service).read_text().split()[1:]
    if running_at != [service.address]:
        raise ServiceError(
            f"{service.name}: {state} (pid {pid}) at {' '.join(running_at)}, "
            f"not at {service.address} as configured now; {advice}"
        )


async def _up_one(service: Service, java: str, maven: asyncio.Lock) -> None:
    started = time.monotonic()
    timeout = service.config.startup_timeout_s
    pid = _our_pid(service)
    if pid is not None:
        _refuse_other_address(
            service, pid, "already running", f"run `evtime services down {service.name}` first."
        )
        service.check_kept_data()  # started by an older evtime, it cannot pass our checks
        if await _passes(service.health_checks()):
            print(f"{service.name}: already running at {service.address} (pid {pid})")
            _print_details(service)
            return
        print(f"{service.name}: pid {pid} is running but not ready yet; waiting ...", flush=True)
        await _wait_ready(service, pid, lambda: processes.is_alive(pid), time.monotonic() + timeout)
        print(f"{service.name}: ready at {service.address} (pid {pid})")
        _print_details(service)
        return
    _pid_file(service).unlink(missing_ok=True)  # stale: that process is gone or not ours
    await asyncio.to_thread(_check_ports_free, service)
    async with maven:
        await asyncio.to_thread(service.resolve)
    command = await asyncio.to_thread(service.configure, java)
    await _launch(service, command, started, log_mode="wb")


async def _restart_one(service: Service, java: str, maven: asyncio.Lock) -> None:
    started = time.monotonic()
    service.check_kept_data()
    pid = _our_pid(service)
    if pid is not None:
        _refuse_other_address(
            service, pid, "running", "restart it with the settings it was started with."
        )
        killed = await asyncio.to_thread(processes.stop_pid, pid, _STOP_TIMEOUT_S)
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
    service: Service, command: list[str], started: float, log_mode: Literal["wb", "ab"]
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
            await asyncio.to_thread(processes.stop_pid, jvm.pid, _STOP_TIMEOUT_S)
            print(f"{service.name}: stopped pid {jvm.pid}, which did not become ready")
        _pid_file(service).unlink(missing_ok=True)
        raise
    now = time.monotonic()
    print(
        f"{service.name}: ready at {service.address} in {now - launched:.1f} s "
        f"({now - started:.1f} s with setup; pid {jvm.pid})"
    )
    _print_details(service)


def _print_details(service: Service) -> None:
    for line in service.details():
        print(f"{service.name}:   {line}")


async def _wait_ready(
    service: Service, pid: int, alive: Callable[[], bool], deadline: float
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
                await asyncio.wait_for(check.run(), timeout=min(remaining, PROBE_TIMEOUT_S))
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


async def _passes(checks: list[Check], timeout_s: float = 5.0) -> bool:
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
        killed = processes.stop_pid(pid, _STOP_TIMEOUT_S)
        pid_file.unlink(missing_ok=True)
        how = f"killed after {_STOP_TIMEOUT_S:.0f} s" if killed else "stopped"
        print(f"{service.name}: {how} pid {pid} in {time.monotonic() - started:.1f} s")


def status(names: Sequence[str] = SERVICE_NAMES) -> int:
    """Print what runs; 0 if every named service runs and is healthy, else 1."""
    services = _services(names, ServicesConfig.from_env())
    with _quiet("aiokafka"):
        healthy = asyncio.run(_status_all(services))
    return 0 if all(healthy) else 1


async def _status_all(services: list[Service]) -> list[bool]:
    results: list[bool] = []
    for service in services:
        pid = _our_pid(service)
        if pid is None:
            taken = [str(port) for port in service.ports().values() if processes.port_taken(port)]
            other = f" (port {', '.join(taken)} used by another process)" if taken else ""
            print(f"{service.name:<11} stopped{other}")
            results.append(False)
            continue
        ok = await _passes(service.health_checks())
        state = "healthy" if ok else "NOT healthy"
        if not ok:
            try:
                service.check_kept_data()
            except ServiceError as exc:  # e.g. started by an older evtime: say what to do
                state += f": {exc}"
        running_at = " ".join(_pid_file(service).read_text().split()[1:])
        if running_at != service.address:
            state += f" (started at {running_at}; run `evtime services down {service.name}`)"
        print(f"{service.name:<11} running  pid {pid:<8} {service.address:<24} {state}")
        for line in service.details():
            print(f"{'':<11} {line}")
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
