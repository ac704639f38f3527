"""Each task's open transaction (exactly-once): its outputs, changelog entries and input
offsets commit together or not at all (evtime/runtime/checkpoint.py)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator, Mapping

from evtime.io import GroupSourceFactory, Transaction
from evtime.names import transactional_id
from evtime.runtime.task import TaskId


class TaskTransactions(Mapping[TaskId, Transaction]):
    """The open transaction of every task of this worker, by task."""

    def __init__(self, app_name: str, factory: GroupSourceFactory) -> None:
        self._app = app_name
        self._factory = factory
        self._open: dict[TaskId, Transaction] = {}

    def __getitem__(self, tid: TaskId) -> Transaction:
        return self._open[tid]

    def __iter__(self) -> Iterator[TaskId]:
        return iter(self._open)

    def __len__(self) -> int:
        return len(self._open)

    def producer(self, tid: TaskId) -> object | None:
        """The producer of the task's open transaction; None when it has none
        (at-least-once)."""
        txn = self._open.get(tid)
        return None if txn is None else txn.producer

    async def begin(self, tids: Iterable[TaskId]) -> None:
        """Begin the transaction of each task that has none. A task's transactional id is
        stable: starting it fences the task's previous producer (a zombie owner), which
        aborts its open transaction, so committed offsets and the changelog are stable."""
        for tid in tids:
            if tid not in self._open:
                await self._begin(tid)

    async def _begin(self, tid: TaskId) -> None:
        txn = self._factory.transaction(transactional_id(self._app, tid[0], tid[1]))
        await txn.begin()
        self._open[tid] = txn

    async def renew(self, tid: TaskId) -> None:
        """Abort the task's transaction (a new producer of its id fences the old one) and
        begin another."""
        old = self._open.pop(tid)
        with contextlib.suppress(Exception):
            await old.close()
        await self._begin(tid)

    async def close(self, tid: TaskId) -> None:
        """Close the task's transaction (an open one is aborted with it)."""
        txn = self._open.pop(tid, None)
        if txn is not None:
            await txn.close()

    async def close_all(self) -> None:
        for tid in list(self._open):
            await self.close(tid)
