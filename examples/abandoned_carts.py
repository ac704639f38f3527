"""Abandoned carts: a keyed process function with state and an event-time timer.

    evtime run examples/abandoned_carts.py:app

Reads ``examples/carts.jsonl`` (``{"user", "action": "view"|"cart"|"checkout", "ts"}``;
``EVTIME_INPUT`` names another file). A cart not checked out within 15 minutes of
event time prints an alert. The function keeps, per user, when the open cart
began (``ctx.value_state``) and registers a timer 15 minutes later; a checkout
deletes the timer. The timer fires once the watermark passes it, so an alert
never depends on how fast or in which batches the input arrives. State and
timers are snapshotted with the input offsets: a restarted app neither loses
nor repeats an alert.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path

from evtime import App, ProcessContext, Record, Timer
from evtime.connectors.local import JsonLinesSource, StdoutSink

INPUT = Path(os.environ.get("EVTIME_INPUT", Path(__file__).with_name("carts.jsonl")))
TIMEOUT_MS = 15 * 60_000

app = App("abandoned-carts", state_dir="./state")
actions = app.source(
    "actions", JsonLinesSource("actions", INPUT), key="user", timestamp="ts",
    max_out_of_orderness="10s",
)


@app.process(actions, sink=StdoutSink())
def carts(record: Record, ctx: ProcessContext) -> None:
    cart = ctx.value_state("cart")  # per key (user); ctx.map_state(name) holds a dict
    action = record.value["action"]
    if action == "cart" and cart.get() is None:
        cart.set(record.timestamp)
        ctx.timers.register_event_time(record.timestamp + TIMEOUT_MS)
    elif action == "checkout" and (opened := cart.get()) is not None:
        ctx.timers.delete_event_time(opened + TIMEOUT_MS)
        cart.clear()


@carts.on_timer
def cart_timeout(timer: Timer, ctx: ProcessContext) -> None:
    cart = ctx.value_state("cart")
    opened = cart.get()
    if opened is not None:
        at = datetime.fromtimestamp(opened / 1000, UTC).strftime("%H:%M")
        ctx.emit({"user": timer.key, "abandoned_cart_of": at})
        cart.clear()


if __name__ == "__main__":
    app.run()
