"""The settings model (evtime/settings/): precedence, one-line validation errors naming the
option and its variable, masking, `evtime config`, and docs/configuration.md kept in step."""

from __future__ import annotations

import inspect
import logging
import re
import textwrap
from pathlib import Path

import orjson
import pytest

from evtime import App
from evtime.cli import _JsonFormatter, main
from evtime.connectors.elasticsearch import ElasticsearchSink
from evtime.connectors.kafka import KafkaSource
from evtime.errors import ConfigError
from evtime.records import Guarantee
from evtime.settings import (
    OPTIONS,
    TEXT,
    Option,
    Origin,
    Settings,
    child_environment,
    describe,
    markdown,
    option,
    summary,
    table,
)
from evtime.supervisor import Supervisor

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def _no_evtime_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test starts from an environment without EVTIME_* variables."""
    for o in OPTIONS:
        monkeypatch.delenv(o.env, raising=False)


# -- precedence -----------------------------------------------------------------------------------
def test_an_argument_beats_a_flag_beats_the_environment_beats_the_app_beats_the_default() -> None:
    layers = {
        "arguments": {"checkpoint_interval": "1m"},
        "flags": {"checkpoint_interval": "2m"},
        "environ": {"EVTIME_CHECKPOINT_INTERVAL": "3m"},
        "app": {"checkpoint_interval": 240_000},
    }
    expected = [
        (60_000, Origin.ARGUMENT),
        (120_000, Origin.FLAG),
        (180_000, Origin.ENV),
        (240_000, Origin.APP),
        (1_000, Origin.DEFAULT),
    ]
    names = list(layers)
    for i, (value, origin) in enumerate(expected):
        given = {name: layers[name] for name in names[i:]}
        settings = Settings.load(
            given.get("arguments"),
            flags=given.get("flags"),
            environ=given.get("environ", {}),
            app=given.get("app"),
        )
        assert (settings.checkpoint_interval, settings.origin("checkpoint_interval")) == (
            value,
            origin,
        )


def test_none_and_empty_values_count_as_not_given() -> None:
    settings = Settings.load(
        {"metrics_host": None}, flags={"metrics_host": ""}, environ={"EVTIME_METRICS_HOST": ""}
    )
    assert settings.metrics_host == "0.0.0.0"
    assert settings.origin("metrics_host") is Origin.DEFAULT


def test_the_environment_is_read_when_settings_are_loaded_not_at_import(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert KafkaSource("t").bootstrap == "127.0.0.1:9092"
    monkeypatch.setenv("EVTIME_KAFKA_PORT", "19092")  # the local broker's port
    assert KafkaSource("t").bootstrap == "127.0.0.1:19092"
    monkeypatch.setenv("EVTIME_KAFKA_BOOTSTRAP", "broker:9093")
    assert KafkaSource("t").bootstrap == "broker:9093"
    assert KafkaSource("t", bootstrap="given:1").bootstrap == "given:1"
    monkeypatch.setenv("EVTIME_ELASTICSEARCH_URL", "http://search:9201")
    assert ElasticsearchSink("ix").url == "http://search:9201"


def test_values_take_their_types() -> None:
    settings = Settings.load(
        environ={
            "EVTIME_STATE_DIR": "/data/state",
            "EVTIME_PROCESSING": "EXACTLY_ONCE",
            "EVTIME_METRICS_PORT": "0",
            "EVTIME_KAFKA_BROKER_WAIT": "inf",
            "EVTIME_KAFKA_REQUEST_TIMEOUT_MS": "2000",
            "EVTIME_LOG_LEVEL": "debug",
        }
    )
    assert settings.state_dir == Path("/data/state")
    assert settings.processing is Guarantee.EXACTLY_ONCE
    assert settings.metrics_port == 0
    assert settings.kafka_broker_wait == float("inf")
    assert settings.kafka_request_timeout_ms == 2000
    assert settings.log_level == "DEBUG"


def test_the_apps_defaults_are_the_models() -> None:
    """App(...) without state_dir, checkpoint_interval or processing means the defaults of
    the model, so that `evtime config` shows them as defaults."""
    params = inspect.signature(App).parameters
    app = App("defaults")
    assert Path(params["state_dir"].default) == option("state_dir").default
    assert app.plan.checkpoint_interval == option("checkpoint_interval").default
    assert app.plan.guarantee is option("processing").default


def test_an_unknown_option_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"unknown settings \['metrics_prot'\]"):
        Settings.load({"metrics_prot": 9100})
    with pytest.raises(ConfigError, match="unknown settings"):
        Settings.load(app={"metrics_port": 9100})  # not an App(...) option


# -- validation -----------------------------------------------------------------------------------
BAD = [
    ("checkpoint_interval", "abc", "is not a duration; give e.g. 1s, 500ms"),
    ("checkpoint_interval", "250", "is not a duration"),  # a bare number is ambiguous
    ("processing", "twice", "is not one of at_least_once, exactly_once"),
    ("metrics_port", "http", "is not a TCP port"),
    ("metrics_port", "70000", "is not a TCP port"),
    ("kafka_port", "0", "is not a TCP port; give a number in 1..65535"),
    ("kafka_broker_wait", "0", "is not a positive number of seconds, or inf"),
    ("kafka_broker_wait", "nan", "is not a positive number of seconds"),
    ("kafka_request_timeout_ms", "-1", "is not a positive whole number"),
    ("log_level", "loud", "is not a log level"),
    ("log_format", "xml", "is not one of text, json"),
    ("kafka_heap", "lots", "is not a JVM heap size"),
    ("services_timeout", "inf", "is not a positive number of seconds"),
]


@pytest.mark.parametrize(("name", "raw", "problem"), BAD)
def test_a_bad_variable_is_one_line_naming_the_option_and_the_variable(
    name: str, raw: str, problem: str
) -> None:
    env = option(name).env
    with pytest.raises(ConfigError) as info:
        Settings.load(environ={env: raw})
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"{name}: {env}={raw!r} {problem}")


def test_the_message_of_the_issue() -> None:
    with pytest.raises(ConfigError) as info:
        Settings.load(environ={"EVTIME_CHECKPOINT_INTERVAL": "abc"})
    assert str(info.value) == (
        "checkpoint_interval: EVTIME_CHECKPOINT_INTERVAL='abc' is not a duration; "
        "give e.g. 1s, 500ms"
    )


def test_a_bad_flag_or_argument_names_the_flag_and_the_variable() -> None:
    with pytest.raises(ConfigError) as info:
        Settings.load(flags={"metrics_port": "x"}, environ={})
    assert str(info.value) == (
        "metrics_port: --metrics-port 'x' is not a TCP port; give a number in 0..65535 "
        "(variable EVTIME_METRICS_PORT)"
    )
    with pytest.raises(ConfigError, match=r"^processing: argument 'x' .*EVTIME_PROCESSING\)$"):
        Settings.load({"processing": "x"}, environ={})


def test_the_cli_stops_on_a_bad_value_with_one_line(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("EVTIME_LOG_FORMAT", "xml")
    assert main(["config", str(_job(tmp_path))]) == 2
    err = capsys.readouterr().err
    assert err == "evtime: log_format: EVTIME_LOG_FORMAT='xml' is not one of text, json\n"


# -- masking --------------------------------------------------------------------------------------
def test_a_urls_password_is_masked_wherever_settings_are_shown() -> None:
    settings = Settings.load(environ={"EVTIME_ELASTICSEARCH_URL": "https://ann:s3cret@es:9200/p"})
    assert settings.elasticsearch_url == "https://ann:s3cret@es:9200/p"  # the value itself
    for shown in (table(settings), summary(settings), str(describe(settings)), repr(settings)):
        assert "s3cret" not in shown
        assert "https://ann:****@es:9200/p" in shown


def test_a_secret_option_is_masked_and_its_bad_value_not_echoed() -> None:
    token = Option("api_token", TEXT, "A token.", "kafka", None, secret=True)
    assert token.show("t0ken") == "****"
    assert token.show(None) == "-"
    with pytest.raises(ConfigError) as info:
        token.check(42, Origin.ENV)
    assert "42" not in str(info.value)
    assert str(info.value) == "api_token: EVTIME_API_TOKEN=**** is not text"


def test_kafka_credentials_are_secret_and_the_connection_options_match_kafka_connection() -> None:
    from evtime.connectors.kafka_connection import ENV, SaslMechanism, SecurityProtocol

    envs = {o.env for o in OPTIONS}
    assert set(ENV.values()) <= envs  # every variable KafkaConnection names is declared
    protocols = option("kafka_security_protocol").kind.name.split(" | ")
    assert protocols == [p.value for p in SecurityProtocol]
    mechanisms = option("kafka_sasl_mechanism").kind.name.split(" | ")
    assert mechanisms == [m.value for m in SaslMechanism]
    settings = Settings.load(
        environ={
            "EVTIME_KAFKA_SECURITY_PROTOCOL": "sasl_ssl",
            "EVTIME_KAFKA_SASL_MECHANISM": "scram-sha-512",
            "EVTIME_KAFKA_SASL_USERNAME": "ann",
            "EVTIME_KAFKA_SASL_PASSWORD": "hunter2",
            "EVTIME_KAFKA_SSL_CHECK_HOSTNAME": "false",
        }
    )
    assert settings.kafka_security_protocol == "SASL_SSL"
    assert settings.kafka_sasl_mechanism == "SCRAM-SHA-512"
    assert settings.kafka_ssl_check_hostname is False
    assert settings.kafka_sasl_password == "hunter2"
    shown = table(settings) + summary(settings) + repr(settings)
    assert "hunter2" not in shown and "kafka_sasl_password=****" in summary(settings)
    assert "kafka_sasl_username=ann" in summary(settings)


# -- `evtime config` and the start of a run -------------------------------------------------------
JOB = """
from pathlib import Path

from evtime import App, Count, Tumbling
from evtime.connectors.local import JsonLinesSink, JsonLinesSource

HERE = Path(__file__).parent
app = App("cfgjob", state_dir=HERE / "state", processing="exactly_once")
clicks = app.source("clicks", JsonLinesSource("clicks", HERE / "clicks.jsonl"), key="user",
                    timestamp="ts")


@app.window(clicks, Tumbling("10s"), aggregate=Count(), sink=JsonLinesSink(HERE / "out.jsonl"))
def counts(result):
    return {"user": result.key, "n": result.value}
"""


def _job(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "clicks.jsonl").write_bytes(orjson.dumps({"user": "ann", "ts": 1_000}) + b"\n")
    job = folder / "job.py"
    job.write_text(textwrap.dedent(JOB))
    return job


def _rows(out: str) -> dict[str, tuple[str, str, str]]:
    rows = {}
    for line in out.splitlines():
        cells = line.split()
        if len(cells) == 4 and not line.startswith("#"):
            rows[cells[0]] = (cells[1], cells[2], cells[3])
    return rows


def test_evtime_config_prints_each_value_and_where_it_came_from(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    job = _job(tmp_path)
    monkeypatch.setenv("EVTIME_CHECKPOINT_INTERVAL", "2s")
    monkeypatch.setenv("EVTIME_ELASTICSEARCH_URL", "http://ann:pw@es:9200")
    assert main(["config", f"{job}:app", "--metrics-port", "9100"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"app: cfgjob ({job}:app)\n")
    rows = _rows(out)
    assert rows["state_dir"] == (str(tmp_path / "state"), "app", "EVTIME_STATE_DIR")
    assert rows["processing"] == ("exactly_once", "app", "EVTIME_PROCESSING")
    assert rows["checkpoint_interval"] == ("2s", "env", "EVTIME_CHECKPOINT_INTERVAL")
    assert rows["metrics_port"] == ("9100", "flag", "EVTIME_METRICS_PORT")
    assert rows["metrics_host"] == ("0.0.0.0", "default", "EVTIME_METRICS_HOST")
    url = ("http://ann:****@es:9200", "env", "EVTIME_ELASTICSEARCH_URL")
    assert rows["elasticsearch_url"] == url
    assert "pw" not in out
    assert set(rows) == {o.name for o in OPTIONS} | {"option"}  # every option, and the header


def test_a_run_takes_its_flags_over_the_app_and_logs_its_settings(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    job = _job(tmp_path)
    monkeypatch.setenv("EVTIME_STATE_DIR", str(tmp_path / "from-env"))
    with caplog.at_level(logging.INFO, logger="evtime.cli"):
        assert main(["run", str(job), "--state-dir", str(tmp_path / "from-flag")]) == 0
    assert (tmp_path / "from-flag" / "cfgjob").is_dir()
    assert not (tmp_path / "from-env").exists()
    [line] = [r.getMessage() for r in caplog.records if r.getMessage().startswith("settings: ")]
    assert f"state_dir={tmp_path / 'from-flag'} [flag]" in line
    assert "processing=exactly_once [app]" in line
    assert "checkpoint_interval=1s," in line  # a default carries no origin
    assert "kafka_heap" not in line  # the local services' options are not the worker's


def test_describe_and_state_see_the_settings_a_worker_runs_with(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from evtime.cli import _load_configured_app

    job = _job(tmp_path)
    monkeypatch.setenv("EVTIME_STATE_DIR", str(tmp_path / "deployed"))
    monkeypatch.setenv("EVTIME_PROCESSING", "at_least_once")
    plan = _load_configured_app(str(job)).plan
    assert plan.state_dir == tmp_path / "deployed"
    assert plan.guarantee is Guarantee.AT_LEAST_ONCE  # the app declares exactly_once


def test_the_verbose_flag_is_the_debug_level_and_an_explicit_level_wins(tmp_path: Path) -> None:
    from evtime.cli import _flags, build_parser

    parser = build_parser()
    assert _flags(parser.parse_args(["-v", "config", "x"]))["log_level"] == "DEBUG"
    args = parser.parse_args(["-v", "config", "x", "--log-level", "error"])
    assert Settings.load(flags=_flags(args)).log_level == "ERROR"


def test_json_log_lines() -> None:
    record = logging.LogRecord("evtime.worker", logging.WARNING, __file__, 1, "lag %d", (7,), None)
    line = orjson.loads(_JsonFormatter("[worker-1]").format(record))
    assert line["level"] == "WARNING" and line["logger"] == "evtime.worker"
    assert line["message"] == "lag 7" and line["prefix"] == "[worker-1]"


def test_the_supervisor_passes_options_to_its_workers_through_their_environment(
    tmp_path: Path,
) -> None:
    s = Supervisor("job.py:app", 2, tmp_path, settings={"processing": "exactly_once"})
    _, env = s.command(s.children[1])
    assert env["EVTIME_PROCESSING"] == "exactly_once"
    assert env["EVTIME_LOG_PREFIX"] == "[worker-1] "
    assert child_environment(removed=("log_prefix",)).get("EVTIME_LOG_PREFIX") is None


# -- one model, one reader of the environment, one reference --------------------------------------
def test_docs_configuration_md_is_generated_from_the_model() -> None:
    committed = (ROOT / "docs" / "configuration.md").read_text()
    assert committed == markdown(), (
        "docs/configuration.md differs from evtime/settings/model.py: run "
        "`python -m evtime.settings --markdown > docs/configuration.md`"
    )


def test_every_variable_is_documented_once() -> None:
    doc = markdown()
    for o in OPTIONS:
        assert doc.count(f"`{o.env}`") == 1
        assert o.env == "EVTIME_" + o.name.upper()


def test_only_the_settings_module_reads_the_environment() -> None:
    """os.environ / getenv in evtime/ and connectors/ only in evtime/settings/ (the local
    services and the demos pass it on to the processes they start)."""
    readers = []
    for folder in ("evtime", "connectors"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            rel = path.relative_to(ROOT).as_posix()
            if rel.startswith("evtime/settings/") or "services" in rel or "demo" in rel:
                continue
            if re.search(r"os\.environ|getenv\(", path.read_text()):
                readers.append(rel)
    assert readers == []
