"""The Elasticsearch / OpenSearch sink: ``_bulk`` NDJSON over aiohttp.

One sink speaks to Elasticsearch 7, 8 and 9 and OpenSearch 1, 2 and 3: it
posts ``_bulk`` bodies (``application/x-ndjson``) itself, because the official
``elasticsearch`` client refuses OpenSearch (its product check), and it reads
the product and version from ``GET /`` before its first request (and logs them).

How an output travels:

1. ``write`` turns each output into its bulk lines (``encode``) and queues them
   on a lane chosen by the output's id, so every operation on one document is
   sent in order; a value that cannot be a document goes to the dead-letter
   output at once. ``write`` waits (backpressure) while more than
   ``max_pending_docs`` documents or ``max_pending_bytes`` bytes are queued or in
   flight.
2. Each lane's background task sends a batch when it holds ``batch_size``
   documents or ``batch_bytes`` bytes, when its oldest document has waited
   ``linger``, or at once while a ``flush`` waits; one request at a time per lane
   (``concurrency`` lanes).
3. A request that fails with 429, 5xx, a connection error or a timeout is sent
   again after an exponential backoff with jitter; so are the items that the
   response rejects with 429 / 5xx, with every later item of the same document.
   Items rejected with another 4xx (a mapping error) go to the ``dead_letter``
   sink with the cluster's error, or are logged as errors and counted when there
   is none: nothing is dropped silently. ``create`` of an existing id (409) is a
   replay and is skipped (counted in ``stats.conflicts``).
4. ``flush`` returns once every document written before it is acknowledged (or
   dead-lettered, and the dead-letter sink flushed): a worker's checkpoint awaits
   it before committing input offsets. A cluster that stays unreachable makes
   ``flush`` (and a full ``write``) wait; after ``max_retry_time`` without
   progress the sink raises :class:`~evtime.errors.SinkError` and keeps raising
   it: the worker stops without committing, and a restart writes the documents
   again from the last checkpoint.

Replays are idempotent when outputs carry stable ids: ``index`` and ``update``
put the same document under the same ``_id`` (only ``_version`` grows), a
repeated ``delete`` finds nothing, a repeated ``create`` is a skipped conflict.
Outputs without an id get a cluster-chosen id and may be duplicated by a replay
or by the retry of a request whose answer was lost.

>>> sink = ElasticsearchSink("clicks-per-minute", url="http://127.0.0.1:9200")
>>> sink.action
<BulkAction.INDEX: 'index'>
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import orjson

from evtime.connectors.elasticsearch_bulk import (
    BulkAction,
    ClusterInfo,
    Outcome,
    Product,
    bulk_items,
    check_index_name,
    describe_error,
    document_of,
    encode,
    outcome,
    parse_cluster_info,
    to_resend,
)
from evtime.connectors.elasticsearch_http import (
    RETRIABLE,
    Backoff,
    Connection,
    describe_exception,
    http_error,
    snippet,
)
from evtime.connectors.elasticsearch_lanes import Item, Lanes
from evtime.errors import ConfigError, EvtimeError, SinkError
from evtime.io import DeadLetterSink
from evtime.records import DeadLetter, DeadLetterReason, Output
from evtime.settings import Settings
from evtime.time import Duration, to_millis

__all__ = [
    "BulkAction",
    "ClusterInfo",
    "ElasticsearchSink",
    "Product",
    "SinkStats",
    "default_url",
]

log = logging.getLogger("evtime.elasticsearch")

_NDJSON = {"Content-Type": "application/x-ndjson"}
# Only what the sink reads: the per-item status and error, not ids and versions.
_FILTER_PATH = "errors,items.*.status,items.*.error"
_REFRESH: dict[bool | str, str] = {
    True: "true",
    False: "false",
    "true": "true",
    "false": "false",
    "wait_for": "wait_for",
}


def default_url() -> str:
    """``$EVTIME_ELASTICSEARCH_URL``, else http://127.0.0.1:9200."""
    return Settings.load().elasticsearch_url


@dataclass(slots=True)
class SinkStats:
    """Counters of one sink since it was created."""

    requests: int = 0
    """``_bulk`` requests sent, retries included."""
    retries: int = 0
    """Requests (``_bulk`` or ``GET /``) sent again after a 429, a 5xx, a connection error
    or a timeout."""
    item_retries: int = 0
    """Documents sent again after the response rejected them for now (429 / 5xx)."""
    acknowledged: int = 0
    """Documents the cluster acknowledged."""
    dead_letters: int = 0
    """Documents rejected for good (to the dead-letter sink, or logged when there is none)."""
    conflicts: int = 0
    """``create`` of an id that exists, skipped."""
    bytes_sent: int = 0
    request_seconds: float = 0.0
    """Time spent in ``_bulk`` requests that got an answer."""


class ElasticsearchSink:
    """Writes outputs as documents of an Elasticsearch or OpenSearch index.

    ``index`` is an index name or a function of the output (daily indices:
    ``lambda o: f"events-{day(o.timestamp)}"``). ``action`` is ``"index"``
    (default), ``"create"``, ``"update"`` (merge, ``doc_as_upsert``) or
    ``"delete"``, or a function of the output. The ``_id`` is the output's
    stable ``id`` (required by update and delete; None lets the cluster pick
    one). The document is the output's value (a dict), or what ``document(output)``
    returns; its ``_id`` is the output's id, or what ``id(output)`` returns (e.g. a
    join key, so that a partial row and the joined row replace each other).

    Batching: ``batch_size`` documents, ``batch_bytes`` bytes, or ``linger`` after a
    partial batch started (None: only when full and at ``flush``). Backpressure:
    ``write`` waits while ``max_pending_docs`` / ``max_pending_bytes`` are pending
    (default: two batches per lane). Retries: ``backoff_first`` doubling up to
    ``backoff_max``, for at most ``max_retry_time`` without progress (None: for
    ever), then SinkError; keep it under the Kafka consumer's ``max_poll_interval_ms``
    (5 min), since a worker blocked in ``write`` does not poll. ``refresh`` (True,
    False or ``"wait_for"``) is passed to ``_bulk``. Durations are int milliseconds,
    timedeltas or strings like ``"1s"``.

    Connection: ``url`` (default ``$EVTIME_ELASTICSEARCH_URL`` or
    http://127.0.0.1:9200; a path prefix is kept), or several node URLs (a list, or
    commas) tried in turn when one cannot be connected to, or an Elastic Cloud
    ``cloud_id``; basic auth (``username`` and ``password``, or in the URL), ``api_key``
    (the encoded key, or ``(id, key)``) or ``bearer_token``; ``ca_certs`` (a PEM file),
    ``verify_certs``, ``client_cert`` / ``client_key``, extra ``headers``, and a
    per-request ``timeout``.

    Rejected documents go to ``dead_letter`` (pass the app's dead-letter sink) as
    ``DeadLetter(DeadLetterReason.SINK, ...)`` with the cluster's error, the target
    index as ``topic`` and -1 as partition and offset (an output has no single
    source position); ``conflicts_to_dead_letter`` sends ``create`` conflicts there
    too instead of skipping them.

    The sink starts its lanes in the event loop of its first ``write`` and lives
    there; ``close`` it when done (a worker closes its sinks; a script that runs an
    app with ``run_async`` closes the sink itself).
    """

    def __init__(
        self,
        index: str | Callable[[Output], str],
        *,
        url: str | Sequence[str] | None = None,
        action: BulkAction | str | Callable[[Output], BulkAction | str] = BulkAction.INDEX,
        document: Callable[[Output], Mapping[str, Any]] | None = None,
        id: Callable[[Output], str | None] | None = None,
        batch_size: int = 1000,
        batch_bytes: int = 5 * 1024 * 1024,
        linger: Duration | None = "1s",
        concurrency: int = 2,
        max_pending_docs: int | None = None,
        max_pending_bytes: int | None = None,
        refresh: bool | str | None = None,
        max_retry_time: Duration | None = "2m",
        backoff_first: Duration = "100ms",
        backoff_max: Duration = "5s",
        timeout: Duration = "60s",
        username: str | None = None,
        password: str | None = None,
        api_key: str | tuple[str, str] | None = None,
        bearer_token: str | None = None,
        cloud_id: str | None = None,
        ca_certs: str | Path | None = None,
        verify_certs: bool = True,
        client_cert: str | Path | None = None,
        client_key: str | Path | None = None,
        headers: Mapping[str, str] | None = None,
        dead_letter: DeadLetterSink | None = None,
        conflicts_to_dead_letter: bool = False,
    ) -> None:
        if isinstance(index, str):
            check_index_name(index)
        elif not callable(index):
            raise ConfigError(f"index must be a name or a function of the output, not {index!r}")
        self.index = index
        self.action: BulkAction | None = None
        """The action of every output (None when ``action`` is a function)."""
        self._action_of: Callable[[Output], BulkAction | str] = _no_action
        if callable(action):
            self._action_of = action
        else:
            self.action = _action(action)
        self._document = document
        self._id_of = id
        for name, value in (
            ("batch_size", batch_size),
            ("batch_bytes", batch_bytes),
            ("concurrency", concurrency),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"{name} must be an int >= 1, not {value!r}")
        self.batch_size = batch_size
        self.batch_bytes = batch_bytes
        self.concurrency = concurrency
        self.max_pending_docs = max_pending_docs or 2 * batch_size * concurrency
        self.max_pending_bytes = max_pending_bytes or 2 * batch_bytes * concurrency
        if self.max_pending_docs < 1 or self.max_pending_bytes < 1:
            raise ConfigError("max_pending_docs and max_pending_bytes must be >= 1")
        self._linger = _seconds(linger, "linger")
        self._max_retry = _seconds(max_retry_time, "max_retry_time")
        self._backoff_first = _seconds(backoff_first, "backoff_first", allow_zero=False) or 0.1
        self._backoff_max = _seconds(backoff_max, "backoff_max", allow_zero=False) or 5.0
        if refresh is not None and refresh not in _REFRESH:
            raise ConfigError(f"refresh={refresh!r}: use True, False or 'wait_for'")
        self._params = {"filter_path": _FILTER_PATH}
        if refresh is not None:
            self._params["refresh"] = _REFRESH[refresh]

        self._connection = Connection(
            url or (None if cloud_id else default_url()),
            username=username,
            password=password,
            api_key=api_key,
            bearer_token=bearer_token,
            cloud_id=cloud_id,
            ca_certs=ca_certs,
            verify_certs=verify_certs,
            client_cert=client_cert,
            client_key=client_key,
            headers=headers,
            timeout_s=_seconds(timeout, "timeout", allow_zero=False) or 60.0,
            pool_size=concurrency + 1,
        )
        self.url = self._connection.url
        """The cluster's base URL, without credentials."""

        self.dead_letter = dead_letter
        self.conflicts_to_dead_letter = conflicts_to_dead_letter
        self.stats = SinkStats()
        self.cluster: ClusterInfo | None = None
        """The product and version, once the first request detected them."""
        self._detect_lock = asyncio.Lock()
        self._lanes = Lanes(
            self._deliver,
            target=self.url,
            concurrency=concurrency,
            batch_size=batch_size,
            batch_bytes=batch_bytes,
            linger=self._linger,
            max_pending_docs=self.max_pending_docs,
            max_pending_bytes=self.max_pending_bytes,
        )
        self._dead_unflushed = False
        self._closed = False
        self._rng = random.Random()

    # -- the Sink protocol -------------------------------------------------------------
    async def write(self, outputs: Sequence[Output]) -> None:
        """Queue ``outputs`` for their bulk requests; waits while the buffer is full."""
        if not outputs:
            return
        self._check_usable()
        self._lanes.start()
        rejected: list[DeadLetter] = []
        for output in outputs:
            item = self._item(output, rejected)
            if item is not None:
                await self._lanes.put(item)
        if rejected:
            await self._reject(rejected)

    async def flush(self) -> None:
        """Return once every document written before is acknowledged (or dead-lettered).

        Raises SinkError (or ConfigError) when the sink failed: the cluster stayed
        unreachable for ``max_retry_time``, or answered in a way retrying cannot fix.
        """
        self._check_usable(closed_ok=True)
        await self._lanes.drain()
        if self._dead_unflushed and self.dead_letter is not None:
            self._dead_unflushed = False
            await self.dead_letter.flush()

    async def close(self) -> None:
        """Flush (unless the sink failed) and release the connections."""
        if self._closed:
            return
        try:
            if self._lanes.error is None:
                await self.flush()
            elif self._lanes.pending_docs:
                log.warning(
                    "closing the sink to %s with %d documents not acknowledged (%s): they "
                    "are written again when the worker resumes from its last checkpoint",
                    self.url,
                    self._lanes.pending_docs,
                    self._lanes.error,
                )
        finally:
            self._closed = True
            await self._lanes.stop()
            await self._connection.close()

    # -- more public API -------------------------------------------------------------
    def describe(self) -> str:
        """For ``evtime describe``: the index and the cluster (credentials left out)."""
        index = self.index if isinstance(self.index, str) else "(a function of the output)"
        parts = urlsplit(self.url)
        host = parts.hostname or ""
        where = f"{parts.scheme}://{host}{f':{parts.port}' if parts.port else ''}{parts.path}"
        return f"Elasticsearch index {index!r} at {where}"

    @property
    def pending(self) -> int:
        """Documents written and not yet acknowledged."""
        return self._lanes.pending_docs

    async def cluster_info(self) -> ClusterInfo:
        """The cluster's product and version (``GET /``, once; retried like a request)."""
        self._check_usable()
        return await self._ensure_cluster()

    # -- building items --------------------------------------------------------------
    def _item(self, output: Output, rejected: list[DeadLetter]) -> Item | None:
        """The bulk item of ``output``, or None after adding a dead letter for it."""
        index = self.index if isinstance(self.index, str) else ""
        try:
            action = self.action
            if action is None:
                action = _action(self._action_of(output), from_function=True)
            doc_id = output.id if self._id_of is None else self._id_of(output)
            if doc_id is None:
                if action is BulkAction.UPDATE or action is BulkAction.DELETE:
                    raise ConfigError(
                        f"ElasticsearchSink action {action.value!r} needs outputs with an id "
                        f"(the document's _id), got one without (key {output.key!r}): emit "
                        "outputs with stable ids, or use action='index'"
                    )
            elif not isinstance(doc_id, str):
                doc_id = str(doc_id)
            if not isinstance(self.index, str):
                index = self.index(output)
                if not isinstance(index, str):
                    raise TypeError(f"the index function returned {index!r}, not a name")
            document: Mapping[str, Any] | None = None
            if action is not BulkAction.DELETE:
                document = (
                    document_of(output.value) if self._document is None else self._document(output)
                )
            data = encode(action, index, doc_id, document)
        except EvtimeError:
            raise
        except Exception as exc:
            # A value that is no document, or a user function (index, action,
            # document) that raised: this output is bad, the others go on.
            rejected.append(self._letter(output, index, f"{type(exc).__name__}: {exc}"))
            return None
        return Item(output, action, index, doc_id, data)

    def _letter(self, output: Output, index: str, error: str) -> DeadLetter:
        where = f"index {index!r}" + (f", _id {output.id!r}" if output.id is not None else "")
        return DeadLetter(
            DeadLetterReason.SINK,
            f"{where}: {error}",
            index,
            -1,
            -1,
            output.key,
            output.value,
            output.timestamp,
            "ElasticsearchSink",
        )

    def _check_usable(self, *, closed_ok: bool = False) -> None:
        if self._lanes.error is not None:
            raise self._lanes.error
        if self._closed and not closed_ok:
            raise SinkError(f"the sink to {self.url} is closed: create a new one")

    # -- requests --------------------------------------------------------------------
    def _backoff(self, what: str) -> Backoff:
        return Backoff(
            what,
            first=self._backoff_first,
            cap=self._backoff_max,
            budget=self._max_retry,
            rng=self._rng,
            target=f"Elasticsearch {self.url}",
        )

    async def _ensure_cluster(self) -> ClusterInfo:
        if self.cluster is not None:
            return self.cluster
        async with self._detect_lock:
            if self.cluster is not None:
                return self.cluster
            backoff = self._backoff(f"GET {self.url}/")
            while True:
                try:
                    status, payload = await self._connection.request("GET", "/")
                except RETRIABLE as exc:
                    failure = describe_exception(exc)
                else:
                    if status == 200:
                        backoff.succeeded()
                        self.cluster = self._identify(payload)
                        return self.cluster
                    if status == 403:
                        # An API key allowed to write but not to monitor: carry on.
                        backoff.succeeded()
                        log.warning(
                            "GET %s/ is forbidden (403): product and version unknown; "
                            "assuming a compatible cluster",
                            self.url,
                        )
                        self.cluster = ClusterInfo(Product.UNKNOWN, "")
                        return self.cluster
                    if status != 429 and status < 500:
                        raise http_error(f"GET {self.url}/", status, payload)
                    failure = f"HTTP {status}: {snippet(payload)}"
                self.stats.retries += 1
                await backoff.wait(failure, self._lanes.pending_docs)

    def _identify(self, payload: bytes) -> ClusterInfo:
        try:
            info = parse_cluster_info(orjson.loads(payload))
        except orjson.JSONDecodeError:
            raise ConfigError(
                f"GET {self.url}/ did not answer JSON ({snippet(payload)}): "
                "check that the url points at Elasticsearch or OpenSearch"
            ) from None
        log.info("Elasticsearch sink: %s (cluster %r) at %s", info, info.cluster_name, self.url)
        return info

    async def _deliver(self, items: list[Item]) -> None:
        """Send ``items`` until each is acknowledged, dead-lettered or skipped."""
        await self._ensure_cluster()
        backoff = self._backoff(f"_bulk to {self.url}")
        todo = items
        while todo:
            body = b"".join(item.data for item in todo)
            self.stats.requests += 1
            self.stats.bytes_sent += len(body)
            started = time.perf_counter()
            try:
                status, payload = await self._connection.request(
                    "POST", "/_bulk", body=body, params=self._params, headers=_NDJSON
                )
            except RETRIABLE as exc:
                failure = describe_exception(exc)
                self.stats.retries += 1
            else:
                self.stats.request_seconds += time.perf_counter() - started
                if 200 <= status < 300:
                    again, failure = await self._settle(todo, payload)
                    if not again:
                        backoff.succeeded()
                        return
                    if len(again) < len(todo):
                        backoff.reset()
                    self.stats.item_retries += len(again)
                    todo = again
                elif status == 413:
                    backoff.succeeded()
                    await self._split(todo)
                    return
                elif status == 429 or status >= 500:
                    failure = f"HTTP {status}: {snippet(payload)}"
                    self.stats.retries += 1
                else:
                    raise http_error(f"_bulk to {self.url}", status, payload)
            await backoff.wait(failure, self._lanes.pending_docs)

    async def _split(self, items: list[Item]) -> None:
        """413: the body is over the cluster's ``http.max_content_length``; send halves."""
        if len(items) > 1:
            half = len(items) // 2
            await self._deliver(items[:half])
            await self._deliver(items[half:])
            return
        item = items[0]
        await self._reject(
            [
                self._letter(
                    item.output,
                    item.index,
                    f"413 request entity too large: the document ({len(item.data)} bytes) is "
                    "over the cluster's http.max_content_length",
                )
            ]
        )

    async def _settle(self, items: list[Item], payload: bytes) -> tuple[list[Item], str]:
        """Apply a 2xx bulk response: count, dead-letter and skip what is settled; return
        the items to send again and why."""
        try:
            body = orjson.loads(payload)
            if isinstance(body, dict) and body.get("errors") is False:
                self.stats.acknowledged += len(items)
                return [], ""
            results = bulk_items(body, len(items))
        except (orjson.JSONDecodeError, ValueError) as exc:
            # Sending the whole batch again is safe (operations by id repeat identically).
            return items, f"unreadable _bulk response ({exc}): {snippet(payload)}"
        outcomes = [
            outcome(item.action, result) for item, result in zip(items, results, strict=True)
        ]
        resend = to_resend([item.key for item in items], outcomes)
        again: list[Item] = []
        rejected: list[DeadLetter] = []
        reason = ""
        for item, result, kind, repeat in zip(items, results, outcomes, resend, strict=True):
            if repeat:
                again.append(item)
                if kind is Outcome.RETRY and not reason:
                    reason = describe_error(result.get("status"), result.get("error"))
            elif kind is Outcome.OK:
                self.stats.acknowledged += 1
            elif kind is Outcome.CONFLICT and not self.conflicts_to_dead_letter:
                self.stats.conflicts += 1
            else:
                error = describe_error(result.get("status"), result.get("error"))
                rejected.append(self._letter(item.output, item.index, error))
        if rejected:
            await self._reject(rejected)
        return again, f"{len(again)} of {len(items)} documents rejected for now ({reason})"

    async def _reject(self, letters: list[DeadLetter]) -> None:
        self.stats.dead_letters += len(letters)
        if self.dead_letter is None:
            for letter in letters:
                log.error(
                    "document REJECTED and no dead-letter sink is set (pass dead_letter= to "
                    "the ElasticsearchSink to keep it): %s; value %.500s",
                    letter.error,
                    letter.value,
                )
            return
        await self.dead_letter.write_dead(letters)
        self._dead_unflushed = True


# -- settings --------------------------------------------------------------------------
def _action(value: BulkAction | str, *, from_function: bool = False) -> BulkAction:
    if isinstance(value, BulkAction):
        return value
    try:
        return BulkAction(value)
    except ValueError:
        message = f"action {value!r}: use 'index', 'create', 'update' or 'delete'"
        if from_function:
            raise ValueError(message) from None
        raise ConfigError(message) from None


def _no_action(output: Output) -> BulkAction:
    raise ConfigError("no action function")  # never called: the action is fixed


def _seconds(value: Duration | None, name: str, *, allow_zero: bool = True) -> float | None:
    if value is None:
        return None
    return to_millis(value, name=name, allow_zero=allow_zero) / 1000
