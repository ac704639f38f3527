"""Clicks per user per minute, from one Kafka topic to another, exactly once.

    evtime services up                                   # a local Kafka, or give your own:
    export EVTIME_KAFKA_BOOTSTRAP=127.0.0.1:9092
    evtime worker examples/kafka_window.py:app --metrics-port 9464
    evtime worker examples/kafka_window.py:app -p 2       # two processes on this machine

Input: the topic ``clicks`` (``EVTIME_CLICKS_TOPIC``), JSON values
``{"user": ..., "page": ..., "ts": <epoch ms or ISO time>}`` keyed by user (the
Kafka key must be the user: state is kept per partition). Output: the topic
``clicks-per-minute`` (``EVTIME_COUNTS_TOPIC``), one JSON record per user and
minute, keyed by user, with the result's id in the ``evtime-id`` header; a
record up to 1 minute late re-emits its minute as an ``update``. Bad records
go to ``clicks-dlq``, with the reason in the headers. The app, and so its
consumer group, is ``clicks-per-minute`` (``EVTIME_APP_NAME``).

Under ``exactly_once`` the outputs, dead letters, state changes and input
offsets of each checkpoint commit in one Kafka transaction: read the output
with ``isolation.level=read_committed`` to see every result exactly once.
The output records carry their window's event time as timestamp: give the
output topic a retention that fits old event times (docs/operations.md).
"""

from __future__ import annotations

import os

from evtime import App, Count, Tumbling, WindowResult
from evtime.connectors.kafka import KafkaDeadLetterSink, KafkaSink, KafkaSource

CLICKS = os.environ.get("EVTIME_CLICKS_TOPIC", "clicks")
COUNTS = os.environ.get("EVTIME_COUNTS_TOPIC", "clicks-per-minute")

app = App(
    os.environ.get("EVTIME_APP_NAME", "clicks-per-minute"),  # the consumer group's name
    state_dir="./state",
    processing="exactly_once",
    dead_letter=KafkaDeadLetterSink(f"{CLICKS}-dlq"),
)
clicks = app.source(
    CLICKS,
    KafkaSource(CLICKS),
    key="user",
    timestamp="ts",
    max_out_of_orderness="5s",
    idle_timeout="30s",  # a partition silent this long stops holding the watermark back
)


@app.window(clicks, Tumbling("1m"), aggregate=Count(), allowed_lateness="1m",
            sink=KafkaSink(COUNTS))
def clicks_per_minute(result: WindowResult) -> dict[str, object]:
    return {"user": result.key, "minute": result.start, "clicks": result.value,
            "kind": result.kind.value}
