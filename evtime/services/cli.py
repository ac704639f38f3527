"""``evtime services up|down|restart|status [kafka|opensearch ...]``."""

from __future__ import annotations

import argparse
import sys

from evtime.errors import EvtimeError
from evtime.services.lifecycle import SERVICE_NAMES, down, restart, status, up


def cli_main(argv: list[str]) -> int:
    """``evtime services up|down|restart|status [kafka|opensearch ...]``; the exit code."""
    parser = argparse.ArgumentParser(
        prog="evtime services",
        description="Run a local Apache Kafka broker and OpenSearch node from Maven jars.",
    )
    parser.add_argument("action", choices=("up", "down", "restart", "status"))
    parser.add_argument(
        "names", nargs="*", metavar="SERVICE", help="kafka and/or opensearch (default: both)"
    )
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help or a usage error
        return exc.code if isinstance(exc.code, int) else 2
    names = tuple(args.names) or SERVICE_NAMES
    try:
        if args.action == "up":
            up(names)
        elif args.action == "down":
            down(names)
        elif args.action == "restart":
            restart(names)
        else:
            return status(names)
    except EvtimeError as exc:
        print(f"evtime services {args.action}: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"evtime services {args.action}: interrupted", file=sys.stderr)
        return 130
    return 0
