"""docker/compose.yaml cannot run here (no Docker engine): keep it valid and consistent."""

from __future__ import annotations

from pathlib import Path

import yaml

from evtime.cli import build_parser

ROOT = Path(__file__).resolve().parents[2]


def load() -> dict:  # type: ignore[type-arg]
    return yaml.safe_load((ROOT / "docker" / "compose.yaml").read_text())


def test_compose_declares_kafka_elasticsearch_and_a_worker() -> None:
    services = load()["services"]
    assert set(services) == {"kafka", "elasticsearch", "worker"}
    kafka = services["kafka"]
    assert kafka["image"].startswith("apache/kafka:4.")
    assert kafka["environment"]["KAFKA_PROCESS_ROLES"] == "broker,controller"
    assert kafka["environment"]["KAFKA_TRANSACTION_STATE_LOG_MIN_ISR"] == "1"
    assert "9092:9092" in kafka["ports"]
    es = services["elasticsearch"]
    assert es["image"].startswith("docker.elastic.co/elasticsearch/elasticsearch:8.")
    assert es["environment"]["discovery.type"] == "single-node"
    assert "9200:9200" in es["ports"]


def test_worker_is_built_from_the_dockerfile_and_runs_an_evtime_command() -> None:
    worker = load()["services"]["worker"]
    dockerfile = ROOT / "docker" / worker["build"]["dockerfile"].removeprefix("docker/")
    assert dockerfile.is_file()
    command = worker["command"]
    assert command[0] == "evtime"
    # The command parses with the real CLI parser (a renamed subcommand breaks this test).
    args = build_parser().parse_args(command[1:])
    assert args.command == command[1]
    if args.command in ("run", "worker"):  # a job file the image copies
        assert (ROOT / args.app.split(":")[0]).is_file()
    assert set(worker["depends_on"]) == {"kafka", "elasticsearch"}


def test_dockerfile_copies_what_the_package_needs() -> None:
    text = (ROOT / "docker" / "Dockerfile").read_text()
    for part in ("pyproject.toml", "evtime", "connectors", "pip install"):
        assert part in text


def test_worker_serves_metrics_and_its_healthcheck_asks_for_liveness() -> None:
    worker = load()["services"]["worker"]
    port = worker["environment"]["EVTIME_METRICS_PORT"]
    assert f"{port}:{port}" in worker["ports"]
    probe = " ".join(worker["healthcheck"]["test"])
    assert f"127.0.0.1:{port}/healthz/live" in probe
