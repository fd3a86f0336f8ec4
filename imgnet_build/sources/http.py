"""What the API sources share: a polite JSON client and the per-category search loop.

Polite means: a descriptive User-Agent (`IMGNET_USER_AGENT` or the `user_agent` setting),
one request at a time with at least `min_interval` seconds between requests, a connect
and a read timeout, and on 429/5xx a wait of `Retry-After` seconds (or exponential
backoff) before a bounded number of retries.

Unreachable fails fast: a connection that cannot be made (refused, no route, DNS, no
answer within `connect_timeout`) is tried `connect_retries` more times, and when the
server has never answered in this run, or has stopped answering for
`unreachable_after` queries in a row, `SourceUnreachable` ("cannot reach HOST") stops
the gather instead of failing every query of every category one by one. A wait longer than `max_wait` is not slept through: the query fails at
once and so does every request until that time has passed, so nobody hammers a server
that asked us to stay away.

A search source subclasses `SearchSource` and writes `search(text, language)`, a generator
of `Hit`s in the API's order; `propose` does the rest (queries best first, URLs deduplicated
within a category, 1-based rank, stop at `per_category`, one failed query -> one error
`Proposal` and on to the next query).
"""

from __future__ import annotations

import dataclasses
import random
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any
from urllib.parse import urlsplit

import requests

from imgnet_build.errors import SourceUnreachable
from imgnet_build.netguard import USER_AGENT, retry_after
from imgnet_build.sources import CategoryQueries, Proposal

__all__ = ["ApiError", "HttpSettings", "PoliteClient", "Hit", "SearchSource", "DEFAULT_USER_AGENT"]

DEFAULT_USER_AGENT = USER_AGENT


class ApiError(Exception):
    """One API request failed (after its retries); the source records it and goes on."""


class _NoConnection(ApiError):
    """No connection could be made to the server (after the connect retries)."""


@dataclasses.dataclass(frozen=True)
class HttpSettings:
    """How an API source talks to its server; every field can be given as a source setting."""

    base_url: str
    user_agent: str = DEFAULT_USER_AGENT
    timeout: float = 30.0  # seconds to wait for an answer once connected
    connect_timeout: float = 5.0  # seconds to make the connection
    retries: int = 3  # further tries after a 429, 5xx or an error on an open connection
    connect_retries: int = 1  # further tries when no connection can be made
    unreachable_after: int = 3  # queries in a row without a connection that stop the gather
    max_wait: float = 60.0  # the longest Retry-After or backoff we sleep through
    min_interval: float = 0.0  # seconds between the starts of two requests

    @classmethod
    def pick(cls, settings: Mapping[str, Any], **defaults: Any) -> HttpSettings:
        """The fields found in `settings` (others ignored), else `defaults`, else the class defaults."""
        names = {field.name for field in dataclasses.fields(cls)}
        chosen = {**defaults, **{k: v for k, v in settings.items() if k in names and v is not None}}
        return cls(**chosen)


class PoliteClient:
    """GET JSON from one API, politely; `get_json` returns the decoded body or raises ApiError."""

    def __init__(self, settings: HttpSettings, session: requests.Session | None = None):
        self.settings = settings
        self.session = session or requests.Session()
        self._last_start = 0.0
        self._blocked_until = 0.0
        self._one_at_a_time = threading.Lock()
        self.answered = False  # the server answered at least once in this run
        self._unconnected = 0  # requests in a row that could not connect

    def get_json(self, path: str, params: Mapping[str, Any], headers: Mapping[str, str] | None = None,
                 retry_if: Callable[[Any], str | None] | None = None) -> Any:
        """GET base_url + path and decode JSON; 429, 5xx and network errors are retried.

        `retry_if(body)` may name a reason to retry a 200 answer too (MediaWiki's maxlag).
        SourceUnreachable when the server cannot be reached at all (see the module's doc).
        """
        with self._one_at_a_time:
            try:
                body = self._get_json(path, params, headers, retry_if)
            except _NoConnection as exc:
                self._unconnected += 1
                if not self.answered or self._unconnected >= self.settings.unreachable_after:
                    raise SourceUnreachable(f"cannot reach {self.host}: {exc}; check the network (or the "
                                            "source's address) and run the same command again") from None
                raise
            self.answered, self._unconnected = True, 0
            return body

    @property
    def host(self) -> str:
        parts = urlsplit(self.settings.base_url)
        return parts.netloc or self.settings.base_url

    def _get_json(self, path: str, params: Mapping[str, Any], headers: Mapping[str, str] | None,
                  retry_if: Callable[[Any], str | None] | None) -> Any:
        url = self.settings.base_url.rstrip("/") + "/" + path.lstrip("/") if path else self.settings.base_url
        headers = {"User-Agent": self.settings.user_agent, **(headers or {})}
        timeout = (self.settings.connect_timeout, self.settings.timeout)
        attempt = connect_failures = 0
        reason: str | None = None
        while True:
            self._pace()
            wait = None
            try:
                response = self.session.get(url, params=params, headers=headers, timeout=timeout)
            except requests.ConnectionError as exc:  # ConnectTimeout included
                if _no_connection(exc):
                    if connect_failures >= self.settings.connect_retries:
                        raise _NoConnection(f"{_connection_reason(exc)} after {connect_failures + 1} tries") from None
                    connect_failures += 1
                    self.wait(self._backoff(connect_failures - 1), "no connection")
                    continue
                reason = f"{type(exc).__name__}: {exc}"
            except requests.RequestException as exc:
                reason = f"{type(exc).__name__}: {exc}"
            else:
                status = response.status_code
                if status < 400:
                    body = self._decode(response)
                    retry = retry_if(body) if retry_if else None
                    if retry is None:
                        return body
                    reason = retry
                elif status == 429 or status >= 500:
                    reason = f"HTTP {status}"
                else:
                    raise ApiError(f"HTTP {status}: {_excerpt(response.text)}")
                wait = retry_after(response.headers.get("Retry-After"))
            if attempt == self.settings.retries:
                if wait is not None and wait > self.settings.max_wait:
                    self._blocked_until = time.monotonic() + wait
                break
            self.wait(self._backoff(attempt) if wait is None else wait, reason)
            attempt += 1
        raise ApiError(f"{reason} after {self.settings.retries + 1} tries")

    def wait(self, seconds: float, reason: str) -> None:
        """Sleep `seconds` before the next request, or fail now if that is longer than max_wait."""
        if seconds > self.settings.max_wait:
            self._blocked_until = time.monotonic() + seconds
            raise ApiError(f"{reason}: asked to wait {seconds:.0f} s, more than max_wait {self.settings.max_wait:.0f} s")
        time.sleep(seconds)

    def _pace(self) -> None:
        now = time.monotonic()
        if now < self._blocked_until:
            raise ApiError(f"rate limited for {self._blocked_until - now:.0f} s more")
        gap = self._last_start + self.settings.min_interval - now
        if gap > 0:
            time.sleep(gap)
        self._last_start = time.monotonic()

    def _backoff(self, attempt: int) -> float:
        return min(self.settings.max_wait, 2.0 ** attempt) * random.uniform(0.5, 1.0)

    @staticmethod
    def _decode(response: requests.Response) -> Any:
        try:
            return response.json()
        except ValueError:
            raise ApiError(f"not JSON ({response.headers.get('Content-Type', 'no content type')}): "
                           f"{_excerpt(response.text)}") from None


def _no_connection(exc: requests.RequestException) -> bool:
    """True when no connection was made (refused, unreachable, DNS, connect timeout), not a
    failure on a connection that worked (reset mid-answer, read timeout)."""
    if isinstance(exc, requests.ConnectTimeout):
        return True
    text = repr(exc)
    return any(marker in text for marker in ("NewConnectionError", "NameResolutionError", "Failed to resolve",
                                             "ConnectTimeoutError", "Connection refused", "No route to host",
                                             "Network is unreachable"))


def _connection_reason(exc: requests.RequestException) -> str:
    if isinstance(exc, requests.ConnectTimeout):
        return "no answer to the connection (connect timeout)"
    text = repr(exc)
    for marker, reason in (("Connection refused", "connection refused"), ("No route to host", "no route to host"),
                           ("Network is unreachable", "network is unreachable"),
                           ("NameResolutionError", "the name does not resolve"),
                           ("Failed to resolve", "the name does not resolve")):
        if marker in text:
            return reason
    return "no connection"


def _excerpt(text: str, limit: int = 200) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit] + "…"


@dataclasses.dataclass(frozen=True)
class Hit:
    """One search result, in the API's order."""

    url: str
    license: str | None = None
    attribution: str | None = None
    source_sha1: str | None = None


class SearchSource:
    """Base of the API sources: `propose` over `search`; subclasses set `client` and write `search`."""

    name = "search"
    local = False
    searches = True
    client: PoliteClient

    def search(self, text: str, language: str) -> Iterator[Hit]:
        raise NotImplementedError

    def propose(self, categories: Iterable[CategoryQueries], per_category: int) -> Iterator[Proposal]:
        """Up to `per_category` distinct URLs per category (less those it has); error Proposals (url "")
        for failed queries; SourceUnreachable when the API cannot be reached."""
        for category in categories:
            seen: set[str] = set()
            wanted = per_category - category.have  # a rerun counts what earlier runs proposed
            for query_id, text, language in category.queries:
                if len(seen) >= wanted:
                    break
                try:
                    for hit in self.search(text, language):
                        if hit.url in seen:
                            continue
                        seen.add(hit.url)
                        yield Proposal(wnid=category.wnid, url=hit.url, rank=category.have + len(seen),
                                       license=hit.license, attribution=hit.attribution,
                                       source_sha1=hit.source_sha1, query_id=query_id)
                        if len(seen) >= wanted:
                            break
                except ApiError as exc:
                    yield Proposal(wnid=category.wnid, url="", query_id=query_id,
                                   error=f"{self.name} search {text!r} failed: {exc}")
