"""The ``evtime`` command: run | worker | describe | state | demo | services."""

from __future__ import annotations

import argparse
import asyncio
import importlib
import importlib.util
import logging
import os
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

from evtime import cli_state
from evtime.errors import ConfigError, EvtimeError


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
    app = getattr(module, attr, None)
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
    if args.state_dir:
        app.plan.state_dir = Path(args.state_dir)
    if getattr(args, "processes", None) is not None:
        return _supervise(args, app)
    if getattr(args, "instance_id", None):
        os.environ["EVTIME_INSTANCE_ID"] = args.instance_id
    if getattr(args, "metrics_port", None) is not None:
        os.environ["EVTIME_METRICS_PORT"] = str(args.metrics_port)
    if getattr(args, "metrics_host", None):
        os.environ["EVTIME_METRICS_HOST"] = args.metrics_host
    app.run()
    return 0


def _supervise(args: argparse.Namespace, app: Any) -> int:
    from evtime.runtime.metrics import configured_port
    from evtime.supervisor import Supervisor

    if not app.on_kafka:
        raise ConfigError("-p runs Kafka workers; an app on local sources runs with `evtime run`")
    supervisor = Supervisor(
        args.app,
        args.processes,
        app.plan.state_dir,
        instance_id=args.instance_id or os.environ.get("EVTIME_INSTANCE_ID"),
        metrics_port=configured_port(args.metrics_port),
        metrics_host=args.metrics_host or os.environ.get("EVTIME_METRICS_HOST"),
        verbose=args.verbose,
    )
    code: int = asyncio.run(supervisor.run())
    return code


def _demo(args: argparse.Namespace) -> int:
    from evtime.demos.seed import main as demo_main

    return demo_main(list(args.rest))


def _services(args: argparse.Namespace) -> int:
    from evtime.services import cli_main

    return cli_main(list(args.rest))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="evtime",
        description="Event-time stream processing for Python on Kafka.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log at DEBUG level")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run an app until its bounded input ends (local sources)")
    run.add_argument("app", help="MODULE:APP or path/to/job.py:APP")
    run.add_argument("--state-dir", help="override the app's state_dir")
    run.set_defaults(func=_run)

    worker = sub.add_parser("worker", help="run an app as a long-running worker")
    worker.add_argument("app", help="MODULE:APP or path/to/job.py:APP")
    worker.add_argument("--state-dir", help="override the app's state_dir")
    worker.add_argument(
        "--instance-id",
        help="stable id of this worker in the consumer group (static membership: a restart "
        "takes its partitions back at once); default $EVTIME_INSTANCE_ID",
    )
    worker.add_argument(
        "--metrics-port",
        type=int,
        help="serve Prometheus metrics on /metrics and health on /healthz (readiness) and "
        "/healthz/live at this port (0: any free port, logged); default $EVTIME_METRICS_PORT, "
        "else not served",
    )
    worker.add_argument(
        "--metrics-host",
        help="address the metrics server binds; default $EVTIME_METRICS_HOST, else 0.0.0.0",
    )
    worker.add_argument(
        "-p",
        "--processes",
        type=int,
        help="run N worker processes of the app here, supervised: each with its own state "
        "directory (<state_dir>/worker-<i>), instance id (<id>-<i>) and metrics port "
        "(<port>+i); one that crashes is started again",
    )
    worker.set_defaults(func=_run)

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
    cli_state.add_commands(sub, load_app)
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
    prefix = os.environ.get("EVTIME_LOG_PREFIX", "").replace("%", "%%")  # set by `-p N`
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format=f"%(asctime)s {prefix}%(levelname)s %(name)s: %(message)s",
    )
    try:
        code: int = args.func(args)
    except EvtimeError as exc:
        print(f"evtime: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return code


if __name__ == "__main__":
    sys.exit(main())
