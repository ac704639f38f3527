"""What a worker publishes about itself: its counters and a status value.

The worker keeps plain counters as it goes (:class:`WorkerStats`, per fetched batch,
delivery and checkpoint) and builds a :class:`WorkerStatus` when asked (a scrape of
``/metrics``, a ``/healthz`` request): readers see that value, never the worker.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum

from evtime.io import TopicPartition
from evtime.plan import Plan
from evtime.records import DeadLetter

RECENT_DEAD_LETTERS = 20
"""Dead letters a worker keeps to show on its status page (the latest ones)."""


class WorkerState(StrEnum):
    """Where a worker is in its life (``/healthz`` is ready only while ``RUNNING``)."""

    CREATED = "created"
    STARTING = "starting"
    RUNNING = "running"
    REBALANCING = "rebalancing"
    STOPPING = "stopping"
    STOPPED = "stopped"


@dataclass
class WorkerStats:
    """Counters the worker keeps as it goes (since the process started)."""

    records_in: dict[TopicPartition, int] = field(default_factory=dict)
    """Records fetched and handed to their task, per input topic-partition."""
    records_out: dict[str, int] = field(default_factory=dict)
    """Outputs handed to their sink, per output id (``<operator>/main``, ``<operator>/late``)."""
    dead_letters: dict[str, int] = field(default_factory=dict)
    """Records sent to the dead-letter output, per reason."""
    recent_dead_letters: deque[DeadLetter] = field(
        default_factory=lambda: deque(maxlen=RECENT_DEAD_LETTERS)
    )
    """The latest dead letters, oldest first (for the status page)."""
    late_records: int = 0
    checkpoint_count: int = 0
    checkpoint_seconds: float = 0.0
    checkpoint_last_seconds: float = 0.0
    checkpoint_changes: int = 0
    """State entries written to the changelog by checkpoints."""
    checkpoint_last_changes: int = 0
    sink_flushes: dict[str, tuple[int, float]] = field(default_factory=dict)
    """Per sink: flushes and the seconds they took (a flush awaits every acknowledgement)."""
    pauses: int = 0
    """Backpressure episodes: times the partitions were paused for a slow step."""
    assignments: int = 0
    revocations: int = 0
    restored_records: int = 0
    """Changelog records applied by state restores."""
    redos: int = 0
    """Exactly-once intervals processed again after their transaction could not commit."""

    def dead_letter(self, letter: DeadLetter) -> None:
        """Count a record sent to the dead letters and keep it among the latest."""
        reason = letter.reason.value
        self.dead_letters[reason] = self.dead_letters.get(reason, 0) + 1
        self.recent_dead_letters.append(letter)

    def flushed(self, sink: str, seconds: float) -> None:
        count, total = self.sink_flushes.get(sink, (0, 0.0))
        self.sink_flushes[sink] = (count + 1, total + seconds)

    def checkpointed(self, seconds: float, changes: int) -> None:
        self.checkpoint_count += 1
        self.checkpoint_seconds += seconds
        self.checkpoint_last_seconds = seconds
        self.checkpoint_changes += changes
        self.checkpoint_last_changes = changes


@dataclass(frozen=True, slots=True)
class TaskStatus:
    """One partition task, as last seen."""

    group: tuple[str, ...]
    partition: int
    offsets: Mapping[str, int]
    """The next offset of each input topic."""
    watermark: int
    state_size: tuple[int, int] | None
    """RocksDB's bytes and estimated entries of the task's state (None: closed)."""
    clock_driven: frozenset[str] = frozenset()
    """Input topics whose watermark follows the wall clock now (advance_when_idle)."""


@dataclass(frozen=True, slots=True)
class WorkerStatus:
    """A worker's state, tasks and counters at one moment."""

    app: str
    state: WorkerState
    now_ms: int
    assigned: frozenset[TopicPartition]
    highwaters: Mapping[TopicPartition, int]
    """Each assigned partition's end offset as of its last fetch, where known."""
    tasks: tuple[TaskStatus, ...]
    stats: WorkerStats
    timings: Mapping[str, float]
    """Seconds the loop spent per phase."""
    paused: bool
    checkpoints: int
    last_checkpoint_ms: int

    def health(self) -> dict[str, object]:
        """Readiness for /healthz: ready while running with the assigned partitions' tasks
        open (not while starting, rebalancing, restoring or stopping)."""
        last = self.last_checkpoint_ms
        return {
            "ready": self.state is WorkerState.RUNNING,
            "state": self.state.value,
            "app": self.app,
            "assigned": sorted(f"{t}[{p}]" for t, p in self.assigned),
            "tasks": len(self.tasks),
            "paused": self.paused,
            "checkpoints": self.checkpoints,
            "last_checkpoint_age_s": round((self.now_ms - last) / 1000, 3) if last else None,
        }


def sink_names(plan: Plan) -> dict[int, str]:
    """A label per distinct sink (by id): the output ids it serves, or ``dead-letters``."""
    names: dict[int, list[str]] = {}
    for output_id, sink in plan.sinks.items():
        names.setdefault(id(sink), []).append(output_id)
    out = {key: "+".join(sorted(ids)) for key, ids in names.items()}
    if plan.dead_letter is not None:
        out.setdefault(id(plan.dead_letter), "dead-letters")
    return out
