"""``evtime state inspect``: what a state directory holds, read without changing it.

Per partition task (``<state_dir>/<app>/<topic group>/<partition>``, and the same under
each ``worker-<i>`` folder of ``evtime worker -p``): the input offsets, watermarks,
changelog end and epoch of its last snapshot, its timers (how many, the next one) and
each store's entries and bytes; with a key, that key's state in each store, decoded.
Every database is opened read-only (evtime/state/store.py, ReadOnlyDB): it takes no lock,
so a running worker's state can be inspected; what it shows is the state as of the
opening (the last snapshot, and what RocksDB's log holds after it).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from evtime.errors import ConfigError
from evtime.operators.process import _decode_state_key
from evtime.runtime.progress import iso_time
from evtime.runtime.snapshot import CHANGELOG_END, COUNTERS, EPOCH, OFFSETS, WATERMARKS
from evtime.state.codec import decode_int, encode_key, loads
from evtime.state.store import META_CF, ReadOnlyDB, raw_items
from evtime.time import MAX_TIMESTAMP, MIN_TIMESTAMP

TIMER_SUFFIXES = (".timers", ".etimers", ".ptimers")


def task_dirs(
    state_dir: Path, app: str | None = None, partition: int | None = None
) -> list[tuple[str, str, int, Path]]:
    """(app, topic group, partition, folder) of every task database under ``state_dir``."""
    if not state_dir.is_dir():
        raise ConfigError(f"no state directory {state_dir}")
    found = []
    for root in [state_dir, *sorted(state_dir.glob("worker-*"))]:
        for app_dir in sorted(p for p in root.iterdir() if p.is_dir()):
            if app is not None and app_dir.name != app:
                continue
            for group_dir in sorted(p for p in app_dir.iterdir() if p.is_dir()):
                for task in sorted(p for p in group_dir.iterdir() if p.name.isdigit()):
                    if (task / "CURRENT").exists() and (
                        partition is None or int(task.name) == partition
                    ):
                        found.append((app_dir.name, group_dir.name, int(task.name), task))
    return sorted(found, key=lambda t: (t[0], t[1], t[2], str(t[3])))


def inspect_task(
    app: str, group: str, partition: int, path: Path, key: str | None = None
) -> dict[str, Any]:
    """One task's report (JSON-ready)."""
    db = ReadOnlyDB(path)
    try:
        watermarks = db.get_meta(WATERMARKS) or {}
        counters = db.get_meta(COUNTERS) or {}
        report: dict[str, Any] = {
            "app": app,
            "group": group,
            "partition": partition,
            "path": str(path),
            "snapshot": db.get_meta(OFFSETS) is not None,
            "offsets": db.get_meta(OFFSETS) or {},
            "watermark": _time(watermarks.get("watermark")),
            "partition_watermarks": [
                {"partition": entry[0], "max_timestamp": _time(entry[1])}
                for entry in watermarks.get("partitions", [])
            ],
            "changelog_end": db.get_meta(CHANGELOG_END),
            "epoch": db.get_meta(EPOCH),
            "records_in": counters.get("records_in", 0),
            "timers": {},
            "stores": {},
        }
        for name, column in sorted(db.columns.items()):
            if name == META_CF:
                continue
            entries = size = 0
            first: bytes | None = None
            for raw_key, raw in raw_items(column):
                if first is None:
                    first = raw_key
                entries += 1
                size += len(raw_key) + len(raw)
            if name.endswith(TIMER_SUFFIXES):
                report["timers"][name] = {
                    "count": entries,
                    "next": None if first is None else _time(decode_int(first)),
                    "domain": "processing time" if name.endswith(".ptimers") else "event time",
                }
            else:
                report["stores"][name] = {"entries": entries, "bytes": size}
        if key is not None:
            report["key"] = {"key": key, "state": _key_state(db, key)}
        return report
    finally:
        db.close()


def inspect(
    state_dir: Path, app: str | None = None, partition: int | None = None,
    key: str | None = None,
) -> list[dict[str, Any]]:
    """The report of every task under ``state_dir`` (of ``app``, of ``partition``)."""
    tasks = task_dirs(state_dir, app, partition)
    if not tasks:
        which = f" of app {app!r}" if app else ""
        which += f" for partition {partition}" if partition is not None else ""
        raise ConfigError(f"no task state{which} under {state_dir}")
    return [inspect_task(*task, key=key) for task in tasks]


def _time(ms: Any) -> dict[str, Any] | None:
    if not isinstance(ms, int):
        return None
    if ms <= MIN_TIMESTAMP:
        return {"ms": ms, "iso": None, "note": "none yet"}
    if ms >= MAX_TIMESTAMP:
        return {"ms": ms, "iso": None, "note": "end of input"}
    return {"ms": ms, "iso": iso_time(ms)}


def _key_state(db: ReadOnlyDB, key: str) -> dict[str, list[Any]]:
    """``key``'s entries in each store (a key given as digits may be an int key too)."""
    candidates: list[str | int] = [key]
    if key.lstrip("-").isdigit():
        candidates.append(int(key))
    encoded = {encode_key(k) for k in candidates}
    found: dict[str, list[Any]] = {}
    for name, column in sorted(db.columns.items()):
        if name == META_CF or name.endswith(TIMER_SUFFIXES):
            continue
        entries: list[Any] = []
        if name.endswith(".windows"):  # (window start, key), start first
            for raw_key, raw in raw_items(column):
                if raw_key[8:] in encoded:
                    acc, emissions, since_early = loads(raw)
                    entries.append({
                        "window_start": _time(decode_int(raw_key)), "accumulator": acc,
                        "emissions": emissions, "since_early": since_early,
                    })
        elif name.endswith(".state"):  # (state name, key, sub-key)
            for raw_key, raw in raw_items(column):
                state, k, sub = _decode_state_key(raw_key)
                if k in candidates:
                    entries.append({"state": state, "sub_key": sub, "value": loads(raw)})
        else:  # sessions, join rows: by the key itself
            for encoded_key in encoded:
                value = column.get(encoded_key)
                if isinstance(value, bytes):
                    entries.append(loads(value))
        if entries:
            found[name] = entries
    return found


def render(reports: list[dict[str, Any]]) -> str:
    """The reports as text for people."""
    lines: list[str] = []
    for r in reports:
        lines.append(f"task {r['app']}/{r['group']}[{r['partition']}]  ({r['path']})")
        if not r["snapshot"]:
            lines.append("  no snapshot yet")
        offsets = ", ".join(f"{t} {o:,}" for t, o in sorted(r["offsets"].items()))
        lines.append(f"  input offsets:  {offsets or '-'}")
        lines.append(f"  watermark:      {_show(r['watermark'])}")
        for p in r["partition_watermarks"]:
            part = p["partition"]
            name = f"{part[0]}[{part[1]}]" if isinstance(part, list) and len(part) == 2 else part
            lines.append(f"    {name}: max event time {_show(p['max_timestamp'])}")
        end = r["changelog_end"]
        lines.append(f"  changelog end:  {'-' if end is None else f'{end:,}'}")
        lines.append(f"  epoch:          {r['epoch'] or '- (not stored: no changelog)'}")
        lines.append(f"  records in:     {r['records_in']:,}")
        for name, t in r["timers"].items():
            lines.append(
                f"  timers {name}: {t['count']:,} ({t['domain']}), next {_show(t['next'])}"
            )
        for name, s in r["stores"].items():
            lines.append(f"  store {name}: {s['entries']:,} entries, {s['bytes']:,} bytes")
        if "key" in r:
            state = r["key"]["state"]
            lines.append(f"  key {r['key']['key']!r}: {'no state' if not state else ''}")
            for name, entries in state.items():
                for entry in entries:
                    lines.append(f"    {name}: {entry}")
    return "\n".join(lines)


def _show(t: dict[str, Any] | None) -> str:
    if t is None:
        return "-"
    if t["iso"] is None:
        return f"- ({t['note']})"
    return f"{t['iso']} ({t['ms']})"
