"""`--log-format json`: every line the command writes is a JSON object, also for what does
not come from a logger call: an error that ends the command, a Python warning, an uncaught
exception (its traceback in the ``error`` field); ``extra=`` fields are fields of the line."""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson

from evtime.cli import _JsonFormatter

ROOT = Path(__file__).resolve().parents[2]


def _lines(tmp_path: Path, *args: str) -> tuple[int, list[dict[str, Any]]]:
    result = subprocess.run(
        [sys.executable, "-m", "evtime.cli", *args, "--log-format", "json"],
        capture_output=True, cwd=tmp_path, timeout=60, check=False,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
    )
    out = (result.stdout + result.stderr).decode()
    lines = [orjson.loads(line) for line in out.splitlines() if line.strip()]
    for line in lines:
        assert {"time", "level", "logger", "message"} <= line.keys(), line
    return result.returncode, lines


def test_an_error_that_ends_the_command_is_a_json_line(tmp_path: Path) -> None:
    code, lines = _lines(tmp_path, "worker", "missing.py:app")
    assert code == 2
    assert lines[-1]["level"] == "ERROR" and "no such file missing.py" in lines[-1]["message"]


def test_warnings_and_an_uncaught_traceback_are_json_lines(tmp_path: Path) -> None:
    (tmp_path / "job.py").write_text(
        "import warnings\nwarnings.warn('old option', UserWarning, stacklevel=1)\n"
        "raise RuntimeError('broken job')\n"
    )
    code, lines = _lines(tmp_path, "worker", "job.py:app")
    assert code == 1
    warned = [line for line in lines if line["logger"] == "py.warnings"]
    assert warned and "old option" in warned[0]["message"]
    assert lines[-1]["level"] == "CRITICAL" and "broken job" in lines[-1]["message"]
    assert "Traceback" in lines[-1]["error"] and "RuntimeError" in lines[-1]["error"]


def test_extra_fields_are_fields_of_the_line() -> None:
    record = logging.makeLogRecord({
        "name": "evtime.worker", "levelno": logging.INFO, "levelname": "INFO",
        "msg": "assigned", "partitions": ["clicks[0]"], "offsets": {"clicks[0]": 7},
    })
    line = orjson.loads(_JsonFormatter("").format(record))
    assert line["partitions"] == ["clicks[0]"] and line["offsets"] == {"clicks[0]": 7}
    assert line["time"].endswith("+00:00") and "prefix" not in line
