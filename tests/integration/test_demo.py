"""README command 1: `evtime demo` on the real Kafka broker and OpenSearch node.

A small stream, paced (event time compressed), through examples/seed_join.py as a worker
process; the demo exits 0 only when the index and the dead-letter topic hold exactly what
the generated stream should give.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.kafka, pytest.mark.opensearch, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]


def test_demo_joins_into_the_index_and_checks_it(
    kafka_bootstrap: str, opensearch_url: str, tmp_path: Path
) -> None:
    proc = subprocess.run(
        [
            sys.executable, "-m", "evtime.cli", "demo", "--keys", "3000", "--speed", "2h",
            "--bootstrap", kafka_bootstrap, "--es-url", opensearch_url, "--out", str(tmp_path),
        ],
        capture_output=True, text=True, timeout=300, cwd=str(ROOT), check=False,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    assert "EMBEDDED MODE" not in out
    assert "event time +" in out  # progress while it runs
    assert "checked: all 3,000 documents equal" in out
    assert "sample (joined, hours apart)" in out
    assert "sample (unmatched)" in out
