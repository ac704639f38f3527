"""The Elasticsearch sink against the real OpenSearch node (`evtime services up`).

What lands is read back with `_refresh` + `_search` and compared exactly. Faults
the node will not produce on demand (429, 503, 413, per-item rejections, an
outage) come from a small HTTP server started by the test in front of the node:
it forwards requests to OpenSearch and, when told to, answers with the fault
instead, or marks items of the node's real answer as rejected. The documents
themselves are always written by the real node.
"""

from __future__ import annotations

import asyncio
import logging
import random
import socket
import ssl
import subprocess
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import web

from evtime import App, Count, Tumbling
from evtime.connectors.elasticsearch import BulkAction, ElasticsearchSink, Product
from evtime.connectors.local import MemorySink, MemorySource
from evtime.errors import SinkError
from evtime.records import DeadLetterReason, Output

pytestmark = pytest.mark.opensearch

FAST: dict[str, Any] = {"backoff_first": "20ms", "backoff_max": "200ms"}
"""Retry settings that keep fault tests short."""


# --- reading the node back ------------------------------------------------------------


class Node:
    """Direct REST calls to check what the sink did; deletes every index it was told of."""

    def __init__(self, http: aiohttp.ClientSession, url: str) -> None:
        self.http = http
        self.url = url
        self.indices: set[str] = set()

    def track(self, *names: str) -> None:
        self.indices.update(names)

    async def create_index(self, name: str, properties: dict[str, Any]) -> None:
        self.track(name)
        body = {"mappings": {"properties": properties}}
        async with self.http.put(f"{self.url}/{name}", json=body) as response:
            assert response.status == 200, await response.text()

    async def docs(self, index: str) -> dict[str, Any]:
        """Every document of ``index`` (after a refresh), by id."""
        async with self.http.post(f"{self.url}/{index}/_refresh") as response:
            assert response.status == 200, await response.text()
        query = {"size": 10_000, "query": {"match_all": {}}}
        async with self.http.post(f"{self.url}/{index}/_search", json=query) as response:
            assert response.status == 200, await response.text()
            hits = (await response.json())["hits"]["hits"]
        return {hit["_id"]: hit["_source"] for hit in hits}

    async def count(self, index: str, *, refresh: bool = True) -> int:
        if refresh:
            async with self.http.post(f"{self.url}/{index}/_refresh") as response:
                assert response.status == 200, await response.text()
        async with self.http.get(f"{self.url}/{index}/_count") as response:
            assert response.status == 200, await response.text()
            return int((await response.json())["count"])

    async def version(self, index: str, doc_id: str) -> int:
        async with self.http.get(f"{self.url}/{index}/_doc/{doc_id}") as response:
            assert response.status == 200, await response.text()
            return int((await response.json())["_version"])

    async def drop(self) -> None:
        if self.indices:
            names = ",".join(sorted(self.indices))
            async with self.http.delete(
                f"{self.url}/{names}", params={"ignore_unavailable": "true"}
            ) as response:
                assert response.status == 200, await response.text()


@pytest.fixture
async def node(opensearch_url: str) -> AsyncIterator[Node]:
    async with aiohttp.ClientSession() as http:
        made = Node(http, opensearch_url)
        try:
            yield made
        finally:
            await made.drop()


@pytest.fixture
def index(node: Node, unique_name: str) -> str:
    """A unique index name, deleted at the end of the test."""
    node.track(unique_name)
    return unique_name


# --- a server in front of the node ----------------------------------------------------


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]
    size: int
    answered: int


@dataclass
class Proxy:
    """Forwards to OpenSearch; answers with scripted faults instead when told to."""

    upstream: str
    http: aiohttp.ClientSession
    bulk_statuses: list[int] = field(default_factory=list)
    """Statuses to answer the next ``_bulk`` requests with, instead of forwarding them."""
    item_rejections: list[set[int]] = field(default_factory=list)
    """For the next forwarded ``_bulk`` answers: item positions to turn into 429s."""
    item_reject_rate: float = 0.0
    """Turn this share of every forwarded item into a 429 (seeded)."""
    root_status: int | None = None
    require_auth: str | None = None
    """Answer 401 to a request whose Authorization header is not this."""
    max_body: int | None = None
    """Answer 413 to a ``_bulk`` body larger than this."""
    seen: list[Seen] = field(default_factory=list)
    rng: random.Random = field(default_factory=lambda: random.Random(5))
    runner: web.AppRunner | None = None

    async def stop(self) -> None:
        """Stop listening and drop open connections (the cluster goes away)."""
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None

    @property
    def bulks(self) -> list[Seen]:
        return [s for s in self.seen if s.path.startswith("/_bulk")]

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        status, payload = await self._answer(request, body)
        self.seen.append(
            Seen(request.method, request.path_qs, dict(request.headers), len(body), status)
        )
        return web.Response(status=status, body=payload, content_type="application/json")

    async def _answer(self, request: web.Request, body: bytes) -> tuple[int, bytes]:
        bulk = request.path == "/_bulk"
        if self.require_auth is not None and request.headers.get("Authorization") != (
            self.require_auth
        ):
            return 401, b'{"error":"missing authentication credentials"}'
        if request.path == "/" and self.root_status is not None:
            return self.root_status, b'{"error":"scripted"}'
        if bulk and self.bulk_statuses:
            return self.bulk_statuses.pop(0), b'{"error":"scripted fault"}'
        if bulk and self.max_body is not None and len(body) > self.max_body:
            return 413, b""
        headers = {"Content-Type": request.headers.get("Content-Type", "application/json")}
        async with self.http.request(
            request.method, self.upstream + request.path_qs, data=body, headers=headers
        ) as response:
            status, payload = response.status, await response.read()
        if bulk and status == 200:
            payload = self._reject_items(payload)
        return status, payload

    def _reject_items(self, payload: bytes) -> bytes:
        positions = self.item_rejections.pop(0) if self.item_rejections else set()
        answer = orjson.loads(payload)
        for i, item in enumerate(answer["items"]):
            rate = self.item_reject_rate
            if i in positions or (rate and self.rng.random() < rate):
                (action,) = item
                item[action] = {
                    "status": 429,
                    "error": {"type": "es_rejected_execution_exception", "reason": "injected"},
                }
                answer["errors"] = True
        return orjson.dumps(answer)


StartProxy = Callable[..., Awaitable[tuple[Proxy, str]]]


@pytest.fixture
async def proxies(opensearch_url: str) -> AsyncIterator[StartProxy]:
    """Starts proxies in front of the node: ``proxy, url = await start(port=None)``."""
    proxies: list[Proxy] = []
    async with aiohttp.ClientSession() as http:

        async def start(
            port: int | None = None, tls: ssl.SSLContext | None = None
        ) -> tuple[Proxy, str]:
            proxy = Proxy(opensearch_url, http)
            app = web.Application(client_max_size=64 * 1024 * 1024)
            app.router.add_route("*", "/{tail:.*}", proxy.handle)
            runner = web.AppRunner(app, access_log=None)
            await runner.setup()
            proxy.runner = runner
            proxies.append(proxy)
            site = web.TCPSite(runner, "127.0.0.1", port or 0, ssl_context=tls)
            await site.start()
            bound = runner.addresses[0][1]
            return proxy, f"{'https' if tls else 'http'}://127.0.0.1:{bound}"

        try:
            yield start
        finally:
            for proxy in proxies:
                await proxy.stop()


def free_port() -> int:
    """A local port where nothing listens (yet)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def outputs(n: int, *, start: int = 0, prefix: str = "k") -> list[Output]:
    return [
        Output(f"{prefix}{i}", {"n": i, "text": f"doc {i}"}, 1_700_000_000_000 + i, f"{prefix}{i}")
        for i in range(start, start + n)
    ]


async def write_all(sink: ElasticsearchSink, outs: list[Output]) -> None:
    try:
        await sink.write(outs)
        await sink.flush()
    finally:
        await sink.close()


# --- the four actions ------------------------------------------------------------------


async def test_index_puts_exactly_the_documents_under_their_ids(
    node: Node, index: str, opensearch_url: str
) -> None:
    await write_all(ElasticsearchSink(index, url=opensearch_url), outputs(25))
    assert await node.docs(index) == {f"k{i}": {"n": i, "text": f"doc {i}"} for i in range(25)}


async def test_without_ids_the_cluster_picks_them(
    node: Node, index: str, opensearch_url: str
) -> None:
    outs = [Output(None, {"n": i}, 0, None) for i in range(7)]
    await write_all(ElasticsearchSink(index, url=opensearch_url, action="create"), outs)
    docs = await node.docs(index)
    assert sorted(d["n"] for d in docs.values()) == list(range(7))


async def test_create_puts_new_documents_and_skips_existing_ids(
    node: Node, index: str, opensearch_url: str
) -> None:
    await write_all(ElasticsearchSink(index, url=opensearch_url, action="create"), outputs(5))
    again = ElasticsearchSink(index, url=opensearch_url, action="create", dead_letter=MemorySink())
    changed = [Output("k0", {"n": 999}, 0, "k0"), *outputs(2, start=5)]
    await write_all(again, changed)
    assert again.stats.conflicts == 1 and again.stats.dead_letters == 0
    docs = await node.docs(index)
    assert docs == {f"k{i}": {"n": i, "text": f"doc {i}"} for i in range(7)}  # k0 kept


async def test_update_merges_fields_and_creates_missing_documents(
    node: Node, index: str, opensearch_url: str
) -> None:
    sink = ElasticsearchSink(index, url=opensearch_url, action=BulkAction.UPDATE)
    await sink.write([Output("x", {"a": 1}, 0, "x"), Output("y", {"a": 1}, 0, "y")])
    await sink.flush()
    await sink.write([Output("x", {"b": 2}, 0, "x"), Output("x", {"a": 3}, 0, "x")])
    await sink.close()
    assert await node.docs(index) == {"x": {"a": 3, "b": 2}, "y": {"a": 1}}


async def test_delete_removes_documents_and_missing_ones_are_fine(
    node: Node, index: str, opensearch_url: str
) -> None:
    await write_all(ElasticsearchSink(index, url=opensearch_url), outputs(5))
    dead = MemorySink()
    deleter = ElasticsearchSink(index, url=opensearch_url, action="delete", dead_letter=dead)
    await write_all(deleter, [Output(None, None, 0, i) for i in ("k1", "k3", "never-was")])
    assert dead.dead == [] and deleter.stats.acknowledged == 3
    assert set(await node.docs(index)) == {"k0", "k2", "k4"}


async def test_delete_from_an_index_that_does_not_exist_is_fine(
    node: Node, index: str, opensearch_url: str
) -> None:
    dead = MemorySink()
    deleter = ElasticsearchSink(index, url=opensearch_url, action="delete", dead_letter=dead)
    await write_all(deleter, [Output(None, None, 0, "k1")])
    assert dead.dead == [] and deleter.stats.acknowledged == 1


async def test_the_action_can_depend_on_the_output(
    node: Node, index: str, opensearch_url: str
) -> None:
    def action(o: Output) -> str:
        return "delete" if o.value.get("gone") else "update"

    outs = [
        Output("a", {"v": 1}, 0, "a"),
        Output("b", {"v": 1}, 0, "b"),
        Output("a", {"gone": True}, 0, "a"),
        Output("b", {"w": 2}, 0, "b"),
    ]
    await write_all(ElasticsearchSink(index, url=opensearch_url, action=action), outs)
    assert await node.docs(index) == {"b": {"v": 1, "w": 2}}


async def test_daily_indices_from_a_function_of_the_output(
    node: Node, unique_name: str, opensearch_url: str
) -> None:
    day_ms = 86_400_000
    node.track(f"{unique_name}-0", f"{unique_name}-1")
    outs = [Output(f"e{i}", {"i": i}, (i % 2) * day_ms + i, f"e{i}") for i in range(10)]

    def daily(o: Output) -> str:
        return f"{unique_name}-{o.timestamp // day_ms}"

    await write_all(ElasticsearchSink(daily, url=opensearch_url), outs)
    assert set(await node.docs(f"{unique_name}-0")) == {f"e{i}" for i in range(0, 10, 2)}
    assert set(await node.docs(f"{unique_name}-1")) == {f"e{i}" for i in range(1, 10, 2)}


async def test_refresh_makes_documents_searchable_at_flush(
    node: Node, index: str, opensearch_url: str
) -> None:
    await write_all(ElasticsearchSink(index, url=opensearch_url, refresh="wait_for"), outputs(9))
    assert await node.count(index, refresh=False) == 9


# --- replays -----------------------------------------------------------------------------


@pytest.mark.parametrize("action", ["index", "update"])
async def test_replays_change_nothing_but_the_version(
    node: Node, index: str, opensearch_url: str, action: str
) -> None:
    outs = outputs(30)
    await write_all(ElasticsearchSink(index, url=opensearch_url, action=action), outs)
    first = await node.docs(index)
    version = await node.version(index, "k7")
    for _ in range(2):
        await write_all(ElasticsearchSink(index, url=opensearch_url, action=action), outs)
    assert await node.docs(index) == first
    assert await node.count(index) == 30
    assert await node.version(index, "k7") >= version


async def test_replayed_deletes_and_creates_settle_silently(
    node: Node, index: str, opensearch_url: str
) -> None:
    dead = MemorySink()
    for _ in range(2):
        creator = ElasticsearchSink(index, url=opensearch_url, action="create", dead_letter=dead)
        await write_all(creator, outputs(4))
        deleter = ElasticsearchSink(index, url=opensearch_url, action="delete", dead_letter=dead)
        await write_all(deleter, [Output(None, None, 0, "k0")])
    assert dead.dead == []
    assert set(await node.docs(index)) == {"k1", "k2", "k3"}


# --- batching ----------------------------------------------------------------------------


async def test_batches_by_count(node: Node, index: str, opensearch_url: str) -> None:
    sink = ElasticsearchSink(index, url=opensearch_url, batch_size=10, linger=None, concurrency=1)
    await write_all(sink, outputs(95))
    assert sink.stats.requests == 10  # 9 full batches and the rest at flush
    assert sink.stats.acknowledged == 95
    assert await node.count(index) == 95


async def test_batches_by_bytes(node: Node, index: str, proxies: StartProxy) -> None:
    proxy, url = await proxies()
    big = [Output(f"b{i}", {"i": i, "pad": "x" * 300}, 0, f"b{i}") for i in range(40)]
    sink = ElasticsearchSink(index, url=url, batch_bytes=2_000, linger=None, concurrency=1)
    await write_all(sink, big)
    sizes = [s.size for s in proxy.bulks]
    assert len(sizes) == sink.stats.requests >= 7  # about 5 documents of ~350 bytes each
    assert all(size <= 2_000 for size in sizes)
    assert sum(sizes) == sink.stats.bytes_sent
    assert await node.count(index) == 40


async def test_a_partial_batch_goes_after_the_linger_time(
    node: Node, index: str, opensearch_url: str
) -> None:
    sink = ElasticsearchSink(index, url=opensearch_url, linger="200ms", refresh=True)
    try:
        await sink.write(outputs(3))
        deadline = time.monotonic() + 10
        while sink.stats.acknowledged < 3:  # no flush: the lane's timer sends it
            assert time.monotonic() < deadline, "the partial batch was never sent"
            await asyncio.sleep(0.05)
        assert sink.stats.requests <= 2  # the ids hash to at most two lanes
        assert await node.count(index, refresh=False) == 3
    finally:
        await sink.close()


async def test_concurrent_lanes_keep_each_documents_operations_in_order(
    node: Node, index: str, opensearch_url: str
) -> None:
    rng = random.Random(11)
    outs = [
        Output(f"d{i % 13}", {"step": i, "lane": rng.random()}, i, f"d{i % 13}")
        for i in range(2_000)
    ]
    sink = ElasticsearchSink(index, url=opensearch_url, batch_size=37, concurrency=4)
    for start in range(0, len(outs), 100):
        await sink.write(outs[start : start + 100])
    await sink.close()
    last = {o.id: o.value for o in outs}
    assert await node.docs(index) == last


# --- bad documents ---------------------------------------------------------------------


async def test_a_mapping_error_goes_to_the_dead_letter_sink_and_the_rest_lands(
    node: Node, index: str, opensearch_url: str
) -> None:
    await node.create_index(index, {"n": {"type": "integer"}})
    dead = MemorySink()
    sink = ElasticsearchSink(index, url=opensearch_url, dead_letter=dead)
    bad = Output("bad", {"n": "not a number"}, 1234, "bad")
    await write_all(sink, [*outputs(3), bad, *outputs(3, start=3)])
    assert len(dead.dead) == 1 and dead.flushes >= 1
    letter = dead.dead[0]
    assert letter.reason is DeadLetterReason.SINK
    assert "mapper_parsing_exception" in letter.error and "[n]" in letter.error
    assert f"index {index!r}, _id 'bad'" in letter.error
    assert (letter.topic, letter.key, letter.value, letter.timestamp) == (
        index,
        "bad",
        {"n": "not a number"},
        1234,
    )
    assert sink.stats.dead_letters == 1 and sink.stats.acknowledged == 6
    assert set(await node.docs(index)) == {f"k{i}" for i in range(6)}


async def test_rejected_documents_without_a_dead_letter_sink_are_logged_and_counted(
    node: Node, index: str, opensearch_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    await node.create_index(index, {"n": {"type": "integer"}})
    sink = ElasticsearchSink(index, url=opensearch_url)
    with caplog.at_level(logging.ERROR, logger="evtime.elasticsearch"):
        await write_all(sink, [Output("bad", {"n": "nan?"}, 0, "bad"), *outputs(2)])
    assert sink.stats.dead_letters == 1
    assert any("REJECTED" in r.message and "'bad'" in r.message for r in caplog.records)
    assert await node.count(index) == 2


async def test_a_value_that_is_no_document_is_dead_lettered_before_sending(
    node: Node, index: str, opensearch_url: str
) -> None:
    dead = MemorySink()
    sink = ElasticsearchSink(index, url=opensearch_url, dead_letter=dead)
    await write_all(sink, [Output("s", "just a string", 0, "s"), *outputs(2)])
    assert [d.key for d in dead.dead] == ["s"] and "must be a JSON object" in dead.dead[0].error
    assert await node.count(index) == 2


# --- product detection -----------------------------------------------------------------


async def test_detects_opensearch_2_19_and_logs_it(
    opensearch_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    sink = ElasticsearchSink("unused", url=opensearch_url)
    with caplog.at_level(logging.INFO, logger="evtime.elasticsearch"):
        info = await sink.cluster_info()
    await sink.close()
    assert info.product is Product.OPENSEARCH
    assert info.version.startswith("2.19.") and info.major == 2
    assert any("OpenSearch 2.19" in r.message for r in caplog.records)


# --- retries and backpressure ------------------------------------------------------------


@pytest.mark.parametrize("status", [429, 503])
async def test_whole_request_faults_are_retried_until_the_documents_land(
    node: Node, index: str, proxies: StartProxy, status: int
) -> None:
    proxy, url = await proxies()
    proxy.bulk_statuses = [status, status]
    sink = ElasticsearchSink(index, url=url, concurrency=1, **FAST)
    await write_all(sink, outputs(20))
    assert [s.answered for s in proxy.bulks] == [status, status, 200]
    assert sink.stats.retries == 2 and sink.stats.acknowledged == 20
    assert await node.count(index) == 20


async def test_items_rejected_for_now_go_again_after_the_earlier_operations(
    node: Node, index: str, proxies: StartProxy
) -> None:
    proxy, url = await proxies()
    # Item 0 (a: v=1) is "rejected" although the node applied it; item 2 (a: v=2) landed.
    # Sent again alone, v=1 would win: the sink resends v=1 and then v=2.
    proxy.item_rejections = [{0, 3}]
    outs = [
        Output("a", {"v": 1}, 0, "a"),
        Output("b", {"v": 1}, 0, "b"),
        Output("a", {"v": 2}, 0, "a"),
        Output("c", {"v": 1}, 0, "c"),
    ]
    sink = ElasticsearchSink(index, url=url, concurrency=1, **FAST)
    await write_all(sink, outs)
    assert sink.stats.item_retries == 3  # a v1, a v2, c
    assert len(proxy.bulks) == 2
    assert await node.docs(index) == {"a": {"v": 2}, "b": {"v": 1}, "c": {"v": 1}}


async def test_random_item_rejections_end_in_the_reference_index(
    node: Node, index: str, proxies: StartProxy
) -> None:
    proxy, url = await proxies()
    proxy.item_reject_rate = 0.2
    rng = random.Random(3)
    reference: dict[str, dict[str, Any]] = {}
    outs: list[Output] = []
    for step in range(600):
        doc_id = f"d{rng.randrange(15)}"
        op = rng.choice(["index", "update", "update", "delete"])
        value = {"op": op, f"f{rng.randrange(3)}": step}
        outs.append(Output(doc_id, value, step, doc_id))
        if op == "index":
            reference[doc_id] = dict(value)
        elif op == "update":
            reference[doc_id] = {**reference.get(doc_id, {}), **value}
        else:
            reference.pop(doc_id, None)

    sink = ElasticsearchSink(
        index,
        url=url,
        action=lambda o: o.value["op"],
        batch_size=23,
        concurrency=3,
        max_retry_time="60s",
        **FAST,
    )
    for start in range(0, len(outs), 50):
        await sink.write(outs[start : start + 50])
    await sink.close()
    assert sink.stats.item_retries > 0
    assert await node.docs(index) == reference


async def test_a_body_over_the_cluster_limit_is_split(
    node: Node, index: str, proxies: StartProxy
) -> None:
    proxy, url = await proxies()
    proxy.max_body = 1_000
    sink = ElasticsearchSink(index, url=url, concurrency=1, linger=None)
    await write_all(sink, outputs(30))
    answered = [s.answered for s in proxy.bulks]
    assert answered[0] == 413 and answered.count(200) >= 3
    assert await node.count(index) == 30


async def test_an_unreachable_cluster_applies_backpressure_and_loses_nothing(
    node: Node, index: str, proxies: StartProxy
) -> None:
    port = free_port()
    sink = ElasticsearchSink(
        index,
        url=f"http://127.0.0.1:{port}",
        batch_size=10,
        max_pending_docs=25,
        concurrency=1,
        **FAST,
    )
    try:
        # Unreachable from the start: even the product detection waits.
        writer = asyncio.create_task(sink.write(outputs(30)))
        await asyncio.sleep(0.5)
        assert not writer.done(), "write did not wait for the unreachable cluster"
        assert sink.pending == 26  # the bound (25) plus the one that tipped it
        proxy, _ = await proxies(port)  # the cluster comes up
        await asyncio.wait_for(writer, 30)
        await asyncio.wait_for(sink.flush(), 30)
        assert proxy.seen[0].path == "/"  # product detection first, then the bulks

        await proxy.stop()  # the cluster goes away mid-run
        writer = asyncio.create_task(sink.write(outputs(30, start=30)))
        await asyncio.sleep(1.0)
        assert not writer.done() and sink.pending == 26
        retries = sink.stats.retries
        assert retries > 2  # the bulk requests are being retried
        proxy, _ = await proxies(port)  # and comes back
        await asyncio.wait_for(writer, 30)
        await asyncio.wait_for(sink.flush(), 30)
    finally:
        await sink.close()
    assert sink.pending == 0 and sink.stats.acknowledged == 60
    assert await node.docs(index) == {f"k{i}": {"n": i, "text": f"doc {i}"} for i in range(60)}


async def test_flush_raises_after_max_retry_time_when_the_cluster_stays_away() -> None:
    sink = ElasticsearchSink(
        "never", url=f"http://127.0.0.1:{free_port()}", max_retry_time="1s", **FAST
    )
    await sink.write(outputs(3))
    started = time.monotonic()
    with pytest.raises(SinkError) as raised:
        await sink.flush()
    elapsed = time.monotonic() - started
    assert 0.9 <= elapsed < 5
    message = str(raised.value)
    assert "max_retry_time 1 s" in message and "3 documents are not acknowledged" in message
    assert "none was dropped" in message
    with pytest.raises(SinkError):
        await sink.flush()  # it stays failed: the worker must not commit past it
    await asyncio.wait_for(sink.close(), 5)


async def test_an_authentication_failure_is_not_retried(
    proxies: StartProxy,
) -> None:
    proxy, url = await proxies()
    proxy.root_status = 401
    sink = ElasticsearchSink("never", url=url, username="u", password="wrong", **FAST)
    await sink.write(outputs(1))
    with pytest.raises(SinkError, match=r"authentication failed \(401\)"):
        await asyncio.wait_for(sink.flush(), 10)
    await sink.close()
    assert len(proxy.seen) == 1


@pytest.mark.parametrize(
    ("auth", "header"),
    [
        ({"username": "elastic", "password": "pw"}, "Basic ZWxhc3RpYzpwdw=="),
        ({"api_key": ("id", "key")}, "ApiKey aWQ6a2V5"),
    ],
)
async def test_credentials_and_headers_go_with_every_request(
    node: Node,
    index: str,
    proxies: StartProxy,
    auth: dict[str, Any],
    header: str,
) -> None:
    proxy, url = await proxies()
    sink = ElasticsearchSink(index, url=url, headers={"X-Opaque-Id": "evtime-test"}, **auth)
    await write_all(sink, outputs(2))
    assert proxy.seen and all(s.headers.get("Authorization") == header for s in proxy.seen)
    assert all(s.headers.get("X-Opaque-Id") == "evtime-test" for s in proxy.seen)
    assert all(s.headers.get("Content-Type") == "application/x-ndjson" for s in proxy.bulks)
    assert await node.count(index) == 2


# --- TLS -----------------------------------------------------------------------------------


def self_signed(directory: Path, name: str) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and its key, made with the openssl command."""
    cert, key = directory / f"{name}.pem", directory / f"{name}-key.pem"
    command = [
        "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
        "-keyout", str(key), "-out", str(cert),
        "-subj", f"/CN={name}", "-addext", "subjectAltName=IP:127.0.0.1",
    ]  # fmt: skip
    try:
        subprocess.run(command, check=True, capture_output=True, timeout=60)
    except (OSError, subprocess.CalledProcessError) as exc:
        pytest.fail(f"the TLS tests need the openssl command to make certificates: {exc}")
    return cert, key


@pytest.fixture
def server_cert(tmp_path: Path) -> tuple[Path, ssl.SSLContext]:
    cert, key = self_signed(tmp_path, "server")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    return cert, context


async def test_https_with_the_clusters_ca_certificate(
    node: Node, index: str, proxies: StartProxy, server_cert: tuple[Path, ssl.SSLContext]
) -> None:
    ca, tls = server_cert
    _, url = await proxies(tls=tls)
    await write_all(ElasticsearchSink(index, url=url, ca_certs=ca), outputs(3))
    assert await node.count(index) == 3


async def test_https_without_verification_for_a_test_cluster(
    node: Node, index: str, proxies: StartProxy, server_cert: tuple[Path, ssl.SSLContext]
) -> None:
    _, tls = server_cert
    _, url = await proxies(tls=tls)
    await write_all(ElasticsearchSink(index, url=url, verify_certs=False), outputs(3))
    assert await node.count(index) == 3


async def test_an_unverifiable_certificate_fails_at_once_with_what_to_do(
    proxies: StartProxy, server_cert: tuple[Path, ssl.SSLContext]
) -> None:
    _, tls = server_cert
    proxy, url = await proxies(tls=tls)
    sink = ElasticsearchSink("never", url=url)  # the system CAs do not know this one
    await sink.write(outputs(1))
    with pytest.raises(SinkError, match=r"TLS verification of .* failed .* pass ca_certs="):
        await asyncio.wait_for(sink.flush(), 10)
    await sink.close()
    assert proxy.seen == []


async def test_mutual_tls_with_a_client_certificate(
    node: Node,
    index: str,
    proxies: StartProxy,
    server_cert: tuple[Path, ssl.SSLContext],
    tmp_path: Path,
) -> None:
    ca, tls = server_cert
    client_cert, client_key = self_signed(tmp_path, "client")
    tls.verify_mode = ssl.CERT_REQUIRED
    tls.load_verify_locations(client_cert)
    _, url = await proxies(tls=tls)
    sink = ElasticsearchSink(
        index, url=url, ca_certs=ca, client_cert=client_cert, client_key=client_key
    )
    await write_all(sink, outputs(2))
    assert await node.count(index) == 2


# --- in an app -----------------------------------------------------------------------------


async def test_an_apps_window_results_land_once_per_window_across_reruns(
    node: Node, index: str, opensearch_url: str, tmp_path: Path
) -> None:
    events: list[dict[str, Any]] = [{"user": f"u{i % 7}", "ts": i * 250} for i in range(400)]
    expected: dict[str, int] = {}
    for e in events:
        wid = f"{e['user']}@{e['ts'] // 10_000 * 10_000}-{e['ts'] // 10_000 * 10_000 + 10_000}"
        expected[wid] = expected.get(wid, 0) + 1

    for run in range(2):  # the second run, from empty state, replays every result
        dead = MemorySink()
        sink = ElasticsearchSink(index, url=opensearch_url, dead_letter=dead)
        app = App("es", state_dir=tmp_path / f"run{run}", dead_letter=dead)
        src = app.source(
            "clicks",
            MemorySource.of("clicks", events, partitions=3, key="user"),
            key="user",
            timestamp="ts",
        )
        declare = app.window(src, Tumbling("10s"), aggregate=Count(), sink=sink, name="per_user")
        declare(None)  # type: ignore[type-var]  # no result function: the default dict
        await app.run_async()  # its last checkpoint flushes the sink
        assert dead.dead == [] and sink.pending == 0
        await sink.close()  # the local runner leaves closing sinks to their owner
        docs = await node.docs(index)
        assert {doc_id: doc["value"] for doc_id, doc in docs.items()} == expected


# --- several nodes, TLS and authentication together -----------------------------------------


async def test_a_dead_node_first_in_the_list_fails_over_to_the_next(
    node: Node, index: str, opensearch_url: str
) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    sink = ElasticsearchSink(index, url=[dead, opensearch_url], batch_size=20)
    await write_all(sink, outputs(100))
    assert await node.count(index) == 100
    assert sink.stats.retries == 0  # the failover is part of a request, not a retry


@pytest.mark.parametrize(
    ("auth", "header"),
    [
        ({"username": "elastic", "password": "pw"}, "Basic ZWxhc3RpYzpwdw=="),
        ({"api_key": ("id", "key")}, "ApiKey aWQ6a2V5"),
        ({"bearer_token": "t0k3n"}, "Bearer t0k3n"),
    ],
)
async def test_tls_and_authentication_through_a_proxy_that_checks_them(
    node: Node,
    index: str,
    proxies: StartProxy,
    server_cert: tuple[Path, ssl.SSLContext],
    auth: dict[str, Any],
    header: str,
) -> None:
    ca, tls = server_cert
    proxy, url = await proxies(tls=tls)
    proxy.require_auth = header
    dead = f"https://127.0.0.1:{free_port()}"
    await write_all(ElasticsearchSink(index, url=f"{dead},{url}", ca_certs=ca, **auth), outputs(5))
    assert await node.count(index) == 5
    assert proxy.seen and all(s.answered == 200 for s in proxy.seen)
    assert all(s.headers.get("Authorization") == header for s in proxy.seen)


async def test_a_token_the_proxy_refuses_fails_at_once(
    proxies: StartProxy, server_cert: tuple[Path, ssl.SSLContext]
) -> None:
    ca, tls = server_cert
    proxy, url = await proxies(tls=tls)
    proxy.require_auth = "Bearer right"
    sink = ElasticsearchSink("evtime-never", url=url, ca_certs=ca, bearer_token="wrong")
    with pytest.raises(SinkError, match=r"authentication failed \(401\).*bearer_token"):
        await write_all(sink, outputs(1))
    assert len(proxy.seen) == 1
