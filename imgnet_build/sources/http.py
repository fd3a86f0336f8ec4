"""What the API sources share: a polite JSON client and the per-category search loop.

Polite means: a descriptive User-Agent (`IMGNET_USER_AGENT` or the `user_agent` setting),
one request at a time with at least `min_interval` seconds between requests, a timeout,
and on 429/5xx a wait of `Retry-After` seconds (or exponential backoff) before a bounded
number of retries. A wait longer than `max_wait` is not slept through: the query fails at
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

import requests

from imgnet_build.netguard import USER_AGENT, retry_after
from imgnet_build.sources import CategoryQueries, Proposal

__all__ = ["ApiError", "HttpSettings", "PoliteClient", "Hit", "SearchSource", "DEFAULT_USER_AGENT"]

DEFAULT_USER_AGENT = USER_AGENT


class ApiError(Exception):
    """One API request failed (after its retries); the source records it and goes on."""


@dataclasses.dataclass(frozen=True)
class HttpSettings:
    """How an API source talks to its server; every field can be given as a source setting."""

    base_url: str
    user_agent: str = DEFAULT_USER_AGENT
    timeout: float = 30.0  # seconds, connect and read
    retries: int = 3  # further tries after a 429, 5xx or network error
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

    def get_json(self, path: str, params: Mapping[str, Any], headers: Mapping[str, str] | None = None,
                 retry_if: Callable[[Any], str | None] | None = None) -> Any:
        """GET base_url + path and decode JSON; 429, 5xx and network errors are retried.

        `retry_if(body)` may name a reason to retry a 200 answer too (MediaWiki's maxlag).
        """
        with self._one_at_a_time:
            return self._get_json(path, params, headers, retry_if)

    def _get_json(self, path: str, params: Mapping[str, Any], headers: Mapping[str, str] | None,
                  retry_if: Callable[[Any], str | None] | None) -> Any:
        url = self.settings.base_url.rstrip("/") + "/" + path.lstrip("/") if path else self.settings.base_url
        headers = {"User-Agent": self.settings.user_agent, **(headers or {})}
        for attempt in range(self.settings.retries + 1):
            self._pace()
            wait = None
            try:
                response = self.session.get(url, params=params, headers=headers, timeout=self.settings.timeout)
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
        """Up to `per_category` distinct URLs per category; error Proposals (url "") for failed queries."""
        for category in categories:
            seen: set[str] = set()
            for query_id, text, language in category.queries:
                if len(seen) >= per_category:
                    break
                try:
                    for hit in self.search(text, language):
                        if hit.url in seen:
                            continue
                        seen.add(hit.url)
                        yield Proposal(wnid=category.wnid, url=hit.url, rank=len(seen), license=hit.license,
                                       attribution=hit.attribution, source_sha1=hit.source_sha1, query_id=query_id)
                        if len(seen) >= per_category:
                            break
                except ApiError as exc:
                    yield Proposal(wnid=category.wnid, url="", query_id=query_id,
                                   error=f"{self.name} search {text!r} failed: {exc}")
