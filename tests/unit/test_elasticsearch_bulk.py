"""The pure part of the Elasticsearch sink: bulk lines, response outcomes, product
detection, resend order, backoff, and the settings the sink refuses. No network."""

from __future__ import annotations

import random
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from evtime.connectors.elasticsearch import ElasticsearchSink, default_url
from evtime.connectors.elasticsearch_bulk import (
    BulkAction,
    ClusterInfo,
    Outcome,
    Product,
    backoff_delay,
    bulk_items,
    check_index_name,
    describe_error,
    document_of,
    encode,
    outcome,
    parse_cluster_info,
    to_resend,
)
from evtime.errors import ConfigError
from evtime.records import EmitKind, WindowResult

A = BulkAction
O = Outcome  # noqa: E741
CONFLICT = {"type": "version_conflict_engine_exception", "reason": "document already exists"}


def lines(data: bytes) -> list[Any]:
    assert data.endswith(b"\n")
    return [orjson.loads(line) for line in data.split(b"\n")[:-1]]


# --- NDJSON ----------------------------------------------------------------------------


def test_index_line_carries_the_id_and_the_document() -> None:
    assert lines(encode(A.INDEX, "ix", "k1", {"n": 1, "s": "é"})) == [
        {"index": {"_index": "ix", "_id": "k1"}},
        {"n": 1, "s": "é"},
    ]


def test_without_an_id_the_cluster_picks_one() -> None:
    assert lines(encode(A.CREATE, "ix", None, {"n": 1})) == [
        {"create": {"_index": "ix"}},
        {"n": 1},
    ]


def test_update_is_a_doc_as_upsert_retried_on_conflict() -> None:
    assert lines(encode(A.UPDATE, "ix", "k", {"a": 1})) == [
        {"update": {"_index": "ix", "_id": "k", "retry_on_conflict": 3}},
        {"doc": {"a": 1}, "doc_as_upsert": True},
    ]


def test_delete_has_no_source_line() -> None:
    assert lines(encode(A.DELETE, "ix", "k", None)) == [{"delete": {"_index": "ix", "_id": "k"}}]


def test_ids_and_values_are_escaped_and_one_item_per_line() -> None:
    data = encode(A.INDEX, "ix", 'a"b\nc', {"text": "line\nbreak", 1: "int key"})  # type: ignore[dict-item]
    assert data.count(b"\n") == 2
    assert lines(data) == [
        {"index": {"_index": "ix", "_id": 'a"b\nc'}},
        {"text": "line\nbreak", "1": "int key"},
    ]


def test_a_value_that_is_not_json_is_a_type_error() -> None:
    with pytest.raises(TypeError, match="not JSON-serialisable"):
        encode(A.INDEX, "ix", "k", {"x": object()})


def test_documents_are_json_objects() -> None:
    assert document_of({"a": 1}) == {"a": 1}
    window = WindowResult("u", 0, 60_000, 3, EmitKind.FINAL)
    assert document_of(window) == window.to_dict()
    for bad in (3, "text", [1, 2], None):
        with pytest.raises(TypeError, match="must be a JSON object"):
            document_of(bad)


# --- bulk responses --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("action", "result", "expected"),
    [
        (A.INDEX, {"status": 201}, O.OK),
        (A.INDEX, {"status": 200}, O.OK),
        (A.UPDATE, {"status": 200}, O.OK),
        (A.DELETE, {"status": 200}, O.OK),
        (A.DELETE, {"status": 404}, O.OK),
        (
            A.DELETE,
            {"status": 404, "error": {"type": "index_not_found_exception"}},
            O.OK,
        ),
        (A.CREATE, {"status": 409, "error": CONFLICT}, O.CONFLICT),
        (A.UPDATE, {"status": 409, "error": CONFLICT}, O.RETRY),
        (A.INDEX, {"status": 429, "error": {"type": "es_rejected_execution_exception"}}, O.RETRY),
        (A.INDEX, {"status": 503, "error": {"type": "unavailable_shards_exception"}}, O.RETRY),
        (A.INDEX, {"status": 500, "error": {"type": "x"}}, O.RETRY),
        (A.INDEX, {"status": 403, "error": {"type": "cluster_block_exception"}}, O.RETRY),
        (A.INDEX, {"status": 400, "error": {"type": "mapper_parsing_exception"}}, O.REJECT),
        (A.UPDATE, {"status": 404, "error": {"type": "document_missing_exception"}}, O.REJECT),
        (A.INDEX, {"status": 400, "error": {"type": "invalid_index_name_exception"}}, O.REJECT),
        (A.INDEX, {}, O.RETRY),
    ],
)
def test_item_outcomes(action: BulkAction, result: dict[str, Any], expected: Outcome) -> None:
    assert outcome(action, result) is expected


def test_bulk_items_are_the_inner_objects_in_order() -> None:
    body = {
        "errors": True,
        "items": [{"index": {"status": 201}}, {"delete": {"status": 404}}, {"update": None}],
    }
    assert bulk_items(body, 3) == [{"status": 201}, {"status": 404}, {}]


def test_a_response_with_the_wrong_item_count_is_an_error() -> None:
    with pytest.raises(ValueError, match="has 1 items for 2 documents"):
        bulk_items({"items": [{"index": {"status": 201}}]}, 2)
    with pytest.raises(ValueError, match="has no items"):
        bulk_items({"error": "x"}, 2)
    with pytest.raises(ValueError, match="not a JSON object"):
        bulk_items([1], 1)


def test_describe_error_names_status_type_reason_and_cause() -> None:
    error = {
        "type": "mapper_parsing_exception",
        "reason": "failed to parse field [n] of type [integer]",
        "caused_by": {"type": "number_format_exception", "reason": 'For input string: "x"'},
    }
    text = describe_error(400, error)
    assert text.startswith("400 mapper_parsing_exception: failed to parse field [n]")
    assert "caused by number_format_exception" in text
    assert describe_error(503, None) == "status 503"


def test_resend_keeps_the_order_of_operations_on_one_document() -> None:
    keys = [("i", "a"), ("i", "b"), ("i", "a"), None, ("i", "c"), ("i", "a"), ("j", "a")]
    outcomes = [O.RETRY, O.OK, O.OK, O.RETRY, O.REJECT, O.REJECT, O.OK]
    # a's later operations go again after it; b, c and j/a are settled; None only itself.
    assert to_resend(keys, outcomes) == [True, False, True, True, False, True, False]


@given(st.lists(st.tuples(st.sampled_from("abc"), st.sampled_from(list(O))), max_size=30))
def test_resend_is_every_retry_and_everything_after_it_on_the_same_document(
    items: list[tuple[str, Outcome]],
) -> None:
    keys = [k for k, _ in items]
    outcomes = [o for _, o in items]
    resend = to_resend(keys, outcomes)
    for i, (key, _) in enumerate(items):
        assert resend[i] == any(k == key and o is O.RETRY for k, o in items[: i + 1])


# --- product and version ---------------------------------------------------------------

OPENSEARCH_2 = {
    "name": "n1",
    "cluster_name": "evtime",
    "version": {"distribution": "opensearch", "number": "2.19.1", "lucene_version": "9.12.1"},
    "tagline": "The OpenSearch Project: https://opensearch.org/",
}
OPENSEARCH_COMPAT = {"version": {"distribution": "opensearch", "number": "7.10.2"}}
ELASTICSEARCH = {
    "cluster_name": "es",
    "version": {"number": "8.15.0", "build_flavor": "default"},
    "tagline": "You Know, for Search",
}


def test_opensearch_is_told_apart_by_its_distribution() -> None:
    info = parse_cluster_info(OPENSEARCH_2)
    assert (info.product, info.version, info.major) == (Product.OPENSEARCH, "2.19.1", 2)
    assert str(info) == "OpenSearch 2.19.1"
    assert parse_cluster_info(OPENSEARCH_COMPAT).product is Product.OPENSEARCH


@pytest.mark.parametrize("number", ["7.17.24", "8.15.0", "9.0.1"])
def test_elasticsearch_7_8_9_are_supported(number: str) -> None:
    info = parse_cluster_info({"version": {"number": number}})
    assert info.product is Product.ELASTICSEARCH
    assert str(info) == f"Elasticsearch {number}"


def test_elasticsearch_before_7_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"Elasticsearch 6\.8\.23 is not supported"):
        parse_cluster_info({"version": {"number": "6.8.23"}})


def test_something_else_at_the_url_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="did not answer like Elasticsearch"):
        parse_cluster_info({"status": "ok"})


def test_unknown_product_prints_plainly() -> None:
    assert str(ClusterInfo(Product.UNKNOWN, "")) == "an unidentified cluster"


# --- backoff ---------------------------------------------------------------------------


def test_backoff_doubles_with_jitter_up_to_the_cap() -> None:
    rng = random.Random(7)
    for attempt in range(40):
        ceiling = min(5.0, 0.1 * 2**attempt)
        delays = [backoff_delay(attempt, 0.1, 5.0, rng) for _ in range(50)]
        assert all(ceiling / 2 <= d <= ceiling for d in delays)
        assert len(set(delays)) > 1  # jittered


# --- settings --------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["Upper", "a b", "a/b", "-x", "_x", "", "a:b", "a*", "..", "a#"])
def test_bad_index_names_are_refused(name: str) -> None:
    with pytest.raises(ConfigError, match="not a valid index name"):
        check_index_name(name)


@pytest.mark.parametrize("name", ["events", "events-2024.01.01", "a_b", "<logs-{now/d}>"])
def test_good_index_names_pass(name: str) -> None:
    check_index_name(name)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"action": "upsert"}, "action 'upsert': use 'index', 'create', 'update' or 'delete'"),
        ({"batch_size": 0}, "batch_size must be an int >= 1"),
        ({"batch_bytes": -1}, "batch_bytes must be an int >= 1"),
        ({"concurrency": True}, "concurrency must be an int >= 1"),
        ({"linger": "1"}, "invalid linger"),
        ({"max_retry_time": "-5s"}, "invalid max_retry_time"),
        ({"timeout": 0}, "invalid timeout"),
        ({"refresh": "now"}, "refresh='now'"),
        ({"url": "localhost:9200"}, "use http://host:port"),
        ({"url": "ftp://h:9200"}, "use http://host:port"),
        ({"url": "http://h:9200/?pretty"}, "without query"),
        ({"username": "u"}, "username= needs password="),
        ({"username": "u", "password": "p", "api_key": "k"}, "not both"),
        ({"url": "http://u:p@h:9200", "username": "v", "password": "q"}, "not both"),
        ({"api_key": ""}, "api_key is empty"),
        ({"ca_certs": "/ca.pem"}, "need an https:// url"),
        ({"url": "https://h:9200", "ca_certs": "/no/such/ca.pem"}, "cannot load the TLS files"),
        ({"url": "https://h:9200", "client_key": "/k.pem"}, "client_key= needs client_cert="),
    ],
)
def test_bad_settings_are_config_errors(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace("?", r"\?")):
        ElasticsearchSink("ix", **kwargs)


def test_settings_are_read_as_given() -> None:
    sink = ElasticsearchSink(
        "ix",
        url="https://elastic:secret@es.example:9243/prefix/",
        action="update",
        linger=None,
        max_retry_time="30s",
        refresh="wait_for",
        verify_certs=False,
    )
    assert sink.url == "https://es.example:9243/prefix"  # no credentials in logs
    assert sink.action is BulkAction.UPDATE
    assert (
        sink._connection.headers["Authorization"] == "Basic ZWxhc3RpYzpzZWNyZXQ="
    )  # elastic:secret
    assert sink._params["refresh"] == "wait_for"
    assert sink._max_retry == 30.0 and sink._linger is None
    assert sink._connection.ssl is False
    assert sink.max_pending_docs == 2 * 1000 * 2


def test_api_key_goes_in_the_authorization_header() -> None:
    assert (
        ElasticsearchSink("ix", api_key="abc==")._connection.headers["Authorization"]
        == "ApiKey abc=="
    )
    pair = ElasticsearchSink("ix", api_key=("id1", "key1"))._connection.headers["Authorization"]
    assert pair == "ApiKey aWQxOmtleTE="  # base64("id1:key1")


def test_the_default_url_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("EVTIME_ELASTICSEARCH_URL", raising=False)
    assert default_url() == "http://127.0.0.1:9200"
    monkeypatch.setenv("EVTIME_ELASTICSEARCH_URL", "http://search:9201")
    assert ElasticsearchSink("ix").url == "http://search:9201"


@pytest.mark.parametrize(
    ("url", "base", "authorization"),
    [
        ("http://127.0.0.1:9200/", "http://127.0.0.1:9200", None),
        ("http://[::1]:9200", "http://[::1]:9200", None),
        ("https://u:p%40ss@es:9243/a/b/", "https://es:9243/a/b", "Basic dTpwQHNz"),  # u:p@ss
    ],
)
def test_urls_keep_their_prefix_and_lose_their_credentials(
    url: str, base: str, authorization: str | None
) -> None:
    sink = ElasticsearchSink("ix", url=url)
    assert sink.url == base
    assert sink._connection.headers.get("Authorization") == authorization


@pytest.mark.parametrize("url", ["http://h:99999", "http://h:port", "http://", "h:9200"])
def test_urls_that_are_not_urls_are_config_errors(url: str) -> None:
    with pytest.raises(ConfigError, match="url"):
        ElasticsearchSink("ix", url=url)
