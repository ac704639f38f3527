from datetime import UTC, datetime

from evtime import App, Sum, Tumbling, WindowResult
from evtime.connectors.local import JsonLinesSource, StdoutSink

app = App("orders", state_dir="./state")
orders = app.source(
    "orders",
    JsonLinesSource("orders", "orders.jsonl"),  # a list of files: one per partition
    key="user",                  # a value field, a function, or None for the record key
    timestamp="ts",              # ISO-8601 or epoch-ms field, a function, or None
    max_out_of_orderness="10s",  # how much disorder the watermark waits for
)


@app.window(orders, Tumbling("1m"), aggregate=Sum("amount"),
            allowed_lateness="5m", sink=StdoutSink())
def totals(result: WindowResult) -> dict[str, object]:
    minute = datetime.fromtimestamp(result.start / 1000, UTC)
    return {"user": result.key, "minute": minute.strftime("%H:%M"),
            "total": result.value, "kind": result.kind.value}


if __name__ == "__main__":  # `python first_app.py`; `evtime run first_app.py:app` runs it too
    app.run()
