"""docker/ cannot run here (no Docker engine): keep compose, the Dockerfile, Prometheus
and Grafana valid and consistent with each other, with the CLI and with the metrics."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tomllib
from importlib.metadata import distribution
from pathlib import Path
from typing import Any

import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from evtime.cli import build_parser

ROOT = Path(__file__).resolve().parents[2]
DOCKER = ROOT / "docker"
WORKERS = ("worker-1", "worker-2")


def load() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((DOCKER / "compose.yaml").read_text())
    return data


def services() -> dict[str, Any]:
    result: dict[str, Any] = load()["services"]
    return result


def dockerfile() -> str:
    return (DOCKER / "Dockerfile").read_text()


def dashboard() -> dict[str, Any]:
    path = DOCKER / "grafana" / "dashboards" / "evtime.json"
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def mounts(service: dict[str, Any]) -> dict[str, Path]:
    """A service's bind mounts: container path -> host path (relative to docker/)."""
    out = {}
    for volume in service.get("volumes", []):
        source, target = volume.split(":")[:2]
        if source.startswith("."):
            out[target] = (DOCKER / source).resolve()
    return out


def worker_help() -> str:
    result = subprocess.run(
        [sys.executable, "-m", "evtime.cli", "worker", "--help"],
        capture_output=True, text=True, check=True, cwd=ROOT,
    )
    return result.stdout


def test_compose_declares_the_services_of_the_stack() -> None:
    svc = services()
    assert set(svc) == {
        "kafka", "elasticsearch", "topics", *WORKERS, "prometheus", "grafana"
    }
    kafka = svc["kafka"]
    assert kafka["image"].startswith("apache/kafka:4.")
    assert kafka["environment"]["KAFKA_PROCESS_ROLES"] == "broker,controller"
    assert kafka["environment"]["KAFKA_TRANSACTION_STATE_LOG_MIN_ISR"] == "1"
    assert "9092:9092" in kafka["ports"]
    es = svc["elasticsearch"]
    assert es["image"].startswith("docker.elastic.co/elasticsearch/elasticsearch:8.")
    assert es["environment"]["discovery.type"] == "single-node"
    assert "9200:9200" in es["ports"]
    # The seed pipeline's source topic exists before a worker starts (else it refuses to).
    assert svc["topics"]["image"] == kafka["image"]
    assert "events:4" in svc["topics"]["command"][-1]


def test_workers_run_the_seed_pipeline_with_the_real_cli() -> None:
    svc = services()
    parser = build_parser()
    help_text = worker_help()
    seed_source = (ROOT / "examples" / "seed_join.py").read_text()
    for name in WORKERS:
        worker = svc[name]
        assert (DOCKER / worker["build"]["dockerfile"].removeprefix("docker/")).is_file()
        assert worker["build"]["context"] == ".."
        command = worker["command"]
        assert command[0] == "evtime"
        # The command parses with the real CLI parser (a renamed subcommand or flag breaks
        # this test), and each flag it gives is one `evtime worker --help` shows.
        args = parser.parse_args(command[1:])
        assert args.command == command[1] == "worker"
        for flag in (a.split("=")[0] for a in command[2:] if a.startswith("--")):
            assert flag in help_text, f"{name}: {flag} is not an option of evtime worker"
        module, _, attr = args.app.partition(":")
        assert module == "evtime.demos.seed_join" and attr == "app"  # installed by the wheel
        assert worker["restart"] in ("unless-stopped", "always", "on-failure")
        assert worker["depends_on"]["topics"]["condition"] == "service_completed_successfully"
        assert worker["depends_on"]["elasticsearch"]["condition"] == "service_healthy"
        # Every EVTIME_* variable is one the CLI or the seed pipeline reads.
        for var in worker["environment"]:
            if var.startswith("EVTIME_"):
                assert var in help_text or f'"{var}"' in seed_source, var
    envs = [svc[n]["environment"] for n in WORKERS]
    # One consumer group (the app's name), two static members, two state volumes.
    assert len({e["EVTIME_INSTANCE_ID"] for e in envs}) == len(WORKERS)
    assert len({svc[n]["volumes"][0].split(":")[0] for n in WORKERS}) == len(WORKERS)
    assert all(e["EVTIME_KAFKA_BOOTSTRAP"] == "kafka:29092" for e in envs)
    assert "INTERNAL://kafka:29092" in svc["kafka"]["environment"]["KAFKA_ADVERTISED_LISTENERS"]


def test_each_worker_serves_metrics_and_its_healthcheck_asks_that_port() -> None:
    svc = services()
    host_ports = set()
    for name in WORKERS:
        worker = svc[name]
        port = worker["environment"]["EVTIME_METRICS_PORT"]
        (mapping,) = worker["ports"]
        host, container = mapping.split(":")
        assert container == port
        host_ports.add(host)
        probe = " ".join(worker["healthcheck"]["test"])
        assert f"http://127.0.0.1:{port}/healthz'" in probe
    assert len(host_ports) == len(WORKERS)


def test_prometheus_scrapes_exactly_the_compose_workers() -> None:
    svc = services()
    prometheus = svc["prometheus"]
    config_path = mounts(prometheus)["/etc/prometheus/prometheus.yml"]
    assert config_path == DOCKER / "prometheus" / "prometheus.yml"
    assert "--config.file=/etc/prometheus/prometheus.yml" in prometheus["command"]
    config = yaml.safe_load(config_path.read_text())
    (job,) = config["scrape_configs"]
    assert job["job_name"] == "evtime"
    assert job.get("metrics_path", "/metrics") == "/metrics"
    targets = {t for static in job["static_configs"] for t in static["targets"]}
    assert targets == {f"{n}:{svc[n]['environment']['EVTIME_METRICS_PORT']}" for n in WORKERS}
    assert "9090:9090" in prometheus["ports"]


def test_grafana_provisions_the_prometheus_source_and_the_dashboard() -> None:
    svc = services()
    grafana = svc["grafana"]
    grafana_mounts = mounts(grafana)
    provisioning = grafana_mounts["/etc/grafana/provisioning"]
    assert provisioning == DOCKER / "grafana" / "provisioning"
    (source_file,) = (provisioning / "datasources").glob("*.yaml")
    (source,) = yaml.safe_load(source_file.read_text())["datasources"]
    assert source["type"] == "prometheus"
    assert source["url"] == "http://prometheus:9090"  # the compose service, its port
    # $__rate_interval is at least four scrape intervals: Grafana must know the interval.
    prometheus_config = yaml.safe_load((DOCKER / "prometheus" / "prometheus.yml").read_text())
    assert source["jsonData"]["timeInterval"] == prometheus_config["global"]["scrape_interval"]
    (provider_file,) = (provisioning / "dashboards").glob("*.yaml")
    (provider,) = yaml.safe_load(provider_file.read_text())["providers"]
    dashboards = grafana_mounts[provider["options"]["path"]]
    assert dashboards == DOCKER / "grafana" / "dashboards"
    assert (dashboards / "evtime.json").is_file()
    assert grafana["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"] == (
        f"{provider['options']['path']}/evtime.json"
    )
    board = dashboard()
    for panel in board["panels"]:
        assert panel["datasource"]["uid"] == source["uid"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == source["uid"], panel["title"]


def test_the_dashboard_has_the_panels_an_operator_needs() -> None:
    titles = {panel["title"] for panel in dashboard()["panels"]}
    for needed in (
        "Records read per topic", "Consumer lag", "Watermark delay", "Checkpoint duration",
        "Dead letters by reason", "Late records", "State size", "Rebalances",
        "Sink flush time",
    ):
        assert needed in titles
    ids = [panel["id"] for panel in dashboard()["panels"]]
    assert len(ids) == len(set(ids))


def metric_families() -> dict[str, str]:
    """Family -> type, from the tables of docs/metrics.md."""
    rows = re.findall(
        r"^\| `(evtime_\w+)` \| (counter|gauge|summary) \|",
        (ROOT / "docs" / "metrics.md").read_text(), flags=re.M,
    )
    return dict(rows)


def test_every_metric_of_the_dashboard_is_one_the_worker_exports() -> None:
    families = metric_families()
    source = "\n".join(p.read_text() for p in (ROOT / "evtime").rglob("*.py"))
    exported = {f for f in families if f'"{f}"' in source}
    assert exported == set(families), "docs/metrics.md lists families the worker lacks"
    suffixes = {"counter": ("_total",), "gauge": ("",), "summary": ("_sum", "_count")}
    names = {f + s for f, kind in families.items() for s in suffixes[kind]}
    used = set()
    for panel in dashboard()["panels"]:
        for target in panel["targets"]:
            used |= set(re.findall(r"\bevtime_\w+", target["expr"]))
    assert used, "the dashboard queries no evtime metric"
    assert used <= names, f"not exported by the worker: {sorted(used - names)}"


def test_dockerfile_pins_the_base_and_runs_as_a_user() -> None:
    text = dockerfile()
    (image,) = re.findall(r"^ARG PYTHON_IMAGE=(\S+)$", text, flags=re.M)
    assert re.fullmatch(r"python:3\.11(\.\d+)?-slim(-bookworm)?@sha256:[0-9a-f]{64}", image)
    froms = re.findall(r"^FROM (\S+)", text, flags=re.M)
    assert froms and all(f == "${PYTHON_IMAGE}" for f in froms)
    users = re.findall(r"^USER (\S+)$", text, flags=re.M)
    assert users and users[-1] not in ("root", "0")
    assert re.search(rf"useradd .*--uid \d+ .*{users[-1]}", text.replace("\\\n", " "))
    assert f"chown {users[-1]}:" in text


def test_dockerfile_installs_from_the_constraints_and_copies_what_exists() -> None:
    text = dockerfile()
    assert "--constraint /tmp/constraints.txt /tmp/wheels/*.whl" in text
    ignored = (ROOT / ".dockerignore").read_text().split()
    allowed = {line[1:].rstrip("/") for line in ignored if line.startswith("!")}
    for line in re.findall(r"^COPY (?!--from)(.+)$", text, flags=re.M):
        *sources, _ = line.split()
        for src in sources:
            assert (ROOT / src).exists(), src
            assert src in allowed, f"{src} is copied but .dockerignore leaves it out"
    for part in ("pyproject.toml", "evtime", "connectors", "examples"):
        assert part in allowed


def test_dockerfile_healthcheck_asks_readiness_on_the_metrics_port() -> None:
    text = dockerfile().replace("\\\n", " ")
    (port,) = re.findall(r"EVTIME_METRICS_PORT=(\d+)", text)
    assert re.search(rf"^EXPOSE {port}$", text, flags=re.M)
    (check,) = re.findall(r"^HEALTHCHECK .*CMD (\[.*\])$", text, flags=re.M)
    probe = " ".join(json.loads(check))
    assert f"os.environ.get('EVTIME_METRICS_PORT', '{port}') + '/healthz'" in probe
    # The compose workers serve on the image's default port.
    for name in WORKERS:
        assert services()[name]["environment"]["EVTIME_METRICS_PORT"] == port


def test_constraints_pin_every_runtime_dependency() -> None:
    pins: dict[str, str] = {}
    for line in (DOCKER / "constraints.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            name, _, version = line.partition("==")
            assert version, f"{line}: pin an exact version"
            pins[canonicalize_name(name)] = version
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    for spec in project["project"]["dependencies"]:
        req = Requirement(spec)
        assert req.specifier.contains(pins[canonicalize_name(req.name)]), spec
    for spec in project["build-system"]["requires"]:
        req = Requirement(spec)
        if canonicalize_name(req.name) in pins:
            assert req.specifier.contains(pins[canonicalize_name(req.name)]), spec
    # Their own dependencies too, as installed here.
    todo = [Requirement(r) for r in project["project"]["dependencies"]]
    seen: set[str] = set()
    while todo:
        req = todo.pop()
        name = canonicalize_name(req.name)
        if name in seen or (req.marker and not req.marker.evaluate({"extra": ""})):
            continue
        seen.add(name)
        assert name in pins, f"{name} (needed by the runtime) is not pinned"
        todo += [Requirement(r) for r in distribution(name).requires or ()]
