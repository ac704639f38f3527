"""`evtime worker -p 2` on the real broker: two supervised worker processes share the
partitions; one is killed with -9 mid-run and started again by the supervisor; the output
holds every window of the reference model (repeats identical); SIGTERM stops both and the
supervisor exits 0 with no worker left behind."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import pytest

from tests.integration.kafka_helpers import (
    check_windows,
    consume_all,
    create_topics,
    decode_outputs,
    keyed_stream,
    produce,
    reference_counts,
    start_worker,
    stop_worker,
    worker_env,
)

pytestmark = pytest.mark.kafka

PARTITIONS = 4
SIZE = 10_000
OOO = 5_000


def _workers(state_dir: Path) -> dict[int, int]:
    """Running worker processes of this test: {index: pid}, from /proc."""
    found: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
            status = (entry / "status").read_text()
        except OSError:
            continue
        if "State:\tZ" in status:
            continue
        for arg in argv:
            text = arg.decode(errors="replace")
            if text.startswith(f"{state_dir}/worker-"):
                found[int(text.rsplit("-", 1)[1])] = int(entry.name)
    return found


def _wait(what: str, check: object, timeout_s: float, log: Path) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout_s} s\n{log.read_text()[-4000:]}")
        time.sleep(0.2)


def test_supervised_workers_share_partitions_and_survive_a_kill(
    kafka_bootstrap: str, unique_name: str, tmp_path: Path
) -> None:
    env = worker_env(unique_name, tmp_path)
    state = tmp_path / "state"
    records, per_partition = keyed_stream(30_000, seed=9, partitions=PARTITIONS)
    expected, _ = reference_counts(per_partition, SIZE, OOO)
    asyncio.run(
        create_topics(
            kafka_bootstrap,
            {env["EVTIME_TEST_IN"]: PARTITIONS, env["EVTIME_TEST_OUT"]: 1,
             env["EVTIME_TEST_DLQ"]: 1},
        )
    )
    half = len(records) // 2
    asyncio.run(produce(kafka_bootstrap, env["EVTIME_TEST_IN"], PARTITIONS, records[:half]))
    log = tmp_path / "supervisor.log"
    proc = start_worker("window_job.py", env, log, ["-p", "2", "--instance-id", unique_name])
    try:
        _wait("two workers", lambda: len(_workers(state)) == 2, 30, log)
        # Both take part: each opens tasks in its own state directory.
        _wait(
            "both workers with tasks",
            lambda: all(
                any((state / f"worker-{i}" / unique_name).glob("*/*/CURRENT")) for i in (0, 1)
            ),
            90,
            log,
        )
        victim = _workers(state)[0]
        os.kill(victim, 9)
        _wait(
            "worker-0 started again",
            lambda: _workers(state).get(0) not in (None, victim),
            30,
            log,
        )
        asyncio.run(produce(kafka_bootstrap, env["EVTIME_TEST_IN"], PARTITIONS, records[half:]))
        out = asyncio.run(
            consume_all(kafka_bootstrap, env["EVTIME_TEST_OUT"], expect=len(expected),
                        timeout_s=120)
        )
        children = _workers(state)
    finally:
        code = stop_worker(proc, timeout=90)
    text = log.read_text()
    assert code == 0, text[-4000:]
    assert "worker-0 exited with -9" in text
    assert "[worker-0]" in text and "[worker-1]" in text
    assert set(children) == {0, 1}
    assert _workers(state) == {}  # none left behind
    check_windows(decode_outputs(out), expected)
