"""A refused secured connection is a ConfigError naming the setting; an unreachable
broker is left to the clients' retries. And the connection every client is made from
comes from the settings unless one is given."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest
from aiokafka.abc import AbstractTokenProvider
from aiokafka.errors import (
    IllegalSaslStateError,
    KafkaConnectionError,
    SaslAuthenticationFailed,
    UnsupportedSaslMechanismError,
)

from evtime.connectors.kafka import KafkaSource
from evtime.connectors.kafka_connection import KafkaConnection, connection_for
from evtime.connectors.kafka_probe import refusal, verified
from evtime.connectors.kafka_sink import KafkaSink
from evtime.errors import ConfigError
from evtime.settings import Settings


class Tokens(AbstractTokenProvider):
    async def token(self) -> str:
        return "t0k3n"


def scram() -> KafkaConnection:
    return KafkaConnection("b:9094", "SASL_SSL", "SCRAM-SHA-512", "evtime", "secret")


def cert_error(message: str) -> ssl.SSLCertVerificationError:
    exc = ssl.SSLCertVerificationError(1, f"[SSL: CERTIFICATE_VERIFY_FAILED] {message}")
    exc.verify_message = message
    return exc


def test_a_refused_password_names_the_password_setting() -> None:
    line = refusal(scram(), "b:9094", SaslAuthenticationFailed("invalid credentials"))
    assert line == (
        "Kafka authentication failed for user 'evtime' (SCRAM-SHA-512) at b:9094: check "
        "kafka_sasl_password (EVTIME_KAFKA_SASL_PASSWORD) and kafka_sasl_username "
        "(EVTIME_KAFKA_SASL_USERNAME)"
    )


@pytest.mark.parametrize(
    ("exc", "names"),
    [
        (cert_error("self-signed certificate in certificate chain"),
         "is not trusted (self-signed certificate in certificate chain): set "
         "kafka_ssl_ca_file (EVTIME_KAFKA_SSL_CA_FILE)"),
        (cert_error("Hostname mismatch, certificate is not valid for 'b'."),
         "kafka_ssl_check_hostname (EVTIME_KAFKA_SSL_CHECK_HOSTNAME) to false"),
        (ssl.SSLError(1, "[SSL: WRONG_VERSION_NUMBER] wrong version number"),
         "check kafka_security_protocol (EVTIME_KAFKA_SECURITY_PROTOCOL) (now SASL_SSL)"),
        (UnsupportedSaslMechanismError(), "does not accept SASL mechanism SCRAM-SHA-512: check "
         "kafka_sasl_mechanism (EVTIME_KAFKA_SASL_MECHANISM)"),
        (IllegalSaslStateError(), "does not speak SASL: check kafka_security_protocol"),
    ],
)  # fmt: skip
def test_each_refusal_names_its_setting(exc: BaseException, names: str) -> None:
    line = refusal(scram(), "b:9094", exc)
    assert line is not None and names in line


@pytest.mark.parametrize(
    "exc",
    [ConnectionRefusedError(111, "refused"), KafkaConnectionError("closed"), TimeoutError()],
)
def test_an_unreachable_broker_is_no_refusal(exc: BaseException) -> None:
    assert refusal(scram(), "b:9094", exc) is None


async def test_an_unreachable_secured_broker_is_left_to_the_retries() -> None:
    conn = KafkaConnection("127.0.0.1:1", "SASL_PLAINTEXT", "PLAIN", "u", "p")
    await verified(conn)  # connection refused: no error here, the clients retry


async def test_a_refusal_at_the_probe_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    async def refuse(*args: object, **kwargs: object) -> None:
        raise SaslAuthenticationFailed("invalid credentials")

    monkeypatch.setattr("evtime.connectors.kafka_probe.create_conn", refuse)
    conn = KafkaConnection("127.0.0.1:1,127.0.0.1:2", "SASL_PLAINTEXT", "PLAIN", "u", "bad")
    with pytest.raises(ConfigError, match=r"^Kafka authentication failed for user 'u' \(PLAIN\)"):
        await verified(conn)


def env(**values: str) -> dict[str, str]:
    return {f"EVTIME_KAFKA_{k.upper()}": v for k, v in values.items()}


def test_the_connection_comes_from_the_settings(tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("not read until a client is made")
    settings = Settings.load(environ=env(
        bootstrap="b:9094", security_protocol="SASL_SSL", sasl_mechanism="SCRAM-SHA-256",
        sasl_username="u", sasl_password="p", ssl_ca_file=str(ca),
        ssl_check_hostname="false",
    ))  # fmt: skip
    conn = KafkaConnection.from_settings(settings)
    assert (conn.bootstrap, conn.username, conn.password, conn.ca_file) == ("b:9094", "u", "p",
                                                                            str(ca))
    assert conn.sasl_mechanism is not None and conn.sasl_mechanism.value == "SCRAM-SHA-256"
    assert conn.security_protocol.value == "SASL_SSL" and conn.check_hostname is False


def test_the_oauth_token_provider_is_imported_from_the_settings() -> None:
    settings = Settings.load(environ=env(
        security_protocol="SASL_PLAINTEXT", sasl_mechanism="OAUTHBEARER",
        oauth_token_provider=f"{__name__}:Tokens",
    ))  # fmt: skip
    assert isinstance(KafkaConnection.from_settings(settings).token_provider, Tokens)
    bad = Settings.load(environ=env(
        security_protocol="SASL_PLAINTEXT", sasl_mechanism="OAUTHBEARER",
        oauth_token_provider="no_such_module:x",
    ))  # fmt: skip
    with pytest.raises(ConfigError, match=r"EVTIME_KAFKA_OAUTH_TOKEN_PROVIDER\) 'no_such_module"):
        KafkaConnection.from_settings(bad)


async def test_sources_and_sinks_share_a_given_connection_and_bootstrap_is_a_shortcut(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    conn = KafkaConnection("b:9094", "SASL_PLAINTEXT", "PLAIN", "u", "p")
    source = KafkaSource("t", connection=conn)
    assert source.connection is conn and source.bootstrap == "b:9094"
    assert source.internal_source("t2").connection is conn
    assert source.repartition_sink("r").connection is conn
    assert source.changelog("c").connection is conn
    assert source.transaction("x").connection is conn
    group = source.group_source("g", ["t"])
    assert group.connection is conn
    sink = KafkaSink("out", connection=conn)
    assert sink._settings["sasl_plain_username"] == "u"
    # bootstrap= replaces only the address: the rest still comes from the settings
    monkeypatch.setenv("EVTIME_KAFKA_SECURITY_PROTOCOL", "SASL_PLAINTEXT")
    monkeypatch.setenv("EVTIME_KAFKA_SASL_MECHANISM", "PLAIN")
    monkeypatch.setenv("EVTIME_KAFKA_SASL_USERNAME", "env-user")
    monkeypatch.setenv("EVTIME_KAFKA_SASL_PASSWORD", "env-password")
    shortcut = KafkaSource("t", "other:1").connection
    assert (shortcut.bootstrap, shortcut.username) == ("other:1", "env-user")
    assert connection_for("other:1", conn).bootstrap == "other:1"
    assert KafkaSink("out", "other:2")._settings["sasl_plain_username"] == "env-user"
