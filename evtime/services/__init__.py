"""``evtime services``: a local Apache Kafka broker and OpenSearch node, run from Maven jars.

One module per concern:

- ``config``: where they live and listen (every ``EVTIME_*`` variable they read);
- ``service``: what a service is to ``up`` / ``down`` / ``status`` (a Protocol);
- ``kafka``, ``opensearch``: the two services, their JVM commands and readiness checks;
- ``tls``: the test CA and broker keystore of Kafka's SASL_SSL listener (``keytool``);
- ``build``: jars from Maven Central, the one compiled class, config templates (``data/``);
- ``processes``: detached processes known by their pid;
- ``lifecycle``: ``up``, ``restart``, ``down``, ``status`` (the steps in its docstring);
- ``cli``: the ``evtime services`` command line (also ``python -m evtime.services``).
"""

from evtime.services.cli import cli_main
from evtime.services.config import SecuredKafka, ServicesConfig
from evtime.services.lifecycle import SERVICE_NAMES, down, restart, status, up

__all__ = [
    "SERVICE_NAMES",
    "SecuredKafka",
    "ServicesConfig",
    "cli_main",
    "down",
    "restart",
    "status",
    "up",
]
