"""``evtime worker -p N``: N worker processes of one app on this machine, supervised.

Each process is an ordinary worker (``evtime worker APP``) in the app's consumer group:
Kafka spreads the partitions over them, and over the workers of other machines. The
supervisor gives worker ``i`` (from 0):

- its own state directory, ``<state_dir>/worker-<i>`` (two processes never open one
  RocksDB; a partition that moves between them is restored from its changelog);
- the instance id ``<instance id>-<i>`` when one is given (static membership: a restarted
  worker takes its partitions back at once);
- the metrics port ``<port> + 1 + i`` when one is given: the supervisor serves on
  ``<port>`` itself the status page of all its workers (``/``, ``/status.json``) and
  their readiness (``/healthz``: ready while every worker is); each worker's
  ``/metrics`` is on its own port (with ``--metrics-port 0``, any free port each and
  no page of all);
- ``[worker-<i>]`` in front of its log lines;
- the other options given to ``evtime worker -p N`` as flags, through its environment.

A worker that exits with an error (a crash, a kill) is started again after a backoff
(1 s, doubling up to 30 s; back to 1 s once a run lasted a minute); the others run on, and
the group moves the dead one's partitions to them meanwhile. SIGTERM / SIGINT is passed to
every worker (each checkpoints its tasks and leaves the group), and the supervisor exits 0
once all have exited 0; a second signal is passed on too (the workers exit at once).
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from evtime.errors import ConfigError
from evtime.runtime.status_page import SupervisorStatusServer
from evtime.settings import child_environment, option

log = logging.getLogger("evtime.supervisor")

FIRST_BACKOFF_S = 1.0
MAX_BACKOFF_S = 30.0
STABLE_RUN_S = 60.0


@dataclass
class _Child:
    index: int
    process: asyncio.subprocess.Process | None = None
    started: float = 0.0
    backoff: float = FIRST_BACKOFF_S
    restarts: int = 0
    codes: list[int] = field(default_factory=list)


class Supervisor:
    """Runs ``processes`` workers of ``target`` (MODULE:APP or path/to/job.py:APP)."""

    def __init__(
        self,
        target: str,
        processes: int,
        state_dir: str | Path,
        *,
        instance_id: str | None = None,
        metrics_port: int | None = None,
        metrics_host: str | None = None,
        verbose: bool = False,
        settings: Mapping[str, str] | None = None,
    ) -> None:
        if processes < 1:
            raise ConfigError(f"-p {processes}: give at least one worker process")
        self.target = target
        self.processes = processes
        self.state_dir = Path(state_dir)
        self.instance_id = instance_id
        self.metrics_port = metrics_port
        self.metrics_host = metrics_host
        self.verbose = verbose
        self.settings = dict(settings or {})
        """Options every worker gets, through its environment (by option name)."""
        self.children = [_Child(i) for i in range(processes)]
        self._signals = 0
        self._stopping = asyncio.Event()

    def command(self, child: _Child) -> tuple[list[str], dict[str, str]]:
        """The command line and environment of worker ``child``."""
        i = child.index
        argv = [sys.executable, "-m", "evtime.cli"]
        if self.verbose:
            argv.append("-v")
        argv += ["worker", self.target, "--state-dir", str(self.state_dir / f"worker-{i}")]
        env = child_environment(  # each its own instance id and metrics port, below
            {**self.settings, "log_prefix": f"[worker-{i}] "},
            removed=("instance_id", "metrics_port", "metrics_host"),
        )
        if self.instance_id:
            argv += ["--instance-id", f"{self.instance_id}-{i}"]
        if self.metrics_port is not None:
            port = self.metrics_port + 1 + i if self.metrics_port else 0
            argv += ["--metrics-port", str(port)]
        if self.metrics_host:
            argv += ["--metrics-host", self.metrics_host]
        return argv, env

    def status_server(self) -> SupervisorStatusServer | None:
        """The status page of all the workers, on the base metrics port (None: no port
        given, or port 0)."""
        if not self.metrics_port:
            return None
        host = self.metrics_host or option("metrics_host").default
        ports = [self.metrics_port + 1 + c.index for c in self.children]
        return SupervisorStatusServer(host, self.metrics_port, ports)

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        server = self.status_server()
        if server is not None:
            await server.start()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self._on_signal, signum)
        try:
            log.info(
                "starting %d workers of %s (state under %s)",
                self.processes,
                self.target,
                self.state_dir,
            )
            await asyncio.gather(*(self._keep(child) for child in self.children))
        finally:
            for signum in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(signum)
            if server is not None:
                await server.stop()
        failed = [c.index for c in self.children if c.codes and c.codes[-1] != 0]
        if failed:
            log.error("workers %s exited with errors", failed)
            return 1
        log.info("all %d workers stopped", self.processes)
        return 0

    async def _keep(self, child: _Child) -> None:
        """Run ``child``, starting it again after a failure, until the supervisor stops."""
        while not self._stopping.is_set():
            argv, env = self.command(child)
            child.started = time.monotonic()
            # Its own session: a Ctrl-C in the terminal reaches the supervisor only (which
            # passes it on once); and it gets SIGTERM should the supervisor die.
            child.process = await asyncio.create_subprocess_exec(
                *argv, env=env, start_new_session=True, preexec_fn=_term_with_parent
            )
            if self._stopping.is_set():  # a signal came while it was being started
                child.process.send_signal(signal.SIGTERM)
            code = await child.process.wait()
            child.codes.append(code)
            if self._stopping.is_set():
                return
            if code == 0:
                log.info("worker-%d exited (0) on its own; not restarted", child.index)
                return
            ran = time.monotonic() - child.started
            if ran >= STABLE_RUN_S:
                child.backoff = FIRST_BACKOFF_S
            log.warning(
                "worker-%d exited with %d after %.1f s; starting it again in %.0f s",
                child.index,
                code,
                ran,
                child.backoff,
            )
            child.restarts += 1
            try:
                await asyncio.wait_for(self._stopping.wait(), timeout=child.backoff)
                return  # stopped during the backoff
            except TimeoutError:
                pass
            child.backoff = min(child.backoff * 2, MAX_BACKOFF_S)

    def _on_signal(self, signum: int) -> None:
        self._signals += 1
        self._stopping.set()
        if self._signals == 1:
            log.info("stopping %d workers (checkpointing their tasks)", self.processes)
        else:
            log.warning("second signal: the workers exit at once")
        for child in self.children:
            process = child.process
            if process is not None and process.returncode is None:
                process.send_signal(signal.SIGTERM if self._signals == 1 else signum)


def _term_with_parent() -> None:
    """In a new worker process (Linux): SIGTERM it when the supervisor dies, so that a
    supervisor killed with -9 leaves no worker behind."""
    if sys.platform.startswith("linux"):
        import ctypes

        pr_set_pdeathsig = 1
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(pr_set_pdeathsig, signal.SIGTERM)
