"""The demos of ``evtime demo``: generated streams through example pipelines, checked.

Off the engine's import path: nothing in ``evtime`` imports this package but the CLI,
lazily, when ``evtime demo`` runs.

- ``seed``: ``evtime demo``, the seed pipeline on Kafka and OpenSearch or embedded;
  ``seed_stream`` its generated stream and check, ``seed_services`` its run on the
  services;
- ``clickstream``: ``evtime demo --clickstream``, windows and timers, embedded;
- ``embedded``: running a demo's app on the embedded engine with progress;
- ``seed_join``: the seed pipeline itself, ``examples/seed_join.py``.

``seed_join.py`` here is a symbolic link to ``examples/seed_join.py``: the example stays
one readable, runnable file for users (``python examples/seed_join.py``, ``evtime worker
examples/seed_join.py``), and the wheel, which cannot reach outside the package, gets a
copy of it (setuptools follows the link), so ``evtime demo`` imports the same pipeline
from a checkout and from an installed package, and no demo loads a file by its path.
The code stays in one place: moving it into the package would leave users an example
that only imports, and a second copy would drift (``duplicates`` does not read links).
"""
