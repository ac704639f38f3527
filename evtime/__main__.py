"""``python -m evtime``: the ``evtime`` command."""

import sys

from evtime.cli import main

sys.exit(main())
