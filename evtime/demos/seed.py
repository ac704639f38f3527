"""``evtime demo`` (README command 1): the seed pipeline on a generated stream, checked.

The pipeline our first users asked for: one Kafka topic of A and B events
(here: orders and their payments), joined by their common key, every join
result upserted into an Elasticsearch/OpenSearch index by that key. Pairs are
joined when the second event arrives; a lone event is reported ``unmatched``
15 minutes (of event time) after it, and replaced by the joined document if
its partner still comes within 6 hours.

The demo

1. starts Kafka and OpenSearch (``evtime services up``; with ``--bootstrap``
   and ``--es-url`` it uses yours instead);
2. generates a realistic stream: most partners minutes apart, some hours
   apart, some more than 6 hours apart, some never; arrival slightly out of
   order; a few malformed records (broken JSON, no timestamp, no key);
3. starts the seed pipeline, ``examples/seed_join.py`` (installed as
   ``evtime.demos.seed_join``), as a worker process and produces the
   stream with event time compressed (``--speed``, event time per second),
   printing progress: what was produced and what landed in the index;
4. ends by printing what the index holds (joined and unmatched documents,
   dead letters, events/s, sample documents) and checks every document
   against the documents expected from the generated stream.

Where Java or Maven is missing (or ``--embedded``), the same join runs on the
embedded engine, with the stream in JSON-lines files and a JSON-lines sink
standing for the index; the output says so.

A live stream keeps moving event time; the generated one ends, so a
heartbeat record per partition (neither A nor B, ignored by the join) moves
each partition's watermark past the last deadline at the end.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

import orjson

from evtime.demos.embedded import run_to_end
from evtime.demos.seed_services import run_on_services
from evtime.demos.seed_stream import HOUR, OOO, PREFIX, Stream, generate, report
from evtime.errors import EvtimeError
from evtime.time import to_millis


# -- on the embedded engine --------------------------------------------------------------
def run_embedded(args: argparse.Namespace, stream: Stream, work: Path) -> int:
    """The same join on the embedded engine: JSON-lines files in, a JSON-lines sink out."""
    from evtime.app import App
    from evtime.connectors.local import JsonLinesSink, JsonLinesSource
    from evtime.demos import seed_join

    paths = [work / f"events-{p}.jsonl" for p in range(args.partitions)]
    files = [path.open("wb") for path in paths]
    for _, partition, _, value in stream.records:
        files[partition].write(value + b"\n")
    for f in files:
        f.close()
    out = work / "joined.jsonl"
    dead_path = work / "dead-letters.jsonl"
    app = App(PREFIX, state_dir=work / "state", checkpoint_interval="1s",
              dead_letter=JsonLinesSink(dead_path))
    events = app.source("events", JsonLinesSource("events", paths), key="id", timestamp="ts",
                        max_out_of_orderness=OOO)
    options = argparse.Namespace(within=args.within, unmatched_after=args.unmatched_after)
    seed_join.declare_join(app, events, options, JsonLinesSink(out))
    elapsed = run_to_end(app)
    docs: dict[str, dict[str, Any]] = {}
    for line in out.read_bytes().splitlines() if out.exists() else []:
        value = orjson.loads(line)["value"]
        docs[value["id"]] = value  # the index upserts by join key; so does this
    dead: Counter[str] = Counter()
    for line in dead_path.read_bytes().splitlines() if dead_path.exists() else []:
        dead[orjson.loads(line)["reason"]] += 1
    return report(stream, docs, dead, elapsed, args.within_ms, f"JSON-lines sink {out}")


# -- entry point -------------------------------------------------------------------------
def _services_up(args: argparse.Namespace) -> str | None:
    """Start Kafka and OpenSearch unless the user gave their own; None, or why not."""
    if args.bootstrap and args.es_url:
        return None
    from evtime import services

    config = services.ServicesConfig.from_env()
    args.bootstrap = args.bootstrap or config.kafka_bootstrap
    args.es_url = args.es_url or config.opensearch_url
    print("starting Kafka and OpenSearch (evtime services up) ...", flush=True)
    try:
        services.up()
    except EvtimeError as exc:
        return str(exc)
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="evtime demo", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--keys", type=int, default=20_000, help="order ids (two events each)")
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--span", default="8h", help="event time the orders are spread over")
    parser.add_argument("--speed", default="30m",
                        help="event time produced per second of wall time (0: all at once)")
    parser.add_argument("--within", default="6h")
    parser.add_argument("--unmatched-after", default="15m")
    parser.add_argument("--bootstrap", default=None, help="your Kafka (default: start one)")
    parser.add_argument("--es-url", default=None, help="your Elasticsearch/OpenSearch "
                        "(default: start OpenSearch)")
    parser.add_argument("--embedded", action="store_true",
                        help="run on the embedded engine with JSON-lines files, no services")
    parser.add_argument("--settle-timeout", type=float, default=120.0,
                        help="seconds to wait for the index after the last record")
    parser.add_argument("--out", type=Path, default=None, help="work directory (default: temp)")
    parser.add_argument("--clickstream", action="store_true",
                        help="run the windows-and-timers demo on the embedded engine instead")
    args, rest = parser.parse_known_args(argv)
    if args.clickstream:
        from evtime.demos.clickstream import main as clickstream

        return clickstream(rest)
    if rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    try:
        args.within_ms = to_millis(args.within, name="--within", allow_zero=False)
        unmatched = to_millis(args.unmatched_after, name="--unmatched-after", allow_zero=False)
        span = to_millis(args.span, name="--span", allow_zero=False)
        args.speed_ms = 0 if args.speed in ("0", "max") else to_millis(args.speed, name="--speed")
    except EvtimeError as exc:
        parser.error(str(exc))
    work = args.out or Path(tempfile.mkdtemp(prefix="evtime-demo-"))
    work.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(work / "state", ignore_errors=True)

    why_not = None if not args.embedded else "--embedded was given"
    if why_not is None:
        why_not = _services_up(args)
    stream = generate(args.keys, args.partitions, args.seed, span=span, within=args.within_ms,
                      unmatched_after=unmatched)
    print(f"\ngenerated {len(stream.records):,} records for {args.keys:,} order ids over "
          f"{stream.span_ms / HOUR:.1f} h of event time (seed {args.seed}); work dir {work}")
    if why_not is None:
        pace = f"{args.speed} of event time per second" if args.speed_ms else "at once"
        print(f"evtime demo: Kafka {args.bootstrap} -> examples/seed_join.py -> OpenSearch "
              f"{args.es_url}, produced {pace}\n")
        return run_on_services(args, stream, work)
    print("\n" + "=" * 78)
    print("EMBEDDED MODE: Kafka and OpenSearch are not used, because:")
    print(f"  {why_not}")
    print("The same join runs on the embedded engine: the stream is read from JSON-lines")
    print("files and the documents go to a JSON-lines file instead of an index.")
    print("=" * 78 + "\n")
    return run_embedded(args, stream, work)
