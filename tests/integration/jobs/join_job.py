"""An interval join of two Kafka topics (A rows on one, B rows on the other, keyed by
``id``) to a Kafka topic, configured by env (for worker tests)."""

from __future__ import annotations

import os

from evtime import App, JoinResult
from evtime.connectors.kafka import KafkaDeadLetterSink, KafkaSink, KafkaSource

LEFT = os.environ["EVTIME_TEST_LEFT"]
RIGHT = os.environ["EVTIME_TEST_RIGHT"]

app = App(
    os.environ["EVTIME_TEST_APP"],
    state_dir=os.environ["EVTIME_STATE_DIR"],
    checkpoint_interval=os.environ.get("EVTIME_TEST_CHECKPOINT", "500ms"),
    dead_letter=KafkaDeadLetterSink(os.environ["EVTIME_TEST_DLQ"]),
    processing=os.environ.get("EVTIME_TEST_PROCESSING", "at_least_once"),
)
lefts = app.source(
    LEFT, KafkaSource(LEFT), key="id", timestamp="ts", max_out_of_orderness="2s"
)
rights = app.source(
    RIGHT, KafkaSource(RIGHT), key="id", timestamp="ts", max_out_of_orderness="2s"
)


@app.join(
    lefts,
    rights,
    within=os.environ.get("EVTIME_TEST_WITHIN", "2h"),
    how=os.environ.get("EVTIME_TEST_HOW", "inner"),
    emit_unmatched_after=os.environ.get("EVTIME_TEST_UNMATCHED_AFTER") or None,
    sink=KafkaSink(os.environ["EVTIME_TEST_OUT"]),
)
def pairs(result: JoinResult) -> dict[str, object]:
    return {
        "id": result.key,
        "kind": result.kind.value,
        "emit": result.emit.value,
        "left_ts": result.left_ts,
        "right_ts": result.right_ts,
    }
