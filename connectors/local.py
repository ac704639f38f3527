"""Embedded sources and sinks: in-memory, JSON-lines files, stdout.

They make ``evtime run`` work with no broker at all, and they are what the
engine's tests run on. Sources are partitioned and replayable: a record's
offset is its position in its partition.
"""

from __future__ import annotations

import asyncio
import os
import sys
import zlib
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import IO, Any

import orjson

from evtime.errors import ConfigError
from evtime.records import DeadLetter, Headers, Output, RawRecord


def partition_for(key: object, partitions: int) -> int:
    """Stable partition of a key (CRC-32 of its bytes; None goes to 0)."""
    if key is None:
        return 0
    if isinstance(key, str):
        data = key.encode()
    elif isinstance(key, bytes):
        data = key
    else:
        data = str(key).encode()
    return zlib.crc32(data) % partitions


class MemorySource:
    """A partitioned in-memory topic.

    >>> src = MemorySource("clicks", partitions=2)
    >>> src.add({"user": "a", "ts": 5}, key="a")
    (1, 0)
    >>> [r.value for r in src.read(1, 0, 10)]
    [{'user': 'a', 'ts': 5}]

    ``bounded=True`` (default): reading past the end means the input is over
    (the watermark then goes to +infinity, firing every window).
    """

    def __init__(self, topic: str, partitions: int = 1, *, bounded: bool = True) -> None:
        if partitions < 1:
            raise ConfigError(f"MemorySource {topic!r}: partitions must be >= 1")
        self.topic = topic
        self._data: list[list[RawRecord]] = [[] for _ in range(partitions)]
        self._bounded = bounded

    @classmethod
    def of(
        cls,
        topic: str,
        values: Iterable[object],
        *,
        partitions: int = 1,
        key: str | None = None,
        bounded: bool = True,
    ) -> MemorySource:
        """A source holding ``values``, partitioned by the value field ``key`` (or round-robin)."""
        src = cls(topic, partitions, bounded=bounded)
        for i, value in enumerate(values):
            k = value.get(key) if key is not None and isinstance(value, dict) else None
            src.add(value, key=k, partition=None if key is not None else i % partitions)
        return src

    def add(
        self,
        value: object,
        *,
        key: object = None,
        partition: int | None = None,
        timestamp: int | None = None,
        headers: Headers = (),
    ) -> tuple[int, int]:
        """Append a record; returns its (partition, offset)."""
        if partition is None:
            partition = partition_for(key, len(self._data))
        records = self._data[partition]
        offset = len(records)
        records.append(RawRecord(offset, key, value, timestamp, headers))
        return partition, offset

    @property
    def partitions(self) -> list[int]:
        return list(range(len(self._data)))

    @property
    def bounded(self) -> bool:
        return self._bounded

    def close_input(self) -> None:
        """Declare an unbounded source finished."""
        self._bounded = True

    def read(self, partition: int, offset: int, max_records: int) -> list[RawRecord]:
        return self._data[partition][offset : offset + max_records]

    def __len__(self) -> int:
        return sum(len(p) for p in self._data)


class JsonLinesSource:
    """One JSON-lines file per partition; a record's offset is its line number.

    The value of each record is the line's bytes, decoded (and, when
    malformed, sent to the dead-letter output) by the task.
    """

    def __init__(self, topic: str, paths: str | Path | Sequence[str | Path]) -> None:
        if isinstance(paths, str | Path):
            paths = [paths]
        if not paths:
            raise ConfigError(f"JsonLinesSource {topic!r}: give at least one file")
        self.topic = topic
        self._paths = [Path(p) for p in paths]
        for path in self._paths:
            if not path.is_file():
                raise ConfigError(f"JsonLinesSource {topic!r}: no such file {path}")
        self._files: dict[int, tuple[IO[bytes], int]] = {}

    def describe(self) -> str:
        """For ``evtime describe``: the files, one per partition."""
        return f"JSON lines {', '.join(map(str, self._paths))}"

    @property
    def partitions(self) -> list[int]:
        return list(range(len(self._paths)))

    @property
    def bounded(self) -> bool:
        return True

    def read(self, partition: int, offset: int, max_records: int) -> list[RawRecord]:
        handle, position = self._files.get(partition, (None, -1))
        if handle is None or position != offset:
            if handle is not None:
                handle.close()
            handle = self._paths[partition].open("rb")
            for _ in range(offset):
                if not handle.readline():
                    break
            position = offset
        out: list[RawRecord] = []
        while len(out) < max_records:
            line = handle.readline()
            if not line:
                break
            out.append(RawRecord(position, None, line.rstrip(b"\r\n")))
            position += 1
        self._files[partition] = (handle, position)
        return out

    def close(self) -> None:
        for handle, _ in self._files.values():
            handle.close()
        self._files.clear()


class MemorySink:
    """Keeps every output (and dead letter) in lists: for tests and notebooks."""

    def __init__(self) -> None:
        self.outputs: list[Output] = []
        self.dead: list[DeadLetter] = []
        self.flushes = 0

    async def write(self, outputs: Sequence[Output]) -> None:
        self.outputs.extend(outputs)

    async def write_dead(self, letters: Sequence[DeadLetter]) -> None:
        self.dead.extend(letters)

    async def flush(self) -> None:
        self.flushes += 1

    async def close(self) -> None:
        return None

    @property
    def values(self) -> list[Any]:
        """The output values, in emission order."""
        return [o.value for o in self.outputs]


def output_line(output: Output) -> bytes:
    """One JSON line for an output: its id, key, event time and value."""
    return orjson.dumps(
        {"id": output.id, "key": _key(output.key), "ts": output.timestamp, "value": output.value},
        option=orjson.OPT_NON_STR_KEYS,
    )


def _key(key: object) -> object:
    return key.decode(errors="replace") if isinstance(key, bytes) else key


class JsonLinesSink:
    """Appends outputs (and dead letters) as JSON lines; ``flush`` fsyncs the file."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._file: IO[bytes] | None = None

    def describe(self) -> str:
        """For ``evtime describe``: the file."""
        return f"JSON lines {self.path}"

    def _handle(self) -> IO[bytes]:
        if self._file is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = self.path.open("ab")
        return self._file

    async def write(self, outputs: Sequence[Output]) -> None:
        if outputs:
            self._handle().write(b"".join(output_line(o) + b"\n" for o in outputs))

    async def write_dead(self, letters: Sequence[DeadLetter]) -> None:
        if letters:
            self._handle().write(b"".join(orjson.dumps(d.to_dict()) + b"\n" for d in letters))

    async def flush(self) -> None:
        if self._file is not None:
            handle = self._file
            handle.flush()
            await asyncio.to_thread(os.fsync, handle.fileno())

    async def close(self) -> None:
        if self._file is not None:
            await self.flush()
            self._file.close()
            self._file = None


class StdoutSink:
    """Prints each output (and dead letter) as a JSON line."""

    def __init__(self, stream: IO[str] | None = None) -> None:
        self._stream = stream

    async def write(self, outputs: Sequence[Output]) -> None:
        stream = self._stream or sys.stdout
        for o in outputs:
            stream.write(output_line(o).decode() + "\n")

    async def write_dead(self, letters: Sequence[DeadLetter]) -> None:
        stream = self._stream or sys.stdout
        for d in letters:
            stream.write(orjson.dumps({"dead_letter": d.to_dict()}).decode() + "\n")

    async def flush(self) -> None:
        (self._stream or sys.stdout).flush()

    async def close(self) -> None:
        await self.flush()
