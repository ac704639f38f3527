"""A 10 s tumbling-window count by user over a topic NOT keyed by user (records produced
without a key), repartitioned by user first; configured by env (for worker tests)."""

from __future__ import annotations

import os

from connectors.kafka import KafkaDeadLetterSink, KafkaSink, KafkaSource
from evtime import App, Count, Tumbling, WindowResult

app = App(
    os.environ["EVTIME_TEST_APP"],
    state_dir=os.environ["EVTIME_STATE_DIR"],
    checkpoint_interval=os.environ.get("EVTIME_TEST_CHECKPOINT", "500ms"),
    dead_letter=KafkaDeadLetterSink(os.environ["EVTIME_TEST_DLQ"]),
    processing=os.environ.get("EVTIME_TEST_PROCESSING", "at_least_once"),
)
events = app.source(
    os.environ["EVTIME_TEST_IN"],
    KafkaSource(os.environ["EVTIME_TEST_IN"]),
    timestamp="ts",
    max_out_of_orderness="5s",
)
by_user = app.repartition(events, key="user", name="by-user", partitions=3)


@app.window(
    by_user, Tumbling("10s"), aggregate=Count(), sink=KafkaSink(os.environ["EVTIME_TEST_OUT"])
)
def counts(result: WindowResult) -> dict[str, object]:
    return {"user": result.key, "start": result.start, "count": result.value}
