"""What the `evtime` command says when a user gets something wrong, and how it exits."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import evtime

ROOT = Path(__file__).resolve().parents[2]


def _evtime(*args: str, cwd: Path, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "evtime", *args],
        capture_output=True, text=True, timeout=120, cwd=str(cwd), input=stdin,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )


JOB = '''
from evtime import App, Count, Tumbling, WindowResult
from evtime.connectors.local import JsonLinesSource, StdoutSink
app = App("clicks", state_dir="{state}")
src = app.source("clicks", JsonLinesSource("clicks", ["{data}"]), key="user", timestamp="ts")
@app.window(src, Tumbling("1s"), aggregate=Count(), sink=StdoutSink())
def counts(r: WindowResult) -> dict:
    return {{"user": r.key, "n": r.value}}
'''


def _job(tmp_path: Path, lines: int) -> Path:
    data = tmp_path / "clicks.jsonl"
    with data.open("w") as f:
        for i in range(lines):
            f.write(json.dumps({"user": f"u{i % 500}", "ts": 1_780_000_000_000 + i * 10}) + "\n")
    job = tmp_path / "job.py"
    job.write_text(JOB.format(state=tmp_path / "state", data=data))
    return job


def test_version_and_python_dash_m(tmp_path: Path) -> None:
    done = _evtime("--version", cwd=tmp_path)
    assert (done.returncode, done.stdout.strip()) == (0, f"evtime {evtime.__version__}")


def test_a_missing_app_attribute_is_named(tmp_path: Path) -> None:
    job = _job(tmp_path, 10)
    done = _evtime("run", f"{job}:ap", cwd=tmp_path)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "evtime: job has no attribute 'ap' (apps in it: app); give MODULE:APP with the name "
        "of the variable holding App(...)"
    ]


def test_a_run_piped_into_head_ends_quietly(tmp_path: Path) -> None:
    job = _job(tmp_path, 20_000)
    proc = subprocess.Popen(
        [sys.executable, "-m", "evtime", "run", f"{job}:app"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=str(tmp_path),
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert proc.stdout is not None and proc.stderr is not None
    first = proc.stdout.readline()
    assert first.startswith(b"{")
    proc.stdout.close()  # what `| head -1` does after its line
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 0
    assert "Traceback" not in err and "BrokenPipe" not in err, err[-2000:]


def test_state_dir_moves_the_default_dead_letter_file(tmp_path: Path) -> None:
    job = _job(tmp_path, 10)
    data = tmp_path / "clicks.jsonl"
    with data.open("a") as f:
        f.write("{not json\n")
    done = _evtime("run", f"{job}:app", "--state-dir", str(tmp_path / "elsewhere"), cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    moved = tmp_path / "elsewhere" / "clicks" / "dead-letters.jsonl"
    assert moved.is_file(), done.stderr[-2000:]
    assert json.loads(moved.read_text().splitlines()[0])["reason"] == "decode"
    assert not (tmp_path / "state" / "clicks" / "dead-letters.jsonl").exists()
