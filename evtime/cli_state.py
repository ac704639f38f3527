"""The commands that show and reset a job's state: ``evtime describe``,
``evtime state inspect`` and ``evtime state reset`` (DESIGN.md section 14)."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
from typing import Any

from evtime.errors import ConfigError


def add_commands(sub: Any, load_app: Any) -> None:
    """Register ``describe`` and ``state`` on the ``evtime`` parser's subcommands."""

    def describe(args: argparse.Namespace) -> int:
        from evtime.describe import describe_plan, render

        app = load_app(args.app)
        if args.state_dir:
            app.use_state_dir(args.state_dir)
        counts, problem = _partition_counts(app)
        desc = describe_plan(app.plan, counts)
        if args.json:
            print(json.dumps(desc, indent=2))
        else:
            print(render(desc))
            if problem:
                print(f"\n(partition counts unknown: {problem})")
        return 0

    def reset(args: argparse.Namespace) -> int:
        from evtime.connectors.kafka_reset import ResetTarget, reset_app

        app = load_app(args.app)
        if args.state_dir:
            app.use_state_dir(args.state_dir)
        target = ResetTarget.parse(args.to)
        client, job = _reset_job(app)
        if not args.verbose:
            # Its refused commits (the group-membership check) are not errors here.
            logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
        asyncio.run(reset_app(client, job, target, dry_run=args.dry_run, wait_s=args.wait))
        return 0

    def inspect(args: argparse.Namespace) -> int:
        from pathlib import Path

        from evtime.state_inspect import inspect, render

        app = load_app(args.app).plan.app_name if args.app else None
        reports = inspect(Path(args.state_dir), app, args.partition, args.key)
        print(json.dumps(reports, indent=2) if args.json else render(reports))
        return 0

    describe_cmd = sub.add_parser(
        "describe", help="show the job as the worker will run it: sources, operators, sinks, "
        "internal topics, transactional ids"
    )
    describe_cmd.add_argument("app", help="MODULE:APP or path/to/job.py:APP")
    describe_cmd.add_argument("--state-dir", help="override the app's state_dir")
    describe_cmd.add_argument("--json", action="store_true", help="print JSON")
    describe_cmd.set_defaults(func=describe)

    state = sub.add_parser("state", help="inspect or reset an app's state")
    state_sub = state.add_subparsers(dest="state_command", required=True)
    inspect_cmd = state_sub.add_parser(
        "inspect",
        help="show what a state directory holds, per task: input offsets, watermarks, "
        "changelog end, epoch, timers, store sizes (read-only: safe while a worker runs)",
    )
    inspect_cmd.add_argument(
        "app", nargs="?", help="MODULE:APP or path/to/job.py:APP (only that app's tasks)"
    )
    inspect_cmd.add_argument("--state-dir", required=True, help="the state directory")
    inspect_cmd.add_argument("--partition", type=int, help="only the tasks of this partition")
    inspect_cmd.add_argument("--key", help="show this key's state in every store, decoded")
    inspect_cmd.add_argument("--json", action="store_true", help="print JSON")
    inspect_cmd.set_defaults(func=inspect)
    reset_cmd = state_sub.add_parser(
        "reset",
        help="start the app over from a point of its input: move the group's offsets, delete "
        "its changelog and repartition topics and its local state (no worker may run)",
    )
    reset_cmd.add_argument("app", help="MODULE:APP or path/to/job.py:APP")
    reset_cmd.add_argument(
        "--to", required=True,
        help="earliest | latest | an ISO time (e.g. 2026-12-01T08:00:00Z; without a zone: UTC)",
    )
    reset_cmd.add_argument("--state-dir", help="override the app's state_dir")
    reset_cmd.add_argument(
        "--dry-run", action="store_true", help="print each step, change nothing"
    )
    reset_cmd.add_argument(
        "--wait", type=float, default=30.0,
        help="seconds to wait for the group's members to leave (default 30: a stopped "
        "worker stays a member until its 15 s session times out)",
    )
    reset_cmd.set_defaults(func=reset)


def _kafka_sources(app: Any) -> list[Any]:
    from evtime.connectors.kafka import KafkaSource

    return [
        spec for spec in app.plan.sources.values() if isinstance(spec.connector, KafkaSource)
    ]


def _partition_counts(app: Any) -> tuple[dict[str, int], str | None]:
    """The input topics' partition counts, from the broker if it answers within seconds."""
    specs = [s for s in _kafka_sources(app) if s.origin is None]
    if not specs:
        return {}, "the app does not read Kafka"
    try:
        counts: dict[str, int] = asyncio.run(
            asyncio.wait_for(specs[0].connector.partition_counts([s.topic for s in specs]), 10)
        )
    except Exception as exc:  # an unreachable broker only leaves the counts out
        return {}, f"{type(exc).__name__}: {exc}"
    return counts, None


def _reset_job(app: Any) -> tuple[dict[str, Any], Any]:
    from evtime.connectors.kafka_probe import verified
    from evtime.connectors.kafka_reset import ResetJob
    from evtime.describe import describe_plan
    from evtime.names import group_name

    specs = _kafka_sources(app)
    if not specs:
        raise ConfigError(
            f"app {app.plan.app_name!r} reads no Kafka topic: a local app's state is its "
            "state_dir, remove it to start over"
        )
    plan = app.plan
    desc = describe_plan(plan)
    state_roots = [plan.state_dir, *sorted(plan.state_dir.glob("worker-*"))]
    dirs = [
        root / plan.app_name / group_name(group) for root in state_roots for group in plan.groups()
    ]
    job = ResetJob(
        group=plan.app_name,
        inputs=[s.topic for s in specs if s.origin is None],
        internal=[t["topic"] for t in desc["internal_topics"]],
        state_dirs=dirs,
    )
    connection = specs[0].connector.connection
    asyncio.run(verified(connection))  # a refused password or certificate: one line, at once
    return connection.client_kwargs(), job
