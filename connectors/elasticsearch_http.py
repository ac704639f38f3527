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
from collections.abc import Mapping
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
    moved to the Authorization header (``self.url`` is safe to log). Basic auth
    (``username``, ``password``) and ``api_key`` (the encoded key, or ``(id, key)``)
    exclude each other. TLS: ``ca_certs`` (a PEM file), ``verify_certs``, and
    ``client_cert`` / ``client_key`` for mutual TLS. Bad settings raise ConfigError.
    """

    def __init__(
        self,
        url: str,
        *,
        username: str | None = None,
        password: str | None = None,
        api_key: str | tuple[str, str] | None = None,
        ca_certs: str | Path | None = None,
        verify_certs: bool = True,
        client_cert: str | Path | None = None,
        client_key: str | Path | None = None,
        headers: Mapping[str, str] | None = None,
        timeout_s: float = 60.0,
        pool_size: int = 3,
    ) -> None:
        parsed = _parse_url(url)
        if parsed.username is not None:
            if username is not None:
                raise ConfigError("give the user in the url or as username=, not both")
            username, password = unquote(parsed.username), unquote(parsed.password or "")
        host = parsed.netloc.rpartition("@")[2]
        self.url = urlunsplit((parsed.scheme, host, parsed.path.rstrip("/"), "", ""))
        if username is not None and password is None:
            raise ConfigError("username= needs password=")
        if username is not None and api_key is not None:
            raise ConfigError("use basic auth (username, password) or api_key, not both")
        self.headers = dict(headers or {})
        if username is not None:
            basic = base64.b64encode(f"{username}:{password or ''}".encode()).decode()
            self.headers["Authorization"] = f"Basic {basic}"
        if api_key is not None:
            self.headers["Authorization"] = f"ApiKey {_encode_api_key(api_key)}"
        self.ssl = _ssl_setting(parsed, ca_certs, verify_certs, client_cert, client_key)
        self.timeout_s = timeout_s
        self.pool_size = pool_size
        self._http: aiohttp.ClientSession | None = None

    async def request(
        self,
        method: str,
        path: str,
        *,
        body: bytes | None = None,
        params: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> tuple[int, bytes]:
        """The status and body of ``method url+path``.

        Connection errors and timeouts propagate (see RETRIABLE); a certificate the
        settings cannot verify raises SinkError, since retrying cannot fix it.
        """
        if self._http is None:
            self._http = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(ssl=self.ssl, limit=self.pool_size),
                timeout=aiohttp.ClientTimeout(total=self.timeout_s),
                headers=self.headers,
            )
        try:
            async with self._http.request(
                method, self.url + path, data=body, params=params, headers=headers
            ) as response:
                return response.status, await response.read()
        except aiohttp.ClientConnectorCertificateError as exc:
            raise SinkError(
                f"TLS verification of {self.url} failed ({exc}): pass ca_certs= the cluster's "
                "CA certificate, or verify_certs=False for a test cluster"
            ) from exc

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
            f"{what}: authentication failed (401): check username / password or api_key"
        )
    if status == 403:
        return SinkError(
            f"{what}: forbidden (403), the credentials may not write there: {snippet(payload)}"
        )
    return SinkError(
        f"{what} answered HTTP {status}, which retrying cannot fix: {snippet(payload)}; "
        "check the sink's url (the cluster's base URL) and settings"
    )


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
