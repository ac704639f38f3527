"""W3: distinct live keys in one 1 h tumbling window, embedded engine: peak RSS and speed.

Every event has a key of its own and all of them fall in the same 1 h window, so
at the end of the input every key is live at once (a Count each): the state the
task holds grows with the number of keys, and a managed memory budget must keep
it on disk instead of in the process. The events are generated as they are read
(nothing is kept in memory but the current batch) and results go to a sink that
only counts them, so peak RSS is the engine's.

Each size runs in a fresh process (peak RSS from /proc/self/status VmHWM); two
peaks are printed: at the end of the input (every key live, before the window
fires) and over the whole run (firing included). Usage:

    python bench/memory.py [--keys 200000,2000000,10000000] [--budget 256MB]
                           [--partitions 4]

``--budget`` sets EVTIME_MEMORY_BUDGET for the runs (unset: the setting's default).
``--child N`` runs one size in this process and prints its figures as JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from typing import Any

WINDOW = 3_600_000
T0 = 1_700_000_000_000 - 1_700_000_000_000 % WINDOW
_MIX = 2_654_435_761  # odd, so i -> i * _MIX mod 2**32 is a permutation: distinct keys


def vm_hwm_mb() -> float:
    """This process's peak resident set size, in MB (Linux)."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return 0.0


class KeySpace:
    """A bounded local source of ``n`` events, each of its own key, over one 1 h window;
    events are made as they are read (event i is in partition i % partitions)."""

    def __init__(self, n: int, partitions: int) -> None:
        self.topic = "events"
        self.n = n
        self._partitions = partitions
        self.ingest_peak_mb = 0.0
        self.ingest_seconds = 0.0
        self.ingest_stats: dict[str, float] = {}
        self._started = time.perf_counter()
        self._ended: set[int] = set()

    @property
    def partitions(self) -> list[int]:
        return list(range(self._partitions))

    @property
    def bounded(self) -> bool:
        return True

    def read(self, partition: int, offset: int, max_records: int) -> list[Any]:
        from evtime.records import RawRecord

        n, parts = self.n, self._partitions
        first = offset * parts + partition
        last = min(n, (offset + max_records) * parts + partition)
        out = []
        for position, i in enumerate(range(first, last, parts), offset):
            key = f"k{(i * _MIX) % 2**32:010d}"
            value = {"user": key, "ts": T0 + i * (WINDOW - 1) // n}
            out.append(RawRecord(position, key.encode(), value))
        if not out and partition not in self._ended:
            self._ended.add(partition)
            if len(self._ended) == 1:  # every key is live: the window has not fired yet
                self.ingest_peak_mb = vm_hwm_mb()
                self.ingest_seconds = time.perf_counter() - self._started
                self.ingest_stats = memory_figures()
        return out


def memory_figures() -> dict[str, float]:
    """The memory budget's figures now, in MB (entries: a count)."""
    from dataclasses import asdict

    from evtime.state.memory import memory_stats

    return {k: v if k.endswith("entries") else round(v / 2**20, 1)
            for k, v in asdict(memory_stats()).items()}


class CountingSink:
    """Counts the results and drops them."""

    def __init__(self) -> None:
        self.count = 0

    async def write(self, outputs: Sequence[Any]) -> None:
        self.count += len(outputs)

    async def flush(self) -> None:
        pass

    async def close(self) -> None:
        pass


def child(n: int, partitions: int) -> dict[str, Any]:
    """Run W3 with ``n`` keys here; the figures."""
    from evtime import App, Count, Tumbling
    from evtime.runtime.gc import tune_gc
    from evtime.state import memory

    state_dir = tempfile.mkdtemp(prefix="evtime-w3-")
    try:
        tune_gc()
        source = KeySpace(n, partitions)
        sink = CountingSink()
        app = App("w3", state_dir=state_dir)
        events = app.source("events", source, key="user", timestamp="ts")
        app.window(events, Tumbling(WINDOW), aggregate=Count(), sink=sink, name="w")(
            lambda result: result.value
        )
        started = time.perf_counter()
        asyncio.run(app.runner().run())
        seconds = time.perf_counter() - started
        if sink.count != n:
            raise SystemExit(f"expected {n} results, got {sink.count}")
        return {
            "keys": n,
            "budget_mb": memory.budget().total / 2**20,
            "seconds": round(seconds, 2),
            "events_per_s": round(n / seconds),
            "ingest_events_per_s": round(n / source.ingest_seconds),
            "ingest_peak_mb": round(source.ingest_peak_mb, 1),
            "peak_mb": round(vm_hwm_mb(), 1),
            "at_end_of_input": source.ingest_stats,
        }
    finally:
        shutil.rmtree(state_dir, ignore_errors=True)


def run(n: int, partitions: int, budget: str | None) -> dict[str, Any]:
    """W3 with ``n`` keys in a fresh process; its figures."""
    env = dict(os.environ)
    if budget:
        env["EVTIME_MEMORY_BUDGET"] = budget
    cmd = [sys.executable, __file__, "--child", str(n), "--partitions", str(partitions)]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"W3 with {n} keys failed:\n{done.stderr[-3000:]}")
    figures: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--keys", default="200000,2000000,10000000")
    parser.add_argument("--budget", default=None, help="e.g. 256MB (default: the setting)")
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        print(json.dumps(child(args.child, args.partitions)))
        return
    header = (
        f"{'keys':>11}  {'budget MB':>9}  {'events/s':>9}  {'ingest ev/s':>11}  "
        f"{'RSS at end of input MB':>22}  {'peak RSS MB':>11}  {'seconds':>8}"
    )
    print(header, flush=True)
    for n in (int(k) for k in args.keys.split(",")):
        f = run(n, args.partitions, args.budget)
        print(
            f"{f['keys']:>11,}  {f['budget_mb']:>9.0f}  {f['events_per_s']:>9,}  "
            f"{f['ingest_events_per_s']:>11,}  {f['ingest_peak_mb']:>22.1f}  "
            f"{f['peak_mb']:>11.1f}  {f['seconds']:>8.1f}",
            flush=True,
        )


if __name__ == "__main__":
    main()
