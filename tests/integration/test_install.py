"""The project installed non-editably, as `pip install .` gives it to a user.

A fresh venv sees the test venv's dependencies through a ``.pth`` file, so nothing is
downloaded; pip builds the project (``--no-deps --no-build-isolation --no-index``) from a
copy of the files a build reads and installs it there. Every check runs in that venv from
a folder outside the checkout, so only what the wheel holds can be imported.
"""

from __future__ import annotations

import os
import shutil
import site
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
# What a build reads (those present): docker/Dockerfile copies these for its `pip install .`.
BUILT_FROM = ("pyproject.toml", "README.md", "LICENSE", "evtime", "connectors", "examples")
_SKIP = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info", "build")


@dataclass(frozen=True)
class Installed:
    python: Path
    bin: Path
    site_packages: Path
    cwd: Path
    env: dict[str, str]

    def run(self, *command: str | Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(part) for part in command], cwd=self.cwd, env=self.env, capture_output=True,
            text=True, timeout=timeout, check=False,
        )  # fmt: skip


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Installed]:
    base = tmp_path_factory.mktemp("install")
    source = base / "source"
    source.mkdir()
    for name in BUILT_FROM:
        if not (ROOT / name).exists():
            continue
        if (ROOT / name).is_dir():
            # symlinks=True: the links in evtime/ stay links, as in a checkout.
            shutil.copytree(ROOT / name, source / name, symlinks=True, ignore=_SKIP)
        else:
            shutil.copy2(ROOT / name, source / name)
    venv = base / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP") and not key.startswith("PIP_")
    }
    env.update(PIP_NO_INDEX="1", PIP_DISABLE_PIP_VERSION_CHECK="1", PYTHONNOUSERSITE="1")
    cwd = base / "elsewhere"
    cwd.mkdir()
    purelib = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True, text=True, check=True, env=env, cwd=cwd,
    ).stdout.strip()  # fmt: skip
    # The dependencies (and pip, setuptools) of the test venv, after the venv's own packages.
    # The .pth files in those folders are not run: the checkout's editable hook stays off.
    deps = site.getsitepackages()
    if site.ENABLE_USER_SITE:
        deps.append(site.getusersitepackages())
    (Path(purelib) / "evtime-test-deps.pth").write_text("\n".join(deps) + "\n")
    done = Installed(python, venv / "bin", Path(purelib), cwd, env)
    pip = done.run(
        python, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", source,
        timeout=300,
    )
    assert pip.returncode == 0, pip.stdout + pip.stderr
    yield done


def test_the_wheel_installs_the_package_not_the_checkout(installed: Installed) -> None:
    where = installed.run(installed.python, "-c", "import evtime; print(evtime.__file__)")
    assert where.returncode == 0, where.stderr
    assert Path(where.stdout.strip()).parent == installed.site_packages / "evtime"


def test_every_file_of_the_package_is_in_the_wheel(installed: Installed) -> None:
    """Each module and data file under evtime/ of the checkout (the linked connectors and
    seed pipeline included) is installed: a package missing from pyproject.toml fails here."""
    wanted: set[str] = set()
    for folder, folders, files in os.walk(ROOT / "evtime", followlinks=True):
        folders[:] = [f for f in folders if f != "__pycache__"]
        for name in files:
            if not name.endswith(".pyc"):
                wanted.add(str((Path(folder) / name).relative_to(ROOT)))
    have = {
        str(path.relative_to(installed.site_packages))
        for path in (installed.site_packages / "evtime").rglob("*")
        if path.is_file() and "__pycache__" not in path.parts
    }
    assert sorted(wanted - have) == []
    assert not (installed.site_packages / "evtime" / "demos" / "seed_join.py").is_symlink()


def test_connectors_install_only_as_evtime_connectors(installed: Installed) -> None:
    bare = installed.run(installed.python, "-c", "import connectors")
    assert bare.returncode != 0
    assert "ModuleNotFoundError: No module named 'connectors'" in bare.stderr
    kafka = "from evtime.connectors.kafka import KafkaSource; print(KafkaSource)"
    namespaced = installed.run(installed.python, "-c", kafka)
    assert namespaced.returncode == 0, namespaced.stderr
    assert "evtime.connectors.kafka.KafkaSource" in namespaced.stdout


def test_the_embedded_demo_runs_and_checks_from_the_wheel(installed: Installed) -> None:
    demo = installed.run(
        installed.bin / "evtime", "demo", "--embedded", "--keys", "1000",
        "--out", installed.cwd / "demo",
    )  # fmt: skip
    assert demo.returncode == 0, demo.stdout[-3000:] + demo.stderr[-3000:]
    assert "EMBEDDED MODE" in demo.stdout
    assert "checked: all 1,000 documents equal" in demo.stdout
