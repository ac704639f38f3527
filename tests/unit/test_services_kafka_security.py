"""The local broker's SASL_SSL listener as configured by `evtime services` (no JVM here)."""

from __future__ import annotations

from pathlib import Path

import pytest

from evtime.errors import ConfigError, ServiceError
from evtime.services import ServicesConfig
from evtime.services.kafka import Kafka
from evtime.services.tls import TlsFiles, scram_arguments, write_private

SCRAM_PASSWORD = "scram-secret-0123456789"
KEYSTORE_PASSWORD = "keystore-secret-9876543210"


def config(tmp_path: Path, **env: str) -> ServicesConfig:
    return ServicesConfig.from_env({"EVTIME_CACHE_DIR": str(tmp_path), **env})


def fake_tls(cfg: ServicesConfig) -> TlsFiles:
    """What `up` leaves after keytool, with known passwords."""
    files = TlsFiles(cfg.kafka_sasl())
    files.directory.mkdir(parents=True)
    files.keystore.write_bytes(b"not a real keystore")
    files.ca_pem.write_text("-----BEGIN CERTIFICATE-----\n")
    write_private(files.keystore_password_file, KEYSTORE_PASSWORD + "\n")
    write_private(files.scram_password_file, SCRAM_PASSWORD + "\n")
    return files


def properties(text: str) -> dict[str, str]:
    lines = [line for line in text.splitlines() if line and not line.startswith("#")]
    return dict(line.split("=", 1) for line in lines)


def test_the_sasl_port_comes_from_its_variable(tmp_path: Path) -> None:
    assert config(tmp_path).kafka_sasl_bootstrap == "127.0.0.1:9094"
    assert config(tmp_path, EVTIME_KAFKA_SASL_PORT="19094").kafka_sasl_bootstrap == (
        "127.0.0.1:19094"
    )
    with pytest.raises(ConfigError, match="EVTIME_KAFKA_SASL_PORT"):
        config(tmp_path, EVTIME_KAFKA_SASL_PORT="tls")
    assert Kafka(config(tmp_path)).ports()["sasl_ssl"] == 9094


def test_the_secured_listener_is_described_without_its_password(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    fake_tls(cfg)
    secured = cfg.kafka_sasl()
    assert secured.username == "evtime"
    assert secured.mechanisms == ("SCRAM-SHA-512", "SCRAM-SHA-256")
    assert secured.password() == SCRAM_PASSWORD
    assert secured.ca_file == tmp_path / "run" / "kafka" / "tls" / "ca.pem"
    [line] = Kafka(cfg).details()  # what `status` and `up` print
    assert "SASL_SSL 127.0.0.1:9094" in line
    assert "user evtime" in line
    assert str(secured.ca_file) in line and str(secured.password_file) in line
    assert SCRAM_PASSWORD not in line and KEYSTORE_PASSWORD not in line


def test_no_password_file_says_how_to_make_one(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="run `evtime services up kafka`"):
        config(tmp_path).kafka_sasl().password()


def test_server_properties_add_a_sasl_ssl_listener_next_to_plaintext(tmp_path: Path) -> None:
    cfg = config(tmp_path, EVTIME_KAFKA_SASL_PORT="19094")
    files = fake_tls(cfg)
    props = properties(Kafka(cfg).server_properties())
    assert props["listeners"] == (
        "PLAINTEXT://127.0.0.1:9092,CONTROLLER://127.0.0.1:9093,SASL_SSL://127.0.0.1:19094"
    )
    assert props["advertised.listeners"] == props["listeners"]
    assert props["listener.security.protocol.map"] == (
        "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT,SASL_SSL:SASL_SSL"
    )
    assert props["inter.broker.listener.name"] == "PLAINTEXT"
    assert props["controller.listener.names"] == "CONTROLLER"
    assert props["sasl.enabled.mechanisms"] == "SCRAM-SHA-512,SCRAM-SHA-256"
    for mechanism in ("scram-sha-512", "scram-sha-256"):
        assert props[f"listener.name.sasl_ssl.{mechanism}.sasl.jaas.config"] == (
            "org.apache.kafka.common.security.scram.ScramLoginModule required;"
        )
    assert props["listener.name.sasl_ssl.ssl.keystore.type"] == "PKCS12"
    assert props["listener.name.sasl_ssl.ssl.keystore.location"] == str(files.keystore)
    assert props["listener.name.sasl_ssl.ssl.keystore.password"] == KEYSTORE_PASSWORD
    # The SCRAM users live in the metadata (--add-scram at format), never in the config.
    assert SCRAM_PASSWORD not in Kafka(cfg).server_properties()


def test_the_scram_user_is_created_for_both_mechanisms_at_format() -> None:
    assert scram_arguments("pw") == [
        "--add-scram",
        "SCRAM-SHA-512=[name=evtime,password=pw]",
        "--add-scram",
        "SCRAM-SHA-256=[name=evtime,password=pw]",
    ]


def kept_storage(cfg: ServicesConfig, server_properties: str) -> None:
    run = cfg.run_dir / "kafka"
    (run / "data").mkdir(parents=True, exist_ok=True)
    (run / "data" / "meta.properties").write_text("cluster.id=x\n")
    (run / "server.properties").write_text(server_properties)


def test_a_restart_reuses_the_storage_and_certificates_it_was_set_up_with(
    tmp_path: Path,
) -> None:
    cfg = config(tmp_path)
    fake_tls(cfg)
    kept_storage(cfg, Kafka(cfg).server_properties())
    Kafka(cfg).check_kept_data()  # no error: same ports, same keystore


def test_a_storage_from_an_older_evtime_says_how_to_start_afresh(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    kept_storage(cfg, "listeners=PLAINTEXT://127.0.0.1:9092\n")  # no tls/ directory at all
    with pytest.raises(ServiceError) as raised:
        Kafka(cfg).check_kept_data()
    message = str(raised.value)
    assert "older evtime" in message
    assert "`evtime services down kafka` then `evtime services up kafka`" in message


def test_a_storage_for_another_sasl_port_is_refused(tmp_path: Path) -> None:
    before = config(tmp_path)
    fake_tls(before)
    kept_storage(before, Kafka(before).server_properties())
    with pytest.raises(ServiceError, match="other ports"):
        Kafka(config(tmp_path, EVTIME_KAFKA_SASL_PORT="19094")).check_kept_data()
