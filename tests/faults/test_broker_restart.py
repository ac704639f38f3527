"""A broker restart while the worker runs (DESIGN.md §8: "Broker unavailable: retry with
backoff, never lose a committed record").

The shared broker of `evtime services` is stopped for a few seconds and started again on
its data (`evtime services restart kafka`), while the worker has records in flight; the
worker must survive, and its output must equal the brute-force reference. A sink whose
producer starts during the outage (its first write) must wait for the broker, not fail.
Each test leaves the broker running and healthy, whatever happens: others share it.
"""

from __future__ import annotations

import asyncio
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiokafka.admin import AIOKafkaAdminClient

from evtime import services
from evtime.connectors.kafka import KafkaSink
from evtime.records import Output
from evtime.services import ServicesConfig
from tests.integration.kafka_helpers import (
    check_windows,
    consume_all,
    create_topics,
    decode_outputs,
    delete_topics,
    keyed_stream,
    produce,
    reference_counts,
    start_worker,
    stop_worker,
    worker_env,
)

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

PARTITIONS = 4
SIZE = 10_000
OOO = 5_000
# How long the broker stays down, on top of its stop (~0.5-5 s) and start (~5-20 s, more
# with more partitions to load): a short outage, and one longer than aiokafka's request
# timeout (40 s), after which what aiokafka gives up on is retried by evtime.
DOWN_S = 5.0
LONG_DOWN_S = 60.0


async def _cluster_id(bootstrap: str) -> str:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=5000)
    try:
        await admin.start()
        cluster = await admin.describe_cluster()
        return str(cluster["cluster_id"])
    finally:
        await admin.close()


def _require_restartable(bootstrap: str) -> None:
    """The broker under test must be the one `evtime services` runs: it is restarted."""
    config = ServicesConfig.from_env()
    if bootstrap != config.kafka_bootstrap or services.status(["kafka"]) != 0:
        pytest.fail(
            f"the broker at {bootstrap} is not one that `evtime services` started and runs "
            f"(at {config.kafka_bootstrap}); this test restarts it: run `evtime services up "
            "kafka` and unset EVTIME_KAFKA_BOOTSTRAP",
            pytrace=False,
        )


def _leave_broker_healthy() -> None:
    """Whatever failed: the broker runs again, on its data, and serves (others share it)."""
    if services.status(["kafka"]) != 0:
        services.restart(["kafka"])  # waits until ready; never wipes the data


@pytest.fixture
def restartable_broker(kafka_bootstrap: str) -> Iterator[str]:
    """The bootstrap of the `evtime services` broker, running and healthy after the test."""
    _require_restartable(kafka_bootstrap)
    try:
        yield kafka_bootstrap
    finally:
        _leave_broker_healthy()


def _stop(proc: subprocess.Popen[bytes]) -> int:
    try:
        return stop_worker(proc, timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise


@pytest.mark.parametrize("processing", ["at_least_once", "exactly_once"])
def test_broker_restart_mid_run_the_worker_survives_and_loses_nothing(
    restartable_broker: str, unique_name: str, tmp_path: Path, processing: str
) -> None:
    """at_least_once: nothing missing, every duplicate an identical re-emission.
    exactly_once: a read_committed consumer sees every window exactly once."""
    _restart_mid_run(restartable_broker, unique_name, tmp_path, processing, DOWN_S)


@pytest.mark.parametrize("processing", ["at_least_once", "exactly_once"])
def test_a_broker_outage_longer_than_the_request_timeouts_the_worker_survives(
    restartable_broker: str, unique_name: str, tmp_path: Path, processing: str
) -> None:
    """The broker stays away for a minute, longer than aiokafka's request timeout (40 s)
    and the default transaction timeout (60 s): producers' batches expire, admin and
    transactional clients cannot start; every step waits and retries, nothing is lost."""
    _restart_mid_run(restartable_broker, unique_name, tmp_path, processing, LONG_DOWN_S)


@pytest.mark.parametrize("processing", ["at_least_once", "exactly_once"])
def test_batches_given_up_on_in_an_outage_are_sent_again_or_their_interval_redone(
    restartable_broker: str, unique_name: str, tmp_path: Path, processing: str
) -> None:
    """Producers that give up on a batch after 2 s (EVTIME_KAFKA_REQUEST_TIMEOUT_MS) and a
    12 s outage: at_least_once sends the given-up batches again (with the later ones of
    their partitions); exactly_once aborts the task's transaction and processes the
    interval again from the last checkpoint. Either way the output equals the reference."""
    log = _restart_mid_run(
        restartable_broker,
        unique_name,
        tmp_path,
        processing,
        12.0,
        {"EVTIME_KAFKA_REQUEST_TIMEOUT_MS": "2000"},
    )
    print("given up and redone:", [line for line in log.splitlines() if "again" in line][:3])


def _restart_mid_run(
    kafka_bootstrap: str,
    unique_name: str,
    tmp_path: Path,
    processing: str,
    down_s: float,
    extra_env: dict[str, str] | None = None,
) -> str:
    env = {**worker_env(unique_name, tmp_path), **(extra_env or {})}
    env["EVTIME_TEST_CHECKPOINT"] = "300ms"  # checkpoints (flush + commit) during the outage
    env["EVTIME_TEST_PROCESSING"] = processing
    isolation = "read_committed" if processing == "exactly_once" else "read_uncommitted"
    records, per_partition = keyed_stream(60_000, seed=3, partitions=PARTITIONS)
    expected, _late = reference_counts(per_partition, SIZE, OOO)
    topic_in, topic_out = env["EVTIME_TEST_IN"], env["EVTIME_TEST_OUT"]
    asyncio.run(
        create_topics(
            kafka_bootstrap, {topic_in: PARTITIONS, topic_out: 1, env["EVTIME_TEST_DLQ"]: 1}
        )
    )
    cluster_id = asyncio.run(_cluster_id(kafka_bootstrap))
    log_path = tmp_path / "worker.log"

    def log_tail() -> str:
        return log_path.read_text(errors="replace")[-4000:]

    started = time.monotonic()
    asyncio.run(produce(kafka_bootstrap, topic_in, PARTITIONS, records[:20_000]))
    proc = start_worker("window_job.py", env, log_path)
    try:
        # Part of the stream is processed: windows are out (and offsets committed).
        early = asyncio.run(consume_all(kafka_bootstrap, topic_out, expect=500, timeout_s=60))
        assert len(early) >= 500, f"no progress before the restart:\n{log_tail()}"
        # More input, then at once the broker goes away while the worker works through
        # it: checkpoints (sink flush, changelog append, offset commit) meet the outage,
        # and how much is still in flight depends on timing.
        asyncio.run(produce(kafka_bootstrap, topic_in, PARTITIONS, records[20_000:35_000]))
        stopped = time.monotonic()
        services.down(["kafka"])
        time.sleep(down_s)
        assert proc.poll() is None, f"the worker died while the broker was down:\n{log_tail()}"
        services.restart(["kafka"])
        back = time.monotonic()
        assert asyncio.run(_cluster_id(kafka_bootstrap)) == cluster_id
        asyncio.run(produce(kafka_bootstrap, topic_in, PARTITIONS, records[35_000:]))
        out = asyncio.run(
            consume_all(
                kafka_bootstrap,
                topic_out,
                expect=len(expected),
                timeout_s=120,
                isolation_level=isolation,
            )
        )
        done = time.monotonic()
        assert proc.poll() is None, f"the worker died after the restart:\n{log_tail()}"
    finally:
        try:
            _leave_broker_healthy()  # first: the worker checkpoints on SIGTERM
        finally:
            code = _stop(proc)
    assert code == 0, f"worker exited with {code}:\n{log_tail()}"
    assert "stopped after" in log_path.read_text()
    duplicates = check_windows(decode_outputs(out), expected)
    if processing == "exactly_once":
        assert duplicates == 0
    delete_topics(kafka_bootstrap, unique_name)  # kept when the test fails
    print(
        f"{processing}: {len(expected)} windows, {duplicates} identical re-emissions; broker down "
        f"{back - stopped:.1f} s (stop + {down_s:.0f} s + restart), all windows out "
        f"{done - back:.1f} s after it was back, {done - started:.1f} s in all"
    )
    return log_path.read_text(errors="replace")


def test_a_worker_started_while_the_broker_is_down_waits_for_it_then_loses_nothing(
    restartable_broker: str, unique_name: str, tmp_path: Path
) -> None:
    """The changelog topic's creation, the consumer's start and the first assignment wait
    for the broker (up to EVTIME_KAFKA_BROKER_WAIT, past which the worker stops with an
    error that names it)."""
    kafka_bootstrap = restartable_broker
    env = worker_env(unique_name, tmp_path)
    records, per_partition = keyed_stream(20_000, seed=4, partitions=PARTITIONS)
    expected, _late = reference_counts(per_partition, SIZE, OOO)
    topic_in, topic_out = env["EVTIME_TEST_IN"], env["EVTIME_TEST_OUT"]
    asyncio.run(
        create_topics(
            kafka_bootstrap, {topic_in: PARTITIONS, topic_out: 1, env["EVTIME_TEST_DLQ"]: 1}
        )
    )
    asyncio.run(produce(kafka_bootstrap, topic_in, PARTITIONS, records))
    log_path, impatient_log = tmp_path / "worker.log", tmp_path / "impatient.log"
    proc: subprocess.Popen[bytes] | None = None
    services.down(["kafka"])
    try:
        down = time.monotonic()
        impatient = start_worker(
            "window_job.py",
            {**env, "EVTIME_KAFKA_BROKER_WAIT": "3", "EVTIME_INSTANCE_ID": "impatient"},
            impatient_log,
        )
        assert impatient.wait(timeout=60) != 0
        said = impatient_log.read_text(errors="replace")
        assert "stayed unreachable" in said and "EVTIME_KAFKA_BROKER_WAIT" in said, said[-3000:]
        proc = start_worker("window_job.py", env, log_path)
        time.sleep(max(0.0, LONG_DOWN_S - (time.monotonic() - down)))
        assert proc.poll() is None, log_path.read_text(errors="replace")[-3000:]
        assert "unreachable (" in log_path.read_text(errors="replace")  # the outage began
        services.restart(["kafka"])
        out = asyncio.run(
            consume_all(kafka_bootstrap, topic_out, expect=len(expected), timeout_s=120)
        )
    finally:
        try:
            _leave_broker_healthy()
        finally:
            code = _stop(proc) if proc is not None else 0
    assert code == 0, log_path.read_text(errors="replace")[-3000:]
    check_windows(decode_outputs(out), expected)
    delete_topics(kafka_bootstrap, unique_name)


def test_a_sink_first_written_while_the_broker_is_down_delivers_once_it_is_back(
    restartable_broker: str, unique_name: str
) -> None:
    # In the worker, records fetched before an outage are still processed during it: the
    # first output (or the first dead letter) then starts the sink's producer.
    bootstrap = restartable_broker
    asyncio.run(create_topics(bootstrap, {unique_name: 2}))
    now = int(time.time() * 1000)
    outputs = [Output(key=f"k{i}", value={"i": i}, timestamp=now, id=f"w{i}") for i in range(200)]

    async def write_during_outage() -> float:
        sink = KafkaSink(unique_name, bootstrap)  # its producer starts at the first write
        await asyncio.to_thread(services.down, ["kafka"])
        down = time.monotonic()
        restarted = asyncio.create_task(asyncio.to_thread(_restart_after, DOWN_S))
        try:
            await sink.write(outputs)
            await sink.flush()
            return time.monotonic() - down
        finally:
            await restarted
            await sink.close()

    waited = asyncio.run(write_during_outage())
    assert waited >= DOWN_S  # it did wait for the broker
    records = asyncio.run(consume_all(bootstrap, unique_name, expect=200, timeout_s=30))
    ids = [dict(r.headers)["evtime-id"].decode() for r in records]
    assert sorted(ids) == sorted(o.id for o in outputs if o.id is not None)
    delete_topics(bootstrap, unique_name)
    print(f"write + flush waited {waited:.1f} s for the broker, then delivered all 200")


def _restart_after(seconds: float) -> None:
    time.sleep(seconds)
    services.restart(["kafka"])
