"""`evtime state inspect` on the state a real worker leaves: each task's offsets are the
group's committed offsets, its watermark, epoch and changelog end are there, and a key's
open windows decode; inspecting while the worker runs works (a read-only open)."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from aiokafka.admin import AIOKafkaAdminClient

from tests.integration.kafka_helpers import (
    JOBS,
    ROOT,
    create_topics,
    keyed_stream,
    produce,
    start_worker,
    stop_worker,
    worker_env,
)

pytestmark = [pytest.mark.kafka]

PARTITIONS = 2
N = 4_000


def _cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "evtime.cli", *args],
        env={**os.environ, **env, "PYTHONPATH": str(ROOT)},
        capture_output=True, text=True, timeout=120, cwd=str(ROOT),
    )


async def _committed(bootstrap: str, group: str) -> dict[tuple[str, int], int]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        offsets = await admin.list_consumer_group_offsets(group)
        return {(tp.topic, tp.partition): m.offset for tp, m in offsets.items()}
    finally:
        await admin.close()


def _inspect(env: dict[str, str], *args: str) -> list[dict[str, Any]]:
    done = _cli(env, "state", "inspect", "--state-dir", env["EVTIME_STATE_DIR"], "--json", *args)
    assert done.returncode == 0, done.stderr
    reports: list[dict[str, Any]] = json.loads(done.stdout)
    return reports


def test_inspect_shows_the_committed_offsets_and_the_state(
    kafka_bootstrap: str, unique_name: str, tmp_path: Path
) -> None:
    env = worker_env(unique_name, tmp_path)
    topic = env["EVTIME_TEST_IN"]
    records, _ = keyed_stream(N, seed=11, partitions=PARTITIONS)
    asyncio.run(create_topics(kafka_bootstrap, {topic: PARTITIONS, env["EVTIME_TEST_OUT"]: 1,
                                                env["EVTIME_TEST_DLQ"]: 1}))
    asyncio.run(produce(kafka_bootstrap, topic, PARTITIONS, records))
    log = tmp_path / "worker.log"
    proc = start_worker("window_job.py", env, log)
    try:
        deadline = time.monotonic() + 120
        while sum(asyncio.run(_committed(kafka_bootstrap, unique_name)).values()) < N:
            assert time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(1)
        # While the worker runs: read-only, beside its open databases.
        live = _inspect(env)
        assert sorted(r["partition"] for r in live) == list(range(PARTITIONS))
    finally:
        assert stop_worker(proc) == 0, log.read_text()[-3000:]

    committed = asyncio.run(_committed(kafka_bootstrap, unique_name))
    reports = _inspect(env)
    assert len(reports) == PARTITIONS
    for r in reports:
        assert (r["app"], r["group"]) == (unique_name, topic)
        assert r["offsets"] == {topic: committed[(topic, r["partition"])]}
        assert r["records_in"] == r["offsets"][topic]
        assert r["watermark"]["iso"].endswith("Z") and r["watermark"]["ms"] > 0
        assert isinstance(r["changelog_end"], int) and r["changelog_end"] > 0
        assert isinstance(r["epoch"], str) and len(r["epoch"]) == 32
        timers = r["timers"]["counts.timers"]
        assert timers["count"] > 0 and timers["next"]["ms"] > r["watermark"]["ms"]
        assert r["stores"]["counts.windows"]["entries"] > 0
    # A key's open windows, decoded (the last windows stay open: no record passes them).
    user = json.loads(records[-1][2])["user"]
    target = f"{JOBS / 'window_job.py'}:app"
    (keyed,) = _inspect(env, target, "--key", user, "--partition",
                        str(records[-1][0]))
    windows = keyed["key"]["state"]["counts.windows"]
    assert windows and all(w["accumulator"] >= 1 for w in windows)
    text = _cli(env, "state", "inspect", target, "--state-dir", env["EVTIME_STATE_DIR"])
    assert text.returncode == 0, text.stderr
    assert f"task {unique_name}/{topic}[0]" in text.stdout
    assert "input offsets:" in text.stdout and "store counts.windows:" in text.stdout

