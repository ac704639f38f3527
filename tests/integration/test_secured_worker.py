"""The Kafka worker through the broker's SASL_SSL listener (SCRAM-SHA-512, a test CA).

The worker is configured only by environment (``EVTIME_KAFKA_*``), as a deployment would
be: its consumer, producers, transactional producers, admin and changelog clients all
reach the broker through the secured listener (its bootstrap is the SASL_SSL port, which
a PLAINTEXT client cannot use). The test streams are produced and read back on the
PLAINTEXT listener of the same broker. A wrong password or an untrusted CA stops the
worker at once with one line naming the setting.
"""

from __future__ import annotations

import asyncio
import os
import random
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from evtime.services import ServicesConfig
from evtime.services.config import SecuredKafka
from tests.integration.kafka_helpers import (
    JOBS,
    ROOT,
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
from tests.integration.seed_helpers import (
    Pipeline,
    all_documents,
    assert_same_documents,
    count,
    dead_letters,
    delete_index,
    expected,
    generate,
    late_letters,
    produce_stream,
)
from tests.integration.test_kafka_security import make_other_ca

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

PARTITIONS = 4
SIZE = 10_000
OOO = 5_000
KILLS = 2
FAIL_WITHIN_S = 10.0


@pytest.fixture(scope="module")
def secured() -> SecuredKafka:
    listener = ServicesConfig.from_env().kafka_sasl()
    if not listener.password_file.is_file() or not listener.ca_file.is_file():
        pytest.fail(
            f"no SASL_SSL listener files in {listener.ca_file.parent}: run "
            "`evtime services down kafka` then `evtime services up kafka`",
            pytrace=False,
        )
    return listener


def secured_env(secured: SecuredKafka, **overrides: str) -> dict[str, str]:
    """The worker's Kafka settings for the SASL_SSL listener, as environment variables."""
    env = {
        "EVTIME_KAFKA_BOOTSTRAP": secured.bootstrap,
        "EVTIME_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
        "EVTIME_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
        "EVTIME_KAFKA_SASL_USERNAME": secured.username,
        "EVTIME_KAFKA_SASL_PASSWORD": secured.password(),
        "EVTIME_KAFKA_SSL_CA_FILE": str(secured.ca_file),
    }
    env.update(overrides)
    return env


@pytest.mark.parametrize("processing", ["at_least_once", "exactly_once"])
def test_window_job_through_sasl_ssl_survives_kill_9_with_the_reference_output(
    kafka_bootstrap: str,
    secured: SecuredKafka,
    unique_name: str,
    tmp_path: Path,
    processing: str,
) -> None:
    env = {**worker_env(unique_name, tmp_path), **secured_env(secured)}
    env["EVTIME_TEST_CHECKPOINT"] = "300ms"
    env["EVTIME_TEST_PROCESSING"] = processing
    records, per_partition = keyed_stream(40_000, seed=5, partitions=PARTITIONS)
    expected, _late = reference_counts(per_partition, SIZE, OOO)
    topics = {env["EVTIME_TEST_IN"]: PARTITIONS, env["EVTIME_TEST_OUT"]: 1}
    asyncio.run(create_topics(kafka_bootstrap, {**topics, env["EVTIME_TEST_DLQ"]: 1}))

    def feed() -> None:  # the input arrives while the worker runs and is killed
        for i in range(0, len(records), 2_000):
            batch = records[i : i + 2_000]
            asyncio.run(produce(kafka_bootstrap, env["EVTIME_TEST_IN"], PARTITIONS, batch))
            time.sleep(0.3)

    log_path = tmp_path / "worker.log"
    feeder = threading.Thread(target=feed)
    feeder.start()
    rng = random.Random(11)
    proc = start_worker("window_job.py", env, log_path)
    try:
        for _ in range(KILLS):
            time.sleep(rng.uniform(3.0, 5.0))
            assert proc.poll() is None, log_path.read_text()[-3000:]
            proc.kill()  # SIGKILL: no checkpoint, no goodbye to the group
            proc.wait()
            proc = start_worker("window_job.py", env, log_path)
    finally:
        feeder.join()
    isolation = "read_committed" if processing == "exactly_once" else "read_uncommitted"
    try:
        out = asyncio.run(
            consume_all(
                kafka_bootstrap,
                env["EVTIME_TEST_OUT"],
                expect=len(expected),
                timeout_s=120,
                isolation_level=isolation,
            )
        )
    finally:
        code = stop_worker(proc)
    log = log_path.read_text()
    try:
        assert code == 0, f"worker exited with {code}:\n{log[-3000:]}"
        duplicates = check_windows(decode_outputs(out), expected)
        if processing == "exactly_once":
            assert duplicates == 0
        assert "SaslAuthenticationFailed" not in log
    finally:
        delete_topics(kafka_bootstrap, unique_name)


def run_refused(env: dict[str, str], tmp_path: Path) -> tuple[int, float, list[str]]:
    """Start the worker with ``env``; its exit code, how long it took, its error lines."""
    log_path = tmp_path / "worker.log"
    began = time.monotonic()
    proc = start_worker("window_job.py", env, log_path)
    try:
        code = proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    took = time.monotonic() - began
    lines = log_path.read_text().splitlines()
    return code, took, [line for line in lines if " INFO " not in line]


def test_a_wrong_password_stops_the_worker_at_once_naming_the_setting(
    secured: SecuredKafka, unique_name: str, tmp_path: Path
) -> None:
    env = {
        **worker_env(unique_name, tmp_path),
        **secured_env(secured, EVTIME_KAFKA_SASL_PASSWORD="not-the-password"),
    }
    code, took, lines = run_refused(env, tmp_path)
    assert code == 2, lines
    assert took < FAIL_WITHIN_S, f"took {took:.1f} s: {lines}"
    assert lines == [
        f"evtime: Kafka authentication failed for user {secured.username!r} (SCRAM-SHA-512) "
        f"at {secured.bootstrap}: check kafka_sasl_password (EVTIME_KAFKA_SASL_PASSWORD) and "
        "kafka_sasl_username (EVTIME_KAFKA_SASL_USERNAME)"
    ]


def test_an_untrusted_certificate_stops_the_worker_at_once_naming_the_setting(
    secured: SecuredKafka, unique_name: str, tmp_path: Path
) -> None:
    other_ca = make_other_ca(tmp_path)
    env = {
        **worker_env(unique_name, tmp_path),
        **secured_env(secured, EVTIME_KAFKA_SSL_CA_FILE=str(other_ca)),
    }
    code, took, lines = run_refused(env, tmp_path)
    assert code == 2, lines
    assert took < FAIL_WITHIN_S, f"took {took:.1f} s: {lines}"
    assert len(lines) == 1, lines
    assert lines[0].startswith(
        f"evtime: the Kafka broker's certificate at {secured.bootstrap} is not trusted ("
    ), lines
    assert lines[0].endswith(
        f"set kafka_ssl_ca_file (EVTIME_KAFKA_SSL_CA_FILE) to the CA that signed it "
        f"(now {other_ca})"
    ), lines


class SecuredPipeline(Pipeline):
    """The seed pipeline whose worker reaches Kafka through the SASL_SSL listener (its
    ``--bootstrap`` the listener's address, TLS and SASL from the environment); the test's
    own clients (lag, dead letters) use the PLAINTEXT listener of the same broker."""

    def __init__(self, secured: SecuredKafka, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.env.update(secured_env(secured))
        self.secured_bootstrap = secured.bootstrap

    def start(self) -> subprocess.Popen[bytes]:
        plain, self.bootstrap = self.bootstrap, self.secured_bootstrap
        try:
            return super().start()
        finally:
            self.bootstrap = plain


@pytest.mark.opensearch
@pytest.mark.parametrize("processing", ["at_least_once", "exactly_once"])
def test_seed_join_through_sasl_ssl_survives_kill_9_with_the_reference_documents(
    kafka_bootstrap: str,
    opensearch_url: str,
    secured: SecuredKafka,
    unique_name: str,
    tmp_path: Path,
    processing: str,
) -> None:
    topic, index = f"{unique_name}-events", unique_name
    events = generate(10_000, seed=17)
    want, late = expected(events, topic)
    produce_stream(kafka_bootstrap, topic, events)
    pipeline = SecuredPipeline(
        secured, kafka_bootstrap, opensearch_url, unique_name, tmp_path, topic=topic, index=index
    )
    pipeline.env["EVTIME_PROCESSING"] = processing
    pipeline.start()
    try:
        deadline = time.monotonic() + 120
        while count(opensearch_url, index) < len(want) // 4:
            assert pipeline.alive(), f"the worker exited:\n{pipeline.log_tail()}"
            assert time.monotonic() < deadline, f"no progress:\n{pipeline.log_tail()}"
            time.sleep(0.2)
        pipeline.kill()
        pipeline.start()
        pipeline.wait_caught_up(len(want), timeout_s=240)
    finally:
        code = pipeline.stop()
    assert code == 0, pipeline.log_tail()
    try:
        assert_same_documents(all_documents(opensearch_url, index), want)
        assert late_letters(dead_letters(kafka_bootstrap, f"{topic}-dlq")) == late
    finally:
        delete_index(opensearch_url, index)
    delete_topics(kafka_bootstrap, unique_name)


def test_state_reset_reaches_the_group_through_sasl_ssl(
    kafka_bootstrap: str, secured: SecuredKafka, unique_name: str, tmp_path: Path
) -> None:
    env = {**worker_env(unique_name, tmp_path), **secured_env(secured)}
    asyncio.run(create_topics(kafka_bootstrap, {env["EVTIME_TEST_IN"]: 2}))
    try:
        done = subprocess.run(
            [sys.executable, "-m", "evtime.cli", "state", "reset",
             f"{JOBS / 'window_job.py'}:app", "--to", "earliest", "--dry-run"],
            env={**os.environ, **env, "PYTHONPATH": str(ROOT)},
            capture_output=True, text=True, timeout=120, cwd=str(ROOT),
        )  # fmt: skip
        assert done.returncode == 0, done.stderr[-3000:]
        assert f"1. would move group {unique_name!r} to earliest" in done.stdout
        assert f"{env['EVTIME_TEST_IN']}[1]: none -> 0" in done.stdout
    finally:
        delete_topics(kafka_bootstrap, unique_name)
