"""State that follows a partition: restore from the changelog on a new machine, scale out / in."""

from __future__ import annotations

import asyncio
import re
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

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

SIZE = 10_000
OOO = 5_000


def _topics(bootstrap: str, env: dict[str, str], partitions: int) -> None:
    asyncio.run(
        create_topics(
            bootstrap,
            {
                env["EVTIME_TEST_IN"]: partitions,
                env["EVTIME_TEST_OUT"]: 1,
                env["EVTIME_TEST_DLQ"]: 1,
            },
        )
    )


def _restored(log: str) -> int:
    return sum(int(n) for n in re.findall(r"restored (\d+) changelog records", log))


def test_a_new_machine_restores_state_from_the_changelog_and_resumes(
    kafka_bootstrap: str, unique_name: str, tmp_path: Path
) -> None:
    env = worker_env(unique_name, tmp_path)
    partitions = 4
    records, per_partition = keyed_stream(30_000, seed=3, partitions=partitions)
    expected, _ = reference_counts(per_partition, SIZE, OOO)
    _topics(kafka_bootstrap, env, partitions)
    half = len(records) // 2
    asyncio.run(produce(kafka_bootstrap, env["EVTIME_TEST_IN"], partitions, records[:half]))

    # Machine A processes the first half and stops cleanly (its last checkpoint is in the
    # changelog and the group); its local state is then thrown away.
    proc = start_worker("window_job.py", env, tmp_path / "a.log")
    time.sleep(6)
    assert stop_worker(proc) == 0, (tmp_path / "a.log").read_text()[-3000:]

    # Machine B starts with an empty state dir: it must restore the open windows from
    # the changelog rather than recount from the beginning.
    env_b = {**env, "EVTIME_STATE_DIR": str(tmp_path / "state-b"), "EVTIME_INSTANCE_ID": "b"}
    asyncio.run(produce(kafka_bootstrap, env["EVTIME_TEST_IN"], partitions, records[half:]))
    proc = start_worker("window_job.py", env_b, tmp_path / "b.log")
    try:
        out = asyncio.run(
            consume_all(kafka_bootstrap, env["EVTIME_TEST_OUT"], expect=len(expected), timeout_s=90)
        )
    finally:
        code = stop_worker(proc)
    log_b = (tmp_path / "b.log").read_text()
    assert code == 0, log_b[-3000:]
    assert _restored(log_b) > 0, "machine B restored nothing from the changelog"
    assert "resuming at {" in log_b and not re.search(r"resuming at \{'[^']+': 0\}", log_b), (
        "machine B replayed a partition from the beginning instead of resuming"
    )
    check_windows(decode_outputs(out), expected)


def test_scale_out_then_a_worker_is_killed_and_the_output_equals_the_reference(
    kafka_bootstrap: str, unique_name: str, tmp_path: Path
) -> None:
    env = worker_env(unique_name, tmp_path)
    env["EVTIME_TEST_CHECKPOINT"] = "300ms"
    partitions = 8
    records, per_partition = keyed_stream(60_000, seed=4, partitions=partitions)
    expected, _ = reference_counts(per_partition, SIZE, OOO)
    _topics(kafka_bootstrap, env, partitions)

    def worker(name: str) -> object:
        e = {**env, "EVTIME_STATE_DIR": str(tmp_path / f"state-{name}"), "EVTIME_INSTANCE_ID": name}
        return start_worker("window_job.py", e, tmp_path / f"{name}.log")

    step = len(records) // 5
    chunks = [records[i * step : (i + 1) * step] for i in range(4)] + [records[4 * step :]]
    procs = {"w1": worker("w1"), "w2": worker("w2")}
    asyncio.run(produce(kafka_bootstrap, env["EVTIME_TEST_IN"], partitions, chunks[0]))
    time.sleep(4)
    asyncio.run(produce(kafka_bootstrap, env["EVTIME_TEST_IN"], partitions, chunks[1]))
    procs["w3"] = worker("w3")  # scale out: partitions move to w3, with their state
    time.sleep(6)
    asyncio.run(produce(kafka_bootstrap, env["EVTIME_TEST_IN"], partitions, chunks[2]))
    time.sleep(2)
    killed = procs.pop("w2")
    killed.kill()  # type: ignore[attr-defined]
    killed.wait()  # type: ignore[attr-defined]
    asyncio.run(produce(kafka_bootstrap, env["EVTIME_TEST_IN"], partitions, chunks[3]))
    asyncio.run(produce(kafka_bootstrap, env["EVTIME_TEST_IN"], partitions, chunks[4]))
    try:
        # w2's partitions move after its session times out (static members are not
        # replaced at once): allow for that.
        out = asyncio.run(
            consume_all(
                kafka_bootstrap, env["EVTIME_TEST_OUT"], expect=len(expected), timeout_s=120
            )
        )
    finally:
        codes = {name: stop_worker(p) for name, p in procs.items()}  # type: ignore[arg-type]
    logs = {n: (tmp_path / f"{n}.log").read_text() for n in ("w1", "w2", "w3")}
    assert codes == {"w1": 0, "w3": 0}, {n: logs[n][-2000:] for n in codes}
    assert _restored(logs["w3"]) + _restored(logs["w1"]) > 0
    duplicates = check_windows(decode_outputs(out), expected)
    print(f"{len(expected)} windows, {duplicates} identical re-emissions")
