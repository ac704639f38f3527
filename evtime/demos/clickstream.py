"""``evtime demo --clickstream``: a generated clickstream through the embedded engine, checked.

Windows and timers on the embedded JSON-lines source, with no broker:

* views per user per minute (tumbling window, 1 min allowed lateness),
* user sessions (10 min gap) with their first and last page,
* abandoned carts (a process function with an event-time timer: a cart not
  checked out within 15 min of event time raises an alert).

The stream is out of order (up to 20 s), has records later than the allowed
lateness, and a few malformed lines. At the end the demo prints what landed,
and checks every window's last result and the alerts against a brute-force
computation over the generated input.
"""

from __future__ import annotations

import argparse
import random
import shutil
import tempfile
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import orjson

from evtime.aggregate_custom import Multi
from evtime.aggregates import Count, First, Last
from evtime.app import App
from evtime.connectors.local import JsonLinesSink, JsonLinesSource, partition_for
from evtime.demos.embedded import run_to_end
from evtime.operators.process import ProcessContext, Timer
from evtime.records import Record, WindowResult
from evtime.time import MIN_TIMESTAMP
from evtime.windows import Session, Tumbling

MINUTE = 60_000
OOO = 30_000
LATENESS = MINUTE
CART_TIMEOUT = 15 * MINUTE
START = 1_767_225_600_000  # 2026-01-01T00:00:00Z


def generate(
    n: int, users: int, partitions: int, seed: int, out: Path
) -> tuple[list[Path], list[list[dict[str, Any]]], int]:
    """Write ``n`` events to one JSON-lines file per partition.

    Returns the files, the good events of each partition in file order, and
    the number of malformed lines.
    """
    rng = random.Random(seed)
    pages = [f"/p/{i}" for i in range(50)]
    events: list[tuple[int, dict[str, Any]]] = []  # (arrival, event)
    t = START
    cart_open: dict[str, int] = {}
    for _ in range(n):
        t += rng.randrange(0, 120)  # about 16 events per second of event time
        user = f"u{rng.randrange(users)}"
        if user in cart_open and rng.random() < 0.3 and t - cart_open[user] < 5 * MINUTE:
            action = "checkout"
            del cart_open[user]
        elif rng.random() < 0.02:
            action = "cart"
            cart_open.setdefault(user, t)
        else:
            action = "view"
        event = {"user": user, "page": rng.choice(pages), "action": action, "ts": t}
        arrival = t + rng.randrange(0, 20_000)
        if action == "view":
            roll = rng.random()
            if roll < 0.003:
                arrival = t + rng.randrange(5 * MINUTE, 10 * MINUTE)  # beyond allowed lateness
            elif roll < 0.01:
                arrival = t + rng.randrange(40_000, 80_000)  # late, within allowed lateness
        events.append((arrival, event))
    events.sort(key=lambda pair: pair[0])
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / f"clicks-{p}.jsonl" for p in range(partitions)]
    files = [p.open("wb") for p in paths]
    good: list[list[dict[str, Any]]] = [[] for _ in range(partitions)]
    malformed = 0
    for _, event in events:
        p = partition_for(event["user"], partitions)
        roll = rng.random()
        if roll < 0.0005:
            files[p].write(b'{"user": "' + str(event["user"]).encode() + b'", "ts": \n')
            malformed += 1
        elif roll < 0.001:
            broken = dict(event, ts="yesterday")
            files[p].write(orjson.dumps(broken) + b"\n")
            malformed += 1
        else:
            files[p].write(orjson.dumps(event) + b"\n")
            good[p].append(event)
    for f in files:
        f.close()
    return paths, good, malformed


def build_app(paths: list[Path], out: Path, state_dir: Path) -> App:
    """The demo pipeline, declared with the decorator API."""
    app = App(
        "clickstream",
        state_dir=state_dir,
        checkpoint_interval="1s",
        dead_letter=JsonLinesSink(out / "dead-letters.jsonl"),
    )
    clicks = app.source(
        "clicks",
        JsonLinesSource("clicks", paths),
        key="user",
        timestamp="ts",
        max_out_of_orderness=OOO,
    )

    @app.window(
        clicks,
        Tumbling("1m"),
        aggregate=Count(),
        allowed_lateness=LATENESS,
        sink=JsonLinesSink(out / "views-per-minute.jsonl"),
    )
    def views_per_minute(result: WindowResult) -> dict[str, Any]:
        return {"user": result.key, "minute": result.start, "clicks": result.value,
                "kind": result.kind.value}

    @app.window(
        clicks,
        Session("10m"),
        aggregate=Multi(clicks=Count(), first_page=First("page"), last_page=Last("page")),
        sink=JsonLinesSink(out / "sessions.jsonl"),
    )
    def sessions(result: WindowResult) -> dict[str, Any]:
        return {"user": result.key, "start": result.start, "end": result.end, **result.value}

    @app.process(clicks, sink=JsonLinesSink(out / "abandoned-carts.jsonl"))
    def abandoned_carts(record: Record, ctx: ProcessContext) -> None:
        cart = ctx.value_state("cart")
        action = record.value["action"]
        if action == "cart" and cart.get() is None:
            cart.set(record.timestamp)
            ctx.timers.register_event_time(record.timestamp + CART_TIMEOUT)
        elif action == "checkout":
            opened = cart.get()
            if opened is not None:
                ctx.timers.delete_event_time(opened + CART_TIMEOUT)
                cart.clear()

    @abandoned_carts.on_timer
    def cart_timeout(timer: Timer, ctx: ProcessContext) -> None:
        cart = ctx.value_state("cart")
        opened = cart.get()
        if opened is not None:
            ctx.emit({"user": timer.key, "cart_at": opened, "alert_at": timer.timestamp})
            cart.clear()

    return app


def expected_views(partitions: list[list[dict[str, Any]]]) -> tuple[dict[str, int], int]:
    """Brute force: the final count of every (user, minute) window, and the late records."""
    counts: dict[str, int] = defaultdict(int)
    late = 0
    for events in partitions:
        wm = MIN_TIMESTAMP
        max_ts = MIN_TIMESTAMP
        for e in events:
            ts = e["ts"]
            start = ts - ts % MINUTE
            if start + MINUTE - 1 + LATENESS <= wm:
                late += 1
            else:
                counts[f"{e['user']}@{start}-{start + MINUTE}"] += 1
            max_ts = max(max_ts, ts)
            wm = max(wm, max_ts - OOO - 1)
    return dict(counts), late


def expected_alerts(partitions: list[list[dict[str, Any]]]) -> int:
    """Brute force: carts whose checkout did not arrive before the watermark passed the timeout."""
    alerts = 0
    for events in partitions:
        open_cart: dict[str, int] = {}
        max_ts = MIN_TIMESTAMP
        for e in events:
            user, ts = e["user"], e["ts"]
            max_ts = max(max_ts, ts)
            wm = max_ts - OOO - 1
            # The record is handled first; then the watermark moves and due timers fire.
            if e["action"] == "cart" and user not in open_cart:
                open_cart[user] = ts
            elif e["action"] == "checkout" and user in open_cart:
                del open_cart[user]
            for u, opened in list(open_cart.items()):
                if opened + CART_TIMEOUT <= wm:
                    alerts += 1
                    del open_cart[u]
        alerts += len(open_cart)  # end of input fires every remaining timer
    return alerts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="evtime demo --clickstream", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--users", type=int, default=2_000)
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", type=Path, default=None, help="output directory (default: temp)")
    args = parser.parse_args(argv)

    work = args.out or Path(tempfile.mkdtemp(prefix="evtime-demo-"))
    if work.exists() and args.out is not None:
        shutil.rmtree(work / "state", ignore_errors=True)
        for old in work.glob("*.jsonl"):
            old.unlink()
    print("evtime demo --clickstream: windows and timers on the embedded engine (no broker).\n")
    print(f"generating {args.events:,} events for {args.users:,} users in "
          f"{args.partitions} partitions under {work} ...")
    paths, good, malformed = generate(args.events, args.users, args.partitions, args.seed, work)

    app = build_app(paths, work, work / "state")
    elapsed = run_to_end(app, show_watermark=True)
    print(f"processed {args.events:,} lines in {elapsed:.1f} s "
          f"({args.events / elapsed:,.0f} events/s)\n")
    return report(work, good, malformed)


def _lines(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [orjson.loads(line) for line in path.read_bytes().splitlines() if line]


def report(work: Path, good: list[list[dict[str, Any]]], malformed: int) -> int:
    views = _lines(work / "views-per-minute.jsonl")
    sessions = _lines(work / "sessions.jsonl")
    carts = _lines(work / "abandoned-carts.jsonl")
    dead = _lines(work / "dead-letters.jsonl")
    kinds = Counter(v["value"]["kind"] for v in views)
    reasons = Counter(d["reason"] for d in dead)
    print(f"views-per-minute : {len(views):,} results ({kinds['final']:,} final, "
          f"{kinds['update']:,} updates from late records)")
    print(f"sessions         : {len(sessions):,}")
    print(f"abandoned carts  : {len(carts):,} alerts")
    print(f"dead letters     : {len(dead):,} " + str(dict(reasons)))
    for name, rows in (("view", views), ("session", sessions), ("cart alert", carts)):
        if rows:
            print(f"  sample {name}: {orjson.dumps(rows[len(rows) // 2]['value']).decode()}")

    failures: list[str] = []
    final_by_id: dict[str, int] = {}
    for v in views:
        final_by_id[v["id"]] = v["value"]["clicks"]
    want, late = expected_views(good)
    wrong = [wid for wid in want if final_by_id.get(wid) != want[wid]]
    extra = set(final_by_id) - set(want)
    if wrong or extra:
        failures.append(f"{len(wrong)} windows differ from the brute-force counts, "
                        f"{len(extra)} unexpected")
    late_seen = reasons.get("late", 0)
    # Every late record is late for both windows (minute and session) or for one of them.
    if late_seen < late:
        failures.append(f"{late} records are late for the minute windows, {late_seen} dead letters")
    bad_seen = reasons.get("decode", 0) + reasons.get("timestamp", 0)
    if bad_seen != malformed:
        failures.append(f"{malformed} malformed lines generated, {bad_seen} dead letters for them")
    alerts = expected_alerts(good)
    if len(carts) != alerts:
        failures.append(f"{alerts} abandoned carts expected, {len(carts)} alerts emitted")
    print()
    if failures:
        for f in failures:
            print(f"CHECK FAILED: {f}")
        return 1
    print(f"checked: all {len(want):,} minute windows equal the brute-force counts; "
          f"{malformed} malformed lines and {late} late records went to dead letters; "
          f"{alerts:,} abandoned-cart alerts as expected.")
    return 0
