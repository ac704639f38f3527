"""The Elasticsearch sink's lanes: bulk items batched per lane, one request at a time.

An item goes to the lane of its document's ``_id`` (round-robin without one), so every
operation on one document is sent in order. A lane sends a batch when it holds
``batch_size`` items or ``batch_bytes`` bytes, when its oldest item has waited
``linger``, or at once while someone waits (:meth:`Lanes.drain`, or a full buffer).
Putting an item waits while more than ``max_pending_docs`` items or
``max_pending_bytes`` bytes are queued or in flight (backpressure).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from evtime.connectors.elasticsearch_bulk import BulkAction
from evtime.errors import EvtimeError, SinkError
from evtime.records import Output

log = logging.getLogger("evtime.elasticsearch")


@dataclass(slots=True)
class Item:
    """One output as a bulk item: its action, index, ``_id`` and NDJSON lines."""

    output: Output
    action: BulkAction
    index: str
    id: str | None
    data: bytes

    @property
    def key(self) -> tuple[str, str] | None:
        return None if self.id is None else (self.index, self.id)


class _Lane:
    """A FIFO of items sent one request at a time, so operations on a document keep order."""

    __slots__ = ("done", "enqueued", "queue", "queued_bytes", "since", "task", "wake")

    def __init__(self) -> None:
        self.queue: deque[Item] = deque()
        self.queued_bytes = 0
        self.enqueued = 0
        """Items ever queued."""
        self.done = 0
        """Items resolved (acknowledged, dead-lettered or skipped), in queue order."""
        self.since = 0.0
        """When the oldest queued item started waiting (monotonic seconds)."""
        self.wake = asyncio.Event()
        self.task: asyncio.Task[None] | None = None


class Lanes:
    """``concurrency`` lanes, each sending its batches with ``deliver`` (which returns once
    every item of the batch is resolved). A failure of ``deliver`` stops every lane: it
    is :attr:`error`, raised by every later call."""

    def __init__(
        self,
        deliver: Callable[[list[Item]], Awaitable[None]],
        *,
        target: str,
        concurrency: int,
        batch_size: int,
        batch_bytes: int,
        linger: float | None,
        max_pending_docs: int,
        max_pending_bytes: int,
    ) -> None:
        self._deliver = deliver
        self._target = target
        self.concurrency = concurrency
        self.batch_size = batch_size
        self.batch_bytes = batch_bytes
        self._linger = linger
        self.max_pending_docs = max_pending_docs
        self.max_pending_bytes = max_pending_bytes
        self.error: EvtimeError | None = None
        self.pending_docs = 0
        self.pending_bytes = 0
        self._progress = asyncio.Event()
        self._lanes: list[_Lane] = []
        self._round_robin = 0
        self._urgent = 0

    def start(self) -> None:
        """Start the lanes' tasks (in the running event loop), once."""
        if self._lanes:
            return
        self._lanes = [_Lane() for _ in range(self.concurrency)]
        for n, lane in enumerate(self._lanes):
            lane.task = asyncio.create_task(self._run_lane(lane), name=f"es-sink-lane-{n}")

    async def put(self, item: Item) -> None:
        """Queue ``item`` on its lane; wait while the buffer is over its bounds."""
        if item.id is None:
            self._round_robin += 1
            lane = self._lanes[self._round_robin % self.concurrency]
        else:
            lane = self._lanes[hash(item.id) % self.concurrency]
        size = len(item.data)
        if not lane.queue:
            lane.since = time.monotonic()
            lane.wake.set()
        lane.queue.append(item)
        lane.queued_bytes += size
        lane.enqueued += 1
        self.pending_docs += 1
        self.pending_bytes += size
        if len(lane.queue) >= self.batch_size or lane.queued_bytes >= self.batch_bytes:
            lane.wake.set()
        if self.pending_docs > self.max_pending_docs or self.pending_bytes > self.max_pending_bytes:
            await self._urgently(self._has_room)

    async def drain(self) -> None:
        """Return once every item put before is resolved."""
        if self._lanes:
            targets = [(lane, lane.enqueued) for lane in self._lanes]
            await self._urgently(lambda: all(lane.done >= n for lane, n in targets))

    async def stop(self) -> None:
        """Cancel the lanes' tasks (what they hold is dropped)."""
        tasks = [lane.task for lane in self._lanes if lane.task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _has_room(self) -> bool:
        return (
            self.pending_docs <= self.max_pending_docs
            and self.pending_bytes <= self.max_pending_bytes
        )

    async def _urgently(self, done: Callable[[], bool]) -> None:
        """Wait until ``done()``, the lanes sending partial batches meanwhile."""
        self._urgent += 1
        for lane in self._lanes:
            lane.wake.set()
        try:
            while True:
                if self.error is not None:
                    raise self.error
                if done():
                    return
                await self._progress.wait()
        finally:
            self._urgent -= 1

    def _notify(self) -> None:
        event, self._progress = self._progress, asyncio.Event()
        event.set()

    async def _run_lane(self, lane: _Lane) -> None:
        try:
            while True:
                batch = await self._next_batch(lane)
                await self._deliver(batch)
                lane.done += len(batch)
                self.pending_docs -= len(batch)
                self.pending_bytes -= sum(len(item.data) for item in batch)
                self._notify()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self._fail(exc)

    async def _next_batch(self, lane: _Lane) -> list[Item]:
        """Wait until the lane has a batch to send (full, lingered, or urgent); take it."""
        while True:
            timeout: float | None = None
            if lane.queue:
                if (
                    self._urgent
                    or len(lane.queue) >= self.batch_size
                    or lane.queued_bytes >= self.batch_bytes
                ):
                    break
                if self._linger is not None:
                    timeout = lane.since + self._linger - time.monotonic()
                    if timeout <= 0:
                        break
            lane.wake.clear()
            if timeout is None:
                await lane.wake.wait()
            else:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(lane.wake.wait(), timeout)
        batch: list[Item] = []
        size = 0
        queue = lane.queue
        while queue and len(batch) < self.batch_size:
            n = len(queue[0].data)
            if batch and size + n > self.batch_bytes:
                break
            batch.append(queue.popleft())
            size += n
        lane.queued_bytes -= size
        if queue:
            lane.since = time.monotonic()
        return batch

    def _fail(self, exc: Exception) -> None:
        if not isinstance(exc, EvtimeError):
            error: EvtimeError = SinkError(
                f"the sink to {self._target} stopped on an unexpected {type(exc).__name__}: "
                f"{exc}"
            )
            error.__cause__ = exc
        else:
            error = exc
        if self.error is None:
            self.error = error
            log.error("%s", error)
        self._notify()
