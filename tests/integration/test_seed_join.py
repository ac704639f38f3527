"""End to end, the seed pipeline: 100,000 A/B events, Kafka -> examples/seed_join.py -> OpenSearch.

The index must hold exactly the documents a brute-force model of the join computes
from the generated stream: same ids, same status, same content, no more, no fewer; the
dead-letter topic holds exactly the records the model finds late.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.integration.kafka_helpers import delete_topics
from tests.integration.seed_helpers import (
    Pipeline,
    all_documents,
    assert_same_documents,
    dead_letters,
    delete_index,
    expected,
    generate,
    late_letters,
    produce_stream,
)

pytestmark = [pytest.mark.kafka, pytest.mark.opensearch, pytest.mark.slow]


def test_seed_join_lands_exactly_the_reference_documents(
    kafka_bootstrap: str, opensearch_url: str, unique_name: str, tmp_path: Path
) -> None:
    topic = f"{unique_name}-events"
    index = unique_name
    events = generate(53_000, seed=5)
    assert len(events) >= 100_000
    want, late = expected(events, topic)
    assert late
    statuses = {d["status"] for d in want.values()}
    assert statuses == {"joined", "unmatched"}
    produce_stream(kafka_bootstrap, topic, events)

    pipeline = Pipeline(
        kafka_bootstrap, opensearch_url, unique_name, tmp_path, topic=topic, index=index
    )
    pipeline.start()
    try:
        pipeline.wait_caught_up(len(want), timeout_s=240)
    finally:
        code = pipeline.stop()
    assert code == 0, pipeline.log_tail()
    try:
        assert_same_documents(all_documents(opensearch_url, index), want)
        letters = dead_letters(kafka_bootstrap, f"{topic}-dlq")
        assert late_letters(letters) == late
        assert len(letters) == len(late), "dead letters other than the late records"
    finally:
        delete_index(opensearch_url, index)
    delete_topics(kafka_bootstrap, unique_name)  # kept when the test fails
