"""The pure part of the Elasticsearch / OpenSearch sink: no I/O.

Building ``_bulk`` NDJSON lines for an output, reading a bulk response into one
outcome per item, telling the product and version apart from ``GET /``, and the
backoff delays. ``connectors/elasticsearch.py`` does the talking.

>>> encode(BulkAction.UPDATE, "days", "k1", {"n": 1})
b'{"update":{"_index":"days","_id":"k1","retry_on_conflict":3}}\\n{"doc":{"n":1},"doc_as_upsert":true}\\n'
>>> outcome(BulkAction.DELETE, {"status": 404, "result": "not_found"})
<Outcome.OK: 'ok'>
"""

from __future__ import annotations

import enum
import random
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import orjson

from evtime.errors import ConfigError

_JSON_OPTIONS = orjson.OPT_NON_STR_KEYS
_UPDATE_RETRIES_ON_CONFLICT = 3
_INDEX_FORBIDDEN = re.compile(r'[\\/*?"<>| ,#:A-Z]')


class BulkAction(enum.Enum):
    """What a bulk item does with its document."""

    INDEX = "index"
    """Put the document under its id, replacing any previous version (a replay is a no-op)."""
    CREATE = "create"
    """Put the document only if its id is new; an existing id is a conflict (409)."""
    UPDATE = "update"
    """Merge the fields into the document with this id, creating it if missing
    (``doc_as_upsert``)."""
    DELETE = "delete"
    """Remove the document with this id (a missing one is fine)."""


class Product(enum.Enum):
    ELASTICSEARCH = "elasticsearch"
    OPENSEARCH = "opensearch"
    UNKNOWN = "unknown"
    """``GET /`` was not allowed (an API key without the monitor privilege)."""


@dataclass(frozen=True, slots=True)
class ClusterInfo:
    """What ``GET /`` says about the cluster."""

    product: Product
    version: str
    cluster_name: str = ""

    @property
    def major(self) -> int:
        """The major version (0 when unknown)."""
        head = self.version.split(".", 1)[0]
        return int(head) if head.isdigit() else 0

    def __str__(self) -> str:
        if self.product is Product.UNKNOWN:
            return "an unidentified cluster"
        name = "OpenSearch" if self.product is Product.OPENSEARCH else "Elasticsearch"
        return f"{name} {self.version}"


def parse_cluster_info(body: Mapping[str, Any]) -> ClusterInfo:
    """The product and version from the body of ``GET /``.

    OpenSearch says ``version.distribution == "opensearch"`` (also when it
    pretends to be Elasticsearch 7.10.2 for old clients); Elasticsearch has no
    distribution. Raises ConfigError for a product the sink does not support
    (Elasticsearch before 7: typed bulk requests).
    """
    version = body.get("version")
    if not isinstance(version, Mapping) or not isinstance(version.get("number"), str):
        raise ConfigError(
            "GET / did not answer like Elasticsearch or OpenSearch (no version.number): "
            "check that the sink's url points at the cluster's HTTP port"
        )
    number: str = version["number"]
    distribution = version.get("distribution")
    product = Product.OPENSEARCH if distribution == "opensearch" else Product.ELASTICSEARCH
    info = ClusterInfo(product, number, str(body.get("cluster_name", "")))
    if product is Product.ELASTICSEARCH and info.major < 7:
        raise ConfigError(
            f"{info} is not supported: the Elasticsearch sink needs Elasticsearch 7, 8 or 9 "
            "or OpenSearch 1, 2 or 3"
        )
    return info


def check_index_name(index: str) -> None:
    """Raise ConfigError for a name no cluster accepts as an index.

    A date-math name (``<logs-{now/d}>``) is left for the cluster to resolve.
    """
    if len(index) > 2 and index[0] == "<" and index[-1] == ">":
        return
    bad = _INDEX_FORBIDDEN.search(index)
    if (
        not index
        or bad is not None
        or index in (".", "..")
        or index[0] in "-_+"
        or len(index.encode()) > 255
    ):
        raise ConfigError(
            f"index {index!r} is not a valid index name: use lowercase letters, digits, "
            "'-', '_' and '.', not starting with '-', '_' or '+', at most 255 bytes"
        )


def document_of(value: Any) -> Mapping[str, Any]:
    """The JSON object stored for an output's value.

    A mapping is stored as is; an object with ``to_dict()`` (a WindowResult) as
    its dict. Anything else raises TypeError: a document is a JSON object.
    """
    if isinstance(value, Mapping):
        return value
    to_dict = getattr(value, "to_dict", None)
    if callable(to_dict):
        doc = to_dict()
        if isinstance(doc, Mapping):
            return doc
    raise TypeError(
        f"a document must be a JSON object, got {type(value).__name__}: emit a dict "
        "(or pass document=... to the sink to build one)"
    )


def encode(
    action: BulkAction, index: str, doc_id: str | None, document: Mapping[str, Any] | None
) -> bytes:
    """The NDJSON lines of one bulk item (the action line, then the source unless deleting).

    ``doc_id`` None lets the cluster pick an id (index / create only). Raises
    TypeError when the document cannot be serialised.
    """
    meta: dict[str, Any] = {"_index": index}
    if doc_id is not None:
        meta["_id"] = doc_id
    if action is BulkAction.DELETE:
        return orjson.dumps({"delete": meta}) + b"\n"
    if action is BulkAction.UPDATE:
        meta["retry_on_conflict"] = _UPDATE_RETRIES_ON_CONFLICT
        source: Any = {"doc": document, "doc_as_upsert": True}
    else:
        source = document
    try:
        body = orjson.dumps(source, option=_JSON_OPTIONS)
    except orjson.JSONEncodeError as exc:
        raise TypeError(f"the document is not JSON-serialisable: {exc}") from exc
    return orjson.dumps({action.value: meta}) + b"\n" + body + b"\n"


class Outcome(enum.Enum):
    """What became of one bulk item."""

    OK = "ok"
    RETRY = "retry"
    """Rejected for now (429, 5xx, a cluster block): send it again after a backoff."""
    REJECT = "reject"
    """Rejected for good (a 4xx such as a mapping error): to the dead-letter output."""
    CONFLICT = "conflict"
    """``create`` of an id that exists: a replay, or another writer's document."""


def outcome(action: BulkAction, result: Mapping[str, Any]) -> Outcome:
    """The outcome of one item of a bulk response (its ``{"status": ..., "error": ...}``)."""
    status = result.get("status")
    if not isinstance(status, int):
        return Outcome.RETRY  # a malformed item: sending it again is always safe
    error = result.get("error")
    if error is None and status < 300:
        return Outcome.OK
    if (
        action is BulkAction.DELETE
        and status == 404
        and (error is None or error_type(error) == "index_not_found_exception")
    ):
        return Outcome.OK  # deleting what is gone already (a replay), or never was
    if status == 409 and action is BulkAction.CREATE:
        return Outcome.CONFLICT
    if status == 429 or status >= 500 or status == 409:
        # 409 on update: concurrent writers beat retry_on_conflict; it settles on retry.
        return Outcome.RETRY
    if error_type(error) == "cluster_block_exception":
        # A read-only index (disk flood stage): it lifts once space is freed.
        return Outcome.RETRY
    return Outcome.REJECT


def error_type(error: Any) -> str:
    """The ``type`` of a bulk item's error ('' when there is none)."""
    if isinstance(error, Mapping):
        kind = error.get("type")
        return kind if isinstance(kind, str) else ""
    return ""


def describe_error(status: Any, error: Any) -> str:
    """A one-line account of a bulk item's error: status, type, reason, and the cause's."""
    if isinstance(error, Mapping):
        text = f"{status} {error.get('type', 'error')}: {error.get('reason', '')}"
        cause = error.get("caused_by")
        if isinstance(cause, Mapping):
            text += f" (caused by {cause.get('type', 'error')}: {cause.get('reason', '')})"
        return text
    return f"{status} {error}" if error is not None else f"status {status}"


def bulk_items(body: Any, expected: int) -> list[Mapping[str, Any]]:
    """The per-item results of a ``_bulk`` response, in request order.

    Each entry is the inner object of ``{"<action>": {...}}``. Raises ValueError
    when the response does not have one item per document sent.
    """
    if not isinstance(body, Mapping):
        raise ValueError("the _bulk response is not a JSON object")
    items = body.get("items")
    if not isinstance(items, list) or len(items) != expected:
        got = len(items) if isinstance(items, list) else "no"
        raise ValueError(f"the _bulk response has {got} items for {expected} documents sent")
    out: list[Mapping[str, Any]] = []
    for item in items:
        inner = next(iter(item.values()), None) if isinstance(item, Mapping) else None
        out.append(inner if isinstance(inner, Mapping) else {})
    return out


_K = TypeVar("_K")


def to_resend(keys: Sequence[_K | None], outcomes: Sequence[Outcome]) -> list[bool]:
    """Which items of a sent batch go out again: every RETRY item, and every later
    item with the key (index, id) of an earlier resent one.

    Operations on one document apply in order; when an early one is rejected for
    now, the later ones that did land are applied again after it, so the final
    document is the one the whole sequence makes. Items without an id (None key)
    only go again themselves.
    """
    again: set[Any] = set()
    out: list[bool] = []
    for key, result in zip(keys, outcomes, strict=True):
        resend = result is Outcome.RETRY or (key is not None and key in again)
        if resend and key is not None:
            again.add(key)
        out.append(resend)
    return out


def backoff_delay(attempt: int, first: float, cap: float, rng: random.Random) -> float:
    """Exponential backoff with jitter: ``first * 2**attempt`` capped at ``cap``, of which
    a random half is waited (so clients that failed together do not retry together)."""
    ceiling = min(cap, first * float(1 << min(attempt, 30)))
    return ceiling / 2 + rng.uniform(0, ceiling / 2)
