"""State of fixed (tumbling, sliding) windows: one small map per window start.

Entries are keyed ``(window start, record key)`` and stored start-first, so
every key of one window is one contiguous RocksDB range. In memory the cache
is a map per start, which makes the per-record path two dict lookups and
lets a fired window be dropped whole: one range deletion in the next
snapshot instead of a tombstone per key.

A cached entry is a :class:`WindowEntry`; RocksDB stores its first three
fields as the JSON list ``[acc, emissions, since_early]``. The cache is bounded
by the process's memory budget (:mod:`evtime.state.memory`): after a snapshot,
when the budget asks, clean entries are evicted, the newest windows' first.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from heapq import merge
from itertools import islice
from operator import itemgetter
from typing import Any

from rocksdict import ReadOptions, WriteBatch

from evtime.records import KeyObj
from evtime.state import codec
from evtime.state.codec import decode_int, decode_key, encode_int, encode_key
from evtime.state.store import Change, TaskDB, raw_items, raw_keys
from evtime.time import MAX_TIMESTAMP

ENTRY_BYTES = 200
"""Estimated bytes of a cached entry: its key, its :class:`WindowEntry`, its dict slot."""


@dataclass(slots=True, eq=False)
class WindowEntry:
    """One key's state in one window, as cached (slotted: the per-record path reads and
    writes ``acc`` and ``dirty`` of one of these)."""

    acc: Any
    emissions: int
    """Results emitted for the window (0 until it fired: then FINAL, after it UPDATE)."""
    since_early: int
    """Records since the last early firing (``early_every``)."""
    dirty: bool
    """Changed since the last snapshot."""

    def encode(self) -> bytes:
        """The stored form: ``[acc, emissions, since_early]`` as JSON."""
        return codec.dumps([self.acc, self.emissions, self.since_early])

    @classmethod
    def decode(cls, raw: bytes) -> WindowEntry:
        """A clean entry from its stored form."""
        acc, emissions, since_early = codec.loads(raw)
        return cls(acc, emissions, since_early, False)


class WindowStore:
    """Write-back cache of fixed-window accumulators over one column family."""

    def __init__(self, db: TaskDB, name: str) -> None:
        self.name = name
        self._db = db
        self._cf = db._column(name)
        self.open: dict[int, dict[KeyObj, WindowEntry]] = {}
        """Cached entries by window start (hot path: use directly)."""
        self.touched: set[int] = set()
        """Starts with entries written since the last snapshot."""
        self._dropped: set[int] = set()
        self.persisted: set[int] = self._scan_starts()
        """Starts that may have entries in RocksDB (a superset)."""
        db.register_flusher(self._flush, self._after_commit)
        db.register_cache(self)

    def _scan_starts(self) -> set[int]:
        # Skip-scan: one seek per distinct window start.
        starts: set[int] = set()
        it = self._cf.iter()
        it.seek_to_first()
        while it.valid():
            start = decode_int(it.key()[:8])
            starts.add(start)
            if start >= MAX_TIMESTAMP:
                break
            it.seek(encode_int(start + 1))
        del it
        return starts

    def bucket(self, start: int) -> dict[KeyObj, WindowEntry]:
        """The cached entries of ``start`` (created empty if needed)."""
        entries = self.open.get(start)
        if entries is None:
            entries = self.open[start] = {}
        return entries

    def load(self, start: int, key: KeyObj) -> WindowEntry | None:
        """Read one entry from RocksDB into the cache (for a start in :attr:`persisted`)."""
        raw = self._cf.get(encode_int(start) + encode_key(key))
        if raw is None:
            return None
        entry = self.bucket(start)[key] = WindowEntry.decode(raw)
        return entry

    def load_all(self, start: int) -> dict[KeyObj, WindowEntry]:
        """Every entry of ``start``: the cache's, completed from RocksDB."""
        entries = self.bucket(start)
        if start in self.persisted:
            prefix = encode_int(start)
            ro = ReadOptions()
            ro.set_iterate_upper_bound(_after(start))
            for raw_key, raw in raw_items(self._cf, prefix, ro):
                key = decode_key(raw_key[8:])
                if key not in entries:
                    entries[key] = WindowEntry.decode(raw)
        return entries

    def iter_all(self, start: int) -> Iterator[tuple[KeyObj, WindowEntry]]:
        """Every entry of ``start`` in key order (encoded keys' order): the cache's, merged
        with those only in RocksDB, which are read as the iteration goes and not cached
        (for a window that is dropped once fired: its keys need not all be in memory)."""
        cached = self.open.get(start, {})
        mine = sorted(((encode_key(k), k, e) for k, e in cached.items()), key=itemgetter(0))
        if start not in self.persisted:
            return ((k, e) for _, k, e in mine)
        prefix = encode_int(start)
        ro = ReadOptions()
        ro.set_iterate_upper_bound(_after(start))

        def disk() -> Iterator[tuple[bytes, KeyObj, WindowEntry]]:
            for raw_key, raw in raw_items(self._cf, prefix, ro):
                key = decode_key(raw_key[8:])
                if key not in cached:
                    yield raw_key[8:], key, WindowEntry.decode(raw)

        return ((k, e) for _, k, e in merge(mine, disk(), key=itemgetter(0)))

    def drop(self, start: int) -> None:
        """Forget every entry of ``start`` (removed from RocksDB by the next snapshot)."""
        self.open.pop(start, None)
        self.touched.discard(start)
        if start in self.persisted:
            self._dropped.add(start)
            self.persisted.discard(start)

    # -- snapshot -----------------------------------------------------------------
    def _flush(self, batch: WriteBatch) -> tuple[int, int, int]:
        handle = self._db._handle(self.name)
        changes = self._db._changes
        puts = deletes = size = 0
        for start in self._dropped:
            if changes is not None:
                # A changelog has no range deletion: name every key.
                prefix = encode_int(start)
                ro = ReadOptions()
                ro.set_iterate_upper_bound(_after(start))
                for raw_key in raw_keys(self._cf, prefix, ro):
                    changes.append(Change(self.name, raw_key, None))
            batch.delete_range(encode_int(start), _after(start), handle)
            deletes += 1
        for start in self.touched:
            entries = self.open.get(start)
            if not entries:
                continue
            prefix = encode_int(start)
            for key, entry in entries.items():
                if entry.dirty:
                    raw_key = prefix + encode_key(key)
                    raw = entry.encode()
                    batch.put(raw_key, raw, handle)
                    if changes is not None:
                        changes.append(Change(self.name, raw_key, raw))
                    puts += 1
                    size += len(raw_key) + len(raw)
        return puts, deletes, size

    def _after_commit(self) -> None:
        for start in self.touched:
            entries = self.open.get(start)
            if entries:
                for entry in entries.values():
                    entry.dirty = False
                self.persisted.add(start)
        self.touched.clear()
        self._dropped.clear()
        self._db.budget.after_commit(self)

    # -- the memory budget (see evtime.state.memory) -----------------------------------
    def cached_bytes(self) -> int:
        return self.cached_count * ENTRY_BYTES

    def cached_entries(self) -> int:
        return self.cached_count

    def evict_to(self, limit: int) -> None:
        """Evict clean entries down to ``limit``: of the newest starts first (the oldest
        fire next and are cheaper to keep than to read back), the oldest entries of a
        start first. Entries of a start are read back from RocksDB when needed."""
        excess = self.cached_count - limit // ENTRY_BYTES
        for start in sorted(self.open, reverse=True):
            if excess <= 0:
                return
            if start in self.touched or start not in self.persisted:
                continue  # may hold dirty entries
            entries = self.open[start]
            if len(entries) <= excess:
                excess -= len(self.open.pop(start))
                continue
            for key in [k for k, e in islice(entries.items(), excess) if not e.dirty]:
                del entries[key]
            return

    @property
    def cached_count(self) -> int:
        """Entries held in memory."""
        return sum(len(e) for e in self.open.values())

    def count_persisted(self) -> int:
        """Keys in RocksDB (walks the column family: for tests and metrics)."""
        return sum(1 for _ in self._cf.keys())

    def live_count(self) -> int:
        """Live windows: cached ones plus persisted ones not cached (walks RocksDB)."""
        total = 0
        for start in set(self.open) | self.persisted:
            total += len(self.load_all(start)) if start in self.persisted else len(self.open[start])
        return total


def _after(start: int) -> bytes:
    """The first key after every key of ``start``."""
    return encode_int(start + 1) if start < MAX_TIMESTAMP else b"\xff" * 9
