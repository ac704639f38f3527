"""A real Prometheus (Debian's package) scrapes a real worker on the real broker, with the
scrape job of docker/prometheus/prometheus.yml: every query of the Grafana dashboard
(docker/grafana/dashboards/evtime.json) returns data, and the input it reports per topic
is exactly what was produced."""

from __future__ import annotations

import asyncio
import json
import math
import os
import re
import shutil
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml

from tests.integration.kafka_helpers import (
    ROOT,
    create_topics,
    delete_topics,
    free_port,
    http_get,
    keyed_stream,
    produce,
    reference_counts,
    scrape,
    start_worker,
    stop_worker,
    worker_env,
)

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

PARTITIONS = 4
SIZE = 10_000
OOO = 5_000
DASHBOARD = ROOT / "docker" / "grafana" / "dashboards" / "evtime.json"
PROMETHEUS_CONFIG = ROOT / "docker" / "prometheus" / "prometheus.yml"
# Long enough to hold the whole run: a rate over it covers every record of the test.
RANGE = "10m"


@pytest.fixture(scope="module")
def prometheus_binary() -> str:
    path = shutil.which("prometheus")
    if path is None:
        message = "no `prometheus` on PATH: `make deps` installs it (Debian package prometheus)"
        if os.environ.get("CI"):
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    return path


@pytest.fixture
def prometheus(
    prometheus_binary: str, tmp_path: Path
) -> Iterator[Callable[[int], str]]:
    """Starts Prometheus scraping a worker's port, on a free port of its own with its own
    storage (never the Debian service's 9090); yields the start function; stops it."""
    procs: list[subprocess.Popen[bytes]] = []

    def start(worker_port: int) -> str:
        config = yaml.safe_load(PROMETHEUS_CONFIG.read_text())
        config["global"]["scrape_interval"] = "1s"
        config["global"]["evaluation_interval"] = "1s"
        (job,) = config["scrape_configs"]
        job["static_configs"] = [{"targets": [f"127.0.0.1:{worker_port}"]}]
        config_path = tmp_path / "prometheus.yml"
        config_path.write_text(yaml.safe_dump(config))
        port = free_port()
        log = (tmp_path / "prometheus.log").open("ab")
        procs.append(subprocess.Popen(
            [prometheus_binary, f"--config.file={config_path}",
             f"--storage.tsdb.path={tmp_path / 'prometheus-data'}",
             f"--web.listen-address=127.0.0.1:{port}"],
            stdout=log, stderr=subprocess.STDOUT,
        ))
        url = f"http://127.0.0.1:{port}"
        _until("Prometheus ready", lambda: http_get(f"{url}/-/ready")[0] == 200, 60,
               tmp_path / "prometheus.log")
        return url

    yield start
    for proc in procs:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()








def _until(what: str, check: Callable[[], Any], timeout_s: float, log: Path) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            result = check()
        except (OSError, urllib.error.URLError):
            result = None  # not serving yet
        if result:
            return result
        if time.monotonic() > deadline:
            tail = log.read_text(errors="replace")[-3000:] if log.exists() else ""
            raise AssertionError(f"{what}: not within {timeout_s} s\n{tail}")
        time.sleep(0.3)


def _query(url: str, expr: str) -> list[dict[str, Any]]:
    """The instant vector of ``expr`` now (Prometheus' HTTP API)."""
    query = urllib.parse.urlencode({"query": expr})
    try:
        with urllib.request.urlopen(f"{url}/api/v1/query?{query}", timeout=10) as response:
            body = json.load(response)
    except urllib.error.HTTPError as exc:
        raise AssertionError(f"{expr}: {exc.code} {exc.read().decode()}") from None
    assert body["status"] == "success", (expr, body)
    assert body["data"]["resultType"] == "vector", expr
    result: list[dict[str, Any]] = body["data"]["result"]
    return result


def dashboard_queries(app: str) -> list[tuple[str, str]]:
    """(panel title, PromQL) of every target of the dashboard, its variables given values:
    ``$app`` this test's app, the interval variables a range that holds the whole run."""
    board = json.loads(DASHBOARD.read_text())
    assert re.fullmatch(r"[a-z0-9-]+", app)  # a regex that matches only itself
    values = {"app": app, "__rate_interval": RANGE, "__interval": "1s",
              "__range": RANGE}
    names = {v["name"] for v in board["templating"]["list"]}
    assert names <= set(values)

    def substitute(match: re.Match[str]) -> str:
        return values[match.group(1) or match.group(2)]

    out = []
    for panel in board["panels"]:
        for target in panel["targets"]:
            expr = re.sub(r"\$\{(\w+)\}|\$(\w+)", substitute, target["expr"])
            out.append((panel["title"], expr))
    return out


def test_prometheus_answers_every_dashboard_query(
    kafka_bootstrap: str,
    unique_name: str,
    tmp_path: Path,
    prometheus: Callable[[int], str],
) -> None:
    env = worker_env(unique_name, tmp_path)
    topic = env["EVTIME_TEST_IN"]
    records, per_partition = keyed_stream(20_000, seed=11, partitions=PARTITIONS)
    _, late = reference_counts(per_partition, SIZE, OOO)
    assert late > 0
    # Two halves, each with a record that does not decode and one without a timestamp:
    # every counter moves while Prometheus watches, so each rate of the dashboard has
    # two different samples in its range.
    half = len(records) // 2
    bad = [(0, b"u-bad", b"{not json"), (1, b"u-bad", orjson.dumps({"user": "u-bad"}))]
    halves = [records[:half] + bad, records[half:] + bad]
    produced = sum(len(h) for h in halves)
    asyncio.run(create_topics(
        kafka_bootstrap,
        {topic: PARTITIONS, env["EVTIME_TEST_OUT"]: 1, env["EVTIME_TEST_DLQ"]: 1},
    ))
    try:
        answers = _run_and_ask(kafka_bootstrap, env, tmp_path, prometheus, halves)
    finally:
        delete_topics(kafka_bootstrap, unique_name)
    # The input the dashboard reports: exactly the records produced, all on one topic.
    totals = [a for e, a in answers.items() if e.startswith("sum by (topic) (evtime_records_in")]
    assert totals == [{(("topic", topic),): float(produced)}]
    (rate,) = [a for e, a in answers.items() if "rate(evtime_records_in_total" in e]
    assert list(rate) == [(("topic", topic),)] and next(iter(rate.values())) > 0
    (dead,) = [a for e, a in answers.items() if "evtime_dead_letters_total" in e]
    assert {k[0][1] for k in dead} == {"decode", "timestamp", "late"}
    (flushes,) = [a for e, a in answers.items() if "evtime_sink_flush_seconds" in e]
    assert {k[0][1] for k in flushes} == {"counts/main", "dead-letters"}


Answers = dict[str, dict[tuple[tuple[str, str], ...], float]]


def _run_and_ask(
    kafka_bootstrap: str,
    env: dict[str, str],
    tmp_path: Path,
    prometheus: Callable[[int], str],
    halves: list[list[tuple[int, bytes | None, bytes]]],
) -> Answers:
    """Runs the worker under Prometheus, produces ``halves`` one after the other, and
    returns each dashboard query's answer once the worker has read everything."""
    app = env["EVTIME_TEST_APP"]
    topic = env["EVTIME_TEST_IN"]
    worker_port = free_port()
    log = tmp_path / "worker.log"
    proc = start_worker(
        "window_job.py", env, log,
        ["--metrics-port", str(worker_port), "--metrics-host", "127.0.0.1"],
    )
    try:
        url = prometheus(worker_port)
        _until("worker ready",
               lambda: http_get(f"http://127.0.0.1:{worker_port}/healthz")[0] == 200, 90, log)
        read_total = f'sum by (topic) (evtime_records_in_total{{app="{app}"}})'
        sinks = f'count by (sink) (evtime_sink_flush_seconds_count{{app="{app}"}})'

        def prometheus_read(n: int) -> Callable[[], bool]:
            """Prometheus has scraped ``n`` records read and a flush of both sinks."""
            def check() -> bool:
                result = _query(url, read_total)
                return (
                    [r["metric"]["topic"] for r in result] == [topic]
                    and float(result[0]["value"][1]) == n
                    and len(_query(url, sinks)) == 2
                )
            return check

        sent = 0
        for part in halves:
            asyncio.run(produce(kafka_bootstrap, topic, PARTITIONS, part))
            sent += len(part)
            _until(f"Prometheus sees {sent} records read", prometheus_read(sent), 120, log)

        def settled() -> bool:
            m = scrape(worker_port)
            lag = [v for _, v in m.get("evtime_consumer_lag", [])]
            sinks = {lb["sink"] for lb, _ in m.get("evtime_sink_flush_seconds_count", [])}
            return len(lag) == PARTITIONS and not any(lag) and len(sinks) == 2

        _until("no lag left, both sinks flushed", settled, 60, log)
        time.sleep(3)  # a few more scrapes of the final values
        target = _query(url, 'up{job="evtime"}')
        assert [float(t["value"][1]) for t in target] == [1.0]
        apps = _query(url, "count by (app) (evtime_tasks)")
        assert app in {a["metric"]["app"] for a in apps}  # the $app variable's values

        answers: Answers = {}
        for title, expr in dashboard_queries(app):
            result = _query(url, expr)
            assert result, f"{title}: {expr} returns no data"
            values = [float(r["value"][1]) for r in result]
            assert all(math.isfinite(v) for v in values), f"{title}: {expr} gives {values}"
            answers[expr] = {tuple(sorted(r["metric"].items())): v
                             for r, v in zip(result, values, strict=True)}
    finally:
        code = stop_worker(proc)
    assert code == 0, log.read_text()[-3000:]
    return answers
