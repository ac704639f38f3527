"""The live status page in a real browser: a worker on the real broker serves ``/``, and
headless Chromium renders it (its JS fetches ``/status.json``): the rendered text shows
the worker's assigned partitions and a records counter that moves while records are
produced; a screenshot of it is saved as docs/status-page.png (the README shows it)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.integration.kafka_helpers import (
    ROOT,
    create_topics,
    partition_of,
    produce,
    start_worker,
    stop_worker,
    worker_env,
)

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

PARTITIONS = 3
SCREENSHOT = ROOT / "docs" / "status-page.png"


def _chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    if os.environ.get("CI") == "true":
        pytest.fail("no chromium on PATH: install it (make deps, or apt-get install chromium)")
    pytest.skip("no chromium on PATH (make deps installs it)")


def _free_port(count: int = 1) -> int:
    """A free port, followed by ``count - 1`` more free ones."""
    for _ in range(50):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port: int = s.getsockname()[1]
        try:
            with contextlib.ExitStack() as taken:
                for i in range(count):
                    taken.enter_context(socket.socket()).bind(("127.0.0.1", port + i))
            return port
        except OSError:
            continue
    raise AssertionError(f"no {count} free consecutive ports")


def _status(port: int) -> dict[str, Any] | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/status.json", timeout=5) as r:
            body: dict[str, Any] = orjson.loads(r.read())
            return body
    except (OSError, urllib.error.URLError):
        return None


def _create(bootstrap: str, env: dict[str, str]) -> str:
    topic = env["EVTIME_TEST_IN"]
    asyncio.run(create_topics(bootstrap, {topic: PARTITIONS, env["EVTIME_TEST_OUT"]: 1,
                                          env["EVTIME_TEST_DLQ"]: 1}))
    return topic


def _until(what: str, check: Any, timeout_s: float, log: Path) -> Any:
    deadline = time.monotonic() + timeout_s
    while not (result := check()):
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout_s} s\n{log.read_text()[-3000:]}")
        time.sleep(0.3)
    return result


def _records(n: int, start: int) -> list[tuple[int, bytes | None, bytes]]:
    """``n`` click events keyed by user, stamped in order over the last ``n`` ms (none late:
    each batch is produced after the previous one's times)."""
    now = int(time.time() * 1000)
    out: list[tuple[int, bytes | None, bytes]] = []
    for i in range(start, start + n):
        user = f"u{i % 50}"
        event = {"user": user, "ts": now - n + (i - start)}
        out.append((partition_of(user, PARTITIONS), user.encode(), orjson.dumps(event)))
    return out


def _browse(chromium: str, url: str, profile: Path, *args: str) -> str:
    """Chromium's rendering of ``url`` after its scripts ran (the DOM, or nothing)."""
    result = subprocess.run(
        [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
         "--no-first-run", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", f"--user-data-dir={profile}", "--virtual-time-budget=5000",
         *args, url],
        capture_output=True, timeout=120, check=False,
    )
    assert result.returncode == 0, result.stderr.decode(errors="replace")[-3000:]
    return result.stdout.decode()


def _text(dom: str) -> str:
    """The DOM's visible text, roughly: tags dropped, entities of the page undone."""
    text = re.sub(r"<(script|style)\b.*?</\1>", " ", dom, flags=re.S)
    text = re.sub(r"<[^>]+>", " ", text).replace("&amp;", "&")
    return re.sub(r"\s+", " ", text)


def _records_in(text: str) -> int:
    match = re.search(r"records in ([\d,]+)", text)
    assert match, text[:3000]
    return int(match.group(1).replace(",", ""))


def test_status_page_in_headless_chromium_shows_partitions_and_a_moving_counter(
    kafka_bootstrap: str, unique_name: str, tmp_path: Path
) -> None:
    chromium = _chromium()
    env = worker_env(unique_name, tmp_path)
    topic = _create(kafka_bootstrap, env)
    bad: list[tuple[int, bytes | None, bytes]] = [
        (0, b"u-bad", b"{not json"),
        (1, b"u-bad", orjson.dumps({"user": "u-bad"})),  # no timestamp
    ]
    asyncio.run(produce(kafka_bootstrap, topic, PARTITIONS, _records(3000, 0) + bad))
    port = _free_port()
    log = tmp_path / "worker.log"
    proc = start_worker("window_job.py", env, log,
                        ["--metrics-port", str(port), "--metrics-host", "127.0.0.1"])
    url = f"http://127.0.0.1:{port}/"
    try:
        _until("the first records read",
               lambda: (s := _status(port)) and s["records_in"] >= 3002, 90, log)
        first = _text(_browse(chromium, url, tmp_path / "profile", "--dump-dom"))
        for p in range(PARTITIONS):
            assert f"{topic}[{p}]" in first, first[:3000]
        assert f"Partitions: {' '.join(f'{topic}[{p}]' for p in range(PARTITIONS))}" in first
        assert ("flowing" in first or "paused" in first) and "decode: 1, timestamp: 1" in first
        before = _records_in(first)
        assert before >= 3002

        asyncio.run(produce(kafka_bootstrap, topic, PARTITIONS, _records(2000, 3000)))
        _until("more records read",
               lambda: (s := _status(port)) and s["records_in"] >= before + 2000, 60, log)
        time.sleep(4)  # a few throughput samples for the chart
        asyncio.run(produce(kafka_bootstrap, topic, PARTITIONS, _records(1000, 5000)))
        second = _text(_browse(chromium, url, tmp_path / "profile", "--dump-dom"))
        assert _records_in(second) > before, second[:3000]

        SCREENSHOT.parent.mkdir(exist_ok=True)
        _browse(chromium, url, tmp_path / "profile", f"--screenshot={SCREENSHOT}",
                "--window-size=1200,900", "--hide-scrollbars")
        assert SCREENSHOT.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    finally:
        code = stop_worker(proc)
    assert code == 0, log.read_text()[-3000:]


def test_the_supervisor_of_two_workers_serves_one_page_for_both(
    kafka_bootstrap: str, unique_name: str, tmp_path: Path
) -> None:
    chromium = _chromium()
    env = worker_env(unique_name, tmp_path)
    topic = _create(kafka_bootstrap, env)
    asyncio.run(produce(kafka_bootstrap, topic, PARTITIONS, _records(1000, 0)))
    port = _free_port(3)  # the supervisor's page, then worker-0's and worker-1's ports
    log = tmp_path / "workers.log"
    proc = start_worker("window_job.py", env, log,
                        ["-p", "2", "--metrics-port", str(port), "--metrics-host", "127.0.0.1"])

    def spread() -> Any:
        s = _status(port)
        workers = s["workers"] if s else []
        assigned = [p for w in workers for p in w.get("assigned", [])]
        both = len(workers) == 2 and all(w.get("assigned") for w in workers)
        return both and sorted(assigned) == [f"{topic}[{p}]" for p in range(PARTITIONS)] and s

    try:
        status = _until("the partitions spread over both workers", spread, 120, log)
        assert [w["port"] for w in status["workers"]] == [port + 1, port + 2]
        text = _text(_browse(chromium, f"http://127.0.0.1:{port}/", tmp_path / "profile",
                             "--dump-dom"))
        for i in range(2):
            assert f"worker-{i} (port {port + 1 + i})" in text, text[:3000]
        for p in range(PARTITIONS):
            assert f"{topic}[{p}]" in text, text[:3000]
        assert "unreachable" not in text
    finally:
        code = stop_worker(proc)
    assert code == 0, log.read_text()[-3000:]
