"""A task's snapshot metadata: what a checkpoint writes with the state, and reads back.

In RocksDB (the ``__meta__`` column family, evtime/state/store.py) each field is a key:
``offsets`` (the next offset of every input partition), ``watermarks`` (the tracker's
snapshot), ``counters`` (``{"records_in": n}``), ``changelog_end`` (the task's
changelog partition's end offset after the checkpoint) and ``epoch`` (the run that wrote
it, if it had one: shown by ``evtime state inspect``, not restored). The encoding is the one every
earlier version wrote, so existing state directories restore.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from evtime.state.store import Change, Prepared, TaskDB

OFFSETS = "offsets"
WATERMARKS = "watermarks"
COUNTERS = "counters"
CHANGELOG_END = "changelog_end"
EPOCH = "epoch"


@dataclass(frozen=True, slots=True)
class SnapshotMeta:
    """The metadata of one snapshot of a partition task."""

    offsets: Mapping[str, int]
    """The next offset of every input topic of the task (its partition)."""
    watermarks: Mapping[str, object]
    """The watermark tracker's snapshot (evtime/watermarks.py)."""
    changelog_end: int | None = None
    """The task's changelog partition's end offset after this snapshot (None: not known,
    e.g. a task that never wrote a changelog)."""
    epoch: str | None = None
    """The run of the task that wrote the snapshot (its changelog records carry it in a
    header; RocksDB keeps none: a reopened task is a new run)."""
    records_in: int = 0

    def encode(self) -> dict[str, object]:
        """The RocksDB metadata entries of this snapshot (values before the codec)."""
        meta: dict[str, object] = {
            OFFSETS: dict(self.offsets),
            WATERMARKS: dict(self.watermarks),
            COUNTERS: {"records_in": self.records_in},
        }
        if self.changelog_end is not None:
            meta[CHANGELOG_END] = self.changelog_end
        if self.epoch is not None:
            meta[EPOCH] = self.epoch  # for `evtime state inspect`; a restore ignores it
        return meta

    @classmethod
    def load(cls, db: TaskDB) -> SnapshotMeta | None:
        """The last snapshot's metadata in ``db``; None when it holds no snapshot."""
        get_meta = db.get_meta
        offsets = get_meta(OFFSETS)
        if offsets is None:
            return None
        end = get_meta(CHANGELOG_END)
        counters = get_meta(COUNTERS) or {}
        return cls(
            {topic: int(offset) for topic, offset in offsets.items()},
            get_meta(WATERMARKS) or {},
            None if end is None else int(end),
            None,
            int(counters.get("records_in", 0)),
        )


@dataclass(frozen=True, slots=True)
class PreparedSnapshot:
    """A task's snapshot, gathered but not written: its RocksDB WriteBatch (with the state
    changes for the changelog) and its metadata."""

    batch: Prepared
    meta: SnapshotMeta

    @property
    def changes(self) -> list[Change]:
        return self.batch.changes


def restored_meta(
    offsets: dict[str, int] | None,
    watermarks: dict[str, object] | None,
    changelog_end: int,
) -> dict[str, object]:
    """The metadata a changelog restore writes: the last applied checkpoint's offsets and
    watermarks (if one was applied) and where the changelog was read up to."""
    meta: dict[str, object] = {}
    if offsets is not None:
        meta[OFFSETS] = offsets
        meta[WATERMARKS] = watermarks
    meta[CHANGELOG_END] = changelog_end
    return meta
