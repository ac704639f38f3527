"""The live status page: ``GET /`` and ``GET /status.json`` on a worker's metrics port.

``/status.json`` is a worker's :class:`~evtime.runtime.status.WorkerStatus` as JSON (tasks
and partitions with watermark, lag, state size; last checkpoint age; backpressure; the
latest dead letters) plus the throughput history: a :class:`Throughput` ring of
``(time, records in, records out)`` samples the server takes every few seconds (never per
record). ``/`` is one self-contained HTML page (evtime/runtime/status_html.py) that draws
that document and fetches it again every 2 s.

Under ``evtime worker -p N`` the supervisor serves the same page for all its workers
(:class:`SupervisorStatusServer`): its ``/status.json`` gathers the workers' documents as
``{"workers": [...]}``, which the page shows side by side.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable
from typing import Any

import aiohttp
import orjson
from aiohttp import web

from evtime.errors import EvtimeError
from evtime.names import group_name
from evtime.runtime.status import WorkerStatus
from evtime.runtime.status_html import PAGE
from evtime.time import MIN_TIMESTAMP, format_timestamp

log = logging.getLogger("evtime.status")

SAMPLE_EVERY_S = 2.0
SAMPLES = 150
"""Throughput samples kept: five minutes at one per ``SAMPLE_EVERY_S``."""
ERROR_CHARS = 300
"""A dead letter's error as shown on the page, at most."""


class Throughput:
    """The last ``SAMPLES`` totals of records in and out, with the time they were taken."""

    def __init__(self, status: Callable[[], WorkerStatus], size: int = SAMPLES) -> None:
        self._status = status
        self.samples: deque[tuple[int, int, int]] = deque(maxlen=size)

    def sample(self) -> None:
        try:
            w = self._status()
        except EvtimeError:  # the worker's source stopped (shutting down): no sample
            return
        stats = w.stats
        self.samples.append(
            (w.now_ms, sum(stats.records_in.values()), sum(stats.records_out.values()))
        )

    async def run(self, every_s: float = SAMPLE_EVERY_S) -> None:
        """Sample every ``every_s`` until cancelled."""
        while True:
            self.sample()
            await asyncio.sleep(every_s)


def status_document(w: WorkerStatus, samples: list[tuple[int, int, int]]) -> dict[str, Any]:
    """What ``/status.json`` answers: the status of one worker, ready for the page."""
    stats = w.stats
    now = w.now_ms
    tasks = []
    for task in sorted(w.tasks, key=lambda t: (group_name(t.group), t.partition)):
        partitions = []
        for topic in task.group:
            end = w.highwaters.get((topic, task.partition))
            offset = task.offsets[topic]
            partitions.append({
                "topic": topic,
                "partition": task.partition,
                "offset": offset,
                "lag": None if end is None else max(0, end - offset),
                "clock": topic in task.clock_driven,
            })
        wm = task.watermark
        has_wm = wm > MIN_TIMESTAMP
        size = task.state_size
        tasks.append({
            "topics": group_name(task.group),
            "partition": task.partition,
            "watermark_ms": wm if has_wm else None,
            "watermark": format_timestamp(wm) if has_wm else None,
            "watermark_delay_s": round(max(0.0, (now - wm) / 1000), 3) if has_wm else None,
            "state_bytes": None if size is None else size[0],
            "state_keys": None if size is None else size[1],
            "inputs": partitions,
        })
    last = w.last_checkpoint_ms
    return {
        "app": w.app,
        "state": w.state.value,
        "now_ms": now,
        "now": format_timestamp(now),
        "assigned": sorted(f"{t}[{p}]" for t, p in w.assigned),
        "tasks": tasks,
        "paused": w.paused,
        "pauses": stats.pauses,
        "records_in": sum(stats.records_in.values()),
        "records_out": sum(stats.records_out.values()),
        "late_records": stats.late_records,
        "checkpoints": w.checkpoints,
        "last_checkpoint_age_s": round((now - last) / 1000, 3) if last else None,
        "checkpoint_last_seconds": round(stats.checkpoint_last_seconds, 4),
        "rebalances": {"assigned": stats.assignments, "revoked": stats.revocations},
        "dead_letters": dict(sorted(stats.dead_letters.items())),
        "recent_dead_letters": [
            {
                "reason": d.reason.value,
                "topic": d.topic,
                "partition": d.partition,
                "offset": d.offset,
                "timestamp": None if d.timestamp is None else format_timestamp(d.timestamp),
                "operator": d.operator,
                "error": d.error[:ERROR_CHARS],
            }
            for d in reversed(stats.recent_dead_letters)  # the latest first
        ],
        "samples": samples,
    }


async def page(request: web.Request) -> web.Response:
    """``GET /``: the status page (it fetches ``status.json`` next to it)."""
    return web.Response(text=PAGE, content_type="text/html", charset="utf-8")


def json_response(body: object, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(body), status=status, content_type="application/json")


async def serve(app: web.Application, host: str, port: int, what: str) -> tuple[
    web.AppRunner, int
]:
    """Serve ``app`` on ``host:port``: its runner and the port bound (port 0: any free one)."""
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
    except OSError as exc:
        await runner.cleanup()
        raise OSError(
            exc.errno,
            f"cannot serve {what} on {host}:{port} ({exc.strerror}); give another "
            "--metrics-port (EVTIME_METRICS_PORT), or 0 for any free port",
        ) from exc
    return runner, int(runner.addresses[0][1]) if runner.addresses else port


class SupervisorStatusServer:
    """The status page of ``evtime worker -p N``: ``/``, ``/status.json`` gathering every
    worker's, and ``/healthz`` (ready while every worker is) on the supervisor's port."""

    def __init__(self, host: str, port: int, workers: list[int]) -> None:
        self.host = host
        self.port = port
        self.workers = workers
        """Each worker's metrics port, by index."""
        # The workers listen on the same address; any address reaches them by loopback.
        self._ask = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/", page)
        app.router.add_get("/status.json", self._status)
        app.router.add_get("/healthz", self._ready)
        app.router.add_get("/healthz/live", self._live)
        self._runner, self.port = await serve(app, self.host, self.port, "the status page")
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=1.5))
        log.info(
            "status page of the %d workers on http://%s:%d/ (their metrics on ports %s)",
            len(self.workers), self.host, self.port, ", ".join(map(str, self.workers)),
        )

    async def stop(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()

    async def _get(self, port: int, path: str) -> tuple[int, Any]:
        """A worker's answer to ``path``: its HTTP status and JSON (0, error: unreachable)."""
        if self._session is None:
            return 0, "not started"
        try:
            async with self._session.get(f"http://{self._ask}:{port}{path}") as response:
                return response.status, orjson.loads(await response.read())
        except (aiohttp.ClientError, TimeoutError, orjson.JSONDecodeError) as exc:
            return 0, f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__

    async def _each(self, path: str) -> list[tuple[int, Any]]:
        return list(await asyncio.gather(*(self._get(port, path) for port in self.workers)))

    async def _status(self, request: web.Request) -> web.Response:
        workers = []
        for i, (port, (code, body)) in enumerate(
            zip(self.workers, await self._each("/status.json"), strict=True)
        ):
            if code == 200 and isinstance(body, dict):
                workers.append({"worker": i, "port": port, **body})
            else:
                workers.append({"worker": i, "port": port, "error": str(body)})
        return json_response({"workers": workers})

    async def _ready(self, request: web.Request) -> web.Response:
        answers = await self._each("/healthz")
        ready = all(code == 200 for code, _ in answers)
        body = {
            "ready": ready,
            "workers": [
                {"worker": i, "port": port, "ready": code == 200, "health": health}
                for i, (port, (code, health)) in enumerate(
                    zip(self.workers, answers, strict=True)
                )
            ],
        }
        return json_response(body, 200 if ready else 503)

    async def _live(self, request: web.Request) -> web.Response:
        return json_response({"live": True})

