"""Failures that speak up (`evtime run` as a user runs it): the dead-letter guard stops a
run whose input all fails, a result JSON cannot encode is a dead letter naming its operator,
a rerun on appended input processes it, and a run reports its progress."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
T0 = 1_780_000_000_000

JOB = '''
from evtime import App, Count, Tumbling, WindowResult
from evtime.connectors.local import JsonLinesSink, JsonLinesSource
app = App("orders", state_dir={state!r})
src = app.source(
    "orders", JsonLinesSource("orders", [{data!r}]), key={key!r}, timestamp={ts!r}
)
@app.window(src, Tumbling("1s"), aggregate=Count(), sink=JsonLinesSink({out!r}))
def counts(r: WindowResult) -> object:
    return {result}
'''


def _evtime(*args: str, cwd: Path, env: dict[str, str] | None = None) -> Any:
    return subprocess.run(
        [sys.executable, "-m", "evtime", *args],
        capture_output=True, text=True, timeout=120, cwd=str(cwd),
        env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})},
    )


def _write(path: Path, records: list[dict[str, Any]], mode: str = "w") -> None:
    with path.open(mode) as f:
        for record in records:
            f.write(json.dumps(record) + "\n")


def _orders(first: int, n: int) -> list[dict[str, Any]]:
    return [{"user": f"u{i % 7}", "amount": i, "ts": T0 + i * 100} for i in range(first, n)]


def _job(
    tmp_path: Path, *, key: str = "user", ts: str = "ts",
    result: str = '{"user": r.key, "n": r.value, "start": r.start}',
) -> Path:
    job = tmp_path / "job.py"
    job.write_text(JOB.format(
        state=str(tmp_path / "state"), data=str(tmp_path / "orders.jsonl"), key=key, ts=ts,
        out=str(tmp_path / "out.jsonl"), result=result,
    ))
    return job


def _said(stderr: str) -> list[str]:
    """The lines `evtime` printed itself (not log lines)."""
    return [line for line in stderr.splitlines() if line.startswith("evtime:")]


def _dead_letters(tmp_path: Path) -> list[dict[str, Any]]:
    path = tmp_path / "state" / "orders" / "dead-letters.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_a_misspelt_key_field_stops_the_run_with_one_line(tmp_path: Path) -> None:
    _write(tmp_path / "orders.jsonl", _orders(0, 1_000))
    done = _evtime("run", f"{_job(tmp_path, key='usr')}:app", cwd=tmp_path)
    assert done.returncode == 2
    assert _said(done.stderr) == [
        "evtime: key field 'usr' is missing from the value in 1,000 of 1,000 records of "
        "'orders' (fields seen: amount, ts, user); fix the source's declaration (key=, "
        "timestamp=, value_format=) or the input; EVTIME_DEAD_LETTER_GUARD_FIRST=0 turns "
        "this check off"
    ]
    assert "Traceback" not in done.stderr


def test_a_misspelt_timestamp_field_stops_the_run_with_one_line(tmp_path: Path) -> None:
    _write(tmp_path / "orders.jsonl", _orders(0, 300))
    done = _evtime("run", f"{_job(tmp_path, ts='time')}:app", cwd=tmp_path)
    assert done.returncode == 2
    assert _said(done.stderr) == [
        "evtime: timestamp field 'time' is missing in 300 of 300 records of 'orders' (fields "
        "seen: amount, ts, user); fix the source's declaration (key=, timestamp=, "
        "value_format=) or the input; EVTIME_DEAD_LETTER_GUARD_FIRST=0 turns this check off"
    ]


def test_the_guard_can_be_switched_off(tmp_path: Path) -> None:
    _write(tmp_path / "orders.jsonl", _orders(0, 300))
    off = {"EVTIME_DEAD_LETTER_GUARD_FIRST": "0", "EVTIME_DEAD_LETTER_MAX_RATIO": "1"}
    done = _evtime("run", f"{_job(tmp_path, key='usr')}:app", cwd=tmp_path, env=off)
    assert (done.returncode, _said(done.stderr)) == (0, [])
    assert len(_dead_letters(tmp_path)) == 300


def test_a_healthy_input_with_a_few_bad_lines_runs(tmp_path: Path) -> None:
    data = tmp_path / "orders.jsonl"
    _write(data, _orders(0, 500))
    with data.open("a") as f:
        f.write('{"user": "x"}\nnot json\n')
    _write(data, _orders(500, 1_500), "a")
    done = _evtime("run", f"{_job(tmp_path)}:app", cwd=tmp_path)
    assert (done.returncode, _said(done.stderr)) == (0, [])
    assert sorted(d["reason"] for d in _dead_letters(tmp_path)) == ["decode", "timestamp"]
    outputs = len((tmp_path / "out.jsonl").read_text().splitlines())
    assert outputs == 150 * 7  # windows of 1 s over 150 s, 7 users in each
    summary = [line for line in done.stderr.splitlines() if "evtime.progress: summary:" in line]
    assert len(summary) == 1
    assert summary[0].split("summary: ")[1].startswith(
        "1,502 records in, 1,050 outputs, 2 dead letters (decode 1, timestamp 1), 0 late, "
        "watermark end of input, in "
    )


def test_a_result_json_cannot_encode_is_a_dead_letter_naming_the_operator(
    tmp_path: Path,
) -> None:
    _write(tmp_path / "orders.jsonl", _orders(0, 50))
    # 5 s of orders: windows of 1 s, one result per user and window.
    job = _job(tmp_path, result='{"user": r.key, "users": {r.key}} if r.key != "u0" else r.key')
    done = _evtime("run", f"{job}:app", cwd=tmp_path)
    assert (done.returncode, _said(done.stderr)) == (0, [])
    assert "Traceback" not in done.stderr
    letters = _dead_letters(tmp_path)
    written = (tmp_path / "out.jsonl").read_text().splitlines()
    assert letters and len(letters) + len(written) == 35  # 7 users in each of 5 windows
    assert {(d["reason"], d["operator"]) for d in letters} == {("encode", "counts")}
    assert letters[0]["error"] == (
        "result function of 'counts' returned a value JSON cannot encode (Type is not JSON "
        "serializable: set)"
    )
    assert all(json.loads(line)["value"] == "u0" for line in written)


def test_a_rerun_on_appended_input_processes_the_new_records(tmp_path: Path) -> None:
    data = tmp_path / "orders.jsonl"
    _write(data, _orders(0, 100))  # 10 s: windows [T0, T0 + 10 s)
    job = f"{_job(tmp_path)}:app"
    assert _evtime("run", job, cwd=tmp_path).returncode == 0
    first = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert {o["value"]["start"] for o in first} == {T0 + s * 1_000 for s in range(10)}
    _write(data, _orders(100, 200), "a")  # 10 s more
    done = _evtime("run", job, cwd=tmp_path)
    assert (done.returncode, _said(done.stderr)) == (0, [])
    assert _dead_letters(tmp_path) == []
    both = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    again = both[len(first):] if both[: len(first)] == first else both
    assert {o["value"]["start"] for o in again} == {T0 + s * 1_000 for s in range(10, 20)}
    assert sum(o["value"]["n"] for o in again) == 100


def test_progress_lines_come_every_interval_and_count_what_was_done(caplog: Any) -> None:
    from evtime.runtime.progress import Progress
    from evtime.runtime.status import WorkerStats

    now = [0.0]
    stats = WorkerStats()
    progress = Progress(stats, lambda: [T0 + 5_000, T0 + 7_000], interval=5, clock=lambda: now[0])
    caplog.set_level("INFO", "evtime.progress")
    stats.records_in[("orders", 0)] = 1_000
    stats.records_in[("orders", 1)] = 500
    stats.records_out["counts/main"] = 30
    stats.dead_letters.update(key=2, late=1)
    stats.late_records = 1
    progress.maybe()
    now[0] = 4.9
    progress.maybe()
    assert caplog.messages == []
    now[0] = 5.0
    progress.maybe()
    progress.maybe()
    assert caplog.messages == [
        "progress: 1,500 records in, 30 outputs, 3 dead letters (key 2, late 1), 1 late, "
        "watermark 2026-05-28T20:26:45.000Z (1780000005000)"
    ]
