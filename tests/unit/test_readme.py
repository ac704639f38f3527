"""The README's first app runs exactly as shown: its code and input, written to an empty
folder, give the printed output under the command shown (and under `python first_app.py`)."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
BIN = Path(sys.executable).parent


def _first_app_blocks() -> dict[str, str]:
    """The fenced blocks of the section "A first app", by language (the first of each)."""
    text = README.read_text()
    section = text.split("\n## A first app\n", 1)[1].split("\n## ", 1)[0]
    blocks: dict[str, str] = {}
    for lang, body in re.findall(r"^```(\w+)\n(.*?)^```$", section, re.S | re.M):
        blocks.setdefault(lang, body)
    return blocks


def _evtime() -> list[str]:
    script = BIN / "evtime"
    if script.exists():
        return [str(script)]
    found = shutil.which("evtime")
    return [found] if found else [sys.executable, "-m", "evtime"]


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("EVTIME_")}
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    return env


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    blocks = _first_app_blocks()
    (tmp_path / "first_app.py").write_text(blocks["python"])
    (tmp_path / "orders.jsonl").write_text(blocks["json"])
    return tmp_path


def _shown() -> tuple[list[str], list[str]]:
    """The command shown (after ``$ ``) and the lines it prints."""
    first, *output = _first_app_blocks()["console"].splitlines()
    assert first.startswith("$ "), first
    return shlex.split(first[2:]), output


def test_the_readme_app_is_examples_first_app() -> None:
    blocks = _first_app_blocks()
    assert blocks["python"] == (ROOT / "examples" / "first_app.py").read_text()
    assert blocks["json"] == (ROOT / "examples" / "orders.jsonl").read_text()


def test_the_command_shown_prints_the_output_shown(folder: Path) -> None:
    command, output = _shown()
    assert command[0] == "evtime"
    done = subprocess.run(
        _evtime() + command[1:], cwd=folder, env=_env(), capture_output=True, text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == output
    # Run again, it resumes from its state: nothing more to print.
    again = subprocess.run(
        _evtime() + command[1:], cwd=folder, env=_env(), capture_output=True, text=True,
        timeout=60,
    )
    assert again.returncode == 0, again.stderr
    assert again.stdout == ""


def test_python_first_app_prints_the_same(folder: Path) -> None:
    _, output = _shown()
    done = subprocess.run(
        [sys.executable, "first_app.py"], cwd=folder, env=_env(), capture_output=True,
        text=True, timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == output
