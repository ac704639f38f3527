"""Kafka connection settings: one value for every client, and a clear error naming the
setting for each combination that cannot work."""

from __future__ import annotations

from pathlib import Path

import pytest
from aiokafka.abc import AbstractTokenProvider

from evtime.connectors.kafka_connection import KafkaConnection, SaslMechanism, SecurityProtocol
from evtime.errors import ConfigError


class Tokens(AbstractTokenProvider):
    async def token(self) -> str:
        return "t0k3n"


def test_plaintext_is_the_default_and_passes_only_the_address() -> None:
    assert KafkaConnection("b:9092").client_kwargs() == {
        "bootstrap_servers": "b:9092",
        "security_protocol": "PLAINTEXT",
    }


def test_scram_over_sasl_plaintext_passes_the_credentials() -> None:
    conn = KafkaConnection(
        "b:9092", "sasl_plaintext", "scram-sha-512", username="app", password="s3cret"
    )
    assert conn.security_protocol is SecurityProtocol.SASL_PLAINTEXT
    assert conn.sasl_mechanism is SaslMechanism.SCRAM_SHA_512
    kwargs = conn.client_kwargs()
    assert kwargs["sasl_mechanism"] == "SCRAM-SHA-512"
    assert (kwargs["sasl_plain_username"], kwargs["sasl_plain_password"]) == ("app", "s3cret")
    assert "ssl_context" not in kwargs


def test_secrets_stay_out_of_repr_and_the_log_line() -> None:
    conn = KafkaConnection("b:9092", "SASL_PLAINTEXT", "PLAIN", username="app", password="s3cret")
    assert "s3cret" not in repr(conn)
    assert "s3cret" not in conn.describe()
    assert conn.describe() == "b:9092, SASL_PLAINTEXT, PLAIN as app"


def test_sasl_ssl_with_the_system_cas_builds_a_verifying_context() -> None:
    conn = KafkaConnection("b:9093", "SASL_SSL", "SCRAM-SHA-256", username="u", password="p")
    context = conn.client_kwargs()["ssl_context"]
    assert context.check_hostname
    off = KafkaConnection(
        "b:9093", "SASL_SSL", "SCRAM-SHA-256", username="u", password="p", check_hostname=False
    )
    assert not off.ssl_context().check_hostname
    assert "hostname not checked" in off.describe()


def test_oauthbearer_passes_the_token_provider() -> None:
    tokens = Tokens()
    conn = KafkaConnection("b:9093", "SASL_SSL", "OAUTHBEARER", token_provider=tokens)
    assert conn.client_kwargs()["sasl_oauth_token_provider"] is tokens


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"security_protocol": "TLS"}, r"security_protocol \(EVTIME_KAFKA_SECURITY_PROTOCOL\) "
         r"is 'TLS': use one of PLAINTEXT, SSL, SASL_PLAINTEXT, SASL_SSL"),
        ({"security_protocol": "SASL_SSL"}, r"sasl_mechanism \(EVTIME_KAFKA_SASL_MECHANISM\) "
         "is needed"),
        ({"security_protocol": "SASL_SSL", "sasl_mechanism": "GSSAPI"}, "use one of PLAIN"),
        ({"security_protocol": "SASL_SSL", "sasl_mechanism": "PLAIN", "password": "p"},
         r"username \(EVTIME_KAFKA_SASL_USERNAME\) is needed"),
        ({"security_protocol": "SASL_SSL", "sasl_mechanism": "SCRAM-SHA-512", "username": "u"},
         r"password \(EVTIME_KAFKA_SASL_PASSWORD\) is needed"),
        ({"security_protocol": "SASL_SSL", "sasl_mechanism": "OAUTHBEARER"},
         "EVTIME_KAFKA_OAUTH_TOKEN_PROVIDER"),
        ({"sasl_mechanism": "PLAIN", "username": "u", "password": "p"},
         "is PLAINTEXT: use SASL_SSL"),
        ({"ca_file": "/ca.pem"}, r"ca_file \(EVTIME_KAFKA_SSL_CA_FILE\) is set but"),
        ({"security_protocol": "SSL", "ca_file": "/nowhere/ca.pem"},
         "'/nowhere/ca.pem' is not a readable file"),
        ({"bootstrap": " "}, r"bootstrap \(EVTIME_KAFKA_BOOTSTRAP\) is empty"),
    ],
)
def test_a_combination_that_cannot_work_names_the_setting(
    kwargs: dict[str, str], message: str
) -> None:
    args = {"bootstrap": "b:9092", **kwargs}
    with pytest.raises(ConfigError, match=message) as info:
        KafkaConnection(**args)
    assert "\n" not in str(info.value)


def test_a_client_certificate_needs_both_files(tmp_path: Path) -> None:
    cert = tmp_path / "client.pem"
    cert.write_text("x")
    with pytest.raises(ConfigError, match=r"needs both .*cert_file.*key_file"):
        KafkaConnection("b:9093", "SSL", cert_file=str(cert))


def test_an_unreadable_ca_file_is_a_config_error(tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("not a certificate")
    with pytest.raises(ConfigError, match="cannot load the Kafka TLS files"):
        KafkaConnection("b:9093", "SSL", ca_file=str(ca)).ssl_context()
