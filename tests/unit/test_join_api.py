"""The join's API: declaration errors, ``where``, the docstring example, ``JoinResult``."""

from __future__ import annotations

import doctest
from pathlib import Path
from typing import Any

import pytest

import evtime.app
from evtime import (
    App,
    ConfigError,
    Count,
    EmitKind,
    JoinKind,
    JoinResult,
    Tumbling,
)
from evtime.connectors.local import MemorySink, MemorySource

try:  # tests/unit is not a package: pytest puts this directory on sys.path
    from join_harness import is_a, is_b
except ImportError:  # pragma: no cover - if tests/unit becomes a package
    from .join_harness import is_a, is_b

# -- the API ---------------------------------------------------------------------------------------


def api_app(tmp_path: Path) -> tuple[App, Any]:
    app = App("api", state_dir=tmp_path, dead_letter=MemorySink())
    events = app.source("events", MemorySource("events"), key="id", timestamp="ts")
    return app, events


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({}, "needs its bounds"),
        ({"lower": 0}, "needs its bounds"),
        ({"within": "1m", "lower": 0, "upper": 5}, "either within= .* or lower= and upper="),
        ({"lower": "5s", "upper": "1s"}, "lower .* is after upper"),
        ({"within": "-1s"}, "within"),
        ({"within": "1m", "how": "cross"}, "how='cross'.*'inner', 'left', 'right' or 'outer'"),
        ({"within": "1m", "emit_unmatched_after": "15m"}, "emit_unmatched_after.*'left'"),
        ({"within": "1m", "how": "left", "emit_unmatched_after": "1x"}, "emit_unmatched_after"),
    ],
)
def test_bad_join_settings_are_config_errors(
    tmp_path: Path, kwargs: dict[str, Any], match: str
) -> None:
    app, events = api_app(tmp_path)
    with pytest.raises(ConfigError, match=match):
        app.join(events.where(is_a), events.where(is_b), name="j", **kwargs)(None)


def test_join_inputs_must_be_declared_and_where_is_for_joins(tmp_path: Path) -> None:
    app, events = api_app(tmp_path)
    with pytest.raises(ConfigError, match="'other' is not a declared source"):
        app.join(events, "other", within="1m")
    with pytest.raises(ConfigError, match=r"where\(\) filters join inputs only"):
        app.window(events.where(is_a), Tumbling("1m"), aggregate=Count())
    with pytest.raises(ConfigError, match="function of the value"):
        events.where("A")
    with pytest.raises(ConfigError, match="give the join a name"):
        app.join(events, events, within=1)(None)


def test_bytes_sources_cannot_be_joined(tmp_path: Path) -> None:
    app = App("api", state_dir=tmp_path, dead_letter=MemorySink())
    raw = app.source("raw", MemorySource("raw"), value_format="bytes")
    with pytest.raises(ConfigError, match=r"value_format='bytes'.*'json' or 'text'"):
        app.join(raw, raw, within="1m")


def test_where_filters_chain(tmp_path: Path) -> None:
    _, events = api_app(tmp_path)
    both = events.where(lambda v: v["a"]).where(lambda v: v["b"])
    assert both.topic == "events" and events.predicate is None
    assert both.predicate is not None
    assert both.predicate({"a": 1, "b": 1}) and not both.predicate({"a": 1, "b": 0})


def test_join_docstring_example_works(tmp_path: Path) -> None:
    tests = [
        t for t in doctest.DocTestFinder().find(evtime.app) if t.name == "evtime.app.App.join"
    ]
    assert tests and tests[0].examples, "App.join has an example"
    runner = doctest.DocTestRunner()
    for test in tests:
        test.globs["getfixture"] = lambda name: tmp_path
        runner.run(test)
    assert runner.summarize(verbose=False).failed == 0


def test_join_result_to_dict_and_timestamp() -> None:
    r = JoinResult(b"\xffk", {"a": 1}, None, JoinKind.UNMATCHED, EmitKind.EARLY, 5, None, "x")
    assert r.timestamp == 5 and not r.is_update
    assert r.to_dict() == {
        "key": "\ufffdk", "left": {"a": 1}, "right": None, "kind": "unmatched", "emit": "early",
        "left_ts": 5, "right_ts": None, "id": "x",
    }
    assert JoinResult("k", 1, 2, JoinKind.JOINED, EmitKind.UPDATE, 5, 9, "x").timestamp == 9
