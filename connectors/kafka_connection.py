"""How every Kafka client of a job reaches the cluster: address, TLS and SASL.

One :class:`KafkaConnection` value is shared by everything evtime creates for
Kafka (the worker's consumer, output and dead-letter producers, transactional
producers, the admin client, changelog and repartition clients), so a secured
cluster is configured once, never per client (DESIGN.md section 11).

- ``security_protocol``: ``PLAINTEXT`` (default), ``SSL``, ``SASL_PLAINTEXT`` or
  ``SASL_SSL``;
- ``sasl_mechanism``: ``PLAIN``, ``SCRAM-SHA-256``, ``SCRAM-SHA-512`` (with
  ``username`` and ``password``) or ``OAUTHBEARER`` (with ``token_provider``,
  an aiokafka ``AbstractTokenProvider``: its async ``token()`` returns a
  fresh token whenever the client authenticates);
- TLS: ``ca_file`` (the CA that signed the brokers' certificates; default:
  the system's trusted CAs), ``cert_file`` and ``key_file`` (a client
  certificate, for brokers that require one), ``key_password``, and
  ``check_hostname`` (on by default: turn it off only for a test cluster).

A combination that cannot work (SASL without a mechanism, SCRAM without a
password, a CA file that does not exist, ...) is a ConfigError naming the
setting and its environment variable, raised when the value is made.
"""

from __future__ import annotations

import importlib
import ssl
from dataclasses import dataclass, field, replace
from enum import Enum, StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from aiokafka.abc import AbstractTokenProvider
from aiokafka.helpers import create_ssl_context

from evtime.errors import ConfigError

if TYPE_CHECKING:
    from evtime.settings import Settings


class SecurityProtocol(StrEnum):
    """Kafka's ``security.protocol``."""

    PLAINTEXT = "PLAINTEXT"
    SSL = "SSL"
    SASL_PLAINTEXT = "SASL_PLAINTEXT"
    SASL_SSL = "SASL_SSL"

    @property
    def tls(self) -> bool:
        return self in (SecurityProtocol.SSL, SecurityProtocol.SASL_SSL)

    @property
    def sasl(self) -> bool:
        return self in (SecurityProtocol.SASL_PLAINTEXT, SecurityProtocol.SASL_SSL)


class SaslMechanism(StrEnum):
    """Kafka's ``sasl.mechanism`` (the ones aiokafka speaks without Kerberos)."""

    PLAIN = "PLAIN"
    SCRAM_SHA_256 = "SCRAM-SHA-256"
    SCRAM_SHA_512 = "SCRAM-SHA-512"
    OAUTHBEARER = "OAUTHBEARER"


ENV = {
    "bootstrap": "EVTIME_KAFKA_BOOTSTRAP",
    "security_protocol": "EVTIME_KAFKA_SECURITY_PROTOCOL",
    "sasl_mechanism": "EVTIME_KAFKA_SASL_MECHANISM",
    "username": "EVTIME_KAFKA_SASL_USERNAME",
    "password": "EVTIME_KAFKA_SASL_PASSWORD",
    "token_provider": "EVTIME_KAFKA_OAUTH_TOKEN_PROVIDER",
    "ca_file": "EVTIME_KAFKA_SSL_CA_FILE",
    "cert_file": "EVTIME_KAFKA_SSL_CERT_FILE",
    "key_file": "EVTIME_KAFKA_SSL_KEY_FILE",
    "key_password": "EVTIME_KAFKA_SSL_KEY_PASSWORD",
    "check_hostname": "EVTIME_KAFKA_SSL_CHECK_HOSTNAME",
}
"""The environment variable of each connection setting (read by evtime.settings)."""


_E = TypeVar("_E", bound=Enum)


def _named(option: str) -> str:
    return f"kafka {option} ({ENV[option]})"


def _enum(kind: type[_E], value: object, option: str) -> _E:
    if isinstance(value, kind):
        return value
    try:
        return kind(str(value).upper())
    except ValueError:
        choices = ", ".join(str(m.value) for m in kind)
        raise ConfigError(f"{_named(option)} is {value!r}: use one of {choices}") from None


@dataclass(frozen=True, slots=True)
class KafkaConnection:
    """Where the brokers are and how to authenticate to them (see the module doc)."""

    bootstrap: str
    security_protocol: SecurityProtocol = SecurityProtocol.PLAINTEXT
    sasl_mechanism: SaslMechanism | None = None
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    token_provider: AbstractTokenProvider | None = field(default=None, repr=False)
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    key_password: str | None = field(default=None, repr=False)
    check_hostname: bool = True

    def __post_init__(self) -> None:
        if not self.bootstrap or not self.bootstrap.strip():
            raise ConfigError(
                f"{_named('bootstrap')} is empty: give host:port[,host:port...] of the brokers"
            )
        protocol = _enum(SecurityProtocol, self.security_protocol, "security_protocol")
        object.__setattr__(self, "security_protocol", protocol)
        if self.sasl_mechanism is not None:
            mechanism = _enum(SaslMechanism, self.sasl_mechanism, "sasl_mechanism")
            object.__setattr__(self, "sasl_mechanism", mechanism)
        self._check_sasl(protocol)
        self._check_tls(protocol)

    def _check_sasl(self, protocol: SecurityProtocol) -> None:
        mechanism = self.sasl_mechanism
        if not protocol.sasl:
            if mechanism is not None or self.username or self.password:
                raise ConfigError(
                    f"{_named('sasl_mechanism')} and credentials are set but "
                    f"{_named('security_protocol')} is {protocol.value}: use SASL_SSL "
                    "(or SASL_PLAINTEXT) to authenticate"
                )
            return
        if mechanism is None:
            raise ConfigError(
                f"{_named('sasl_mechanism')} is needed with security_protocol="
                f"{protocol.value}: use PLAIN, SCRAM-SHA-256, SCRAM-SHA-512 or OAUTHBEARER"
            )
        if mechanism is SaslMechanism.OAUTHBEARER:
            if self.token_provider is None:
                raise ConfigError(
                    f"{_named('token_provider')} is needed with sasl_mechanism=OAUTHBEARER: "
                    "an aiokafka AbstractTokenProvider (in the environment: module:attribute)"
                )
            return
        if not self.username:
            raise ConfigError(
                f"{_named('username')} is needed with sasl_mechanism={mechanism.value}"
            )
        if not self.password:
            raise ConfigError(
                f"{_named('password')} is needed with sasl_mechanism={mechanism.value}"
            )

    def _check_tls(self, protocol: SecurityProtocol) -> None:
        files = {"ca_file": self.ca_file, "cert_file": self.cert_file, "key_file": self.key_file}
        given = {k: v for k, v in files.items() if v}
        if not protocol.tls:
            if given:
                raise ConfigError(
                    f"{_named(next(iter(given)))} is set but {_named('security_protocol')} "
                    f"is {protocol.value}: use SSL or SASL_SSL for TLS"
                )
            return
        for option, path in given.items():
            if not Path(path).is_file():
                raise ConfigError(f"{_named(option)} {path!r} is not a readable file")
        if bool(self.cert_file) != bool(self.key_file):
            raise ConfigError(
                f"a client certificate needs both {_named('cert_file')} and "
                f"{_named('key_file')}"
            )

    @classmethod
    def from_settings(cls, settings: Settings) -> KafkaConnection:
        """The connection the settings (``kafka_*``, from the environment) describe; the
        OAUTHBEARER token provider is imported from its ``module:attribute``."""
        provider = settings.kafka_oauth_token_provider
        mechanism = settings.kafka_sasl_mechanism
        return cls(
            bootstrap=settings.kafka_bootstrap,
            security_protocol=_enum(SecurityProtocol, settings.kafka_security_protocol,
                                    "security_protocol"),
            sasl_mechanism=_enum(SaslMechanism, mechanism, "sasl_mechanism") if mechanism else None,
            username=settings.kafka_sasl_username,
            password=settings.kafka_sasl_password,
            token_provider=_token_provider(provider) if provider else None,
            ca_file=settings.kafka_ssl_ca_file,
            cert_file=settings.kafka_ssl_cert_file,
            key_file=settings.kafka_ssl_key_file,
            key_password=settings.kafka_ssl_key_password,
            check_hostname=settings.kafka_ssl_check_hostname,
        )

    # -- what clients are made with ------------------------------------------------
    def client_kwargs(self) -> dict[str, object]:
        """The keyword arguments every aiokafka client (consumer, producer, admin) takes."""
        kwargs: dict[str, object] = {
            "bootstrap_servers": self.bootstrap,
            "security_protocol": self.security_protocol.value,
        }
        if self.security_protocol.tls:
            kwargs["ssl_context"] = self.ssl_context()
        mechanism = self.sasl_mechanism
        if self.security_protocol.sasl and mechanism is not None:
            kwargs["sasl_mechanism"] = mechanism.value
            if mechanism is SaslMechanism.OAUTHBEARER:
                kwargs["sasl_oauth_token_provider"] = self.token_provider
            else:
                kwargs["sasl_plain_username"] = self.username
                kwargs["sasl_plain_password"] = self.password
        return kwargs

    def ssl_context(self) -> ssl.SSLContext:
        """A TLS context trusting ``ca_file`` (else the system's CAs), with the client
        certificate if one is given."""
        try:
            context: ssl.SSLContext = create_ssl_context(
                cafile=self.ca_file,
                certfile=self.cert_file,
                keyfile=self.key_file,
                password=self.key_password,
            )
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(
                f"cannot load the Kafka TLS files ({_named('ca_file')}, "
                f"{_named('cert_file')}, {_named('key_file')}): {exc}"
            ) from None
        if not self.check_hostname:
            context.check_hostname = False
        return context

    @property
    def target(self) -> str:
        """What an outage log line calls the cluster (evtime/logs.py)."""
        return f"Kafka broker {self.bootstrap}"

    def describe(self) -> str:
        """One line for logs: the address and how it authenticates, secrets left out."""
        parts = [self.bootstrap, self.security_protocol.value]
        if self.sasl_mechanism is not None:
            who = f" as {self.username}" if self.username else ""
            parts.append(f"{self.sasl_mechanism.value}{who}")
        if self.security_protocol.tls:
            parts.append(f"CA {self.ca_file or 'system'}")
            if not self.check_hostname:
                parts.append("hostname not checked")
        return ", ".join(parts)


def connection_for(
    bootstrap: str | None = None, connection: KafkaConnection | None = None
) -> KafkaConnection:
    """``connection``, else the settings' one (``EVTIME_KAFKA_*``); a ``bootstrap`` given
    as a shortcut replaces its address (TLS and SASL still come from the settings)."""
    if connection is None:
        from evtime.settings import Settings

        connection = KafkaConnection.from_settings(Settings.load())
    if bootstrap and bootstrap != connection.bootstrap:
        connection = replace(connection, bootstrap=bootstrap)
    return connection


def as_connection(target: KafkaConnection | str) -> KafkaConnection:
    """``target``; a bare address takes TLS and SASL from the settings (:func:`connection_for`)."""
    return connection_for(target) if isinstance(target, str) else target


def _token_provider(spec: str) -> AbstractTokenProvider:
    """The AbstractTokenProvider ``module:attribute`` names (a class is instantiated)."""
    module_name, _, attribute = spec.partition(":")
    try:
        found: Any = getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError, ValueError) as exc:
        raise ConfigError(
            f"{_named('token_provider')} {spec!r} cannot be imported ({exc}): "
            "give module:attribute of an aiokafka AbstractTokenProvider"
        ) from None
    if isinstance(found, type):
        found = found()
    if not isinstance(found, AbstractTokenProvider):
        raise ConfigError(
            f"{_named('token_provider')} {spec!r} is a {type(found).__name__}, not an "
            "aiokafka AbstractTokenProvider"
        )
    return found
