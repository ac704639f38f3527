"""Keyed state in RocksDB: stores with a dirty cache, timer queues, snapshots."""

from evtime.state import memory
from evtime.state.store import Change, CommitStats, KeyValueStore, TaskDB
from evtime.state.timers import TimerQueue

__all__ = ["Change", "CommitStats", "KeyValueStore", "TaskDB", "TimerQueue", "memory"]
