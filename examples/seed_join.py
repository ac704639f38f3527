"""The seed pipeline: A and B events of one Kafka topic, joined by key, into Elasticsearch.

Input records are JSON ``{"type": "A"|"B", "id": "<join key>", "ts": <epoch ms>, ...}``
keyed by ``id``. Each output document has ``_id`` = the join key and the fields
``id``, ``a`` (the A event or null), ``b`` (the B event or null), ``status``
("joined" or "unmatched") and ``joined_at_ms`` (event time of the match or null):

* a joined document is written as soon as the second event of a pair arrives;
* an unmatched document is written once the watermark passes ``ts +
  unmatched_after`` of the lone event, and is replaced by the joined document if
  the partner arrives within ``within``; after ``within`` the key's state is gone;
* a partition that goes quiet does not hold its lone events back: once it has had
  no record for ``--idle-timeout`` (default 30s) and the worker has read all it
  holds, its watermark follows the wall clock (``advance_when_idle``), so a lone
  event's unmatched document is searchable within ``unmatched_after +
  idle_timeout`` (plus a checkpoint) of wall-clock time even if no other record
  comes. This is for live data whose event time follows the wall clock; a record
  that arrives later than that is late (the dead-letter topic). ``--idle-timeout
  off`` turns it off (for replaying old data, say).

Run it as a worker (options or ``EVTIME_*`` environment variables)::

    python examples/seed_join.py --bootstrap 127.0.0.1:9092 --topic events \\
        --es-url http://127.0.0.1:9200 --index joined
    evtime worker examples/seed_join.py:app          # configured by EVTIME_* only

``evtime demo`` runs this pipeline. The package installs this file as
``evtime.demos.seed_join`` (``python -m evtime.demos.seed_join`` runs it where only the
installed evtime is at hand); in a checkout that module is a link to this file.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
from collections.abc import Sequence
from typing import Any

from evtime import App
from evtime.app import SourceRef
from evtime.connectors.elasticsearch import ElasticsearchSink
from evtime.connectors.kafka import KafkaDeadLetterSink, KafkaSource
from evtime.io import Sink
from evtime.records import JoinKind, JoinResult

DEFAULTS = {
    "bootstrap": ("EVTIME_KAFKA_BOOTSTRAP", "127.0.0.1:9092"),
    "topic": ("EVTIME_TOPIC", "events"),
    "es_url": ("EVTIME_ELASTICSEARCH_URL", "http://127.0.0.1:9200"),
    "index": ("EVTIME_INDEX", "joined"),
    "unmatched_after": ("EVTIME_UNMATCHED_AFTER", "15m"),
    "within": ("EVTIME_WITHIN", "6h"),
    "state_dir": ("EVTIME_STATE_DIR", "./state"),
    "app_name": ("EVTIME_APP_NAME", "seed-join"),
    "processing": ("EVTIME_PROCESSING", "at_least_once"),
    "max_out_of_orderness": ("EVTIME_MAX_OUT_OF_ORDERNESS", "5s"),
    "idle_timeout": ("EVTIME_IDLE_TIMEOUT", "30s"),
}


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    for name, (env, default) in DEFAULTS.items():
        parser.add_argument(
            f"--{name.replace('_', '-')}",
            dest=name,
            default=os.environ.get(env, default),
            help=f"(env {env}, default {default})",
        )
    return parser.parse_args(argv)


def document(result: JoinResult) -> dict[str, Any]:
    """The Elasticsearch document of a join result."""
    joined = result.kind is JoinKind.JOINED
    return {
        "id": result.key,
        "a": result.left,
        "b": result.right,
        "status": "joined" if joined else "unmatched",
        "joined_at_ms": result.timestamp if joined else None,
    }


def declare_join(app: App, events: SourceRef, args: argparse.Namespace, sink: Sink) -> None:
    """The join itself: A and B events of ``events`` by key, full outer, within ``--within``,
    lone events reported after ``--unmatched-after``, one document per key into ``sink``."""
    app.join(
        events.where(lambda v: v.get("type") == "A"),
        events.where(lambda v: v.get("type") == "B"),
        within=args.within,
        how="outer",
        emit_unmatched_after=args.unmatched_after,
        sink=sink,
        name="seed_join",
    )(document)


def build_app(args: argparse.Namespace) -> App:
    """The pipeline: one Kafka source, one full outer interval join, one Elasticsearch index."""
    app = App(
        args.app_name,
        state_dir=args.state_dir,
        checkpoint_interval="1s",
        processing=args.processing,
        dead_letter=KafkaDeadLetterSink(f"{args.topic}-dlq", args.bootstrap),
    )
    idle = None if args.idle_timeout in ("off", "0", "") else args.idle_timeout
    events = app.source(
        args.topic,
        KafkaSource(args.topic, args.bootstrap),
        key="id",
        timestamp="ts",
        max_out_of_orderness=args.max_out_of_orderness,
        idle_timeout=idle,
        advance_when_idle=idle is not None,
    )
    sink = ElasticsearchSink(
        args.index,
        url=args.es_url,
        id=lambda output: str(output.value["id"]),
        dead_letter=app.plan.dead_letter,
    )
    declare_join(app, events, args, sink)
    return app


app = build_app(parse_args([]))


def main(argv: Sequence[str] | None = None) -> None:
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    asyncio.run(build_app(parse_args(argv)).run_async())


if __name__ == "__main__":
    main()
