"""The ``evtime`` command: run | worker | config | describe | state | demo | services."""

from __future__ import annotations

import argparse
import asyncio
import importlib
import importlib.util
import logging
import os
import sys
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType
from typing import Any

import orjson

from evtime import __version__, cli_state
from evtime.errors import ConfigError, EvtimeError
from evtime.logs import RepeatFilter
from evtime.settings import OPTIONS, LogFormat, Origin, Settings, option, summary, table

log = logging.getLogger("evtime.cli")


def load_app(target: str) -> Any:
    """Import ``module:attribute`` (or ``path/to/file.py:attribute``) and return the App."""
    from evtime.app import App

    module_name, _, attr = target.partition(":")
    attr = attr or "app"
    if module_name.endswith(".py"):
        path = Path(module_name).resolve()
        if not path.is_file():
            raise ConfigError(f"no such file {module_name}")
        module = _load_file(path)
        module_name = path.stem
    else:
        _prepend_path(os.getcwd())
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            raise ConfigError(
                f"cannot import {module_name!r}: {exc}; give MODULE:APP (e.g. myjob:app) or "
                "path/to/job.py:app"
            ) from exc
    if not hasattr(module, attr):
        apps = sorted(name for name, v in vars(module).items() if isinstance(v, App))
        found = f" (apps in it: {', '.join(apps)})" if apps else " (it defines no App)"
        raise ConfigError(
            f"{module_name} has no attribute {attr!r}{found}; give MODULE:APP with the name of "
            "the variable holding App(...)"
        )
    app = getattr(module, attr)
    if not isinstance(app, App):
        raise ConfigError(
            f"{module_name}:{attr} is {type(app).__name__}, not an evtime App; point at the "
            "variable holding App(...)"
        )
    return app


def _load_file(path: Path) -> ModuleType:
    """Execute a job file as a module of its own.

    Importing it by its file name would return any module already imported under that name
    (a second ``job.py``, or a job called ``json.py``). Its folder goes on ``sys.path`` so
    that it can import its neighbours, as ``python job.py`` would.
    """
    _prepend_path(str(path.parent))
    name = f"_evtime_job_{path.stem}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ConfigError(f"cannot load {path}: give a Python file, path/to/job.py:app")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses and pickle look classes' modules up by name
    try:
        spec.loader.exec_module(module)
    except ModuleNotFoundError as exc:
        del sys.modules[name]
        raise ConfigError(f"cannot load {path}: {exc}; is a dependency missing?") from exc
    except BaseException:
        del sys.modules[name]
        raise
    return module


def _prepend_path(folder: str) -> None:
    if folder not in sys.path:
        sys.path.insert(0, folder)


def _run(args: argparse.Namespace) -> int:
    app = load_app(args.app)
    settings = _resolve(args, app)
    log.info("settings: %s", summary(settings))
    if getattr(args, "processes", None) is not None:
        return _supervise(args, app, settings)
    if app.on_kafka:
        worker = app.worker(
            instance_id=settings.instance_id,
            metrics_port=settings.metrics_port,
            metrics_host=settings.metrics_host,
        )
        asyncio.run(worker.run())
    else:
        asyncio.run(app.runner().run())
    return 0


def _config(args: argparse.Namespace) -> int:
    app = load_app(args.app)
    print(f"app: {app.name} ({args.app})")
    print(table(_resolve(args, app)), end="")
    return 0


def _resolve(args: argparse.Namespace | None, app: Any) -> Settings:
    """The settings of ``app`` run with ``args``' flags; the app's plan takes its state
    directory, checkpoint interval and guarantee from them (a flag or variable overrides
    what the app declares)."""
    plan = app.plan
    declared = {
        "state_dir": plan.state_dir,
        "checkpoint_interval": plan.checkpoint_interval,
        "processing": plan.guarantee,
    }
    settings = Settings.load(
        flags=None if args is None else _flags(args),
        app={name: v for name, v in declared.items() if v != option(name).default},
    )
    app.use_state_dir(settings.state_dir)
    plan.checkpoint_interval = settings.checkpoint_interval
    plan.guarantee = settings.processing
    return settings


def _load_configured_app(target: str) -> Any:
    """The app with the environment's settings applied, for ``describe`` and ``state``
    (which apply their own --state-dir after): they see the job as a worker runs it."""
    app = load_app(target)
    _resolve(None, app)
    return app


def _flags(args: argparse.Namespace) -> dict[str, Any]:
    """The options given as flags (``-v`` is ``--log-level DEBUG``)."""
    flags = {o.name: getattr(args, o.name, None) for o in OPTIONS if o.flag}
    if args.verbose and flags.get("log_level") is None:
        flags["log_level"] = "DEBUG"
    return flags


def _supervise(args: argparse.Namespace, app: Any, settings: Settings) -> int:
    from evtime.supervisor import Supervisor

    if not app.on_kafka:
        raise ConfigError("-p runs Kafka workers; an app on local sources runs with `evtime run`")
    # Flags the workers need besides those the supervisor gives each its own of.
    own = {"state_dir", "instance_id", "metrics_port", "metrics_host"}
    passed = {k: str(v) for k, v in _flags(args).items() if v is not None and k not in own}
    supervisor = Supervisor(
        args.app,
        args.processes,
        app.plan.state_dir,
        instance_id=settings.instance_id,
        metrics_port=settings.metrics_port,
        metrics_host=None if settings.origin("metrics_host") is Origin.DEFAULT
        else settings.metrics_host,
        verbose=args.verbose,
        settings=passed,
    )
    code: int = asyncio.run(supervisor.run())
    return code


def _demo(args: argparse.Namespace) -> int:
    from evtime.demos.seed import main as demo_main

    return demo_main(list(args.rest))


def _services(args: argparse.Namespace) -> int:
    from evtime.services import cli_main

    return cli_main(list(args.rest))


def _add_setting_flags(parser: argparse.ArgumentParser) -> None:
    """A flag per option declared with one (evtime/settings/model.py); checked when resolved."""
    for o in OPTIONS:
        if o.flag:
            kind = o.kind.name  # "duration", "port (0: any free one)", "text | json"
            choices = kind.replace(" | ", ",")
            metavar = f"{{{choices}}}" if "|" in kind else kind.split()[0].upper()
            parser.add_argument(o.flag, dest=o.name, metavar=metavar, help=f"{o.help} [{o.env}]")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="evtime",
        description="Event-time stream processing for Python on Kafka.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log at DEBUG level")
    parser.add_argument("--version", action="version", version=f"evtime {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run an app until its bounded input ends (local sources)")
    run.add_argument("app", help="MODULE:APP or path/to/job.py:APP")
    _add_setting_flags(run)
    run.set_defaults(func=_run)

    worker = sub.add_parser("worker", help="run an app as a long-running worker")
    worker.add_argument("app", help="MODULE:APP or path/to/job.py:APP")
    _add_setting_flags(worker)
    worker.add_argument(
        "-p",
        "--processes",
        type=int,
        help="run N worker processes of the app here, supervised: each with its own state "
        "directory (<state_dir>/worker-<i>), instance id (<id>-<i>) and metrics port "
        "(<port>+1+i; the status page of all on <port>); one that crashes is started again",
    )
    worker.set_defaults(func=_run)

    config = sub.add_parser(
        "config",
        help="print an app's settings: each option's value, where it came from (argument, "
        "flag, env, app, default) and its variable (docs/configuration.md)",
    )
    config.add_argument("app", help="MODULE:APP or path/to/job.py:APP")
    _add_setting_flags(config)
    config.set_defaults(func=_config)

    demo = sub.add_parser("demo", help="generate a stream and run the demo pipeline on it")
    demo.add_argument("rest", nargs=argparse.REMAINDER, help="options of the demo (--help)")
    demo.set_defaults(func=_demo)

    services = sub.add_parser(
        "services",
        help="start/stop/check the local Kafka and OpenSearch (up | down | restart | status)",
    )
    services.add_argument(
        "rest", nargs=argparse.REMAINDER, help="up | down | restart | status [names]"
    )
    services.set_defaults(func=_services)
    cli_state.add_commands(sub, _load_configured_app)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``evtime`` console script."""
    argv = sys.argv[1:] if argv is None else argv
    # `demo` and `services` parse their own options.
    parser = build_parser()
    first = next((i for i, a in enumerate(argv) if not a.startswith("-")), None)
    if first is not None and argv[first] in ("demo", "services"):
        args = parser.parse_args(argv[: first + 1])
        args.rest = argv[first + 1 :]
    else:
        args = parser.parse_args(argv)
    try:
        _configure_logging(Settings.load(flags=_flags(args)))
    except ConfigError as exc:
        print(f"evtime: {exc}", file=sys.stderr)
        return 2
    try:
        code: int = args.func(args)
    except EvtimeError as exc:
        _fail(exc)
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader went away (`evtime run job.py | head`): stop quietly, as `cat` does;
        # stdout goes to /dev/null so that the interpreter's last flush fails no more.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    return code


def _configure_logging(settings: Settings) -> None:
    handler = logging.StreamHandler()
    if settings.log_format is LogFormat.JSON:
        handler.setFormatter(_JsonFormatter(settings.log_prefix.strip()))
        # Every line JSON: an uncaught exception is a log record with its traceback in a
        # field, not a traceback printed on stderr.
        sys.excepthook = _log_uncaught
    else:
        prefix = settings.log_prefix.replace("%", "%%")
        handler.setFormatter(
            logging.Formatter(f"%(asctime)s {prefix}%(levelname)s %(name)s: %(message)s")
        )
    # aiokafka logs every failed connection of every retry: one of a kind a minute.
    handler.addFilter(RepeatFilter())
    logging.basicConfig(level=settings.log_level, handlers=[handler])
    logging.captureWarnings(True)  # Python's warnings as records of the `py.warnings` logger


def _log_uncaught(kind: type[BaseException], exc: BaseException, tb: Any) -> None:
    logging.getLogger("evtime").critical("uncaught %s: %s", kind.__name__, exc,
                                         exc_info=(kind, exc, tb))


def _fail(exc: BaseException) -> None:
    """An error that ends the command: a log record in JSON logs, else ``evtime: ...``."""
    if any(isinstance(h.formatter, _JsonFormatter) for h in logging.getLogger().handlers):
        log.error("%s", exc)
    else:
        print(f"evtime: {exc}", file=sys.stderr)


_RECORD_FIELDS = frozenset(vars(logging.makeLogRecord({}))) | {"message", "asctime"}


class _JsonFormatter(logging.Formatter):
    """A log record as one JSON object: time, level, logger, message, the structured fields
    given as ``extra=`` (task, partitions, offsets, watermark, ...), prefix, error."""

    def __init__(self, prefix: str) -> None:
        super().__init__()
        self.prefix = prefix

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name, value in vars(record).items():
            if name not in _RECORD_FIELDS:
                line.setdefault(name, value)
        if self.prefix:
            line["prefix"] = self.prefix
        if record.exc_info:
            line["error"] = self.formatException(record.exc_info)
        elif record.stack_info:
            line["stack"] = self.formatStack(record.stack_info)
        return orjson.dumps(line, default=str, option=orjson.OPT_NON_STR_KEYS).decode()


if __name__ == "__main__":
    sys.exit(main())
