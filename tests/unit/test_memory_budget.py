"""The process's memory budget: one setting, one RocksDB block cache and write-buffer
manager for every task's database, Python caches bounded in bytes across the process that
evict clean entries only, an early checkpoint when they are over budget, and results that
do not depend on the budget."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.core import Metric

from evtime import App, Count, ManualClock, Sum, Tumbling
from evtime.connectors.local import MemorySink, MemorySource
from evtime.errors import ConfigError
from evtime.runtime.metrics import _memory_families
from evtime.settings import Settings
from evtime.state import TaskDB, memory
from evtime.state.windowed import WindowEntry, WindowStore


@pytest.fixture
def small_budget() -> Iterator[memory.MemoryBudget]:
    """A 1 MB budget (its Python caches: 512 KB) for the test, the process's own after."""
    saved = memory._budget
    try:
        yield memory.configure(2**20)
    finally:
        memory._budget = saved


def test_memory_budget_is_a_setting_with_sizes() -> None:
    assert Settings.load(environ={}).memory_budget == 256 * 2**20
    assert Settings.load(environ={"EVTIME_MEMORY_BUDGET": "1GB"}).memory_budget == 2**30
    assert Settings.load(environ={"EVTIME_MEMORY_BUDGET": "64mb"}).memory_budget == 64 * 2**20
    assert Settings.load(environ={"EVTIME_MEMORY_BUDGET": "512MiB"}).memory_budget == 2**29
    with pytest.raises(ConfigError, match="EVTIME_MEMORY_BUDGET='lots' is not a size"):
        Settings.load(environ={"EVTIME_MEMORY_BUDGET": "lots"})


def test_every_task_database_shares_the_process_budget(
    tmp_path: Path, small_budget: memory.MemoryBudget
) -> None:
    first, second = TaskDB(tmp_path / "a", ["s"]), TaskDB(tmp_path / "b", ["s"])
    try:
        assert first.budget is second.budget is memory.budget() is small_budget
        first.store("s").put("k", 1)
        second.store("s").put("k", 2)
        assert small_budget.python_usage()[1] == 2, "both stores count in one accountant"
    finally:
        first.close()
        second.close()
    assert small_budget.python_usage() == (0, 0), "a closed database's caches leave it"


def test_clean_entries_are_evicted_and_read_back(
    tmp_path: Path, small_budget: memory.MemoryBudget
) -> None:
    db = TaskDB(tmp_path, ["s"])
    kv = db.store("s")
    n = 20_000
    for i in range(n):
        kv.put(i, {"n": i, "text": "x" * 20})
    assert kv.cached_entries() == n, "dirty entries are never evicted"
    assert db.backlog(), "caches over budget: a checkpoint is due"
    db.commit({})
    assert kv.cached_bytes() <= small_budget.python_bytes * memory.EVICT_TO
    assert 0 < kv.cached_entries() < n
    assert not db.backlog()
    assert [kv.get(i)["n"] for i in range(n)] == list(range(n)), "evicted ones read back"
    db.close()


def test_evicting_keeps_dirty_entries(tmp_path: Path, small_budget: memory.MemoryBudget) -> None:
    db = TaskDB(tmp_path, ["s"])
    kv = db.store("s")
    for i in range(1_000):
        kv.put(i, i)
    db.commit({})
    for i in range(0, 1_000, 2):
        kv.put(i, -i)  # dirty again
    kv.evict_to(0)
    assert kv.cached_entries() == 500 == kv.dirty_count
    db.commit({})
    assert [kv.get(i) for i in range(4)] == [0, 1, -2, 3]
    db.close()


def test_window_store_evicts_clean_entries_only(
    tmp_path: Path, small_budget: memory.MemoryBudget
) -> None:
    db = TaskDB(tmp_path, [])
    store = WindowStore(db, "w.windows")
    for start in (0, 1000):
        bucket = store.bucket(start)
        for i in range(5_000):
            bucket[f"k{i}"] = WindowEntry(i, 0, 0, True)
        store.touched.add(start)
    db.commit({})
    assert store.cached_bytes() <= small_budget.python_bytes * memory.EVICT_TO
    assert len(store.open.get(0, {})) >= len(store.open.get(1000, {})), "newest start first"
    assert store.load(1000, "k4999") is not None, "read back from RocksDB"
    assert [k for k, _ in store.iter_all(0)] == sorted(f"k{i}" for i in range(5_000))
    entry = store.bucket(0).get("k1") or store.load(0, "k1")
    assert entry is not None
    entry.acc, entry.dirty = -1, True
    store.touched.add(0)
    store.evict_to(0)
    assert store.bucket(0)["k1"].acc == -1, "a start with dirty entries is kept"
    assert 1000 not in store.open, "a clean one is not"
    db.close()


def run_windows(state_dir: Path, lateness: str | int = 0) -> list[Any]:
    """A tumbling Count and Sum over 30,000 events of 3,000 keys, some late (within the
    lateness when there is one); the outputs."""

    def values() -> Iterator[dict[str, Any]]:
        for i in range(30_000):
            late = 15_000 if i % 97 == 0 else 0
            yield {"user": f"u{(i * 7919) % 3000}", "ts": i * 10 - late, "amount": i % 13}

    app = App("budget", state_dir=state_dir, checkpoint_interval="1h", clock=ManualClock(0),
              batch_size=500)
    source = MemorySource.of("events", values(), partitions=2, key="user")
    events = app.source("events", source, key="user", timestamp="ts")
    out = MemorySink()
    app.window(events, Tumbling("10s"), aggregate=Count(), sink=out, name="c",
               allowed_lateness=lateness)(lambda r: (r.key, r.start, r.value, r.kind.value))
    app.window(events, Tumbling("30s"), aggregate=Sum("amount"), sink=out, name="s")(
        lambda r: (r.key, r.start, r.value, r.kind.value)
    )
    app.run()
    return sorted(out.values)


class CountingBudget(memory.MemoryBudget):
    """A budget that counts the stores' commits."""

    commits = 0

    def after_commit(self, cache: memory.StateCache) -> None:
        self.commits += 1
        super().after_commit(cache)


@pytest.mark.parametrize("lateness", [0, "20s"])
def test_results_do_not_depend_on_the_budget(tmp_path: Path, lateness: str | int) -> None:
    saved = memory._budget
    try:
        memory.configure(64 * 2**20)
        roomy = run_windows(tmp_path / "roomy", lateness)
        tight = memory._budget = CountingBudget(2**20)
        assert run_windows(tmp_path / "tight", lateness) == roomy
        assert tight.commits > 10, "the tight budget checkpointed early, and evicted"
    finally:
        memory._budget = saved


def test_memory_metrics(tmp_path: Path, small_budget: memory.MemoryBudget) -> None:
    db = TaskDB(tmp_path, ["s"])
    kv = db.store("s")
    for i in range(100):
        kv.put(i, i)
    db.commit({})
    stats = memory.memory_stats()
    assert stats.budget == 2**20
    assert stats.python_cache_entries == 100
    assert 0 < stats.python_cache_bytes <= stats.python_cache_budget
    assert stats.block_cache_capacity == 2**19
    assert stats.memtable_usage > 0, "the write is in a memtable, charged to the cache"
    assert stats.block_cache_usage >= stats.memtable_usage
    families: dict[str, Metric] = {m.name: m for m in _memory_families("app")}
    assert families["evtime_memory_budget_bytes"].samples[0].value == 2**20
    assert families["evtime_memory_python_cache_entries"].samples[0].value == 100
    assert {"evtime_memory_block_cache_bytes", "evtime_memory_memtable_bytes",
            "evtime_memory_python_cache_bytes"} <= set(families)
    db.close()
