"""Peak RSS does not grow with the number of live keys: state larger than the memory
budget lives in RocksDB, not in the process (DESIGN.md section 12).

W3 of bench/memory.py, each size in a fresh process under a 16 MB budget: N events of N
distinct keys in one 1 h tumbling window on the embedded engine, so that every key is
live at the end of the input. Ten times the keys must not take 20% more memory.

What is compared is the peak while the keys are live (at the end of the input, before the
window fires). Firing the window then emits its N results at once, and the driver holds
them until they are delivered: that part grows with N, as any batch of outputs does
(bench/memory.py prints both peaks).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.slow

BENCH = Path(__file__).resolve().parents[2] / "bench" / "memory.py"
BUDGET = "16MB"


def w3(keys: int) -> dict[str, Any]:
    """bench/memory.py's figures for ``keys`` distinct live keys, from a fresh process."""
    env = {**os.environ, "EVTIME_MEMORY_BUDGET": BUDGET}
    done = subprocess.run(
        [sys.executable, str(BENCH), "--child", str(keys)],
        env=env, capture_output=True, text=True, timeout=300, check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    figures: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return figures


def test_peak_rss_does_not_grow_with_the_number_of_live_keys() -> None:
    small, large = w3(200_000), w3(2_000_000)
    assert small["budget_mb"] == large["budget_mb"] == 16
    ratio = large["ingest_peak_mb"] / small["ingest_peak_mb"]
    assert ratio <= 1.2, (
        f"peak RSS with 2,000,000 live keys {large['ingest_peak_mb']} MB, with 200,000 "
        f"{small['ingest_peak_mb']} MB: memory grows with the keys ({small}, {large})"
    )
