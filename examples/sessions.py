"""User sessions: clicks grouped into sessions that close after 30 seconds of silence.

    evtime run examples/sessions.py:app

Reads ``examples/clicks.jsonl`` (``{"user", "page", "ts"}``; ``EVTIME_INPUT`` names
another file) and prints one line per session when the watermark passes its end:
its clicks, first and last page (by event time, whatever the arrival order).
"""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path

from evtime import App, Count, First, Last, Multi, Session, WindowResult
from evtime.connectors.local import JsonLinesSource, StdoutSink

INPUT = Path(os.environ.get("EVTIME_INPUT", Path(__file__).with_name("clicks.jsonl")))

app = App("sessions", state_dir="./state")
clicks = app.source(
    "clicks", JsonLinesSource("clicks", INPUT), key="user", timestamp="ts",
    max_out_of_orderness="30s",
)


def hhmmss(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%H:%M:%S")


@app.window(
    clicks,
    Session("30s"),  # a session ends 30 s after its last click; touching sessions merge
    aggregate=Multi(clicks=Count(), first_page=First("page"), last_page=Last("page")),
    sink=StdoutSink(),
)
def sessions(result: WindowResult) -> dict[str, object]:
    return {"user": result.key, "from": hhmmss(result.start), "to": hhmmss(result.end),
            **result.value}


if __name__ == "__main__":
    app.run()
