"""Internal names (evtime/names.py): legal Kafka names for every topic group, and a
clear error, before anything is created, for a name Kafka would refuse."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from evtime import App, Count, Tumbling, WindowResult
from evtime.connectors.kafka import KafkaSource
from evtime.connectors.local import MemorySink
from evtime.errors import ConfigError
from evtime.names import (
    changelog_topic,
    check_internal_names,
    legal_part,
    repartition_topic,
    task_dir,
    transactional_id,
)
from evtime.runtime.worker import Worker

KAFKA_NAME = re.compile(r"[a-zA-Z0-9._-]{1,249}")
topic_names = st.from_regex(r"[a-zA-Z0-9._-]{1,40}", fullmatch=True).filter(
    lambda t: t not in (".", "..")
)


@given(app=topic_names, group=st.lists(topic_names, min_size=1, max_size=3, unique=True))
def test_every_internal_name_of_legal_topics_is_legal(app: str, group: list[str]) -> None:
    g = tuple(sorted(group))
    for name in (changelog_topic(app, g), transactional_id(app, g, 11)):
        assert KAFKA_NAME.fullmatch(name), name
    assert task_dir(Path("/s"), app, g, 3).parts[-3:] == (app, "-".join(g), "3")


def test_a_two_topic_group_gets_a_legal_changelog_topic() -> None:
    # The join of two topics once got '<app>-a+b-changelog', which Kafka refuses.
    assert changelog_topic("app", ("orders", "payments")) == "app-orders-payments-changelog"


def test_parts_derived_from_code_are_made_legal() -> None:
    assert legal_part("<lambda>") == "lambda"
    assert KAFKA_NAME.fullmatch(repartition_topic("app", f"t-by-{legal_part('a b/c')}"))


def test_an_illegal_app_name_is_refused_naming_what_to_change() -> None:
    with pytest.raises(ConfigError, match=r"app name 'my app' is not a legal Kafka name.*' '"):
        check_internal_names("my app", [("t",)])


def test_a_name_past_kafkas_length_limit_is_refused() -> None:
    with pytest.raises(ConfigError, match="at most 249"):
        check_internal_names("a", [("t" * 240,)])


def test_topic_groups_with_one_internal_name_are_refused() -> None:
    with pytest.raises(ConfigError, match="both get the internal name 'a-b'"):
        check_internal_names("app", [("a", "b"), ("a-b",)])


def test_an_illegal_repartition_name_is_refused() -> None:
    with pytest.raises(ConfigError, match="repartition topic 'app-by user-repartition'"):
        check_internal_names("app", [("t",)], ["by user"])


def test_the_worker_checks_names_before_it_creates_anything(tmp_path: Path) -> None:
    app = App("orders app", state_dir=tmp_path)
    orders = app.source(
        "orders", KafkaSource("orders", bootstrap="127.0.0.1:1"), key="k", timestamp="ts"
    )

    @app.window(orders, Tumbling("10s"), aggregate=Count(), sink=MemorySink())
    def counts(result: WindowResult) -> int:
        return int(result.value)

    with pytest.raises(ConfigError, match="app name 'orders app'"):
        Worker(app.plan, handle_signals=False)


def test_a_lambda_key_repartition_gets_a_legal_topic(tmp_path: Path) -> None:
    app = App("a", state_dir=tmp_path)
    source = app.source(
        "clicks", KafkaSource("clicks", bootstrap="127.0.0.1:1"), key="k", timestamp="ts"
    )
    by_user = app.repartition(source, key=lambda v: v["user"])
    assert by_user.topic == "a-clicks-by-lambda-repartition"
