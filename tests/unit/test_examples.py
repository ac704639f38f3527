"""Every script in examples/ imports and declares a valid app; the embedded ones run on
their small inputs and print what their docstrings say."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import orjson
import pytest

from evtime import App
from evtime.cli import load_app
from evtime.describe import describe_plan

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
SCRIPTS = sorted(p.name for p in EXAMPLES.glob("*.py"))


def _load(name: str, monkeypatch: pytest.MonkeyPatch, state: Path) -> App:
    monkeypatch.chdir(EXAMPLES)  # first_app.py reads orders.jsonl where it runs
    monkeypatch.delenv("EVTIME_INPUT", raising=False)
    app = load_app(f"{EXAMPLES / name}:app")
    assert isinstance(app, App)
    app.use_state_dir(state)
    return app


def _run(app: App, capsys: pytest.CaptureFixture[str]) -> list[dict[str, Any]]:
    capsys.readouterr()
    asyncio.run(app.runner().run())
    for spec in app.plan.sources.values():
        spec.connector.close()  # the runner leaves the JSON-lines files open
    return [orjson.loads(line)["value"] for line in capsys.readouterr().out.splitlines()]


def test_the_examples_are_the_ones_tested_here() -> None:
    assert SCRIPTS == [
        "abandoned_carts.py", "first_app.py", "kafka_window.py", "page_views.py",
        "seed_join.py", "sessions.py",
    ]


@pytest.mark.parametrize("name", SCRIPTS)
def test_example_declares_a_valid_app(
    name: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    app = _load(name, monkeypatch, tmp_path)
    app.plan.validate()
    desc = describe_plan(app.plan)
    assert desc["sources"] and desc["operators"]


def test_kafka_window_runs_on_kafka_exactly_once(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    app = _load("kafka_window.py", monkeypatch, tmp_path)
    assert app.on_kafka
    desc = describe_plan(app.plan, {"clicks": 4})
    assert [t["topic"] for t in desc["internal_topics"]] == [
        "clicks-per-minute-clicks-changelog"
    ]
    assert len(desc["transactional_ids"]) == 4


def test_first_app_sums_per_user_and_minute_and_updates_late_records(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = _run(_load("first_app.py", monkeypatch, tmp_path), capsys)
    assert [(o["user"], o["minute"], o["total"], o["kind"]) for o in out] == [
        ("ann", "09:00", 20, "final"),
        ("bob", "09:00", 30, "final"),
        ("ann", "09:00", 24, "update"),
        ("ann", "09:01", 5, "final"),
        ("bob", "09:01", 7, "final"),
        ("bob", "09:02", 1, "final"),
    ]


def test_abandoned_carts_alerts_only_carts_not_checked_out_in_time(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = _run(_load("abandoned_carts.py", monkeypatch, tmp_path), capsys)
    # ann checked out her first cart; cy checked out after 11 min; bob never did, nor
    # did ann her second cart (the timer fires once the input's end passes it).
    assert out == [
        {"user": "bob", "abandoned_cart_of": "09:02"},
        {"user": "ann", "abandoned_cart_of": "09:12"},
    ]


def test_sessions_cover_every_click_once(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = _run(_load("sessions.py", monkeypatch, tmp_path), capsys)
    clicks = (EXAMPLES / "clicks.jsonl").read_text().splitlines()
    assert sum(o["clicks"] for o in out) == len(clicks)
    assert {o["user"] for o in out} == {"ann", "bob", "cy"}
    assert len(out) == 6


def test_page_views_count_every_click(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = _run(_load("page_views.py", monkeypatch, tmp_path), capsys)
    assert sum(o["views"] for o in out if o["kind"] == "final") == 40


def test_a_second_run_resumes_from_the_state_and_prints_nothing_new(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _run(_load("first_app.py", monkeypatch, tmp_path), capsys)
    assert _run(_load("first_app.py", monkeypatch, tmp_path), capsys) == []
