"""One RocksDB database per partition task, with a dirty cache in front of it.

Every database of the process runs on the memory budget's shared block cache and
write-buffer manager, and every cache registers with its accountant
(:mod:`evtime.state.memory`): clean entries are evicted when the process's caches
are over budget, dirty ones are written by the next snapshot.

Operators read and write decoded Python values through :class:`KeyValueStore`;
nothing touches RocksDB on the per-record path except a read of a key the
cache has never seen. :meth:`TaskDB.commit` writes every store's dirty
entries, every timer change and the task's metadata (offsets, watermarks) in
ONE synced WriteBatch, so a snapshot is atomic: after a crash the database
holds exactly the last committed snapshot.
"""

from __future__ import annotations

import shutil
from collections import deque
from collections.abc import Callable, Hashable, Iterable, Iterator
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Any, Generic, TypeVar, cast

from rocksdict import AccessType, Options, Rdict, ReadOptions, WriteBatch, WriteOptions

from evtime.errors import StateError
from evtime.state import codec
from evtime.state.memory import MemoryBudget, StateCache, budget

K = TypeVar("K", bound=Hashable)

META_CF = "__meta__"
FORMAT_VERSION = 1

_ABSENT: Any = object()
"""Cache marker: the key has no value (known absent, or deleted)."""

ENTRY_BYTES = 160
"""Estimated bytes of a cached entry besides its value (key, dict slot)."""
VALUE_BYTES_PER_BYTE = 8
"""Estimated bytes of a decoded value per byte of its JSON (small dicts and lists)."""
DIRTY_ENTRIES = 200_000
"""Dirty entries of one store that make a snapshot due, whatever the budget."""


@dataclass(frozen=True, slots=True)
class CommitStats:
    """What one snapshot wrote."""

    puts: int
    deletes: int
    bytes: int


@dataclass(frozen=True, slots=True)
class Prepared:
    """A snapshot gathered but not yet written (see :meth:`TaskDB.prepare`)."""

    batch: Any
    changes: list[Change]
    stats: CommitStats


@dataclass(frozen=True, slots=True)
class Change:
    """One entry of a snapshot, as the changelog needs it (value None = delete)."""

    store: str
    key: bytes
    value: bytes | None


class KeyValueStore(Generic[K]):
    """A named key-value store (one column family) with a write-back cache.

    Keys are Python objects (encoded to bytes with ``encode`` only when they
    reach RocksDB); values are JSON-like objects encoded with orjson. The cache
    keeps the values of recently used keys; entries written since the last
    snapshot are *dirty* and are written by the next :meth:`TaskDB.commit`.
    A key created and deleted between two snapshots never reaches RocksDB.
    The cache is bounded by the process's memory budget: after a snapshot the
    oldest entries (all clean then) are evicted as the budget asks.
    """

    def __init__(
        self,
        db: TaskDB,
        name: str,
        encode: Callable[[K], bytes],
        decode: Callable[[bytes], K],
    ) -> None:
        self.name = name
        self._db = db
        self._cf = db._column(name)
        self.encode = encode
        self.decode = decode
        self._cache: dict[K, Any] = {}
        # key -> whether RocksDB may hold a version of it (a delete must then be written)
        self._dirty: dict[K, bool] = {}
        # Sizes of the values read or written (their JSON), for the estimate of the cache's
        # bytes: the last ones seen, a sample of the values held, and their sum.
        self._sizes: deque[int] = deque(maxlen=1024)
        self._sizes_sum = 0

    # -- reads and writes -------------------------------------------------
    def get(self, key: K, default: Any = None) -> Any:
        """The current value of ``key``, or ``default``."""
        value = self._cache.get(key, _ABSENT)
        if value is _ABSENT:
            if key in self._cache:
                return default
            raw = self._cf.get(self.encode(key))
            if raw is None:
                self._cache[key] = _ABSENT
                return default
            self._note_size(len(raw))
            value = codec.loads(raw)
            self._cache[key] = value
        return value

    def put(self, key: K, value: Any) -> None:
        """Set ``key`` to ``value`` (written to RocksDB at the next snapshot)."""
        if key not in self._dirty:
            self._dirty[key] = self._may_be_in_db(key)
        self._cache[key] = value

    def delete(self, key: K) -> None:
        """Remove ``key``."""
        in_db = self._dirty.get(key)
        if in_db is None:
            in_db = self._may_be_in_db(key)
        if in_db:
            self._dirty[key] = True
        else:
            self._dirty.pop(key, None)
        self._cache[key] = _ABSENT

    def _may_be_in_db(self, key: K) -> bool:
        # Called for keys that are not dirty: a cached _ABSENT then means RocksDB
        # was read (or written with a delete) and holds nothing.
        return self._cache.get(key) is not _ABSENT

    def __contains__(self, key: K) -> bool:
        return self.get(key, _ABSENT) is not _ABSENT

    # -- snapshot support ---------------------------------------------------
    @property
    def dirty_count(self) -> int:
        """Entries written since the last snapshot."""
        return len(self._dirty)

    @property
    def cached_count(self) -> int:
        """Entries held in memory (dirty and clean)."""
        return len(self._cache)

    def _drain(self, batch: WriteBatch, changes: list[Change] | None) -> tuple[int, int, int]:
        handle = self._db._handle(self.name)
        puts = deletes = size = 0
        for key in self._dirty:
            value = self._cache[key]
            raw_key = self.encode(key)
            if value is _ABSENT:
                batch.delete(raw_key, handle)
                deletes += 1
                size += len(raw_key)
                if changes is not None:
                    changes.append(Change(self.name, raw_key, None))
            else:
                raw = codec.dumps(value)
                batch.put(raw_key, raw, handle)
                self._note_size(len(raw))
                puts += 1
                size += len(raw_key) + len(raw)
                if changes is not None:
                    changes.append(Change(self.name, raw_key, raw))
        return puts, deletes, size

    def _after_commit(self) -> None:
        self._dirty.clear()
        self._db.budget.after_commit(self)

    # -- the memory budget (see evtime.state.memory) -----------------------------------
    def _note_size(self, size: int) -> None:
        sizes = self._sizes
        if len(sizes) == sizes.maxlen:
            self._sizes_sum -= sizes[0]
        sizes.append(size)
        self._sizes_sum += size

    def entry_bytes(self) -> int:
        """Estimated bytes of one cached entry (from the sizes of recent values)."""
        return ENTRY_BYTES + VALUE_BYTES_PER_BYTE * self._sizes_sum // max(1, len(self._sizes))

    def cached_bytes(self) -> int:
        return len(self._cache) * self.entry_bytes()

    def cached_entries(self) -> int:
        return len(self._cache)

    def evict_to(self, limit: int) -> None:
        """Evict the oldest clean entries (dicts keep insertion order) down to ``limit``."""
        cache = self._cache
        excess = len(cache) - limit // self.entry_bytes()
        if excess <= 0:
            return
        dirty = self._dirty
        for key in [k for k in islice(cache, excess + len(dirty)) if k not in dirty][:excess]:
            del cache[key]

    def _discard_cache(self) -> None:
        self._dirty.clear()
        self._cache.clear()

    # -- iteration (not for the hot path) -------------------------------------
    def items(self) -> Iterator[tuple[K, Any]]:
        """Every live entry: RocksDB's, overlaid with the cache's changes."""
        seen: set[K] = set()
        for key in list(self._dirty):
            seen.add(key)
            value = self._cache[key]
            if value is not _ABSENT:
                yield key, value
        for raw_key, raw in raw_items(self._cf):
            key = self.decode(raw_key)
            if key in seen:
                continue
            cached = self._cache.get(key, _ABSENT)
            yield key, cached if cached is not _ABSENT else codec.loads(raw)

    def scan_prefix(self, prefix: bytes) -> Iterator[tuple[K, Any]]:
        """Live entries whose encoded key starts with ``prefix``, in key order."""
        found: dict[bytes, Any] = {}
        ro = ReadOptions()
        upper = _prefix_upper_bound(prefix)
        if upper is not None:
            ro.set_iterate_upper_bound(upper)
        for raw_key, raw in raw_items(self._cf, prefix, ro):
            if not raw_key.startswith(prefix):
                break
            found[raw_key] = raw
        for key in self._dirty:
            raw_key = self.encode(key)
            if raw_key.startswith(prefix):
                found[raw_key] = self._cache[key]
        for raw_key in sorted(found):
            key = self.decode(raw_key)
            value = found[raw_key]
            if isinstance(value, bytes):
                cached = self._cache.get(key, _ABSENT)
                if cached is not _ABSENT and key in self._dirty:
                    value = cached
                else:
                    value = codec.loads(value)
            if value is not _ABSENT:
                yield key, value

    def count_persisted(self) -> int:
        """Number of keys in RocksDB (exact; walks the column family)."""
        return sum(1 for _ in self._cf.keys())


def raw_items(
    cf: Rdict, from_key: bytes = b"", read_opt: ReadOptions | None = None
) -> Iterator[tuple[bytes, bytes]]:
    """(key, value) pairs of a raw-mode column family, from ``from_key`` on."""
    items = cf.items(from_key=from_key, read_opt=read_opt) if read_opt else cf.items(
        from_key=from_key
    )
    return cast(Iterator[tuple[bytes, bytes]], items)


def raw_keys(
    cf: Rdict, from_key: bytes = b"", read_opt: ReadOptions | None = None
) -> Iterator[bytes]:
    """Keys of a raw-mode column family, from ``from_key`` on."""
    keys = cf.keys(from_key=from_key, read_opt=read_opt) if read_opt else cf.keys(
        from_key=from_key
    )
    return cast(Iterator[bytes], keys)


def _prefix_upper_bound(prefix: bytes) -> bytes | None:
    stripped = prefix.rstrip(b"\xff")
    if not stripped:
        return None
    return stripped[:-1] + bytes([stripped[-1] + 1])


class TaskDB:
    """The RocksDB database of one partition task.

    Column families: one per store, one per timer queue, and ``__meta__`` for
    the snapshot metadata (input offsets, watermarks, format version).
    """

    def __init__(self, path: str | Path, column_families: Iterable[str], *, sync: bool = True):
        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)
        names = set(column_families) | {META_CF}
        if (self.path / "CURRENT").exists():
            try:
                names |= set(Rdict.list_cf(str(self.path)))
            except Exception as exc:
                raise StateError(
                    f"cannot read the state database at {self.path}: {exc}; if it is damaged, "
                    "delete the directory and the task will restore from its changelog"
                ) from exc
        names.discard("default")
        self._cf_names = sorted(names)
        self.budget: MemoryBudget = budget()
        """The process's memory budget, whose block cache and write buffers this database
        shares (and whose accountant bounds its caches)."""
        opts = self.budget.options()
        try:
            self._rdict = Rdict(
                str(self.path),
                options=opts,
                column_families={name: self.budget.options() for name in sorted(names)},
            )
        except Exception as exc:
            raise StateError(
                f"cannot open the state database at {self.path}: {exc}; is another worker "
                "using the same state_dir? Give each worker its own state_dir"
            ) from exc
        self._columns: dict[str, Rdict] = {}
        self._handles: dict[str, Any] = {}
        self._stores: list[KeyValueStore[Any]] = []
        self._caches: list[StateCache] = []
        self._flushers: list[Callable[[WriteBatch], tuple[int, int, int]]] = []
        self._committers: list[Callable[[], None]] = []
        self._write_opts = WriteOptions()
        self._write_opts.sync = sync
        self._closed = False
        version = self.get_meta("format_version")
        if version is not None and version != FORMAT_VERSION:
            raise StateError(
                f"state at {self.path} has format version {version}, this evtime writes "
                f"{FORMAT_VERSION}; delete the directory to rebuild it from the changelog"
            )

    # -- column families --------------------------------------------------
    def _column(self, name: str) -> Rdict:
        column = self._columns.get(name)
        if column is None:
            try:
                column = self._rdict.get_column_family(name)
            except Exception:
                column = self._rdict.create_column_family(name, self.budget.options())
            self._columns[name] = column
        return column

    def _handle(self, name: str) -> Any:
        handle = self._handles.get(name)
        if handle is None:
            self._column(name)
            handle = self._rdict.get_column_family_handle(name)
            self._handles[name] = handle
        return handle

    def store(
        self,
        name: str,
        encode: Callable[[Any], bytes] = codec.encode_key,
        decode: Callable[[bytes], Any] = codec.decode_key,
    ) -> KeyValueStore[Any]:
        """Open the store ``name`` (a column family)."""
        if name == META_CF:
            raise StateError(f"{META_CF!r} is reserved; choose another store name")
        kv: KeyValueStore[Any] = KeyValueStore(self, name, encode, decode)
        self._stores.append(kv)
        self.register_cache(kv)
        self._flushers.append(lambda batch: kv._drain(batch, self._changes))
        self._committers.append(kv._after_commit)
        return kv

    def register_flusher(
        self, flush: Callable[[WriteBatch], tuple[int, int, int]], after: Callable[[], None]
    ) -> None:
        """Let another structure (a timer queue) join every snapshot's WriteBatch."""
        self._flushers.append(flush)
        self._committers.append(after)

    def register_cache(self, cache: StateCache) -> None:
        """Count ``cache`` in the process's memory budget while this database is open."""
        self._caches.append(cache)
        self.budget.register(cache)

    def backlog(self) -> bool:
        """Whether a snapshot is due for memory's sake: a store holds many dirty entries,
        or the process's caches are over their budget (a snapshot makes them clean, and
        evictable)."""
        return self.budget.over() or any(kv.dirty_count > DIRTY_ENTRIES for kv in self._stores)

    # -- metadata -------------------------------------------------------------
    def get_meta(self, key: str) -> Any:
        """A metadata value of the last snapshot, or None."""
        raw = self._column(META_CF).get(key.encode())
        return None if raw is None else codec.loads(raw)

    # -- snapshot ---------------------------------------------------------------
    _changes: list[Change] | None = None

    def commit(self, meta: dict[str, Any], *, collect_changes: bool = False) -> CommitStats:
        """Write dirty state, timers and ``meta`` in one synced WriteBatch.

        Returns what was written; with ``collect_changes`` the state entries
        are also kept in :attr:`last_changes` for a changelog.
        """
        prepared = self.prepare(collect_changes=collect_changes)
        self.last_changes: list[Change] = prepared.changes
        return self.apply(prepared, meta)

    def prepare(self, *, collect_changes: bool = False) -> Prepared:
        """Gather every dirty entry into a WriteBatch (and, if asked, a change list),
        without writing anything: :meth:`apply` writes it. Until then nothing is
        marked clean, so an abandoned preparation can simply be prepared again."""
        self._check_open()
        self._changes = [] if collect_changes else None
        batch = WriteBatch(raw_mode=True)
        puts = deletes = size = 0
        try:
            for flush in self._flushers:
                p, d, s = flush(batch)
                puts += p
                deletes += d
                size += s
            return Prepared(batch, self._changes or [], CommitStats(puts, deletes, size))
        finally:
            self._changes = None

    def apply(self, prepared: Prepared, meta: dict[str, Any]) -> CommitStats:
        """Write a prepared batch plus ``meta`` in one synced write, then mark all clean."""
        self._check_open()
        batch = prepared.batch
        size = prepared.stats.bytes
        meta_handle = self._handle(META_CF)
        for key, value in {"format_version": FORMAT_VERSION, **meta}.items():
            raw = codec.dumps(value)
            batch.put(key.encode(), raw, meta_handle)
            size += len(raw)
        try:
            self._rdict.write(batch, self._write_opts)
        except Exception as exc:
            raise StateError(
                f"writing the snapshot to {self.path} failed: {exc}; check free disk space"
            ) from exc
        for after in self._committers:
            after()
        return CommitStats(prepared.stats.puts, prepared.stats.deletes, size)

    def write_changes(self, changes: list[Change], meta: dict[str, Any] | None = None) -> None:
        """Apply changelog entries (restore) and ``meta`` in one synced write.

        Only for a task that has not started processing: caches are not updated.
        """
        self._check_open()
        batch = WriteBatch(raw_mode=True)
        for change in changes:
            handle = self._handle(change.store)
            if change.value is None:
                batch.delete(change.key, handle)
            else:
                batch.put(change.key, change.value, handle)
        meta_handle = self._handle(META_CF)
        for key, value in (meta or {}).items():
            batch.put(key.encode(), codec.dumps(value), meta_handle)
        self._rdict.write(batch, self._write_opts)

    def column_family_names(self) -> list[str]:
        """Every column family of the database (stores, timers, metadata)."""
        return sorted(self._columns)

    def discard_uncommitted(self) -> None:
        """Forget every change since the last snapshot (used when a task is abandoned)."""
        for kv in self._stores:
            kv._discard_cache()

    # -- lifecycle ----------------------------------------------------------------
    def _check_open(self) -> None:
        if self._closed:
            raise StateError(f"state database {self.path} is closed")

    def close(self) -> None:
        """Close the database; uncommitted changes are dropped."""
        if self._closed:
            return
        self._closed = True
        for cache in self._caches:
            self.budget.unregister(cache)
        self._caches.clear()
        for column in self._columns.values():
            column.close()
        self._columns.clear()
        self._handles.clear()
        # Closing every column family handle too releases RocksDB's file lock at once.
        self._rdict.close()
        del self._rdict

    def destroy(self) -> None:
        """Close and delete the database from disk."""
        self.close()
        shutil.rmtree(self.path, ignore_errors=True)

    @property
    def closed(self) -> bool:
        return self._closed

    def size(self) -> tuple[int, int]:
        """RocksDB's figures for the whole database: bytes (SST files and memtables) and
        its estimate of the number of entries (for metrics)."""
        self._check_open()
        size = keys = 0
        for name in self._cf_names:
            column = self._column(name)
            for prop in ("rocksdb.total-sst-files-size", "rocksdb.cur-size-all-mem-tables"):
                size += column.property_int_value(prop) or 0
            keys += column.property_int_value("rocksdb.estimate-num-keys") or 0
        return size, keys


class ReadOnlyDB:
    """A task's database opened read-only (for ``evtime state inspect``): it takes no lock,
    so it opens beside a worker using it, and it sees the state as of its opening."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        try:
            names = [n for n in Rdict.list_cf(str(self.path)) if n != "default"]
            self._rdict = Rdict(
                str(self.path),
                options=Options(raw_mode=True),
                column_families={name: Options(raw_mode=True) for name in names},
                access_type=AccessType.read_only(),
            )
        except Exception as exc:
            raise StateError(
                f"cannot open the state database at {self.path} to read: {exc}"
            ) from exc
        self.columns: dict[str, Rdict] = {n: self._rdict.get_column_family(n) for n in names}

    def get_meta(self, key: str) -> Any:
        """A metadata value of the last snapshot, or None."""
        meta = self.columns.get(META_CF)
        raw = None if meta is None else meta.get(key.encode())
        return None if raw is None else codec.loads(raw)

    def close(self) -> None:
        for column in self.columns.values():
            column.close()
        self.columns.clear()
        self._rdict.close()

