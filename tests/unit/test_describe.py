"""``evtime describe``: the job as the worker will run it, named by the functions the
worker names things with."""

from __future__ import annotations

import json
from pathlib import Path

from evtime import App, Count, JoinResult, Tumbling, WindowResult
from evtime.connectors.kafka import KafkaDeadLetterSink, KafkaSink, KafkaSource
from evtime.describe import describe_plan, render
from evtime.names import changelog_topic, transactional_id


def _app(tmp_path: Path, processing: str) -> App:
    app = App("shop", state_dir=tmp_path, processing=processing,
              dead_letter=KafkaDeadLetterSink("shop-dlq"))
    boot = "127.0.0.1:1"
    orders = app.source("orders", KafkaSource("orders", boot), key="user", timestamp="ts",
                        max_out_of_orderness="5s", idle_timeout="30s", advance_when_idle=True)
    payments = app.source("payments", KafkaSource("payments", boot), key="user",
                          timestamp="ts")
    clicks = app.source("clicks", KafkaSource("clicks", boot), timestamp="ts")
    by_user = app.repartition(clicks, key="user", name="by-user", partitions=6)

    @app.join(orders, payments, within="1h", how="left", emit_unmatched_after="15m",
              sink=KafkaSink("paid"))
    def paid(result: JoinResult) -> object:
        return result.to_dict()

    @app.window(by_user, Tumbling("10s"), aggregate=Count(), sink=KafkaSink("counts"))
    def counts(result: WindowResult) -> object:
        return result.value

    return app


def test_describe_lists_sources_operators_and_every_internal_name(tmp_path: Path) -> None:
    app = _app(tmp_path, "exactly_once")
    desc = describe_plan(app.plan, {"orders": 3, "payments": 3, "clicks": 2})
    json.dumps(desc)  # JSON-ready for --json
    assert desc["consumer_group"] == "shop"
    orders = next(s for s in desc["sources"] if s["topic"] == "orders")
    assert orders["key"] == "field 'user'" and orders["idle_timeout"] == "30s"
    assert orders["advance_when_idle"] is True
    join = next(op for op in desc["operators"] if op["kind"] == "join")
    assert join["bounds"] == "a.ts - 1h <= b.ts <= a.ts + 1h"
    assert join["emit_unmatched_after"] == "15m"
    topics = {t["topic"]: t for t in desc["internal_topics"]}
    changelog = changelog_topic("shop", ("orders", "payments"))
    assert topics[changelog]["partitions"] == 3
    assert topics[changelog]["configs"]["cleanup.policy"] == "compact"
    assert topics["shop-by-user-repartition"]["partitions"] == 6
    assert transactional_id("shop", ("orders", "payments"), 2) in desc["transactional_ids"]
    text = render(desc)
    assert changelog in text and "shop-by-user-repartition" in text
    assert "orders (3 partitions, Kafka topic 'orders' at 127.0.0.1:1, PLAINTEXT)" in text
    assert "output paid/main -> Kafka topic 'paid' at " in text
    assert "dead letters -> Kafka topic 'shop-dlq'" in text
    assert "transactional ids:" in text


def test_at_least_once_has_no_transactional_ids_and_unknown_counts_are_named(
    tmp_path: Path,
) -> None:
    desc = describe_plan(_app(tmp_path, "at_least_once").plan)
    assert desc["transactional_ids"] == []
    for topic in desc["internal_topics"]:
        if topic["kind"] == "changelog":
            assert topic["partitions"] == f"as {topic['of'][0]!r}"
