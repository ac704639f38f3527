"""The worker's check that a topic is keyed by the app's key: records without a Kafka key,
or with another one, are named once in a warning; records keyed right are not."""

from __future__ import annotations

import logging
import tempfile

import orjson
import pytest

from evtime import App, Count, Tumbling
from evtime.connectors.local import MemorySink, MemorySource
from evtime.records import RawRecord
from evtime.runtime import task as task_module
from evtime.runtime.task import PartitionTask
from evtime.time import ManualClock


def _task(topic: str) -> PartitionTask:
    app = App("keying", state_dir=tempfile.mkdtemp())
    events = app.source(topic, MemorySource(topic, 1), key="user", timestamp="ts")

    @app.window(events, Tumbling("10s"), aggregate=Count(), sink=MemorySink())
    def counts(result: object) -> object:
        return result

    task = PartitionTask(app.plan, (topic,), 0, ManualClock(0))
    task.key_checks = 5
    return task


def _raws(key: bytes | None, n: int = 3) -> list[RawRecord]:
    return [RawRecord(i, key, orjson.dumps({"user": "u1", "ts": i})) for i in range(n)]


@pytest.mark.parametrize(
    ("key", "warned"),
    [(b"u1", None), (None, "have no Kafka key"), (b"tenant-7", "keyed by something else")],
)
def test_records_keyed_otherwise_are_named_once(
    key: bytes | None, warned: str | None, caplog: pytest.LogCaptureFixture
) -> None:
    topic = f"clicks-{key!r}"
    task_module._KEYING_WARNED.discard((topic, "keying"))
    task = _task(topic)
    with caplog.at_level(logging.WARNING, logger="evtime.task"):
        task.process(topic, _raws(key))
        task.process(topic, _raws(key))
    warnings = [r.getMessage() for r in caplog.records if "Kafka key" in r.getMessage()]
    if warned is None:
        assert warnings == []
    else:
        assert len(warnings) == 1 and warned in warnings[0] and "'user'" in warnings[0]
    assert task.key_checks == 3  # one sample per batch, then no more cost
    task.close()
