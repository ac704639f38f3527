"""app.repartition on the real broker: a topic produced without keys (each user's records in
every partition) is re-keyed through an internal topic, and a keyed window over it equals
the brute-force reference: every window of every user once, with its full count. The worker
is SIGKILLed at random moments meanwhile: under at_least_once no record counts twice (a
restarted source task resends, the downstream task drops what it has seen) and repeats are
identical; under exactly_once a read_committed consumer sees each window once."""

from __future__ import annotations

import asyncio
import random
import threading
import time
from pathlib import Path

import orjson
import pytest

from tests.integration.kafka_helpers import (
    check_windows,
    consume_all,
    create_topics,
    decode_outputs,
    produce,
    start_worker,
    stop_worker,
    worker_env,
)

pytestmark = pytest.mark.kafka

PARTITIONS = 4
SIZE = 10_000
OOO = 5_000
BASE = 1_767_225_600_000


def _stream(n: int, users: int, seed: int) -> list[tuple[int, bytes | None, bytes]]:
    """Records (partition, no key, value): users everywhere, each partition's event times
    rising with disorder under the watermark's bound (no record is late)."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        p = i % PARTITIONS
        ts = BASE + (i // PARTITIONS) * 4 + rng.randrange(0, OOO // 2)
        user = f"u{rng.randrange(users)}"
        out.append((p, None, orjson.dumps({"user": user, "ts": ts})))
    return out


def _reference(records: list[tuple[int, bytes | None, bytes]]) -> dict[str, int]:
    """Counts per user window, for the windows the final watermark closes: the least of the
    partitions' (their maximum event time minus the bound, minus 1)."""
    top = dict.fromkeys(range(PARTITIONS), -(2**63))
    counts: dict[str, int] = {}
    for p, _, value in records:
        e = orjson.loads(value)
        top[p] = max(top[p], e["ts"])
        start = e["ts"] - e["ts"] % SIZE
        wid = f"{e['user']}@{start}-{start + SIZE}"
        counts[wid] = counts.get(wid, 0) + 1
    watermark = min(top.values()) - OOO - 1
    return {w: c for w, c in counts.items() if int(w.rsplit("-", 1)[1]) - 1 <= watermark}


@pytest.mark.slow
@pytest.mark.parametrize("processing", ["at_least_once", "exactly_once"])
def test_repartitioned_window_equals_the_reference_through_kills(
    kafka_bootstrap: str, unique_name: str, tmp_path: Path, processing: str
) -> None:
    env = worker_env(unique_name, tmp_path)
    env["EVTIME_TEST_CHECKPOINT"] = "300ms"
    env["EVTIME_TEST_PROCESSING"] = processing
    env["EVTIME_TEST_REPARTITION"] = "1"
    records = _stream(60_000, users=300, seed=21)
    expected = _reference(records)
    asyncio.run(
        create_topics(
            kafka_bootstrap,
            {env["EVTIME_TEST_IN"]: PARTITIONS, env["EVTIME_TEST_OUT"]: 1,
             env["EVTIME_TEST_DLQ"]: 1},
        )
    )

    def feed() -> None:
        for i in range(0, len(records), 4_000):
            asyncio.run(produce(kafka_bootstrap, env["EVTIME_TEST_IN"], PARTITIONS,
                                records[i : i + 4_000]))
            time.sleep(0.3)

    feeder = threading.Thread(target=feed)
    feeder.start()
    log = tmp_path / "worker.log"
    rng = random.Random(3)
    proc = start_worker("window_job.py", env, log)
    kills = 0
    try:
        while kills < 3:
            time.sleep(rng.uniform(1.5, 3.0))
            assert proc.poll() is None, log.read_text()[-3000:]
            proc.kill()
            proc.wait()
            kills += 1
            proc = start_worker("window_job.py", env, log)
    finally:
        feeder.join()
    isolation = "read_committed" if processing == "exactly_once" else "read_uncommitted"
    try:
        out = asyncio.run(
            consume_all(kafka_bootstrap, env["EVTIME_TEST_OUT"], expect=len(expected),
                        timeout_s=120, isolation_level=isolation)
        )
    finally:
        code = stop_worker(proc)
    text = log.read_text()
    assert code == 0, text[-3000:]
    assert "Kafka key" not in text  # the source topic is repartitioned: no keying warning
    duplicates = check_windows(decode_outputs(out), expected)
    print(f"{processing}: {len(expected)} windows, {duplicates} repeats after {kills} kills")
    if processing == "exactly_once":
        assert duplicates == 0
