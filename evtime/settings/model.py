"""The settings model: each option a field of :class:`Settings`, and the loader that resolves
them (see the package's docstring). The one module of evtime that reads the environment."""

from __future__ import annotations

import enum
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import Field, dataclass, field, fields
from pathlib import Path
from typing import Any

from evtime.errors import ConfigError
from evtime.records import Guarantee
from evtime.settings.kinds import (
    BOOL,
    DURATION,
    FILE,
    GUARANTEE,
    HEAP,
    LOG_FORMAT,
    LOG_LEVEL,
    MILLISECONDS,
    PATH,
    PORT,
    PORT_OR_ZERO,
    SASL_MECHANISM,
    SECONDS,
    SECONDS_OR_INF,
    SECURITY_PROTOCOL,
    SIZE,
    TEXT,
    URL,
    Kind,
    LogFormat,
)


def _count(value: Any) -> int:
    number = int(value)
    if number < 0 or str(number) != str(value).strip().replace("_", ""):
        raise ValueError("is not a whole number >= 0")
    return number


def _ratio(value: Any) -> float:
    number = float(value)
    if not 0 < number <= 1:
        raise ValueError("is not a ratio in (0, 1]")
    return number


COUNT = Kind("count", _count, lambda value: f"{value:,}")
RATIO = Kind("ratio", _ratio, lambda value: f"{value:g}")

ENV_PREFIX = "EVTIME_"


class Origin(enum.Enum):
    """Where a resolved value came from, highest precedence first."""

    ARGUMENT = "argument"
    FLAG = "flag"
    ENV = "env"
    APP = "app"
    DEFAULT = "default"


SECTIONS = {  # an option's section: its heading in `evtime config` and the docs
    "app": "The app",
    "worker": "The worker",
    "logging": "Logging",
    "kafka": "Kafka",
    "elasticsearch": "Elasticsearch / OpenSearch",
    "services": "Local services (`evtime services`)",
}


@dataclass(frozen=True, slots=True)
class Option:
    """The declaration of one option (a field of :class:`Settings`)."""

    name: str
    kind: Kind
    help: str
    section: str
    default: Any
    flag: str | None = None
    """The command-line flag (``--state-dir``), or None."""
    app: bool = False
    """Whether ``App(...)`` declares it (the app layer of the precedence)."""
    secret: bool = False
    """Masked wherever settings are shown (passwords, tokens, API keys)."""
    derive: Callable[[Mapping[str, Any]], Any] | None = None
    """A default computed from other options' values."""
    default_text: str | None = None
    """The default as the docs show it (when derived)."""

    @property
    def env(self) -> str:
        return ENV_PREFIX + self.name.upper()

    def show(self, value: Any) -> str:
        """``value`` as text for people: masked when secret, ``-`` when unset."""
        if value is None or value == "":
            return "-"
        if self.secret:
            return "****"
        return self.kind.show(value)

    def check(self, value: Any, origin: Origin) -> Any:
        """``value`` (from ``origin``) parsed; ConfigError of one line when it is bad."""
        try:
            return self.kind.parse(value)
        except (TypeError, ValueError) as exc:
            shown = "****" if self.secret else repr(value)
            given = {
                Origin.FLAG: f"{self.flag} {shown}",
                Origin.ENV: f"{self.env}={shown}",
            }.get(origin, f"{origin.value} {shown}")
            where = "" if origin is Origin.ENV else f" (variable {self.env})"
            raise ConfigError(f"{self.name}: {given} {exc}{where}") from None


_META = "evtime.option"


def _meta(
    section: str,
    kind: Kind,
    help: str,
    *,
    flag: bool = False,
    app: bool = False,
    secret: bool = False,
    derive: Callable[[Mapping[str, Any]], Any] | None = None,
    default_text: str | None = None,
) -> dict[str, Any]:
    declared = {
        "kind": kind,
        "help": help,
        "section": section,
        "flag": flag,
        "app": app,
        "secret": secret,
        "derive": derive,
        "default_text": default_text,
    }
    return {_META: declared}


def _bootstrap(values: Mapping[str, Any]) -> str:
    return f"127.0.0.1:{values['kafka_port']}"


def _cache_dir(values: Mapping[str, Any]) -> Path:
    return Path.home() / ".cache" / "evtime"


@dataclass(frozen=True, slots=True)
class Settings:
    """The resolved options (see the module's docstring); ``origins`` says where each
    value came from."""

    # -- the app's state and guarantee
    state_dir: Path = field(default=Path("state"), metadata=_meta(
        "app", PATH, "Folder of the app's state: one RocksDB database per partition task.",
        flag=True, app=True, default_text="./state",
    ))
    checkpoint_interval: int = field(default=1_000, metadata=_meta(
        "app", DURATION, "How often state, outputs and input offsets are checkpointed together.",
        flag=True, app=True,
    ))
    processing: Guarantee = field(default=Guarantee.AT_LEAST_ONCE, metadata=_meta(
        "app", GUARANTEE,
        "The processing guarantee on Kafka: at_least_once, or exactly_once (Kafka "
        "transactions; read the outputs with read_committed).",
        flag=True, app=True,
    ))
    # -- the worker
    instance_id: str | None = field(default=None, metadata=_meta(
        "worker", TEXT,
        "Stable id of this worker in the consumer group (static membership: a restart "
        "takes its partitions back at once). Unset: a dynamic member.",
        flag=True,
    ))
    metrics_port: int | None = field(default=None, metadata=_meta(
        "worker", PORT_OR_ZERO,
        "Serve Prometheus metrics on /metrics, health on /healthz (readiness) and "
        "/healthz/live, and the status page on / at this port (0: any free port, logged). "
        "Unset: not served.",
        flag=True,
    ))
    metrics_host: str = field(default="0.0.0.0", metadata=_meta(
        "worker", TEXT, "Address the metrics server binds.", flag=True
    ))
    memory_budget: int = field(default=256 * 2**20, metadata=_meta(
        "worker", SIZE,
        "Memory of this process's state: one RocksDB block cache and write-buffer manager "
        "shared by every task's database, and the Python caches in front of them (clean "
        "entries are evicted; dirty ones go to disk at the next checkpoint).",
    ))
    dead_letter_guard_first: int = field(default=1_000, metadata=_meta(
        "worker", COUNT,
        "The dead-letter guard: when this many first records of a source (or all of a "
        "bounded one, if fewer) failed for one reason (a missing key= or timestamp= field, "
        "undecodable values), the run stops naming it. 0: off.",
    ))
    dead_letter_window: int = field(default=10_000, metadata=_meta(
        "worker", COUNT,
        "The dead-letter guard's sliding count: the last records of a source whose "
        "failure ratio is checked against dead_letter_max_ratio.",
    ))
    dead_letter_max_ratio: float = field(default=0.5, metadata=_meta(
        "worker", RATIO,
        "The dead-letter guard stops the run when more than this share of a source's last "
        "dead_letter_window records failed. 1: off.",
    ))
    # -- logging
    log_level: str = field(default="INFO", metadata=_meta(
        "logging", LOG_LEVEL, "Lowest level of the log lines written (-v: DEBUG).", flag=True
    ))
    log_format: LogFormat = field(default=LogFormat.TEXT, metadata=_meta(
        "logging", LOG_FORMAT,
        "Log lines as text, or as JSON objects one a line (time, level, logger, message).",
        flag=True,
    ))
    log_prefix: str = field(default="", metadata=_meta(
        "logging", TEXT,
        "Text in front of every log line; `evtime worker -p N` gives worker i "
        "'[worker-<i>] '.",
    ))
    # -- Kafka
    kafka_bootstrap: str = field(default="127.0.0.1:9092", metadata=_meta(
        "kafka", TEXT,
        "Bootstrap servers (host:port, comma separated) of every Kafka source and sink "
        "not given its own; by default the broker `evtime services up` starts.",
        derive=_bootstrap,
        default_text="127.0.0.1:<kafka_port>",
    ))
    kafka_security_protocol: str = field(default="PLAINTEXT", metadata=_meta(
        "kafka", SECURITY_PROTOCOL,
        "security.protocol of every Kafka client: TLS with SSL / SASL_SSL, authentication "
        "with SASL_PLAINTEXT / SASL_SSL.",
    ))
    kafka_sasl_mechanism: str | None = field(default=None, metadata=_meta(
        "kafka", SASL_MECHANISM,
        "SASL mechanism under SASL_*: PLAIN and SCRAM take the username and password, "
        "OAUTHBEARER the token provider.",
    ))
    kafka_sasl_username: str | None = field(default=None, metadata=_meta(
        "kafka", TEXT, "SASL username (PLAIN, SCRAM)."
    ))
    kafka_sasl_password: str | None = field(default=None, metadata=_meta(
        "kafka", TEXT, "SASL password (PLAIN, SCRAM).", secret=True
    ))
    kafka_oauth_token_provider: str | None = field(default=None, metadata=_meta(
        "kafka", TEXT,
        "module:attribute of an aiokafka AbstractTokenProvider (OAUTHBEARER): its token() "
        "gives a fresh token whenever a client authenticates.",
    ))
    kafka_ssl_ca_file: str | None = field(default=None, metadata=_meta(
        "kafka", FILE,
        "PEM file of the CA that signed the brokers' certificates. Unset: the system's CAs.",
    ))
    kafka_ssl_cert_file: str | None = field(default=None, metadata=_meta(
        "kafka", FILE, "PEM file of a client certificate, for brokers that require one."
    ))
    kafka_ssl_key_file: str | None = field(default=None, metadata=_meta(
        "kafka", FILE, "PEM file of the client certificate's private key."
    ))
    kafka_ssl_key_password: str | None = field(default=None, metadata=_meta(
        "kafka", TEXT, "Password of the client certificate's private key.", secret=True
    ))
    kafka_ssl_check_hostname: bool = field(default=True, metadata=_meta(
        "kafka", BOOL,
        "Whether a broker's certificate must name its host; turn it off only for a test "
        "cluster.",
    ))
    kafka_broker_wait: float = field(default=600.0, metadata=_meta(
        "kafka", SECONDS_OR_INF,
        "How long a Kafka client retries an unreachable broker (and a sink its sends) "
        "before the worker stops with an error; inf waits for ever.",
    ))
    kafka_request_timeout_ms: int | None = field(default=None, metadata=_meta(
        "kafka", MILLISECONDS,
        "request_timeout_ms of every producer: after it, a batch that found no leader is "
        "given up on and sent again. Unset: aiokafka's 40000.",
    ))
    # -- Elasticsearch / OpenSearch
    elasticsearch_url: str = field(default="http://127.0.0.1:9200", metadata=_meta(
        "elasticsearch", URL,
        "URL of the cluster of every ElasticsearchSink not given its own (a path prefix "
        "is kept; a password in it is masked when shown).",
    ))
    # -- local services (`evtime services`)
    cache_dir: Path = field(default=Path("~/.cache/evtime"), metadata=_meta(
        "services", PATH, "Where `evtime services` keeps its downloads, data, logs and pids.",
        derive=_cache_dir, default_text="~/.cache/evtime",
    ))
    kafka_port: int = field(default=9092, metadata=_meta(
        "services", PORT, "Port of the local Kafka broker."
    ))
    kafka_controller_port: int = field(default=9093, metadata=_meta(
        "services", PORT, "Port of the local Kafka's KRaft controller."
    ))
    kafka_sasl_port: int = field(default=9094, metadata=_meta(
        "services", PORT, "Port of the local Kafka's SASL_SSL listener (SCRAM users, a test "
        "CA made at `evtime services up`)."
    ))
    opensearch_port: int = field(default=9200, metadata=_meta(
        "services", PORT, "HTTP port of the local OpenSearch node."
    ))
    opensearch_transport_port: int = field(default=9300, metadata=_meta(
        "services", PORT, "Transport port of the local OpenSearch node."
    ))
    kafka_heap: str = field(default="512m", metadata=_meta(
        "services", HEAP, "JVM heap of the local Kafka."
    ))
    opensearch_heap: str = field(default="768m", metadata=_meta(
        "services", HEAP, "JVM heap of the local OpenSearch."
    ))
    services_timeout: float = field(default=120.0, metadata=_meta(
        "services", SECONDS, "How long each local service may take to start."
    ))

    origins: Mapping[str, Origin] = field(default_factory=dict, compare=False, repr=False)
    """Where each option's value came from."""

    @classmethod
    def load(
        cls,
        arguments: Mapping[str, Any] | None = None,
        *,
        flags: Mapping[str, Any] | None = None,
        environ: Mapping[str, str] | None = None,
        app: Mapping[str, Any] | None = None,
    ) -> Settings:
        """Resolve every option: ``arguments`` > ``flags`` > ``environ`` (default: the
        process's environment) > ``app`` > the default. A value of None or "" counts as
        not given. Raises ConfigError (one line) for the first bad value."""
        layers = (
            (Origin.ARGUMENT, arguments or {}),
            (Origin.FLAG, flags or {}),
            (Origin.ENV, os.environ if environ is None else environ),
            (Origin.APP, app or {}),
        )
        given = {*layers[0][1], *layers[1][1]}
        unknown = sorted(given - set(_BY_NAME) | {n for n in layers[3][1] if n not in _APP})
        if unknown:
            raise ConfigError(f"unknown settings {unknown}; see docs/configuration.md")
        values: dict[str, Any] = {}
        origins: dict[str, Origin] = {}
        # Derived defaults (the bootstrap servers from the Kafka port) come last.
        for opt in sorted(OPTIONS, key=lambda o: o.derive is not None):
            for origin, layer in layers:
                raw = layer.get(opt.env if origin is Origin.ENV else opt.name)
                if raw is not None and raw != "":
                    values[opt.name] = opt.check(raw, origin)
                    origins[opt.name] = origin
                    break
            else:
                values[opt.name] = opt.derive(values) if opt.derive else opt.default
                origins[opt.name] = Origin.DEFAULT
        return cls(**values, origins=origins)

    def origin(self, name: str) -> Origin:
        """Where option ``name``'s value came from."""
        return self.origins.get(name, Origin.DEFAULT)

    def __repr__(self) -> str:  # masked, like every other view of the settings
        from evtime.settings.views import summary

        return f"Settings({summary(self, tuple(SECTIONS))})"


def _declared(f: Field[Any]) -> Option:
    declared = dict(f.metadata[_META])
    declared["flag"] = "--" + f.name.replace("_", "-") if declared["flag"] else None
    return Option(name=f.name, default=f.default, **declared)


OPTIONS: tuple[Option, ...] = tuple(_declared(f) for f in fields(Settings) if _META in f.metadata)
"""Every option, in declaration order."""

_BY_NAME = {option.name: option for option in OPTIONS}
_APP = {option.name for option in OPTIONS if option.app}


def option(name: str) -> Option:
    """The declaration of option ``name``."""
    try:
        return _BY_NAME[name]
    except KeyError:
        raise ConfigError(f"no option {name!r}; see docs/configuration.md") from None


def child_environment(
    given: Mapping[str, str] | None = None, removed: Sequence[str] = ()
) -> dict[str, str]:
    """This process's environment for a child process, with the options ``given`` set and
    the options ``removed`` unset (by option name: ``{"log_prefix": "[worker-0] "}``)."""
    env = dict(os.environ)
    for name in removed:
        env.pop(option(name).env, None)
    for name, value in (given or {}).items():
        env[option(name).env] = value
    return env

