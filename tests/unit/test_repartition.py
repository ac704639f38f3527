"""The downstream side of a repartition, against a brute-force model: records of several
source partitions arrive interleaved (each partition's in order), with watermark markers
after them, and with resends (a restarted source task sends a suffix again). The windows
the task emits equal those of the unique records that the markers' minimum closes; a
resend counts once; an idle source partition stops holding the watermark back."""

from __future__ import annotations

import asyncio
import tempfile
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from evtime import App, Count, Tumbling, WindowResult
from evtime.connectors.local import MemorySink, MemorySource
from evtime.errors import ConfigError
from evtime.records import RawRecord
from evtime.runtime.task import PartitionTask
from evtime.time import ManualClock
from evtime.wire import IDLE, ORIGIN_HEADER, ORIGINS_HEADER, WATERMARK_HEADER
from tests.unit.memory_kafka import MemoryKafka

SIZE = 1_000
ORIGINS = 3


class _KafkaLike(MemorySource):
    """A memory source that app.repartition accepts (its internal topic in memory too)."""

    def internal_source(self, topic: str) -> MemorySource:
        return MemorySource(topic, 1)

    def repartition_sink(self, topic: str) -> MemorySink:
        return MemorySink()


def _task() -> tuple[PartitionTask, str]:
    app = App("rp", state_dir=tempfile.mkdtemp())
    events = app.source("in", _KafkaLike("in", ORIGINS), timestamp="ts")
    by_user = app.repartition(events, key="user", name="by-user")

    @app.window(by_user, Tumbling(SIZE), aggregate=Count(), sink=MemorySink())
    def counts(result: WindowResult) -> Any:
        return {"start": result.start, "count": result.value}

    topic = by_user.topic
    return PartitionTask(app.plan, (topic,), 0, ManualClock(0)), topic


def _record(offset: int, origin: str, user: str, ts: int) -> RawRecord:
    value = orjson.dumps({"user": user, "ts": ts})
    return RawRecord(offset, user.encode(), value, None, ((ORIGIN_HEADER, origin.encode()),))


def _marker(offset: int, origin: int, watermark: int | str) -> RawRecord:
    headers = (
        (ORIGIN_HEADER, str(origin).encode()),
        (WATERMARK_HEADER, str(watermark).encode()),
        (ORIGINS_HEADER, str(ORIGINS).encode()),
    )
    return RawRecord(offset, None, b"", None, headers)


origin_events = st.lists(
    st.tuples(st.sampled_from(["a", "b", "c"]), st.integers(0, 400)), min_size=1, max_size=30
)


@settings(max_examples=100, deadline=None)
@given(
    streams=st.lists(origin_events, min_size=ORIGINS, max_size=ORIGINS),
    order=st.randoms(use_true_random=False),
    restarts=st.lists(st.tuples(st.floats(0, 1), st.floats(0, 1)), min_size=ORIGINS,
                      max_size=ORIGINS),
)
def test_windows_equal_the_model_of_unique_records(
    streams: list[list[tuple[str, int]]], order: Any, restarts: list[tuple[float, float]]
) -> None:
    # Per source partition: rising event times (a gap each), a marker after each record
    # (the partition's watermark: its maximum so far, minus 1); and a restart after record
    # k that sends records j..k again (from its last checkpoint) before going on.
    per_origin: list[list[tuple[str, Any]]] = []
    model: dict[tuple[str, int], int] = {}
    tops = []
    for o, events in enumerate(streams):
        sent = []
        ts = 0
        for n, (user, gap) in enumerate(events):
            ts += gap
            sent.append((f"{o}:{n}", user, ts))
            model[(user, ts - ts % SIZE)] = model.get((user, ts - ts % SIZE), 0) + 1
        k = int(restarts[o][0] * (len(sent) - 1))
        j = int(restarts[o][1] * k)
        order_of_sends = [*range(k + 1), *range(j, len(sent))]
        seq: list[tuple[str, Any]] = []
        top = -1
        for n in order_of_sends:
            seq.append(("rec", sent[n]))
            top = max(top, sent[n][2])
            seq.append(("mark", top - 1))
        per_origin.append(seq)
        tops.append(top - 1)
    # Interleave the partitions' sequences (each one's order kept), as one internal partition.
    merged: list[RawRecord] = []
    cursors = [0] * ORIGINS
    while any(c < len(s) for c, s in zip(cursors, per_origin, strict=True)):
        o = order.choice([i for i in range(ORIGINS) if cursors[i] < len(per_origin[i])])
        kind, item = per_origin[o][cursors[o]]
        cursors[o] += 1
        offset = len(merged)
        merged.append(_record(offset, *item) if kind == "rec" else _marker(offset, o, item))
    task, topic = _task()
    try:
        for i in range(0, len(merged), 7):
            task.process(topic, merged[i : i + 7])
        outputs, dead = task.take()
        assert not dead
        got = {(o.key, o.value["start"]): o.value["count"] for o in outputs.get("counts/main", [])}
        watermark = min(tops)
        closed = {w: c for w, c in model.items() if w[1] + SIZE - 1 <= watermark}
        assert got == closed
    finally:
        task.close()


def test_the_watermark_waits_for_every_source_partition_and_skips_idle_ones() -> None:
    task, topic = _task()
    try:
        records = [_record(0, "0:0", "a", 500), _marker(1, 0, 2_000), _marker(2, 1, 1_500)]
        task.process(topic, records)
        assert task.tracker.current < 0  # source partition 2 has said nothing yet
        task.process(topic, [_marker(3, 2, "idle")])
        assert task.tracker.current == 1_500  # the least of the partitions not idle
        outputs, _ = task.take()
        assert [o.value for o in outputs["counts/main"]] == [{"start": 0, "count": 1}]
        task.process(topic, [_marker(4, 2, 1_700), _marker(5, 1, 3_000)])
        assert task.tracker.current == 1_700  # back from idleness, it holds it back again
        task.process(topic, [_record(6, "0:0", "a", 1_900)])  # a resend: dropped
        task.process(topic, [_marker(7, 2, 5_000)])
        outputs, dead = task.take()
        assert not outputs and not dead
        assert task.offsets[topic] == 8
    finally:
        task.close()


def test_repartition_says_what_it_needs() -> None:
    app = App("rp2", state_dir=tempfile.mkdtemp())
    local = app.source("local", MemorySource("local", 2), timestamp="ts")
    with pytest.raises(ConfigError, match="needs a Kafka source"):
        app.repartition(local, key="user")
    untimed = app.source("untimed", _KafkaLike("untimed", 2))
    with pytest.raises(ConfigError, match="event time in the value"):
        app.repartition(untimed, key="user")
    events = app.source("in", _KafkaLike("in", 2), timestamp="ts")
    by_user = app.repartition(events, key="user")
    assert by_user.topic == "rp2-in-by-user-repartition"
    with pytest.raises(ConfigError, match="repartitioned already"):
        app.repartition(events, key="country", name="by-country")

    @app.window(events, Tumbling(SIZE), aggregate=Count(), sink=MemorySink())
    def direct(result: WindowResult) -> Any:
        return result.value

    with pytest.raises(ConfigError, match=r"read the source app\.repartition returned"):
        app.plan.validate()


def test_source_tasks_send_their_watermark_and_idleness_to_the_internal_topic() -> None:
    """The worker side: after each step, a source task with records sends its watermark,
    and one whose partition stays empty past idle_timeout says it is idle (else the
    downstream watermark would wait for it for good)."""
    class Internal:
        def __init__(self) -> None:
            self.outputs: list[Any] = []
            self.marks: list[tuple[int, int, int]] = []

        async def ensure(self, partitions: int) -> None:
            self.partitions = partitions

        async def write(self, outputs: Any) -> None:
            self.outputs.extend(outputs)

        async def write_watermark(self, origin: int, origins: int, watermark: int) -> None:
            self.marks.append((origin, origins, watermark))

        async def flush(self) -> None:
            return None

        async def close(self) -> None:
            return None

    internal = Internal()

    class World(MemoryKafka):
        def internal_source(self, topic: str) -> Any:
            return self

        def repartition_sink(self, topic: str) -> Any:
            return internal

    records = [RawRecord(i, None, orjson.dumps({"user": f"u{i % 3}", "ts": 1_000 * i}))
               for i in range(20)]
    world = World({0: records, 1: []}, 0)
    clock = ManualClock(0)

    async def run() -> None:
        app = App("rp3", state_dir=tempfile.mkdtemp(), clock=clock)
        events = app.source("in", world, timestamp="ts", idle_timeout="1s")  # type: ignore[arg-type]
        by_user = app.repartition(events, key="user")

        @app.window(by_user, Tumbling(SIZE), aggregate=Count(), sink=MemorySink())
        def counts(result: WindowResult) -> Any:
            return result.value

        worker = app.worker(handle_signals=False, poll_ms=5)
        task = asyncio.create_task(worker.run())
        for _ in range(400):
            await asyncio.sleep(0.005)
            clock.advance(20)
            if (1, 2, IDLE) in internal.marks and len(internal.outputs) == 20:
                break
        worker.stop()
        await task

    asyncio.run(run())
    assert internal.partitions == 2  # the source's count
    assert sorted(o.id for o in internal.outputs) == sorted(f"0:{i}" for i in range(20))
    assert (1, 2, IDLE) in internal.marks  # partition 1 never had a record
    # Partition 0's watermark after its records (then it goes idle too, once they end).
    from_0 = [wm for origin, _, wm in internal.marks if origin == 0 and wm != IDLE]
    assert from_0 and from_0 == sorted(from_0) and from_0[-1] == 19_000 - 1
