"""The supervisor of `evtime worker -p N`, with stand-in worker processes (no broker): each
worker's command line, restarts after a crash, SIGTERM passed on, exit codes."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path
from typing import Any

import evtime.supervisor as sup
from evtime.supervisor import Supervisor

# A stand-in worker: notes its start, exits 3 on its first run when told to crash, else
# runs until SIGTERM and exits 0 (as a worker does after its last checkpoint).
STAND_IN = """
import os, signal, sys, time
log, crash = sys.argv[1], sys.argv[2] == "crash"
runs = open(log).read().count("start") if os.path.exists(log) else 0
with open(log, "a") as f:
    f.write(f"start {os.getpid()}\\n")
if crash and runs == 0:
    sys.exit(3)
def stop(*_):
    with open(log, "a") as f:
        f.write("sigterm\\n")
    sys.exit(0)
signal.signal(signal.SIGTERM, stop)
while True:
    time.sleep(0.05)
"""


class _StandIns(Supervisor):
    def __init__(self, tmp: Path, crash: set[int], **kwargs: Any) -> None:
        super().__init__("job.py:app", 2, tmp / "state", **kwargs)
        self.tmp = tmp
        self.crash = crash

    def command(self, child: Any) -> tuple[list[str], dict[str, str]]:
        real_argv, env = super().command(child)
        self.real = getattr(self, "real", {})
        self.real[child.index] = (real_argv, env)
        mode = "crash" if child.index in self.crash else "run"
        argv = [sys.executable, "-c", STAND_IN, str(self.tmp / f"w{child.index}.log"), mode]
        return argv, env


def _lines(path: Path) -> list[str]:
    return path.read_text().split() if path.exists() else []


async def _run_until(supervisor: _StandIns, ready: Any) -> int:
    run = asyncio.create_task(supervisor.run())
    for _ in range(200):
        await asyncio.sleep(0.05)
        if ready():
            break
    os.kill(os.getpid(), signal.SIGTERM)  # the supervisor's handler takes it
    return await asyncio.wait_for(run, 30)


def test_each_worker_gets_its_state_dir_instance_id_and_metrics_port(tmp_path: Path) -> None:
    s = Supervisor("job.py:app", 3, tmp_path, instance_id="box", metrics_port=9500)
    for i, child in enumerate(s.children):
        argv, env = s.command(child)
        assert argv[argv.index("--state-dir") + 1] == str(tmp_path / f"worker-{i}")
        assert argv[argv.index("--instance-id") + 1] == f"box-{i}"
        assert argv[argv.index("--metrics-port") + 1] == str(9500 + 1 + i)
        assert env["EVTIME_LOG_PREFIX"] == f"[worker-{i}] "
        assert "EVTIME_METRICS_PORT" not in env and "EVTIME_INSTANCE_ID" not in env
    argv, _ = Supervisor("job.py:app", 2, tmp_path).command(s.children[0])
    assert "--instance-id" not in argv and "--metrics-port" not in argv


def test_a_crashed_worker_is_started_again_and_sigterm_stops_all(
    tmp_path: Path, monkeypatch: Any
) -> None:
    monkeypatch.setattr(sup, "FIRST_BACKOFF_S", 0.1)
    s = _StandIns(tmp_path, crash={0})
    code = asyncio.run(
        _run_until(s, lambda: _lines(tmp_path / "w0.log").count("start") == 2
                   and "start" in _lines(tmp_path / "w1.log"))
    )
    assert code == 0
    w0, w1 = _lines(tmp_path / "w0.log"), _lines(tmp_path / "w1.log")
    assert w0.count("start") == 2 and w0[-1] == "sigterm"  # crashed once, restarted, stopped
    assert w1.count("start") == 1 and w1[-1] == "sigterm"
    assert s.children[0].restarts == 1 and s.children[0].codes == [3, 0]
    assert s.children[1].restarts == 0 and s.children[1].codes == [0]


def test_supervisor_fails_when_a_worker_does_not_stop_cleanly(
    tmp_path: Path, monkeypatch: Any
) -> None:
    monkeypatch.setattr(sup, "FIRST_BACKOFF_S", 30.0)  # stopped during the backoff
    s = _StandIns(tmp_path, crash={1})
    code = asyncio.run(_run_until(s, lambda: s.children[1].codes == [3]))
    assert code == 1  # worker-1's last run ended with an error
    assert s.children[1].codes == [3] and s.children[0].codes == [0]


def test_workers_stop_when_the_supervisor_is_killed(tmp_path: Path) -> None:
    """A supervisor killed with -9 cannot pass anything on: its workers get SIGTERM from
    the kernel (parent-death signal) and stop; none is left running."""
    import subprocess
    import time

    root = Path(__file__).resolve().parents[2]
    script = (
        "import asyncio, sys; from pathlib import Path; "
        f"sys.path.insert(0, {str(root)!r}); "
        "from tests.unit.test_supervisor import _StandIns; "
        f"asyncio.run(_StandIns(Path({str(tmp_path)!r}), crash=set()).run())"
    )
    supervisor = subprocess.Popen([sys.executable, "-c", script])
    try:
        deadline = time.monotonic() + 20
        while not all("start" in _lines(tmp_path / f"w{i}.log") for i in (0, 1)):
            assert time.monotonic() < deadline, "the stand-in workers did not start"
            time.sleep(0.05)
    finally:
        supervisor.kill()
        supervisor.wait()
    deadline = time.monotonic() + 10
    while not all(_lines(tmp_path / f"w{i}.log")[-1:] == ["sigterm"] for i in (0, 1)):
        assert time.monotonic() < deadline, [_lines(tmp_path / f"w{i}.log") for i in (0, 1)]
        time.sleep(0.05)
