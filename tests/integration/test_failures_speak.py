"""A worker whose input all fails (a misspelt key= field) stops within seconds with one
line naming the field, and exits 2 (the dead-letter guard, evtime/runtime/guard.py)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.kafka_helpers import (
    ROOT,
    create_topics,
    keyed_stream,
    produce,
    worker_env,
)

pytestmark = [pytest.mark.kafka]

PARTITIONS = 2


BAD_JOB = '''
import os
from evtime import App, Count, Tumbling, WindowResult
from evtime.connectors.kafka import KafkaDeadLetterSink, KafkaSink, KafkaSource
app = App(os.environ["EVTIME_TEST_APP"], state_dir=os.environ["EVTIME_STATE_DIR"],
          dead_letter=KafkaDeadLetterSink(os.environ["EVTIME_TEST_DLQ"]))
events = app.source(os.environ["EVTIME_TEST_IN"], KafkaSource(os.environ["EVTIME_TEST_IN"]),
                    key="usr", timestamp="ts")
@app.window(events, Tumbling("10s"), aggregate=Count(),
            sink=KafkaSink(os.environ["EVTIME_TEST_OUT"]))
def counts(result: WindowResult) -> dict[str, object]:
    return {"user": result.key, "count": result.value}
'''


def test_a_worker_whose_input_all_fails_stops_with_one_line(
    kafka_bootstrap: str, unique_name: str, tmp_path: Path
) -> None:
    env = worker_env(unique_name, tmp_path)
    topic = env["EVTIME_TEST_IN"]
    records, _ = keyed_stream(1_500, seed=5, partitions=PARTITIONS)
    asyncio.run(create_topics(kafka_bootstrap, {topic: PARTITIONS, env["EVTIME_TEST_OUT"]: 1,
                                                env["EVTIME_TEST_DLQ"]: 1}))
    asyncio.run(produce(kafka_bootstrap, topic, PARTITIONS, records))
    job = tmp_path / "bad_job.py"
    job.write_text(BAD_JOB)
    done = subprocess.run(
        [sys.executable, "-m", "evtime.cli", "worker", f"{job}:app"],
        env={**os.environ, **env, "PYTHONPATH": str(ROOT)},
        capture_output=True, text=True, timeout=120, cwd=str(ROOT),
    )
    assert done.returncode == 2, done.stderr[-3000:]
    said = [line for line in done.stderr.splitlines() if line.startswith("evtime:")]
    assert said == [
        f"evtime: key field 'usr' is missing from the value in 1,000 of 1,000 records of "
        f"{topic!r} (fields seen: ts, user); fix the source's declaration (key=, timestamp=, "
        "value_format=) or the input; EVTIME_DEAD_LETTER_GUARD_FIRST=0 turns this check off"
    ]
    assert "Traceback" not in done.stderr
