"""The memory budget of a worker process (DESIGN.md section 12).

One budget (the ``memory_budget`` setting, 256 MB by default) bounds the state's
memory in the whole process, however many tasks it runs and keys they hold:

- **RocksDB: half.** ONE block cache shared by every task's database and column
  family (data, index and filter blocks all live in it), and ONE write-buffer
  manager that charges every memtable to that cache and flushes the largest
  when memtables reach half of it. RocksDB's own defaults would give each
  column family of each task 64 MB memtables and its own cache.
- **Python caches: the other half.** The decoded entries the stores keep in front
  of RocksDB (:class:`~evtime.state.store.KeyValueStore`,
  :class:`~evtime.state.windowed.WindowStore`) register here; their size is an
  estimate per entry (bytes of an average entry times their count). At every
  commit, when the process's caches are over half of their share, the committing
  store evicts CLEAN entries (after a commit all of its entries are clean) in
  proportion to its part. Dirty entries are never evicted: they are written by
  the next checkpoint. A task whose process's caches exceed the whole share asks
  for that checkpoint early (:meth:`MemoryBudget.over`, read by the task's
  backlog check), so dirty data stays within the budget on the embedded runner;
  a driver that does not ask (the Kafka worker checkpoints on its interval only)
  holds at most one interval's dirty entries beyond it: the budget is soft for
  dirty data there.

The budget is read from the settings when the first task database opens;
:func:`configure` replaces it (for tests and benchmarks) for databases opened
afterwards. :func:`memory_stats` gives the figures the metrics export.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from rocksdict import BlockBasedIndexType, BlockBasedOptions, Cache, Options, WriteBufferManager

ROCKSDB_SHARE = 0.5
"""Part of the budget for RocksDB (block cache, memtables charged to it)."""
WRITE_BUFFER_SHARE = 0.5
"""Part of RocksDB's part that memtables may use before the largest is flushed."""
EVICT_TO = 0.5
"""Python caches are evicted to this part of their share at a commit (headroom for the
entries the next interval adds)."""
MAX_WRITE_BUFFER = 64 * 2**20
"""RocksDB's default memtable size, the largest one column family gets here."""


class StateCache(Protocol):
    """A cache of decoded state entries that the budget bounds."""

    def cached_bytes(self) -> int:
        """Estimated bytes of the entries held (dirty and clean)."""
        ...

    def cached_entries(self) -> int:
        """Entries held (dirty and clean)."""
        ...

    def evict_to(self, limit: int) -> None:
        """Drop clean entries until the estimate is at most ``limit`` (or none is left)."""
        ...


@dataclass(frozen=True, slots=True)
class MemoryStats:
    """The budget and its use, in bytes (for metrics)."""

    budget: int
    block_cache_capacity: int
    block_cache_usage: int
    """Bytes in RocksDB's shared block cache, memtable reservations included."""
    memtable_usage: int
    """Bytes of every memtable of the process (charged to the block cache)."""
    python_cache_budget: int
    python_cache_bytes: int
    """Estimated bytes of the Python caches' entries."""
    python_cache_entries: int


class MemoryBudget:
    """The process's memory budget: the shared RocksDB block cache and write-buffer manager,
    and the accountant of the Python caches."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.rocksdb_bytes = int(total * ROCKSDB_SHARE)
        self.python_bytes = total - self.rocksdb_bytes
        self.write_buffer_bytes = int(self.rocksdb_bytes * WRITE_BUFFER_SHARE)
        self.block_cache = Cache(self.rocksdb_bytes)
        self.write_buffers = WriteBufferManager.new_write_buffer_manager_with_cache(
            self.write_buffer_bytes, False, self.block_cache
        )
        self._caches: dict[int, StateCache] = {}

    def options(self) -> Options:
        """Options of a database or column family: on the shared cache and write buffers."""
        opts = Options(raw_mode=True)
        opts.create_if_missing(True)
        opts.create_missing_column_families(True)
        table = BlockBasedOptions()
        table.set_block_cache(self.block_cache)
        # Index and filter blocks live in the cache too, so that they count against the
        # budget; partitioned (two-level), so that a read loads a small partition of a
        # file's index and filter, not the whole, and only their top levels stay pinned.
        table.set_cache_index_and_filter_blocks(True)
        table.set_index_type(BlockBasedIndexType.two_level_index_search())
        table.set_partition_filters(True)
        table.set_pin_top_level_index_and_filter(True)
        # A Bloom filter per file (10 bits a key, 1% false positives): reading a key that
        # is in no file, the common case for a new key, then costs no data block.
        table.set_bloom_filter(10, False)
        opts.set_block_based_table_factory(table)
        opts.set_write_buffer_manager(self.write_buffers)
        # Several memtables share the write buffers: each may fill a quarter of them.
        opts.set_write_buffer_size(max(2**20, min(MAX_WRITE_BUFFER, self.write_buffer_bytes // 4)))
        opts.set_max_write_buffer_number(2)
        return opts

    # -- the Python caches ------------------------------------------------------------
    def register(self, cache: StateCache) -> None:
        """Count ``cache`` in the process's Python caches (until :meth:`unregister`)."""
        self._caches[id(cache)] = cache

    def unregister(self, cache: StateCache) -> None:
        self._caches.pop(id(cache), None)

    def python_usage(self) -> tuple[int, int]:
        """Estimated bytes and entries of every registered cache."""
        size = entries = 0
        for cache in self._caches.values():
            size += cache.cached_bytes()
            entries += cache.cached_entries()
        return size, entries

    def over(self) -> bool:
        """Whether the Python caches exceed their share: a checkpoint is due, after which
        their entries are clean and can be evicted."""
        return sum(c.cached_bytes() for c in self._caches.values()) > self.python_bytes

    def after_commit(self, cache: StateCache) -> None:
        """``cache`` is all clean: evict its part of the process's excess over the share."""
        limit = int(self.python_bytes * EVICT_TO)
        total = sum(c.cached_bytes() for c in self._caches.values())
        if total > limit:
            own = cache.cached_bytes()
            cache.evict_to(own * limit // total)

    def stats(self) -> MemoryStats:
        size, entries = self.python_usage()
        return MemoryStats(
            budget=self.total,
            block_cache_capacity=self.rocksdb_bytes,
            block_cache_usage=int(self.block_cache.get_usage()),
            memtable_usage=int(self.write_buffers.get_usage()),
            python_cache_budget=self.python_bytes,
            python_cache_bytes=size,
            python_cache_entries=entries,
        )


_budget: MemoryBudget | None = None


def budget() -> MemoryBudget:
    """The process's budget (from the ``memory_budget`` setting on first use)."""
    global _budget
    if _budget is None:
        from evtime.settings import Settings

        _budget = MemoryBudget(Settings.load().memory_budget)
    return _budget


def configure(total: int) -> MemoryBudget:
    """Replace the process's budget by one of ``total`` bytes: databases opened from now on
    share it (those open keep theirs until they close)."""
    global _budget
    _budget = MemoryBudget(total)
    return _budget


def memory_stats() -> MemoryStats:
    """The process's budget and its use (for metrics)."""
    return budget().stats()
