"""The seed pipeline (Kafka -> examples/seed_join.py -> OpenSearch) under faults.

Each test runs the pipeline as a worker process on a generated A/B stream and checks
the index against the brute-force model of the join (``tests/integration/seed_helpers``):
same ids, same status, same content, no more, no fewer.

* kill -9 of the worker at random moments, each time restarted on the same state dir
  and instance id: replays are upserts by join key, so nothing is lost or left stale;
* OpenSearch stopped for 30 s mid-run and started again on its data: the sink retries
  and holds the worker back (backpressure) instead of failing or dropping documents;
* an index whose mapping rejects some documents: exactly those go to the dead-letter
  topic, with the cluster's reason, and every other document is indexed.

The outage test stops and restarts the OpenSearch node of `evtime services` (started
with the same EVTIME_* settings as the test); it leaves the node running whatever happens.
"""

from __future__ import annotations

import os
import random
import re
import time
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from evtime import services
from evtime.services import ServicesConfig
from tests.integration.kafka_helpers import delete_topics
from tests.integration.seed_helpers import (
    Pipeline,
    all_documents,
    assert_same_documents,
    bad_keys,
    count,
    dead_letters,
    delete_index,
    expected,
    generate,
    headers,
    http,
    late_letters,
    produce_stream,
)

pytestmark = [pytest.mark.kafka, pytest.mark.opensearch, pytest.mark.slow]

KILLS = 5
# How long OpenSearch stays down, on top of its stop and its start (~5-20 s).
DOWN_S = 30.0


def _check_letters(bootstrap: str, topic: str, late: set[str]) -> None:
    """The dead-letter topic holds the late records and nothing else (replays may repeat
    a letter)."""
    letters = dead_letters(bootstrap, f"{topic}-dlq")
    reasons = {headers(r)["evtime-reason"] for r in letters}
    assert reasons <= {"late"}, f"dead letters other than late records: {reasons}"
    assert late_letters(letters) == late


def test_seed_join_killed_five_times_lands_exactly_the_reference_documents(
    kafka_bootstrap: str, opensearch_url: str, unique_name: str, tmp_path: Path
) -> None:
    topic, index = f"{unique_name}-events", unique_name
    events = generate(40_000, seed=11)
    assert len(events) >= 75_000
    want, late = expected(events, topic)
    produce_stream(kafka_bootstrap, topic, events)
    seed = int(os.environ.get("EVTIME_TEST_SEED") or random.randrange(2**32))
    print(f"kill moments from EVTIME_TEST_SEED={seed} (set it to replay them)")
    rng = random.Random(seed)
    # Four kills when the index reaches a random share of the reference, plus a little;
    # one a random moment after a restart (startup, restore, group join).
    thresholds: list[float | None] = [
        *sorted(rng.uniform(0.05, 0.8) * len(want) for _ in range(KILLS - 1))
    ]
    thresholds.insert(rng.randrange(1, KILLS), None)
    pipeline = Pipeline(
        kafka_bootstrap, opensearch_url, unique_name, tmp_path, topic=topic, index=index
    )
    kills: list[str] = []
    try:
        for threshold in thresholds:
            started = time.monotonic()
            pipeline.start()
            if threshold is None:
                time.sleep(rng.uniform(0.5, 4.0))
            else:
                deadline = started + 120
                while count(opensearch_url, index) < threshold:
                    assert pipeline.alive(), f"the worker exited:\n{pipeline.log_tail()}"
                    assert time.monotonic() < deadline, (
                        f"{count(opensearch_url, index)} documents after 120 s, waiting "
                        f"for {threshold:.0f} (EVTIME_TEST_SEED={seed}):\n{pipeline.log_tail()}"
                    )
                    time.sleep(0.2)
                time.sleep(rng.uniform(0, 0.3))
            assert pipeline.alive(), f"the worker exited:\n{pipeline.log_tail()}"
            pipeline.kill()
            kills.append(f"{count(opensearch_url, index)} docs")
        pipeline.start()
        pipeline.wait_caught_up(len(want), timeout_s=180)
    finally:
        code = pipeline.stop()
    assert code == 0, pipeline.log_tail()
    restarts = pipeline.log_path.read_text().count("stopped after")
    assert restarts == 1, f"only the last run stops cleanly, not {restarts}"
    try:
        assert_same_documents(all_documents(opensearch_url, index), want)
        _check_letters(kafka_bootstrap, topic, late)
    finally:
        delete_index(opensearch_url, index)
    delete_topics(kafka_bootstrap, unique_name)  # kept when the test fails
    print(f"{len(events)} events, {len(want)} documents; killed at {kills}")


# -- OpenSearch outage -----------------------------------------------------------------------
@pytest.fixture
def restartable_opensearch(opensearch_url: str) -> Iterator[str]:
    """The URL of the `evtime services` OpenSearch node, running and healthy after the test."""
    config = ServicesConfig.from_env()
    if opensearch_url != config.opensearch_url or services.status(["opensearch"]) != 0:
        pytest.fail(
            f"the OpenSearch node at {opensearch_url} is not one that `evtime services` "
            f"started and runs (at {config.opensearch_url}); this test restarts it: run "
            "`evtime services up opensearch` with the same EVTIME_* settings",
            pytrace=False,
        )
    try:
        yield opensearch_url
    finally:
        if services.status(["opensearch"]) != 0:
            services.restart(["opensearch"])  # on its data: others share the node


# The outage as the log tells it: one warning when it begins, one when it ends.
_OUTAGE_BEGAN = re.compile(
    r"WARNING evtime\.outage: Elasticsearch \S+ unreachable \((.*)\); _bulk to \S+, retry "
    r"\d+ in [\d.]+ s, (\d+) documents waiting"
)
_OUTAGE_ENDED = re.compile(
    r"WARNING evtime\.outage: Elasticsearch \S+ reachable again after ([\d.]+) s "
    r"\((\d+) failed attempts"
)


def test_seed_join_waits_out_a_30s_opensearch_outage_and_loses_nothing(
    kafka_bootstrap: str, restartable_opensearch: str, unique_name: str, tmp_path: Path
) -> None:
    es = restartable_opensearch
    topic, index = f"{unique_name}-events", unique_name
    events = generate(25_000, seed=13)
    want, late = expected(events, topic)
    produce_stream(kafka_bootstrap, topic, events)
    pipeline = Pipeline(kafka_bootstrap, es, unique_name, tmp_path, topic=topic, index=index)
    try:
        pipeline.start()
        deadline = time.monotonic() + 120
        while count(es, index) < len(want) // 5:
            assert pipeline.alive(), f"the worker exited:\n{pipeline.log_tail()}"
            assert time.monotonic() < deadline, f"no progress:\n{pipeline.log_tail()}"
            time.sleep(0.2)
        stopping = time.monotonic()
        services.down(["opensearch"])
        stopped = time.monotonic()
        time.sleep(DOWN_S)
        assert pipeline.alive(), f"the worker died during the outage:\n{pipeline.log_tail()}"
        services.restart(["opensearch"])
        back = time.monotonic()
        pipeline.wait_caught_up(len(want), timeout_s=180)
    finally:
        code = pipeline.stop()
    assert code == 0, pipeline.log_tail()
    log = pipeline.log_path.read_text(errors="replace")
    # It waited: its requests failed and were retried through the whole outage, with
    # documents held back, and the worker went on afterwards (nothing dropped: below).
    began, ended = _OUTAGE_BEGAN.findall(log), _OUTAGE_ENDED.findall(log)
    assert len(began) == 1, f"not one outage begun in the log:\n{pipeline.log_tail()}"
    assert len(ended) == 1, f"not one outage ended in the log:\n{pipeline.log_tail()}"
    assert int(began[0][1]) > 0  # documents were held back
    retried_for, retries = float(ended[0][0]), int(ended[0][1])
    assert retried_for >= DOWN_S, f"the outage lasted only {retried_for:.1f} s"
    assert retries > 1
    assert "SinkError" not in log and "REJECTED" not in log
    try:
        assert_same_documents(all_documents(es, index), want)
        _check_letters(kafka_bootstrap, topic, late)
    finally:
        delete_index(es, index)
    delete_topics(kafka_bootstrap, unique_name)  # kept when the test fails
    print(
        f"{len(events)} events, {len(want)} documents; OpenSearch stopped in "
        f"{stopped - stopping:.1f} s, down {back - stopped:.1f} s (with its restart); "
        f"{retries} retried requests over {retried_for:.1f} s"
    )


# -- mapping rejections ----------------------------------------------------------------------
def test_seed_join_documents_the_mapping_rejects_go_to_the_dead_letter_topic(
    kafka_bootstrap: str, opensearch_url: str, unique_name: str, tmp_path: Path
) -> None:
    topic, index = f"{unique_name}-events", unique_name
    events = generate(10_000, seed=17, bad_every=50)
    want, late = expected(events, topic)
    bad = bad_keys(events) & set(want)
    assert 150 <= len(bad) <= 250
    good = {k: d for k, d in want.items() if k not in bad}
    # ``n`` is an integer: a document whose A or B event carries "bad-<i>" there is refused.
    number = {"properties": {"n": {"type": "integer"}}}
    http(
        "PUT",
        f"{opensearch_url}/{index}",
        {"mappings": {"properties": {"a": number, "b": number}}},
    )
    produce_stream(kafka_bootstrap, topic, events)
    pipeline = Pipeline(
        kafka_bootstrap, opensearch_url, unique_name, tmp_path, topic=topic, index=index
    )
    try:
        pipeline.start()
        pipeline.wait_caught_up(len(good), timeout_s=120)
    finally:
        code = pipeline.stop()
    assert code == 0, pipeline.log_tail()
    try:
        assert_same_documents(all_documents(opensearch_url, index), good)
        letters = dead_letters(kafka_bootstrap, f"{topic}-dlq")
        rejected = [r for r in letters if headers(r)["evtime-reason"] == "sink"]
        assert late_letters(letters) == late
        assert len(rejected) + len(late) == len(letters)
        # Every rejected document is a bad key's, with the cluster's reason and the index;
        # the last one of each bad key is its reference document.
        last: dict[str, dict[str, object]] = {}
        for r in rejected:
            h = headers(r)
            assert h["evtime-topic"] == index
            assert "mapper_parsing_exception" in h["evtime-error"], h["evtime-error"]
            key = r.key.decode()
            assert key in bad, f"a good document was rejected: {key}: {h['evtime-error']}"
            last[key] = orjson.loads(r.value)
        assert set(last) == bad
        assert_same_documents(last, {k: want[k] for k in bad})
    finally:
        delete_index(opensearch_url, index)
    delete_topics(kafka_bootstrap, unique_name)  # kept when the test fails
    print(f"{len(good)} documents indexed, {len(bad)} keys' documents dead-lettered")
