"""Every runtime option of evtime, declared once: type, default, ``EVTIME_*`` variable, help.

An option is a field of :class:`Settings`; its variable is ``EVTIME_`` and the field's name
in capitals, and the options marked ``flag`` are also ``evtime run`` / ``evtime worker`` /
``evtime config`` options (``--state-dir``). :meth:`Settings.load` resolves each option from
the first place that gives it, highest first:

1. an **argument**: a value given in code to the object that uses the option
   (``app.worker(metrics_port=9100)``, ``KafkaSource(topic, bootstrap=...)``,
   ``ElasticsearchSink(index, url=...)``);
2. a **flag** on the ``evtime`` command line;
3. the **environment** (``EVTIME_*``; an empty variable counts as unset);
4. the **app**: what ``App(...)`` declares for ``state_dir``, ``checkpoint_interval`` and
   ``processing``. These are the app's own defaults, which a deployment overrides with the
   flag or the variable without editing the code (``evtime worker -p N`` gives each of its
   processes ``--state-dir <state_dir>/worker-<i>`` this way);
5. the **default** of the option.

Every value is checked as it is resolved: a bad one raises a
:class:`~evtime.errors.ConfigError` of one line naming the option and its variable
(``checkpoint_interval: EVTIME_CHECKPOINT_INTERVAL='abc' is not a duration; give e.g. 1s,
500ms``). Settings are resolved when a worker, client or command starts, never at import
time, so a variable set before that (a test's ``monkeypatch.setenv``) is seen. This module
is the one place of evtime and its connectors that reads the environment.

Options marked ``secret`` (passwords, tokens, API keys) are masked wherever settings are
shown, and so is the password of a URL (``http://user:****@host``): :func:`describe` (the
table ``evtime config APP`` prints) and :func:`summary` (the line a worker logs at start).
``python -m evtime.settings --markdown`` writes docs/configuration.md (:func:`markdown`).

Why a frozen dataclass and not pydantic-settings: the model is a few dozen scalar options
whose parsing is evtime's own (durations such as ``1s``, ports, ``inf`` seconds), and it
needs what pydantic-settings does not give as such: the app layer between the environment
and the default, the origin of every value for ``evtime config``, and one-line errors naming
the variable. A small loader does all that in this module, with no new dependency of the
worker.
"""

from __future__ import annotations

import argparse
import enum
import math
import os
import re
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import Field, dataclass, field, fields
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from evtime.errors import ConfigError
from evtime.records import Guarantee
from evtime.time import format_millis, to_millis

__all__ = [
    "OPTIONS",
    "LogFormat",
    "Option",
    "Origin",
    "Settings",
    "child_environment",
    "describe",
    "markdown",
    "summary",
]

ENV_PREFIX = "EVTIME_"


class Origin(enum.Enum):
    """Where a resolved value came from, highest precedence first."""

    ARGUMENT = "argument"
    FLAG = "flag"
    ENV = "env"
    APP = "app"
    DEFAULT = "default"


class LogFormat(enum.Enum):
    """How log lines are written."""

    TEXT = "text"
    JSON = "json"


LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


# -- kinds of values: parse (raising ValueError with what is wrong) and show -------------------
@dataclass(frozen=True, slots=True)
class Kind:
    """A type of option: its name in the docs, how a given value is checked, how it is shown."""

    name: str
    parse: Callable[[Any], Any]
    show: Callable[[Any], str] = str


def _text(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError("is not text")
    return value


def _port(lowest: int) -> Callable[[Any], int]:
    def parse(value: Any) -> int:
        text = str(value).strip()
        if isinstance(value, bool) or not text.isdigit() or not lowest <= int(text) <= 65535:
            raise ValueError(f"is not a TCP port; give a number in {lowest}..65535")
        return int(text)

    return parse


def _duration(value: Any) -> int:
    try:
        return to_millis(value, allow_zero=False)
    except ConfigError:
        raise ValueError("is not a duration; give e.g. 1s, 500ms") from None


def _seconds(allow_inf: bool) -> Callable[[Any], float]:
    def parse(value: Any) -> float:
        try:
            seconds = float(value)
        except (TypeError, ValueError):
            seconds = math.nan
        if isinstance(value, bool) or not seconds > 0 or (math.isinf(seconds) and not allow_inf):
            hint = "a positive number of seconds" + (", or inf" if allow_inf else "")
            raise ValueError(f"is not {hint}")
        return seconds

    return parse


def _positive_int(value: Any) -> int:
    text = str(value).strip()
    if isinstance(value, bool) or not text.isdigit() or int(text) <= 0:
        raise ValueError("is not a positive whole number")
    return int(text)


def _choice(enum_type: type[enum.Enum]) -> Callable[[Any], Any]:
    def parse(value: Any) -> Any:
        if isinstance(value, enum_type):
            return value
        try:
            return enum_type(str(value).strip().lower())
        except ValueError:
            allowed = ", ".join(str(member.value) for member in enum_type)
            raise ValueError(f"is not one of {allowed}") from None

    return parse


def _log_level(value: Any) -> str:
    level = str(value).strip().upper()
    if level not in LOG_LEVELS:
        raise ValueError(f"is not a log level; give one of {', '.join(LOG_LEVELS)}")
    return level


def _heap(value: Any) -> str:
    text = str(value).strip()
    if not re.fullmatch(r"\d+[kmgKMG]?", text):
        raise ValueError("is not a JVM heap size; give e.g. 512m or 1g")
    return text


def _show_url(url: str) -> str:
    """``url`` with the password of its user part masked."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{parts.username}:****@{host}"))


TEXT = Kind("text", _text)
URL = Kind("URL", _text, _show_url)
PATH = Kind("path", lambda value: Path(value).expanduser())
PORT = Kind("port", _port(1))
PORT_OR_ZERO = Kind("port (0: any free one)", _port(0))
DURATION = Kind("duration", _duration, format_millis)
SECONDS = Kind("seconds", _seconds(allow_inf=False), lambda value: f"{value:g}")
SECONDS_OR_INF = Kind("seconds or inf", _seconds(allow_inf=True), lambda value: f"{value:g}")
MILLISECONDS = Kind("milliseconds", _positive_int)
GUARANTEE = Kind("at_least_once | exactly_once", _choice(Guarantee), lambda g: g.value)
LOG_LEVEL = Kind(" | ".join(LOG_LEVELS), _log_level)
LOG_FORMAT = Kind("text | json", _choice(LogFormat), lambda f: f.value)
HEAP = Kind("JVM heap size", _heap)


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
        return f"Settings({summary(self, tuple(SECTIONS))})"


def _declared(f: Field[Any]) -> Option:
    declared = dict(f.metadata[_META])
    declared["flag"] = "--" + f.name.replace("_", "-") if declared["flag"] else None
    return Option(name=f.name, default=f.default, **declared)


OPTIONS: tuple[Option, ...] = tuple(_declared(f) for f in fields(Settings) if _META in f.metadata)
"""Every option, in declaration order."""

_BY_NAME = {option.name: option for option in OPTIONS}
_APP = {option.name for option in OPTIONS if option.app}
SECTIONS = {
    "app": "The app",
    "worker": "The worker",
    "logging": "Logging",
    "kafka": "Kafka",
    "elasticsearch": "Elasticsearch / OpenSearch",
    "services": "Local services (`evtime services`)",
}


def option(name: str) -> Option:
    """The declaration of option ``name``."""
    try:
        return _BY_NAME[name]
    except KeyError:
        raise ConfigError(f"no option {name!r}; see docs/configuration.md") from None


# -- showing settings ---------------------------------------------------------------------------
def describe(
    settings: Settings, sections: Sequence[str] = tuple(SECTIONS)
) -> list[tuple[str, str, str, str]]:
    """One row per option of ``sections``: name, value (masked), origin, variable."""
    return [
        (o.name, o.show(getattr(settings, o.name)), settings.origin(o.name).value, o.env)
        for o in OPTIONS
        if o.section in sections
    ]


def table(settings: Settings) -> str:
    """The settings as ``evtime config`` prints them: a column each for the option, its
    value, where it came from and its variable, under a heading per section."""
    header = ("option", "value", "from", "variable")
    rows = describe(settings)
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(3)]

    def line(cells: tuple[str, str, str, str]) -> str:
        padded = [c.ljust(w) for c, w in zip(cells, widths, strict=False)]
        return "  ".join([*padded, cells[3]])

    lines = [line(header)]
    for section, title in SECTIONS.items():
        lines += ["", f"# {title}"]
        lines += [line(row) for row in describe(settings, (section,))]
    return "\n".join(lines) + "\n"


RUNTIME_SECTIONS = ("app", "worker", "logging", "kafka", "elasticsearch")
"""The sections a worker logs at start (not the local services')."""


def summary(settings: Settings, sections: Sequence[str] = RUNTIME_SECTIONS) -> str:
    """The settings on one line, for the log: ``name=value`` (masked), followed by its
    origin in brackets when it is not the default."""
    parts = []
    for name, value, origin, _ in describe(settings, sections):
        parts.append(f"{name}={value}" + ("" if origin == "default" else f" [{origin}]"))
    return ", ".join(parts)


def markdown() -> str:
    """docs/configuration.md: every option, by section (generated; do not edit by hand)."""
    out = [
        "# Configuration",
        "",
        "<!-- Generated by `python -m evtime.settings --markdown > docs/configuration.md` from",
        "     evtime/settings.py; a unit test fails when the two differ. -->",
        "",
        "Every option of evtime is declared once, in `evtime/settings.py`. Each is read",
        "from, highest precedence first:",
        "",
        "1. an **argument** given in code to the object that uses it",
        "   (`app.worker(metrics_port=9100)`, `KafkaSource(topic, bootstrap=...)`);",
        "2. a **flag** of `evtime run` / `evtime worker` / `evtime config`;",
        "3. its **environment variable** (`EVTIME_*`; empty counts as unset);",
        "4. the **app**: what `App(...)` declares (`state_dir`, `checkpoint_interval`,",
        "   `processing`), the app's own defaults;",
        "5. its **default**.",
        "",
        "A bad value stops the command with one line naming the option and its variable.",
        "`evtime config APP` prints every value and where it came from; a worker logs them",
        "at start. Secrets (passwords, tokens, API keys, a URL's password) are masked.",
        "",
    ]
    for section, title in SECTIONS.items():
        out += [f"## {title}", "", "| Option | Variable | Flag | Type | Default | Description |"]
        out.append("|---|---|---|---|---|---|")
        for o in OPTIONS:
            if o.section != section:
                continue
            default = o.default_text or o.show(o.default)
            cells = (
                f"`{o.name}`",
                f"`{o.env}`",
                f"`{o.flag}`" if o.flag else "",
                o.kind.name.replace("|", "\\|"),
                f"`{default}`" if default != "-" else "unset",
                o.help.replace("|", "\\|"),
            )
            out.append("| " + " | ".join(cells) + " |")
        out.append("")
    return "\n".join(out)


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


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m evtime.settings", description="evtime's options."
    )
    parser.add_argument(
        "--markdown", action="store_true", help="write docs/configuration.md's text"
    )
    args = parser.parse_args(argv)
    if args.markdown:
        sys.stdout.write(markdown())
    else:
        sys.stdout.write(table(Settings.load()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
