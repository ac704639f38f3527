"""The seed demo's generated stream, the documents it must give, and the check of them.

Pure: no I/O but printing the report. ``evtime demo`` runs the stream through the seed
pipeline (on Kafka and OpenSearch, or on the embedded engine) and checks what landed
with ``report``.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import orjson

from evtime.connectors.local import partition_for

SECOND = 1_000
MINUTE = 60 * SECOND
HOUR = 60 * MINUTE
START = 1_767_225_600_000  # 2026-01-01T00:00:00Z
OOO = 5 * SECOND  # the pipeline's max_out_of_orderness
JITTER = 2 * SECOND  # arrival disorder of the generated stream, below OOO: nothing is late
PREFIX = "evtime-demo"
METHODS = ("card", "card", "card", "paypal", "transfer")


@dataclass
class Stream:
    """A generated stream in arrival order, and what is known of it."""

    records: list[tuple[int, int, bytes | None, bytes]] = field(default_factory=list)
    """(arrival time, partition, key, value bytes)."""
    events: list[dict[str, Any]] = field(default_factory=list)
    """The well-formed A and B events."""
    malformed: Counter[str] = field(default_factory=Counter)
    """Malformed records by the dead-letter reason they must get."""
    shapes: Counter[str] = field(default_factory=Counter)
    """Keys by how far apart their two events are."""
    heartbeats: int = 0

    @property
    def span_ms(self) -> int:
        return self.records[-1][0] - self.records[0][0] if self.records else 0


def generate(
    keys: int,
    partitions: int,
    seed: int,
    *,
    span: int = 8 * HOUR,
    within: int = 6 * HOUR,
    unmatched_after: int = 15 * MINUTE,
) -> Stream:
    """Orders (A) and their payments (B) for ``keys`` order ids over ``span`` of event time.

    75 % of payments come 20 s to 14 min after the order (some before it), 12 %
    between 16 min and ``within`` later, 5 % more than ``within`` later (too
    late to join) and 8 % never. One record in a thousand is malformed.
    """
    rng = random.Random(seed)
    stream = Stream()
    timed: list[tuple[int, bytes | None, bytes, int | None]] = []  # arrival, key, value, part.
    for i in range(keys):
        key = f"order-{i:06d}"
        first_ts = START + i * span // keys + rng.randrange(0, max(1, span // keys))
        roll = rng.random()
        second_ts: int | None
        if roll < 0.75:
            stream.shapes["minutes apart"] += 1
            second_ts = first_ts + rng.randrange(20 * SECOND, 14 * MINUTE)
        elif roll < 0.87:
            stream.shapes["hours apart"] += 1
            second_ts = first_ts + rng.randrange(unmatched_after + MINUTE, within - 10 * MINUTE)
        elif roll < 0.92:
            stream.shapes["too far apart"] += 1
            second_ts = first_ts + within + rng.randrange(2 * MINUTE, 90 * MINUTE)
        else:
            stream.shapes["partner never comes"] += 1
            second_ts = None
        amount = round(rng.uniform(5, 500), 2)
        order = {"customer": f"c{rng.randrange(5_000):04d}", "amount": amount,
                 "items": rng.randint(1, 6)}
        payment = {"method": rng.choice(METHODS), "amount": amount}
        first, second = ("A", "B") if rng.random() < 0.8 else ("B", "A")
        times = [(first, first_ts)] + ([(second, second_ts)] if second_ts is not None else [])
        for kind, ts in times:
            event = {"type": kind, "id": key, "ts": ts, **(order if kind == "A" else payment)}
            stream.events.append(event)
            timed.append((ts + rng.randrange(0, JITTER), key.encode(), orjson.dumps(event), None))
    last_ts = max(e["ts"] for e in stream.events)
    for n in range(max(3, len(stream.events) // 1000)):
        kind = ("decode", "timestamp", "key")[n % 3]
        ts = START + rng.randrange(0, span)
        key = f"order-{rng.randrange(keys):06d}"
        value: bytes
        if kind == "decode":
            value = orjson.dumps({"type": "A", "id": key, "ts": ts, "amount": 1.0})[:-9]
        elif kind == "timestamp":
            value = orjson.dumps({"type": "B", "id": key, "ts": "yesterday", "method": "card"})
        else:
            value = orjson.dumps({"type": "A", "ts": ts, "amount": 3.5})
        stream.malformed[kind] += 1
        timed.append((ts, key.encode(), value, None))
    # Heartbeats: past every lone event's report deadline, one per partition.
    beat = last_ts + unmatched_after + OOO + MINUTE
    for p in range(partitions):
        hb_key = next(k for k in (f"heartbeat-{j}" for j in range(10_000))
                      if partition_for(k, partitions) == p)
        value = orjson.dumps({"type": "heartbeat", "id": hb_key, "ts": beat})
        timed.append((beat, hb_key.encode(), value, p))
        stream.heartbeats += 1
    timed.sort(key=lambda row: row[0])
    for arrival, key_bytes, value, part in timed:
        p = part if part is not None else partition_for(key_bytes, partitions)
        stream.records.append((arrival, p, key_bytes, value))
    return stream


def expected_documents(events: Iterable[dict[str, Any]], within: int) -> dict[str, dict[str, Any]]:
    """The index the pipeline must end with, computed per key from the whole stream.

    Nothing is late (the arrival disorder is below the watermark delay) and the
    heartbeats make every deadline pass, so: an A and a B of a key at most
    ``within`` apart are one joined document (joined at the later event time);
    otherwise the key's document is the unmatched report of its last event (a
    lone event, or the second of a pair too far apart, reported after the first).
    """
    by_key: dict[str, dict[str, dict[str, Any]]] = {}
    for e in events:
        by_key.setdefault(e["id"], {})[e["type"]] = e
    docs: dict[str, dict[str, Any]] = {}
    for key, sides in by_key.items():
        a, b = sides.get("A"), sides.get("B")
        if a is not None and b is not None and abs(a["ts"] - b["ts"]) <= within:
            docs[key] = {"id": key, "a": a, "b": b, "status": "joined",
                         "joined_at_ms": max(a["ts"], b["ts"])}
        else:
            last = max((e for e in (a, b) if e is not None), key=lambda e: e["ts"])
            docs[key] = {"id": key, "a": last if last is a else None,
                         "b": last if last is b else None, "status": "unmatched",
                         "joined_at_ms": None}
    return docs


# -- the check, shared by both ways of running -------------------------------------------
def report(
    stream: Stream,
    docs: dict[str, dict[str, Any]],
    dead: Counter[str],
    elapsed: float,
    within: int,
    where: str,
    paced: str | None = None,
) -> int:
    """Print what landed and check it against the expected documents; the exit code."""
    want = expected_documents(stream.events, within)
    got_status = Counter(d.get("status") for d in docs.values())
    want_status = Counter(d["status"] for d in want.values())
    n = len(stream.records)
    pacing = f" (paced at {paced} of event time per second)" if paced else ""
    print(f"\n{n:,} records ({len(stream.events):,} A/B events, "
          f"{sum(stream.malformed.values())} malformed, {stream.heartbeats} heartbeats) "
          f"in {elapsed:.1f} s: {n / elapsed:,.0f} events/s end to end{pacing}")
    print(f"{where}: {len(docs):,} documents: {got_status['joined']:,} joined, "
          f"{got_status['unmatched']:,} unmatched "
          f"(expected {want_status['joined']:,} and {want_status['unmatched']:,})")
    print(f"dead letters: {sum(dead.values())} {dict(sorted(dead.items()))} "
          f"(expected {dict(sorted(stream.malformed.items()))})")
    shapes = ", ".join(f"{v:,} {k}" for k, v in stream.shapes.items())
    print(f"generated keys: {shapes}")
    samples = _samples(docs)
    for label, doc in samples:
        print(f"  sample ({label}): {orjson.dumps(doc).decode()}")

    failures: list[str] = []
    missing = set(want) - set(docs)
    extra = set(docs) - set(want)
    wrong = [k for k in want if k in docs and docs[k] != want[k]]
    if missing:
        failures.append(f"{len(missing):,} expected documents are missing, "
                        f"e.g. {sorted(missing)[:3]}")
    if extra:
        failures.append(f"{len(extra):,} documents were not expected, e.g. {sorted(extra)[:3]}")
    if wrong:
        failures.append(f"{len(wrong):,} documents differ from the expected ones, e.g. "
                        f"{wrong[0]}: {docs[wrong[0]]} != {want[wrong[0]]}")
    if dead != stream.malformed:
        failures.append(f"dead letters {dict(dead)} != malformed records "
                        f"{dict(stream.malformed)}")
    print()
    if failures:
        for f in failures:
            print(f"CHECK FAILED: {f}")
        return 1
    print(f"checked: all {len(want):,} documents equal the ones expected from the generated "
          f"stream; every malformed record is a dead letter with its reason.")
    return 0


def _samples(docs: dict[str, dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    picks: dict[str, dict[str, Any]] = {}
    for doc in docs.values():
        if doc.get("status") == "joined":
            gap = abs(doc["a"]["ts"] - doc["b"]["ts"])
            label = "joined, minutes apart" if gap < 15 * MINUTE else "joined, hours apart"
        else:
            label = "unmatched"
        picks.setdefault(label, doc)
        if len(picks) == 3:
            break
    return sorted(picks.items())
