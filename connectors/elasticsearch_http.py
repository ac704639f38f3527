"""The HTTP side of the Elasticsearch sink: how to reach the cluster, when to try again.

``Connection`` holds the base URL, credentials, TLS settings and timeout, and
one aiohttp session; ``Backoff`` times the retries and gives up with a clear
SinkError after the retry budget; ``http_error`` words the answers retrying
cannot fix.
"""

from __future__ import annotations

import asyncio
import base64
import random
import ssl
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from urllib.parse import SplitResult, unquote, urlsplit, urlunsplit

import aiohttp

from evtime.connectors.elasticsearch_bulk import backoff_delay
from evtime.errors import ConfigError, SinkError
from evtime.logs import Outage

RETRIABLE = (aiohttp.ClientError, TimeoutError, OSError)
"""Connection refused or reset, DNS failure, timeout: the cluster may be back soon."""


class Connection:
    """Where and how to reach the cluster; one aiohttp session, opened at the first request.

    ``url`` may carry a path prefix (a proxy) and basic-auth credentials, which are
    moved to the Authorization header (``self.url`` is safe to log). Several node URLs
    (a sequence, or one string with commas) are tried in turn: a request that cannot
    connect to one goes to the next at once, and the node that answered is kept for the
    next requests. ``cloud_id`` (Elastic Cloud) stands for the url. Authentication: basic
    (``username``, ``password``), ``api_key`` (the encoded key, or ``(id, key)``) or
    ``bearer_token``, one of them. TLS: ``ca_certs`` (a PEM file), ``verify_certs``, and
    ``client_cert`` / ``client_key`` for mutual TLS. Bad settings raise ConfigError.
    """

    def __init__(
        self,
        url: str | Sequence[str] | None = None,
        *,
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
        timeout_s: float = 60.0,
        pool_size: int = 3,
    ) -> None:
        if cloud_id is not None:
            if url:
                raise ConfigError("give the cluster's url or its cloud_id, not both")
            url = cloud_url(cloud_id)
        nodes = [_parse_url(u) for u in _url_list(url)]
        given = [n for n in nodes if n.username is not None]
        if given:
            if username is not None:
                raise ConfigError("give the user in the url or as username=, not both")
            username, password = unquote(given[0].username or ""), unquote(given[0].password or "")
        if len({n.scheme for n in nodes}) > 1:
            raise ConfigError("the node URLs mix http:// and https://: use one scheme")
        self.urls = [
            urlunsplit((n.scheme, n.netloc.rpartition("@")[2], n.path.rstrip("/"), "", ""))
            for n in nodes
        ]
        self._node = 0  # the node requests go to, the last that answered
        if username is not None and password is None:
            raise ConfigError("username= needs password=")
        schemes = [k for k, v in (("basic auth (username, password)", username),
                                  ("api_key", api_key), ("bearer_token", bearer_token)) if v]
        if len(schemes) > 1:
            several = "both" if len(schemes) == 2 else "several"
            raise ConfigError(f"use {' or '.join(schemes)}, not {several}")
        self.headers = dict(headers or {})
        if username is not None:
            basic = base64.b64encode(f"{username}:{password or ''}".encode()).decode()
            self.headers["Authorization"] = f"Basic {basic}"
        if api_key is not None:
            self.headers["Authorization"] = f"ApiKey {_encode_api_key(api_key)}"
        if bearer_token is not None:
            self.headers["Authorization"] = f"Bearer {bearer_token}"
        self.ssl = _ssl_setting(nodes[0], ca_certs, verify_certs, client_cert, client_key)
        self.timeout_s = timeout_s
        self.pool_size = pool_size
        self._http: aiohttp.ClientSession | None = None

    @property
    def url(self) -> str:
        """The node requests go to now (the first until one fails), without credentials."""
        return self.urls[self._node]

    async def request(
        self,
        method: str,
        path: str,
        *,
        body: bytes | None = None,
        params: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> tuple[int, bytes]:
        """The status and body of ``method url+path``, from the first node (starting at
        the current one) that can be connected to.

        When no node can be connected to, the last error propagates (see RETRIABLE), as
        do timeouts; a certificate the settings cannot verify raises SinkError, since
        retrying cannot fix it.
        """
        if self._http is None:
            self._http = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(ssl=self.ssl, limit=self.pool_size),
                timeout=aiohttp.ClientTimeout(total=self.timeout_s),
                headers=self.headers,
            )
        first = self._node
        for turn in range(len(self.urls)):
            node = (first + turn) % len(self.urls)
            url = self.urls[node]
            try:
                async with self._http.request(
                    method, url + path, data=body, params=params, headers=headers
                ) as response:
                    result = response.status, await response.read()
            except aiohttp.ClientConnectorCertificateError as exc:
                raise SinkError(
                    f"TLS verification of {url} failed ({exc}): pass ca_certs= the cluster's "
                    "CA certificate, or verify_certs=False for a test cluster"
                ) from exc
            except aiohttp.ClientConnectorError:
                if turn == len(self.urls) - 1:
                    raise
                continue  # this node cannot be reached: the next one, at once
            self._node = node
            return result
        raise AssertionError("unreachable: the last node's error is raised")

    async def close(self) -> None:
        if self._http is not None:
            await self._http.close()
            self._http = None


class Backoff:
    """Waits between the attempts of one request; raises SinkError once ``budget`` seconds
    passed since the first failure without progress (None: never gives up).

    Failures are an outage of ``target`` (evtime/logs.py): one warning when the first
    attempt fails, one when an attempt gets through again (:meth:`reset`,
    :meth:`succeeded`), each retry in between at DEBUG."""

    def __init__(
        self,
        what: str,
        *,
        first: float,
        cap: float,
        budget: float | None,
        rng: random.Random,
        target: str = "Elasticsearch",
    ) -> None:
        self._what = what
        self._target = target
        self._outage: Outage | None = None  # looked up at the first failure
        self._first = first
        self._cap = cap
        self._budget = budget
        self._rng = rng
        self._attempt = 0
        self._since: float | None = None

    def reset(self) -> None:
        """Progress was made: the next failure starts a new budget."""
        self._attempt = 0
        self._since = None
        self.succeeded()

    def succeeded(self) -> None:
        """The request got through: an outage this backoff saw is over."""
        if self._outage is not None:
            self._outage.recovered()
            self._outage = None

    async def wait(self, failure: str, pending: int) -> None:
        """Log ``failure`` and sleep before the next attempt, or raise when out of budget."""
        now = time.monotonic()
        if self._since is None:
            self._since = now
        waited = now - self._since
        budget = self._budget
        if budget is not None and waited >= budget:
            raise SinkError(
                f"{self._what} still failing after {waited:.1f} s of retries "
                f"(max_retry_time {budget:g} s): {failure}. {pending} documents are not "
                "acknowledged; none was dropped: their input offsets are not committed, so "
                "once the cluster is reachable a restarted worker writes them again from "
                "its last checkpoint (raise max_retry_time to wait longer)"
            )
        delay = backoff_delay(self._attempt, self._first, self._cap, self._rng)
        if budget is not None:
            delay = min(delay, self._since + budget - now)
        self._attempt += 1
        if self._outage is None:
            self._outage = Outage.of(self._target)
        self._outage.failed(
            failure, f"{self._what}, retry {self._attempt} in {delay:.2f} s, {pending} "
            "documents waiting"
        )
        await asyncio.sleep(delay)


def snippet(payload: bytes, limit: int = 300) -> str:
    """The start of a response body, for messages."""
    text = payload.decode(errors="replace").strip()
    return text if len(text) <= limit else text[:limit] + "..."


def describe_exception(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def http_error(what: str, status: int, payload: bytes) -> SinkError:
    """The error for an answer that retrying cannot fix (401, 403, 400, 404, ...)."""
    if status == 401:
        return SinkError(
            f"{what}: authentication failed (401): check username / password, api_key or "
            "bearer_token"
        )
    if status == 403:
        return SinkError(
            f"{what}: forbidden (403), the credentials may not write there: {snippet(payload)}"
        )
    return SinkError(
        f"{what} answered HTTP {status}, which retrying cannot fix: {snippet(payload)}; "
        "check the sink's url (the cluster's base URL) and settings"
    )


def _url_list(url: str | Sequence[str] | None) -> list[str]:
    urls = [u.strip() for u in url.split(",")] if isinstance(url, str) else list(url or [])
    urls = [u for u in urls if u]
    if not urls:
        raise ConfigError("no url: give the cluster's url (or several), or its cloud_id")
    return urls


def cloud_url(cloud_id: str) -> str:
    """The Elasticsearch URL of an Elastic Cloud deployment's id (``name:base64``, the
    base64 of ``host[:port]$es-uuid$kibana-uuid``)."""
    _, _, encoded = cloud_id.rpartition(":")
    try:
        decoded = base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=True).decode()
        host, es_uuid = decoded.split("$")[:2]
    except (ValueError, UnicodeDecodeError):
        raise ConfigError(
            f"cloud_id {cloud_id!r} is not an Elastic Cloud id (name:base64 of "
            "host$es-uuid$kibana-uuid): copy it from the deployment's page"
        ) from None
    if not host or not es_uuid:
        raise ConfigError(f"cloud_id {cloud_id!r} names no host or no Elasticsearch id")
    domain, _, port = host.partition(":")
    return f"https://{es_uuid}.{domain}:{port or '443'}"


def _parse_url(url: str) -> SplitResult:
    try:
        parsed = urlsplit(url)
        _ = parsed.port  # raises ValueError for a bad port
    except (ValueError, TypeError, AttributeError) as exc:
        raise ConfigError(f"url {url!r} is not a URL ({exc}): use http(s)://host:port") from None
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise ConfigError(f"url {url!r}: use http://host:port or https://host:port")
    if parsed.query or parsed.fragment:
        raise ConfigError(f"url {url!r}: give the base URL, without query or fragment")
    return parsed


def _encode_api_key(api_key: str | tuple[str, str]) -> str:
    if isinstance(api_key, tuple):
        key_id, key = api_key
        return base64.b64encode(f"{key_id}:{key}".encode()).decode()
    if not api_key:
        raise ConfigError("api_key is empty")
    return api_key


def _ssl_setting(
    url: SplitResult,
    ca_certs: str | Path | None,
    verify_certs: bool,
    client_cert: str | Path | None,
    client_key: str | Path | None,
) -> ssl.SSLContext | bool:
    if url.scheme != "https":
        if ca_certs or client_cert:
            raise ConfigError(
                f"ca_certs / client_cert need an https:// url, not {url.scheme}://"
            )
        return True
    if client_key is not None and client_cert is None:
        raise ConfigError("client_key= needs client_cert=")
    if not verify_certs and ca_certs is None and client_cert is None:
        return False
    try:
        context = ssl.create_default_context(cafile=str(ca_certs) if ca_certs else None)
        if client_cert is not None:
            context.load_cert_chain(str(client_cert), str(client_key) if client_key else None)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(
            f"cannot load the TLS files (ca_certs={ca_certs}, client_cert={client_cert}): {exc}"
        ) from None
    if not verify_certs:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context
