"""``python -m evtime.settings [--markdown]``: the settings of this environment as a table, or
the text of docs/configuration.md."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from evtime.settings.model import Settings
from evtime.settings.views import markdown, table


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

