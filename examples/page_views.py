"""Page views per user per minute, from a JSON-lines file, printed as they close.

    evtime run examples/page_views.py:app
    EVTIME_INPUT=clicks.jsonl evtime run examples/page_views.py:app

Each input line is ``{"user": ..., "page": ..., "ts": <epoch ms>}``. Records
up to 30 s out of order are waited for; records up to 1 min later than that
update their window; later ones land in ``state/page-views/dead-letters.jsonl``.
"""

from __future__ import annotations

import os
from pathlib import Path

from evtime import App, Count, Tumbling, WindowResult
from evtime.connectors.local import JsonLinesSource, StdoutSink

INPUT = Path(os.environ.get("EVTIME_INPUT", Path(__file__).with_name("clicks.jsonl")))

app = App("page-views", state_dir=os.environ.get("EVTIME_STATE_DIR", "./state"))
clicks = app.source(
    "clicks",
    JsonLinesSource("clicks", INPUT),
    key="user",
    timestamp="ts",
    max_out_of_orderness="30s",
)


@app.window(clicks, Tumbling("1m"), aggregate=Count(), allowed_lateness="1m", sink=StdoutSink())
def views(result: WindowResult) -> dict[str, object]:
    return {"user": result.key, "minute": result.start, "views": result.value,
            "kind": result.kind.value}
