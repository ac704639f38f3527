"""``python -m evtime.services up|down|restart|status``: the same as ``evtime services``."""

import sys

from evtime.services.cli import cli_main

sys.exit(cli_main(sys.argv[1:]))
