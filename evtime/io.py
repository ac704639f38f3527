"""The source and sink protocols that connectors implement.

The core never imports a connector: it talks to these protocols only.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from evtime.records import DeadLetter, Output, RawRecord


@runtime_checkable
class LocalSource(Protocol):
    """A partitioned, replayable source read in-process (memory, files).

    Offsets are positions within a partition; ``read`` returns records from
    ``offset`` on, at most ``max_records``, and an empty list at the end of a
    bounded source (or when an unbounded one has nothing yet).
    """

    topic: str

    @property
    def partitions(self) -> list[int]: ...

    @property
    def bounded(self) -> bool: ...

    def read(self, partition: int, offset: int, max_records: int) -> list[RawRecord]: ...


@runtime_checkable
class Sink(Protocol):
    """Where results go. ``flush`` returns once every written output is durable."""

    async def write(self, outputs: Sequence[Output]) -> None: ...

    async def flush(self) -> None: ...

    async def close(self) -> None: ...


@runtime_checkable
class DeadLetterSink(Protocol):
    """Where bad records go, with their reason."""

    async def write_dead(self, letters: Sequence[DeadLetter]) -> None: ...

    async def flush(self) -> None: ...

    async def close(self) -> None: ...
