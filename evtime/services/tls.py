"""A test CA and a broker certificate for the local Kafka's SASL_SSL listener.

Made with ``keytool`` (part of the JDK that runs the broker) when the storage is
formatted, kept with it in ``<cache>/run/kafka/tls`` so that a ``restart`` serves the
same certificate, and thrown away with it by the next ``up``:

- ``broker.p12``: the broker's key and certificate (SAN ``localhost``, ``127.0.0.1``),
  signed by the CA, and the CA certificate (PKCS12);
- ``ca.pem``: the CA certificate, for clients to trust (``ca_file``);
- ``keystore.password``, ``scram.password``: random secrets, readable by the owner only.
"""

from __future__ import annotations

import os
import secrets
import shutil
from pathlib import Path

from evtime.errors import ServiceError
from evtime.services import build
from evtime.services.config import SCRAM_MECHANISMS, SCRAM_USER, SecuredKafka

_VALIDITY_DAYS = "365"


class TlsFiles:
    """The paths of what ``create`` writes, next to the client's files of ``secured``."""

    def __init__(self, secured: SecuredKafka) -> None:
        self.directory = secured.ca_file.parent
        self.keystore = self.directory / "broker.p12"
        self.ca_pem = secured.ca_file
        self.keystore_password_file = self.directory / "keystore.password"
        self.scram_password_file = secured.password_file

    def complete(self) -> bool:
        return all(
            path.is_file()
            for path in (
                self.keystore,
                self.ca_pem,
                self.keystore_password_file,
                self.scram_password_file,
            )
        )

    def keystore_password(self) -> str:
        return self.keystore_password_file.read_text().strip()

    def scram_password(self) -> str:
        return self.scram_password_file.read_text().strip()


def find_keytool(java: str) -> str:
    """``keytool`` of the JDK that runs ``java`` (so both come from one installation)."""
    for directory in (Path(java).resolve().parent, Path(java).parent):
        candidate = directory / "keytool"
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    return build.require_tool(
        "keytool", f"it makes the test certificates and is not next to {java}"
    )


def create(keytool: str, files: TlsFiles, log_path: Path) -> None:
    """A fresh CA, a broker keystore signed by it, ``ca.pem`` and the two passwords."""
    work = build.fresh_dir(files.directory / "work")
    ca_store, csr, crt = work / "ca.p12", work / "broker.csr", work / "broker.crt"
    # Passwords go to keytool in files, never on a command line other users can read.
    ca_password = work / "ca.password"
    write_private(ca_password, secrets.token_hex(16) + "\n")
    write_private(files.keystore_password_file, secrets.token_hex(16) + "\n")
    store_password = files.keystore_password_file
    key = ["-keyalg", "RSA", "-keysize", "2048", "-validity", _VALIDITY_DAYS]
    ca = ["-keystore", str(ca_store), "-storetype", "PKCS12", "-storepass:file", str(ca_password)]
    broker = [
        "-keystore", str(files.keystore), "-storetype", "PKCS12",
        "-storepass:file", str(store_password),
    ]  # fmt: skip
    steps: list[tuple[str, list[str]]] = [
        ("the test CA", ["-genkeypair", "-alias", "ca", *key, "-dname", "CN=evtime test CA",
                         "-ext", "bc:c", *ca, "-keypass:file", str(ca_password)]),
        ("the broker key", ["-genkeypair", "-alias", "broker", *key, "-dname", "CN=localhost",
                            *broker, "-keypass:file", str(store_password)]),
        ("the certificate request", ["-certreq", "-alias", "broker", *broker, "-file", str(csr)]),
        ("the broker certificate", ["-gencert", "-alias", "ca", *ca, "-infile", str(csr),
                                    "-outfile", str(crt), "-ext", "san=dns:localhost,ip:127.0.0.1",
                                    "-validity", _VALIDITY_DAYS, "-rfc"]),
        ("ca.pem", ["-exportcert", "-alias", "ca", *ca, "-rfc", "-file", str(files.ca_pem)]),
        ("the CA in the keystore", ["-importcert", "-alias", "ca", "-file", str(files.ca_pem),
                                    *broker, "-noprompt"]),
        ("the signed certificate", ["-importcert", "-alias", "broker", "-file", str(crt),
                                    *broker, "-noprompt"]),
    ]  # fmt: skip
    files.keystore.unlink(missing_ok=True)
    for what, arguments in steps:
        build.run_tool("kafka", f"keytool making {what}", [keytool, *arguments], log_path)
    shutil.rmtree(work)  # the CA's key is not needed again: restarts reuse broker.p12
    write_private(files.scram_password_file, secrets.token_hex(16) + "\n")
    files.keystore.chmod(0o600)
    if not files.complete():
        raise ServiceError(f"kafka: keytool left an incomplete set of files in {files.directory}.")


def scram_arguments(password: str) -> list[str]:
    """``StorageTool format`` options that create the SCRAM user for every mechanism."""
    arguments: list[str] = []
    for mechanism in SCRAM_MECHANISMS:
        arguments += ["--add-scram", f"{mechanism}=[name={SCRAM_USER},password={password}]"]
    return arguments


def write_private(path: Path, text: str) -> None:
    """Write a file only its owner can read (a secret, or a config holding one)."""
    path.unlink(missing_ok=True)
    with os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as handle:
        handle.write(text)
