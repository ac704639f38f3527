"""What the local services run: jars from Maven Central, one compiled class, config files.

Everything here is done once per version and cached: ``resolve_jars`` runs Maven's
``copy-dependencies`` on a small pom from ``data`` and leaves a marker keyed
by the plugin and the pom; ``compile_entry_point`` does the same for OpenSearch's
``EmbeddedOpenSearch.java`` with ``javac``.
"""

from __future__ import annotations

import hashlib
import importlib.resources
import os
import re
import shutil
import subprocess
import time
from collections.abc import Mapping
from pathlib import Path

from evtime.errors import ServiceError

# Pinned: Maven 3.8's default binding (2.8) is old and differs in behaviour.
DEPENDENCY_PLUGIN = "org.apache.maven.plugins:maven-dependency-plugin:3.8.1"
INSTALL_HINT = "install them with e.g. `apt-get install openjdk-17-jdk-headless maven`"

_DATA = importlib.resources.files("evtime.services") / "data"


def render(resource: str, values: Mapping[str, str]) -> str:
    text = (_DATA / resource).read_text(encoding="utf-8")
    for key, value in values.items():
        text = text.replace(f"@{key}@", value)
    missing = re.findall(r"@[A-Z0-9_]+@", text)
    if missing:
        raise ServiceError(f"data/{resource} has unfilled placeholders {missing}.")
    return text


def resolve_jars(label: str, home: Path, pom_resource: str, versions: Mapping[str, str]) -> None:
    pom = render(pom_resource, versions)
    key = f"{DEPENDENCY_PLUGIN}\n{hashlib.sha256(pom.encode()).hexdigest()}\n"
    libs, marker = home / "libs", home / "resolved"
    if libs.is_dir() and marker.is_file() and marker.read_text() == key:
        return
    mvn = require_tool("mvn", "Maven is needed once, to fetch the jars from Maven Central")
    print(f"{label}: resolving jars with Maven into {libs} (first run only) ...", flush=True)
    home.mkdir(parents=True, exist_ok=True)
    pom_path = home / "pom.xml"
    pom_path.write_text(pom)
    partial = fresh_dir(home / "libs.partial")
    started = time.monotonic()
    code, output = _run_captured(
        [mvn, "-B", "-q", "-Dstyle.color=never", "-f", str(pom_path),
         f"{DEPENDENCY_PLUGIN}:copy-dependencies",
         f"-DoutputDirectory={partial}", "-DincludeScope=runtime"],
    )  # fmt: skip
    if code != 0:
        raise ServiceError(
            f"{label}: Maven could not resolve the jars (exit {code}). "
            f"Last lines of its output:\n{output}\n"
            "Check that Maven Central is reachable (proxy settings in ~/.m2/settings.xml), "
            "then run `evtime services up` again."
        )
    shutil.rmtree(libs, ignore_errors=True)
    partial.rename(libs)
    marker.write_text(key)
    jars = len(list(libs.glob("*.jar")))
    print(f"{label}: {jars} jars resolved in {time.monotonic() - started:.1f} s", flush=True)


def compile_entry_point(label: str, home: Path, version: str) -> None:
    source = (_DATA / "EmbeddedOpenSearch.java").read_text(encoding="utf-8")
    key = hashlib.sha256(f"{version}\n{source}".encode()).hexdigest() + "\n"
    classes, marker = home / "classes", home / "compiled"
    if classes.is_dir() and marker.is_file() and marker.read_text() == key:
        return
    javac = require_tool("javac", "a JDK (not only a JRE) is needed to compile the node's entry")
    build = fresh_dir(home / "classes.partial")
    source_path = build / "EmbeddedOpenSearch.java"
    source_path.write_text(source)
    code, output = _run_captured(
        [javac, "-d", str(build), "-cp", str(home / "libs" / "*"), str(source_path)]
    )
    if code != 0:
        raise ServiceError(
            f"{label}: javac could not compile EmbeddedOpenSearch.java:\n"
            f"{output}\n"
            f"Delete {home} to resolve the jars again, then retry."
        )
    shutil.rmtree(classes, ignore_errors=True)
    build.rename(classes)
    marker.write_text(key)


def _run_captured(command: list[str]) -> tuple[int, str]:
    """Run a build tool to its end: its exit code and the last lines of what it printed."""
    done = subprocess.run(
        command, stdin=subprocess.DEVNULL, capture_output=True, text=True, check=False
    )
    return done.returncode, tail_text(done.stdout + done.stderr)


def run_tool(label: str, what: str, command: list[str], log_path: Path) -> None:
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("wb") as log:
        code = subprocess.run(
            command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, check=False
        ).returncode
    if code != 0:
        raise ServiceError(
            f"{label}: {what} failed (exit {code}). Last lines of {log_path}:\n{tail(log_path)}"
        )


def require_tool(tool: str, why: str) -> str:
    path = shutil.which(tool)
    if path is None:
        raise ServiceError(f"`{tool}` is not on PATH: {why}; {INSTALL_HINT}.")
    return path


def require_java() -> str:
    java = require_tool("java", "Kafka and OpenSearch run on Java 17 or newer")
    version = subprocess.run([java, "-version"], capture_output=True, text=True, check=False).stderr
    found = re.search(r'version "(\d+)(?:\.(\d+))?', version)
    major = 0 if found is None else int(found.group(1))
    if major == 1 and found is not None and found.group(2):
        major = int(found.group(2))  # "1.8.0" is Java 8
    if major < 17:
        first = version.strip().splitlines()[0] if version.strip() else "unknown version"
        raise ServiceError(f"`{java}` is {first}; Java 17 or newer is needed; {INSTALL_HINT}.")
    return java


def fresh_dir(path: Path) -> Path:
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path


def tail(path: Path, lines: int = 30) -> str:
    try:
        with path.open("rb") as handle:
            handle.seek(0, os.SEEK_END)
            handle.seek(max(0, handle.tell() - 16384))
            text = handle.read().decode("utf-8", "replace")
    except OSError:
        return "(no log)"
    return tail_text(text, lines)


def tail_text(text: str, lines: int = 30) -> str:
    plain = re.sub(r"\x1b\[[0-9;]*m", "", text)  # Maven colours some lines even with -B
    kept = plain.rstrip().splitlines()[-lines:]
    return "\n".join(f"    {line}" for line in kept) or "    (empty)"
