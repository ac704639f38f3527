"""Bad input goes to the dead-letter output with its reason and position; good input flows on.

DESIGN section 8: a record that cannot be decoded, has no valid timestamp, or
raises in user code goes to the dead-letter output with the reason, the source
topic/partition/offset and the original bytes; the worker keeps running. With
``on_error="fail_fast"`` the run stops instead, naming the record, and nothing
past the last snapshot is committed. Late records go to the ``late=`` output
when there is one (else the dead-letter output), never silently dropped.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from unittest import mock

import orjson
import pytest
from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st

from evtime import (
    App,
    DeadLetterReason,
    ErrorPolicy,
    ProcessContext,
    Record,
    Sum,
    Tumbling,
    WindowResult,
)
from evtime.connectors.local import JsonLinesSource, MemorySink, MemorySource
from evtime.errors import DeadLetterPolicyError

D = DeadLetterReason


def window_app(
    state_dir: Path | str,
    connector: Any,
    out: MemorySink,
    dead: MemorySink,
    *,
    on_error: str = "dead_letter",
    ooo: str | int = "5s",
    late: MemorySink | None = None,
    allowed_lateness: str | int = 0,
    result: Any = None,
) -> App:
    """Per-user sums of ``amount`` over 10 s tumbling windows."""
    app = App(
        "bad", state_dir=state_dir, dead_letter=dead, on_error=on_error, checkpoint_interval="1h"
    )
    orders = app.source(
        "orders", connector, key="user", timestamp="ts", max_out_of_orderness=ooo
    )

    def totals(r: WindowResult) -> Any:
        return {"user": r.key, "start": r.start, "total": r.value, "kind": r.kind.value}

    app.window(
        orders,
        Tumbling("10s"),
        aggregate=Sum("amount"),
        sink=out,
        late=late,
        allowed_lateness=allowed_lateness,
        name="totals",
    )(result or totals)
    return app


def lines(path: Path, rows: list[bytes]) -> Path:
    path.write_bytes(b"".join(row + b"\n" for row in rows))
    return path


def good(user: str, amount: int, ts: int) -> bytes:
    return orjson.dumps({"user": user, "amount": amount, "ts": ts})


# -- each kind of bad record, from a JSON-lines file ----------------------------------------

BAD_LINES: list[tuple[bytes, DeadLetterReason]] = [
    (b'{"user": "ann", "amount": ', D.DECODE),  # broken JSON
    (b"\xff\xfe not utf-8", D.DECODE),
    (b'{1: "numeric keys are not JSON"}', D.DECODE),
    (b'{"user": "bob", "amount": 5}', D.TIMESTAMP),  # missing timestamp
    (b'{"user": "bob", "amount": 5, "ts": "yesterday"}', D.TIMESTAMP),  # non-numeric
    (b'{"user": "bob", "amount": 5, "ts": null}', D.TIMESTAMP),
    (b'{"user": "bob", "amount": 5, "ts": true}', D.TIMESTAMP),
    (b'{"amount": 5, "ts": 2000}', D.KEY),  # missing key
    (b'{"user": {"id": 1}, "amount": 5, "ts": 2000}', D.KEY),  # unusable key
    (b'{"user": "bob", "ts": 2000}', D.USER_CODE),  # Sum("amount") raises: no amount
    (b'{"user": "bob", "amount": "five", "ts": 2000}', D.USER_CODE),  # not a number
]


@pytest.mark.parametrize(("line", "reason"), BAD_LINES, ids=[r.value for _l, r in BAD_LINES])
async def test_each_bad_line_is_a_dead_letter_with_its_reason_and_position(
    tmp_path: Path, line: bytes, reason: DeadLetterReason
) -> None:
    rows = [good("ann", 3, 1_000), good("bob", 4, 2_000), line, good("ann", 4, 9_000)]
    rows.append(good("bob", 1, 30_000))
    out, dead = MemorySink(), MemorySink()
    source = JsonLinesSource("orders", lines(tmp_path / "orders.jsonl", rows))
    await window_app(tmp_path / "state", source, out, dead).run_async()

    assert len(dead.dead) == 1, dead.dead
    letter = dead.dead[0]
    assert letter.reason is reason, letter
    assert (letter.topic, letter.partition, letter.offset) == ("orders", 0, 2)
    assert letter.value == line, "the original bytes"
    assert letter.error, "says what went wrong"
    if reason is D.USER_CODE:
        assert letter.operator == "totals"
        assert "sum(amount)" in letter.error

    clean_rows = [r for r in rows if r != line]
    ref_out, ref_dead = MemorySink(), MemorySink()
    clean = JsonLinesSource("orders", lines(tmp_path / "clean.jsonl", clean_rows))
    await window_app(tmp_path / "ref", clean, ref_out, ref_dead).run_async()
    assert out.values == ref_out.values, "every good record is processed as without the bad one"
    assert out.values == [
        {"user": "ann", "start": 0, "total": 7, "kind": "final"},
        {"user": "bob", "start": 0, "total": 4, "kind": "final"},
        {"user": "bob", "start": 30_000, "total": 1, "kind": "final"},
    ]


async def test_a_file_with_many_bad_lines_keeps_every_good_one(tmp_path: Path) -> None:
    rows: list[bytes] = []
    expected: dict[int, DeadLetterReason] = {}
    for i in range(60):
        rows.append(good("abc"[i % 3], i, i * 500))
        line, reason = BAD_LINES[i % len(BAD_LINES)]
        expected[len(rows)] = reason
        rows.append(line)
    out, dead = MemorySink(), MemorySink()
    source = JsonLinesSource("orders", lines(tmp_path / "orders.jsonl", rows))
    # Bad lines carry early timestamps: a bound on disorder of 1 h keeps them from being late.
    app = window_app(tmp_path / "state", source, out, dead, ooo="1h")
    app.plan.batch_size = 7
    await app.run_async()
    assert {d.offset: d.reason for d in dead.dead} == expected
    assert all(d.value == rows[d.offset] for d in dead.dead)

    ref_out = MemorySink()
    clean = JsonLinesSource("orders", lines(tmp_path / "clean.jsonl", rows[::2]))
    await window_app(tmp_path / "ref", clean, ref_out, MemorySink(), ooo="1h").run_async()
    assert out.values == ref_out.values
    assert sum(v["total"] for v in out.values) == sum(range(60))


# -- a property: bad records anywhere change nothing for the good ones ---------------------


def bad_value(kind: int, ts: int) -> tuple[Any, DeadLetterReason]:
    """A bad record of ``kind``; ``ts`` (when it has one) never moves the watermark."""
    return [
        (b'{"user": "ann", "amount": ', D.DECODE),
        (b"\xff\xfe", D.DECODE),
        (b'{1: 2}', D.DECODE),
        ({"user": "ann", "amount": 1}, D.TIMESTAMP),
        ({"user": "ann", "amount": 1, "ts": "soon"}, D.TIMESTAMP),
        ({"amount": 1, "ts": ts}, D.KEY),
        ({"user": [1], "amount": 1, "ts": ts}, D.KEY),
        ({"user": "ann", "ts": ts}, D.USER_CODE),
        ({"user": "bob", "amount": None, "ts": ts}, D.USER_CODE),
    ][kind]


@contextmanager
def fresh_dir() -> Iterator[str]:
    base = "/dev/shm" if os.access("/dev/shm", os.W_OK) else None
    with tempfile.TemporaryDirectory(prefix="evtime-bad-", dir=base) as path:
        yield path


@st.composite
def mixed_streams(draw: st.DrawFn) -> tuple[list[Any], dict[int, DeadLetterReason], list[Any]]:
    values: list[Any] = []
    bad: dict[int, DeadLetterReason] = {}
    goods: list[Any] = []
    max_ts = 0
    for _ in range(draw(st.integers(1, 60))):
        if draw(st.booleans()):
            ts = draw(st.integers(0, 60_000))
            value = {"user": draw(st.sampled_from(["ann", "bob", "cy"])), "amount": 1, "ts": ts}
            max_ts = max(max_ts, ts)
            goods.append(value)
        else:
            value, reason = bad_value(draw(st.integers(0, 8)), max_ts)
            bad[len(values)] = reason
        values.append(value)
    return values, bad, goods


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mixed_streams(), st.sampled_from([1, 3, 100]))
def test_bad_records_anywhere_are_dead_letters_and_change_nothing_else(
    stream: tuple[list[Any], dict[int, DeadLetterReason], list[Any]], batch: int
) -> None:
    values, bad, goods = stream
    note(f"bad at {bad}")

    async def run(path: str, vals: list[Any]) -> tuple[MemorySink, MemorySink]:
        out, dead = MemorySink(), MemorySink()
        # Good records are at most 60 s out of order: none is late.
        app = window_app(path, MemorySource.of("orders", vals), out, dead, ooo="61s")
        app.plan.batch_size = batch
        await app.run_async()
        return out, dead

    # Every record may be bad here: the dead-letter guard, which would stop such a run, is off.
    guard_off = {"EVTIME_DEAD_LETTER_GUARD_FIRST": "0", "EVTIME_DEAD_LETTER_MAX_RATIO": "1"}
    with fresh_dir() as mixed, fresh_dir() as clean, mock.patch.dict(os.environ, guard_off):
        out, dead = asyncio.run(run(mixed, values))
        ref, ref_dead = asyncio.run(run(clean, goods))
    assert {d.offset: d.reason for d in dead.dead} == bad
    assert all(d.value == values[d.offset] for d in dead.dead), "the original value"
    assert all((d.topic, d.partition) == ("orders", 0) for d in dead.dead)
    assert ref_dead.dead == []
    assert out.values == ref.values


# -- user code that raises ----------------------------------------------------------------------


def process_app(
    state_dir: Path | str, values: list[Any], out: MemorySink, dead: MemorySink, **kw: Any
) -> App:
    app = App("proc", state_dir=state_dir, dead_letter=dead, checkpoint_interval="1h", **kw)
    orders = app.source(
        "orders", MemorySource.of("orders", values, partitions=2, key="user"), key="user",
        timestamp="ts",
    )

    @app.process(orders, sink=out)
    def running_total(record: Record, ctx: ProcessContext) -> None:
        total = ctx.value_state("total")
        value = total.get(0) + record.value["amount"]  # raises for a bad amount
        total.set(value)
        ctx.emit({"user": record.key, "total": value})

    return app


def orders(n: int) -> list[dict[str, Any]]:
    return [{"user": "abcd"[i % 4], "amount": i, "ts": i * 100} for i in range(n)]


async def test_a_process_function_that_raises_sends_the_record_to_the_dead_letters(
    tmp_path: Path,
) -> None:
    values: list[Any] = orders(20)
    values.insert(7, {"user": "b", "amount": "x", "ts": 650})
    values.insert(13, {"user": "c", "ts": 1_250})
    out, dead = MemorySink(), MemorySink()
    await process_app(tmp_path / "s", values, out, dead).run_async()
    dead.dead.sort(key=lambda d: d.value["ts"])
    assert [(d.reason, d.operator, d.value["ts"]) for d in dead.dead] == [
        (D.USER_CODE, "running_total", 650),
        (D.USER_CODE, "running_total", 1_250),
    ]
    source = MemorySource.of("orders", values, partitions=2, key="user")
    for d in dead.dead:
        assert source.read(d.partition, d.offset, 1)[0].value == d.value, "its position"
        assert d.topic == "orders"
        assert d.key == d.value["user"]
    assert "TypeError" in dead.dead[0].error and "KeyError" in dead.dead[1].error

    ref = MemorySink()
    await process_app(tmp_path / "ref", orders(20), ref, MemorySink()).run_async()
    assert sorted(out.values, key=repr) == sorted(ref.values, key=repr)


async def test_a_result_function_that_raises_sends_the_window_to_the_dead_letters(
    tmp_path: Path,
) -> None:
    def shape(r: WindowResult) -> dict[str, Any]:
        if r.key == "bob":
            raise ValueError("no bobs")
        return {"user": r.key, "total": r.value}

    rows = [good("ann", 3, 1_000), good("bob", 4, 2_000), good("ann", 1, 12_000)]
    out, dead = MemorySink(), MemorySink()
    source = JsonLinesSource("orders", lines(tmp_path / "o.jsonl", rows))
    await window_app(tmp_path / "s", source, out, dead, result=shape).run_async()
    assert out.values == [{"user": "ann", "total": 3}, {"user": "ann", "total": 1}]
    [letter] = dead.dead
    assert letter.reason is D.USER_CODE
    assert letter.operator == "totals" and letter.topic == "orders"
    assert letter.key == "bob"
    assert letter.value["start"] == 0 and letter.value["value"] == 4, "the window's result"
    assert letter.timestamp == 9_999
    assert "ValueError: no bobs" in letter.error


# -- fail fast --------------------------------------------------------------------------------


async def test_fail_fast_stops_at_a_bad_record_naming_its_position(tmp_path: Path) -> None:
    rows = [good("ann", 3, 1_000), good("bob", 4, 2_000), b'{"user": "ann", "amou', good("a", 1, 3)]
    source = JsonLinesSource("orders", lines(tmp_path / "o.jsonl", rows))
    out, dead = MemorySink(), MemorySink()
    app = window_app(tmp_path / "s", source, out, dead, on_error="fail_fast")
    with pytest.raises(DeadLetterPolicyError, match=r"orders\[0\]@2 \(decode\)"):
        await app.run_async()
    assert dead.dead == []


def test_fail_fast_accepts_the_enum_and_the_string(tmp_path: Path) -> None:
    for policy in ("fail_fast", ErrorPolicy.FAIL_FAST):
        app = App("x", state_dir=tmp_path, on_error=policy)
        assert app.plan.policy is ErrorPolicy.FAIL_FAST


async def test_fail_fast_on_user_code_names_the_record(tmp_path: Path) -> None:
    values: list[Any] = orders(10)
    values[6] = {"user": "c", "amount": None, "ts": 600}
    app = process_app(tmp_path, values, MemorySink(), MemorySink(), on_error="fail_fast")
    source = app.plan.sources["orders"].connector
    part, offset = next(
        (p, r.offset) for p in (0, 1) for r in source.read(p, 0, 100) if r.value is values[6]
    )
    with pytest.raises(DeadLetterPolicyError, match=rf"orders\[{part}\]@{offset} \(user_code\)"):
        await app.run_async()


async def test_fail_fast_commits_nothing_past_the_bad_record(tmp_path: Path) -> None:
    # After a fail-fast stop the operator fixes the data (or the code) and restarts: every
    # record from the bad one on must be processed then, none skipped.
    values: list[Any] = orders(12)
    bad = {"user": "a", "amount": None, "ts": 450}
    values.insert(5, bad)
    out = MemorySink()
    app = process_app(tmp_path, values, out, MemorySink(), on_error="fail_fast")
    with pytest.raises(DeadLetterPolicyError):
        await app.run_async()

    fixed = [*values]
    fixed[5] = {"user": "a", "amount": 0, "ts": 450}
    out2 = MemorySink()
    await process_app(tmp_path, fixed, out2, MemorySink(), on_error="fail_fast").run_async()
    ref = MemorySink()
    await process_app(tmp_path / "ref", fixed, ref, MemorySink()).run_async()
    final = {v["user"]: v["total"] for v in [*out.values, *out2.values]}
    assert final == {v["user"]: v["total"] for v in ref.values}, "no record was skipped"


async def test_late_records_do_not_stop_a_fail_fast_run(tmp_path: Path) -> None:
    rows = [good("ann", 3, 30_000), good("ann", 4, 1_000), good("ann", 5, 40_000)]
    source = JsonLinesSource("orders", lines(tmp_path / "o.jsonl", rows))
    out, dead = MemorySink(), MemorySink()
    await window_app(tmp_path / "s", source, out, dead, on_error="fail_fast", ooo=0).run_async()
    assert [(d.reason, d.offset) for d in dead.dead] == [(D.LATE, 1)]


# -- late records ---------------------------------------------------------------------------


async def test_late_records_go_to_the_late_sink_when_given(tmp_path: Path) -> None:
    values = [
        {"user": "ann", "amount": 1, "ts": 1_000},
        {"user": "ann", "amount": 2, "ts": 25_000},  # watermark 24_999: [0, 10 s) fired
        {"user": "bob", "amount": 3, "ts": 5_000},  # late
        {"user": "ann", "amount": 4, "ts": 12_000},  # late
        {"user": "ann", "amount": 5, "ts": 24_000},
    ]
    out, dead, late = MemorySink(), MemorySink(), MemorySink()
    app = window_app(tmp_path, MemorySource.of("orders", values), out, dead, ooo=0, late=late)
    runner = app.runner()
    await runner.run()
    assert [(o.key, o.value, o.timestamp) for o in late.outputs] == [
        ("bob", values[2], 5_000),
        ("ann", values[3], 12_000),
    ]
    assert dead.dead == []
    assert [v["total"] for v in out.values] == [1, 7]


async def test_late_records_without_a_late_sink_are_dead_letters(tmp_path: Path) -> None:
    values = [
        {"user": "ann", "amount": 1, "ts": 1_000},
        {"user": "ann", "amount": 2, "ts": 25_000},
        {"user": "bob", "amount": 3, "ts": 5_000},
    ]
    out, dead = MemorySink(), MemorySink()
    app = window_app(tmp_path, MemorySource.of("orders", values), out, dead, ooo=0)
    await app.run_async()
    [letter] = dead.dead
    assert letter.reason is D.LATE
    assert (letter.topic, letter.partition, letter.offset) == ("orders", 0, 2)
    assert letter.value == values[2] and letter.timestamp == 5_000
    assert letter.operator == "totals"


async def test_records_within_the_allowed_lateness_are_not_late(tmp_path: Path) -> None:
    values = [
        {"user": "ann", "amount": 1, "ts": 1_000},
        {"user": "ann", "amount": 2, "ts": 25_000},  # watermark 24_999
        {"user": "ann", "amount": 3, "ts": 5_000},  # [0, 10 s) kept until 24_999 + 1: late
        {"user": "ann", "amount": 4, "ts": 15_000},  # [10 s, 20 s) kept until 34_999: fires
    ]
    out, dead, late = MemorySink(), MemorySink(), MemorySink()
    app = window_app(
        tmp_path,
        MemorySource.of("orders", values),
        out,
        dead,
        ooo=0,
        late=late,
        allowed_lateness="15s",
    )
    await app.run_async()
    assert late.values == [values[2]]
    assert out.values == [
        {"user": "ann", "start": 0, "total": 1, "kind": "final"},
        {"user": "ann", "start": 10_000, "total": 4, "kind": "final"},
        {"user": "ann", "start": 20_000, "total": 2, "kind": "final"},
    ]


async def test_dead_letters_default_to_a_json_lines_file_under_the_state_dir(
    tmp_path: Path,
) -> None:
    app = App("files", state_dir=tmp_path)
    rows = [b"not json", good("ann", 1, 1)]
    orders_src = app.source(
        "orders", JsonLinesSource("orders", lines(tmp_path / "o.jsonl", rows)), key="user",
        timestamp="ts",
    )
    app.window(orders_src, Tumbling("1s"), aggregate=Sum("amount"), sink=MemorySink(), name="w")(
        None
    )
    await app.run_async()
    written = (tmp_path / "files" / "dead-letters.jsonl").read_bytes().splitlines()
    [doc] = [orjson.loads(line) for line in written]
    assert doc["reason"] == "decode" and doc["offset"] == 0 and doc["value"] == "not json"
