"""Telling a wrong password or an untrusted certificate from an unreachable broker.

aiokafka's clients fail to start with the same retriable ``KafkaConnectionError("Unable
to bootstrap")`` whether the broker is down or refuses the client, and only log the
cause: waited for like an outage (connectors/kafka_retry.py), a wrong password would keep
a worker retrying for ten minutes. So before the first client of a secured connection
starts, :func:`verified` opens one connection to a bootstrap broker itself (aiokafka's
``create_conn``: TLS handshake and SASL authentication, as its clients do) and reads the
exception: a refusal (authentication failed, certificate not trusted, a mechanism or
protocol the listener does not speak) is a ConfigError, one line naming the setting to
fix; a broker that cannot be reached is left to the clients' retries. A connection that
authenticated once is not probed again in the process. PLAINTEXT is never probed.
"""

from __future__ import annotations

import asyncio
import ssl

from aiokafka.conn import create_conn
from aiokafka.errors import (
    IllegalSaslStateError,
    SaslAuthenticationFailed,
    UnsupportedSaslMechanismError,
)

from evtime.connectors.kafka_connection import ENV, KafkaConnection, SecurityProtocol
from evtime.errors import ConfigError

PROBE_TIMEOUT_S = 10.0
_verified: set[KafkaConnection] = set()


def _setting(option: str) -> str:
    env = ENV[option]
    return f"{env.removeprefix('EVTIME_').lower()} ({env})"


def refusal(connection: KafkaConnection, address: str, exc: BaseException) -> str | None:
    """The one line saying which setting is wrong when ``exc`` (from connecting to
    ``address``) is a refusal of the client; None when it only means "unreachable"."""
    mechanism = connection.sasl_mechanism.value if connection.sasl_mechanism else ""
    if isinstance(exc, SaslAuthenticationFailed):
        if connection.username:
            return (
                f"Kafka authentication failed for user {connection.username!r} ({mechanism}) "
                f"at {address}: check {_setting('password')} and {_setting('username')}"
            )
        return (
            f"Kafka authentication failed ({mechanism}) at {address}: check "
            f"{_setting('token_provider')}"
        )
    if isinstance(exc, UnsupportedSaslMechanismError):
        return (
            f"the Kafka broker at {address} does not accept SASL mechanism {mechanism}: "
            f"check {_setting('sasl_mechanism')}"
        )
    if isinstance(exc, IllegalSaslStateError):
        return (
            f"the Kafka listener at {address} does not speak SASL: check "
            f"{_setting('security_protocol')} (now {connection.security_protocol.value}) "
            f"and {_setting('bootstrap')}"
        )
    if isinstance(exc, ssl.SSLCertVerificationError):
        reason = exc.verify_message or str(exc)
        if "mismatch" in reason.lower():
            return (
                f"the Kafka broker's certificate at {address} does not name that host "
                f"({reason}): use the name it was issued for in {_setting('bootstrap')}, or "
                f"set {_setting('check_hostname')} to false for a test cluster"
            )
        return (
            f"the Kafka broker's certificate at {address} is not trusted ({reason}): set "
            f"{_setting('ca_file')} to the CA that signed it"
            + (f" (now {connection.ca_file})" if connection.ca_file else "")
        )
    if isinstance(exc, ssl.SSLError):
        why = getattr(exc, "reason", None) or exc
        return (
            f"TLS with the Kafka broker at {address} failed ({why}): check "
            f"{_setting('security_protocol')} (now {connection.security_protocol.value}) "
            f"and the TLS files ({_setting('ca_file')}, {_setting('cert_file')})"
        )
    return None


def _addresses(bootstrap: str) -> list[tuple[str, int]]:
    out: list[tuple[str, int]] = []
    for part in bootstrap.split(","):
        host, _, port = part.strip().rpartition(":")
        if host and port.isdigit():
            out.append((host.strip("[]"), int(port)))
    return out


async def verified(connection: KafkaConnection) -> None:
    """Raise ConfigError if a bootstrap broker refuses ``connection`` (see the module
    doc); return once one accepted it, or when none could be reached."""
    if connection.security_protocol is SecurityProtocol.PLAINTEXT or connection in _verified:
        return
    kwargs = connection.client_kwargs()
    del kwargs["bootstrap_servers"]
    for host, port in _addresses(connection.bootstrap):
        try:
            conn = await asyncio.wait_for(
                create_conn(host, port, request_timeout_ms=int(PROBE_TIMEOUT_S * 1000), **kwargs),
                PROBE_TIMEOUT_S,
            )
        except Exception as exc:
            line = refusal(connection, f"{host}:{port}", exc)
            if line is not None:
                raise ConfigError(line) from None
            continue  # unreachable: the next broker, else the clients' own retries
        conn.close()
        _verified.add(connection)
        return
