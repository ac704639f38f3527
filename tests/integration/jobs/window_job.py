"""A keyed 10 s tumbling-window count from Kafka to Kafka, configured by env (for worker tests).

With ``EVTIME_TEST_REPARTITION`` set, the input topic is taken as not keyed by user (its
records may have no key) and goes through ``app.repartition`` by user first.
"""

from __future__ import annotations

import os

from evtime import App, Count, Tumbling, WindowResult
from evtime.connectors.kafka import KafkaDeadLetterSink, KafkaSink, KafkaSource

REPARTITION = bool(os.environ.get("EVTIME_TEST_REPARTITION"))

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
    key=None if REPARTITION else "user",
    timestamp="ts",
    max_out_of_orderness="5s",
)
if REPARTITION:
    events = app.repartition(events, key="user", name="by-user", partitions=3)


@app.window(
    events, Tumbling("10s"), aggregate=Count(), sink=KafkaSink(os.environ["EVTIME_TEST_OUT"])
)
def counts(result: WindowResult) -> dict[str, object]:
    return {"user": result.key, "start": result.start, "count": result.value}
