"""Timer queues persisted in RocksDB, fired in time order.

A timer is a time (event time or processing time, in ms) and a payload
(bytes naming what fires: a window, a key). Registered timers live in memory
until the next snapshot writes them; persisted timers live in a column family
whose keys sort by time, so the due ones are a range scan.
"""

from __future__ import annotations

import heapq
from typing import Any

from rocksdict import WriteBatch

from evtime.state.codec import decode_int, encode_int
from evtime.state.store import Change, TaskDB, raw_keys
from evtime.time import MAX_TIMESTAMP


def _start_after(ts: int | None) -> bytes:
    """The first key strictly after time ``ts`` (b"" = from the beginning)."""
    if ts is None:
        return b""
    if ts >= MAX_TIMESTAMP:  # nothing can be scheduled after it
        return b"\xff" * 9
    return encode_int(ts + 1)


Timer = tuple[int, bytes]
"""A timer in memory: (time, payload); stored as the key ``encode_int(time) + payload``."""


def _stored(timer: Timer) -> bytes:
    return encode_int(timer[0]) + timer[1]


def _timer(full: bytes) -> Timer:
    return decode_int(full), bytes(full[8:])


class TimerQueue:
    """A set of (time, payload) timers; :meth:`pop_due` returns them in order.

    Registering the same timer twice keeps one. Timers registered and fired
    (or deleted) between two snapshots never reach RocksDB. In memory a timer
    is a (time, payload) tuple; only the snapshot and the scans of the column
    family see its stored bytes.
    """

    def __init__(self, db: TaskDB, name: str) -> None:
        self.name = name
        self._db = db
        self._cf = db._column(name)
        # Timers registered since the last snapshot: a heap for the order and a set for
        # membership (a fired or deleted one leaves its heap entry, skipped lazily).
        self._heap: list[Timer] = []
        self._pending: set[Timer] = set()
        self._deleted: set[Timer] = set()  # persisted timers fired or deleted since then
        # Registered again after being fired or deleted: pending, but maybe also on disk
        # behind the scan position, so firing it must delete the disk copy.
        self._revived: set[Timer] = set()
        # Every persisted timer at or before this time has been popped: scans start after it.
        self._scanned_to: int | None = None
        # Read-ahead of the persisted timers after the scan position, in key (= time) order,
        # so that firing and peeking do not open a RocksDB iterator each time. Valid until
        # the next snapshot changes the column family; fired / deleted ones are skipped.
        self._ahead: list[Timer] = []
        self._ahead_pos = 0
        self._ahead_complete = False  # the read-ahead reached the column family's end
        self._ahead_valid = False
        db.register_flusher(self._flush, self._after_commit)

    def register(self, ts: int, payload: bytes) -> None:
        """Add the timer (idempotent)."""
        timer = (ts, payload)
        if timer in self._pending:
            return
        if timer in self._deleted:
            # Un-deleting is not enough: a scan may already have passed its disk copy (or
            # there is none), so the timer must live in memory too.
            self._deleted.discard(timer)
            self._revived.add(timer)
        self._pending.add(timer)
        heapq.heappush(self._heap, timer)

    def delete(self, ts: int, payload: bytes) -> None:
        """Remove the timer if it exists."""
        timer = (ts, payload)
        if timer in self._pending:
            self._pending.discard(timer)  # its heap entry is skipped lazily
            # Registered again after a snapshot had written it: the disk copy must go too.
            if timer not in self._revived and self._cf.get(_stored(timer)) is None:
                return
            self._revived.discard(timer)
        self._deleted.add(timer)

    def next_time(self) -> int | None:
        """The earliest registered time, or None when the queue is empty."""
        heap = self._heap
        pending = self._pending
        while heap and heap[0] not in pending:
            heapq.heappop(heap)
        disk = self._persisted_head()
        if not heap:
            return disk
        mem = heap[0][0]
        if disk is None or mem < disk:
            return mem
        return disk

    def pop_due(self, until: int) -> list[Timer]:
        """Remove and return every timer with time <= ``until``, ordered by (time, payload)."""
        due: list[Timer] = []
        heap = self._heap
        pending = self._pending
        revived = self._revived
        pop = heapq.heappop
        while heap and heap[0][0] <= until:
            timer = pop(heap)
            if timer in pending:
                pending.discard(timer)
                if revived and timer in revived:
                    revived.discard(timer)
                    self._deleted.add(timer)
                due.append(timer)
        if self._scanned_to is None or until > self._scanned_to:
            head = self._persisted_head()
            if head is not None and head <= until:
                deleted = self._deleted
                for timer in self._take_ahead(until):
                    if timer not in deleted:
                        deleted.add(timer)
                        due.append(timer)
                # A timer re-registered after a snapshot is both in memory and on disk:
                # fire it once. (The heap alone yields distinct timers in order.)
                due = sorted(set(due))
            self._scanned_to = until
        return due

    def __len__(self) -> int:
        """Number of live timers (walks the persisted ones: not for the hot path)."""
        gone = {_stored(t) for t in self._pending} | {_stored(t) for t in self._deleted}
        persisted = sum(1 for key in self._cf.keys() if key not in gone)
        return persisted + len(self._pending)

    # -- persisted part ------------------------------------------------------------
    _READ_AHEAD = 1024

    def _fill(self, start: bytes) -> None:
        """Read the next persisted timers from ``start`` on into the read-ahead."""
        ahead: list[Timer] = []
        for key in raw_keys(self._cf, start):
            ahead.append(_timer(key))
            if len(ahead) == self._READ_AHEAD:
                break
        self._ahead = ahead
        self._ahead_pos = 0
        self._ahead_complete = len(ahead) < self._READ_AHEAD
        self._ahead_valid = True

    def _ahead_next(self) -> Timer | None:
        """The next persisted timer in the read-ahead (refilled as needed), or None at the end."""
        if not self._ahead_valid:
            self._fill(_start_after(self._scanned_to))
        while self._ahead_pos >= len(self._ahead):
            if self._ahead_complete:
                return None
            # The first key after the last one read.
            self._fill(_stored(self._ahead[-1]) + b"\x00")
        return self._ahead[self._ahead_pos]

    def _take_ahead(self, until: int) -> list[Timer]:
        """Consume the read-ahead's timers at or before ``until`` (deleted ones included)."""
        taken: list[Timer] = []
        while (timer := self._ahead_next()) is not None and timer[0] <= until:
            # The rest of the read-ahead in one slice when it is all due.
            ahead, pos = self._ahead, self._ahead_pos
            if ahead[-1][0] <= until:
                taken.extend(ahead[pos:])
                self._ahead_pos = len(ahead)
            else:
                taken.append(timer)
                self._ahead_pos = pos + 1
        return taken

    def _persisted_head(self) -> int | None:
        """The earliest persisted timer not fired or deleted (skipping those that are)."""
        deleted = self._deleted
        while (timer := self._ahead_next()) is not None:
            if timer not in deleted:
                return timer[0]
            # A deleted timer registered again lives in memory: its disk copy is not needed.
            self._ahead_pos += 1
        return None

    def _flush(self, batch: WriteBatch) -> tuple[int, int, int]:
        handle = self._db._handle(self.name)
        changes = self._db._changes
        pending = [encode_int(ts) + payload for ts, payload in self._pending]
        deleted = [encode_int(ts) + payload for ts, payload in self._deleted]
        for full in pending:
            batch.put(full, b"", handle)
        for full in deleted:
            batch.delete(full, handle)
        if changes is not None:
            changes.extend(Change(self.name, full, b"") for full in pending)
            changes.extend(Change(self.name, full, None) for full in deleted)
        size = sum(map(len, pending)) + sum(map(len, deleted))
        if self._pending and self._scanned_to is not None:
            # A timer registered behind the scan position must still be found.
            earliest = min(self._pending)[0]
            if earliest <= self._scanned_to:
                self._scanned_to = earliest - 1
        return len(pending), len(deleted), size

    def _after_commit(self) -> None:
        self._pending.clear()
        self._revived.clear()
        self._heap.clear()
        self._deleted.clear()
        self._ahead_valid = False

    def snapshot_info(self) -> dict[str, Any]:
        """Sizes for metrics and tests."""
        return {"pending": len(self._pending), "deleted": len(self._deleted)}
