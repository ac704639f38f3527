"""The bulk decode path (JSON bytes, C-level loops) and the record-by-record path agree."""

from __future__ import annotations

import asyncio
import os
import tempfile
from typing import Any
from unittest import mock

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from evtime import App, Collect, Tumbling, WindowResult
from evtime.connectors.local import MemorySink, MemorySource

events = st.lists(
    st.fixed_dictionaries(
        {
            "user": st.sampled_from(["a", "b", "c"]),
            "ts": st.integers(0, 5_000),
            "n": st.integers(0, 9),
        }
    ),
    max_size=120,
)


def run(values: list[Any], as_bytes: bool, bad_at: int | None) -> tuple[list[Any], list[Any]]:
    src = MemorySource("t", partitions=2)
    for i, v in enumerate(values):
        payload: Any = orjson.dumps(v) if as_bytes else v
        if bad_at is not None and i == bad_at:
            payload = b"{broken" if as_bytes else {"user": v["user"], "ts": "broken"}
        src.add(payload, key=v["user"])
    with tempfile.TemporaryDirectory() as d:
        sink, dead = MemorySink(), MemorySink()
        app = App("p", state_dir=d, dead_letter=dead, batch_size=7)
        s = app.source("t", src, key="user", timestamp="ts", max_out_of_orderness=300)

        @app.window(s, Tumbling(1_000), aggregate=Collect("n"), allowed_lateness=500, sink=sink)
        def w(r: WindowResult) -> Any:
            return r.to_dict()

        # A one-record stream may be all bad: the dead-letter guard would stop it.
        with mock.patch.dict(os.environ, {"EVTIME_DEAD_LETTER_GUARD_FIRST": "0"}):
            asyncio.run(app.run_async())
        return [(o.id, o.value) for o in sink.outputs], [(d.partition, d.offset) for d in dead.dead]


@settings(max_examples=60, deadline=None)
@given(events, st.none() | st.integers(0, 119))
def test_bulk_and_record_paths_give_identical_results(values: list[Any], bad: int | None) -> None:
    bad_at = bad if bad is not None and bad < len(values) else None
    assert run(values, True, bad_at) == run(values, False, bad_at)
