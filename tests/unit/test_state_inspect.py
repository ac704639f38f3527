"""`evtime state inspect` on the state an `evtime run` leaves (the real-broker test is
tests/integration/test_state_inspect.py)."""

from __future__ import annotations

import json
from pathlib import Path

from tests.unit.test_failures_speak import _evtime, _job, _orders, _write


def test_inspect_shows_a_local_run_s_snapshot(tmp_path: Path) -> None:
    _write(tmp_path / "orders.jsonl", _orders(0, 100))
    assert _evtime("run", f"{_job(tmp_path)}:app", cwd=tmp_path).returncode == 0
    state = str(tmp_path / "state")
    done = _evtime("state", "inspect", "--state-dir", state, "--json", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    (report,) = json.loads(done.stdout)
    assert (report["app"], report["group"], report["partition"]) == ("orders", "orders", 0)
    assert report["offsets"] == {"orders": 100} and report["records_in"] == 100
    # The watermark before the end of input (a rerun on appended input resumes there).
    assert report["watermark"] == {"ms": 1_780_000_009_899, "iso": "2026-05-28T20:26:49.899Z"}
    assert report["epoch"] is None and report["changelog_end"] is None
    assert report["timers"]["counts.timers"] == {
        "count": 0, "next": None, "domain": "event time"
    }
    assert report["stores"]["counts.windows"] == {"entries": 0, "bytes": 0}
    text = _evtime("state", "inspect", "--state-dir", state, "--key", "u1", cwd=tmp_path)
    assert text.returncode == 0, text.stderr
    assert "input offsets:  orders 100" in text.stdout
    assert "watermark:      2026-05-28T20:26:49.899Z (1780000009899)" in text.stdout
    assert "key 'u1': no state" in text.stdout
    missing = _evtime("state", "inspect", "--state-dir", state, "--partition", "3", cwd=tmp_path)
    assert missing.returncode == 2
    assert missing.stderr.strip() == f"evtime: no task state for partition 3 under {state}"
