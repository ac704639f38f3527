"""`evtime demo`: its generated stream, its expectations, and its embedded mode.

The Kafka + OpenSearch mode runs in tests/integration/test_demo.py.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
import pytest

from evtime.demos import seed
from evtime.demos import seed_stream as demo
from tests.unit.join_reference import JoinConfig, one_topic_events, run_events

ROOT = Path(__file__).resolve().parents[2]
WITHIN = 6 * demo.HOUR
AFTER = 15 * demo.MINUTE


def _partitions(stream: demo.Stream, partitions: int) -> list[list[dict[str, Any]]]:
    """Each partition's records that reach the join (the malformed ones do not), in order."""
    out: list[list[dict[str, Any]]] = [[] for _ in range(partitions)]
    for _, p, _, value in stream.records:
        try:
            v = orjson.loads(value)
        except orjson.JSONDecodeError:
            continue
        if isinstance(v.get("ts"), int) and "id" in v:
            out[p].append(v)
    return out


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_expected_documents_equal_the_join_model_on_the_generated_stream(seed: int) -> None:
    """The demo's per-key expectation is what the brute-force join model emits, upserted by
    key, with no end of input (on Kafka the stream does not end; the heartbeats must be
    what makes every deadline pass)."""
    partitions = 2
    stream = demo.generate(300, partitions, seed, within=WITHIN, unmatched_after=AFTER)
    assert set(stream.shapes) == {
        "minutes apart", "hours apart", "too far apart", "partner never comes"
    }
    cfg = JoinConfig(-WITHIN, WITHIN, "outer", AFTER, demo.OOO)
    model: dict[str, dict[str, Any]] = {}
    for p, records in enumerate(_partitions(stream, partitions)):
        events, _ = one_topic_events(records, p, cfg)
        run = run_events(events, cfg)
        for step in run.steps[:-1]:
            for em in step:
                joined = em.kind == "joined"
                model[em.key] = {
                    "id": em.key, "a": em.left, "b": em.right,
                    "status": "joined" if joined else "unmatched",
                    "joined_at_ms": max(em.left_ts, em.right_ts) if joined else None,
                }
        assert not run.late, "the generated disorder must stay below the watermark delay"
    assert model == demo.expected_documents(stream.events, WITHIN)


def test_malformed_records_and_heartbeats_are_in_every_stream() -> None:
    stream = demo.generate(5_000, 4, 9)
    assert set(stream.malformed) == {"decode", "timestamp", "key"}
    assert sum(stream.malformed.values()) == len(stream.events) // 1000
    assert stream.heartbeats == 4
    beats = [orjson.loads(v) for _, _, _, v in stream.records[-4:]]
    assert {b["type"] for b in beats} == {"heartbeat"}
    assert sorted(p for _, p, _, _ in stream.records[-4:]) == [0, 1, 2, 3]
    arrivals = [r[0] for r in stream.records]
    assert arrivals == sorted(arrivals)


def test_embedded_mode_runs_the_seed_join_and_checks_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = seed.main(["--embedded", "--keys", "3000", "--out", str(tmp_path)])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "EMBEDDED MODE" in out
    assert "checked: all 3,000 documents equal" in out
    malformed = demo.generate(3000, 4, 7).malformed  # the demo's defaults: 4 partitions, seed 7
    assert f"dead letters: {sum(malformed.values())} {dict(sorted(malformed.items()))}" in out


def test_the_check_fails_when_a_document_is_wrong(capsys: pytest.CaptureFixture[str]) -> None:
    stream = demo.generate(200, 2, 4)
    docs = demo.expected_documents(stream.events, WITHIN)
    dead = Counter(stream.malformed)
    assert demo.report(stream, docs, dead, 1.0, WITHIN, "index") == 0
    key = next(k for k, d in docs.items() if d["status"] == "joined")
    docs[key] = {**docs[key], "status": "unmatched"}
    assert demo.report(stream, docs, dead, 1.0, WITHIN, "index") == 1
    del docs[key]
    dead["decode"] += 1
    assert demo.report(stream, docs, dead, 1.0, WITHIN, "index") == 1
    out = capsys.readouterr().out
    assert "CHECK FAILED: 1 documents differ" in out
    assert "CHECK FAILED: 1 expected documents are missing" in out
    assert "CHECK FAILED: dead letters" in out


def test_without_java_the_demo_says_so_and_runs_embedded(tmp_path: Path) -> None:
    """A machine without Java: `evtime demo` names what is missing and runs the same join
    on the embedded engine (the services are never touched)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "python").symlink_to(sys.executable)
    env = {**os.environ, "PATH": str(bin_dir), "EVTIME_CACHE_DIR": str(tmp_path / "cache")}
    env.pop("EVTIME_KAFKA_BOOTSTRAP", None)
    proc = subprocess.run(
        [sys.executable, "-m", "evtime.cli", "demo", "--keys", "1000", "--out",
         str(tmp_path / "out")],
        capture_output=True, text=True, env=env, cwd=str(ROOT), timeout=120, check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "EMBEDDED MODE: Kafka and OpenSearch are not used, because:" in proc.stdout
    assert "`java` is not on PATH" in proc.stdout
    assert "checked: all 1,000 documents equal" in proc.stdout
