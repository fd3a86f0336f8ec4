"""One URL's bytes, safely and politely: the HTTP half of the downloader.

`Downloader(settings).get(url)` returns the body and the number of attempts, or raises
`ItemFailed` with the status (`failed`, or `skipped` for an opt-out) and a short reason.
Redirects are followed by hand so that each hop is checked again (scheme, SSRF guard,
loops, at most `max_redirects`); 429, 5xx and network errors are retried with exponential
backoff and jitter, honouring Retry-After; the body is streamed under the size cap and
the item's deadline (see `imgnet_build.netguard`).
"""

from __future__ import annotations

import random
import re
import socket
import ssl
import urllib.parse
from typing import TYPE_CHECKING

import requests
from urllib3.exceptions import ConnectTimeoutError, NameResolutionError, NewConnectionError, ReadTimeoutError
from urllib3.exceptions import SSLError as Urllib3SSLError

from imgnet_build import http1
from imgnet_build.errors import ItemError
from imgnet_build.netguard import (
    USER_AGENT,
    Abandoned,
    AddressRefused,
    HostLimiter,
    LookupTimedOut,
    abandon_requests,
    literal_refusal,
    retry_after,
    time_left,
)
from imgnet_build.store import CandidateStatus

if TYPE_CHECKING:
    from imgnet_build.fetch import FetchSettings

__all__ = ["Downloader", "ItemFailed", "USER_AGENT", "OPT_OUT", "check_url"]

FAILED, SKIPPED = CandidateStatus.FAILED, CandidateStatus.SKIPPED
OPT_OUT = frozenset({"noai", "noimageai", "noindex", "noimageindex"})


class ItemFailed(ItemError):
    "One item's final outcome other than ok; caught at the per-item boundary and recorded"

    def __init__(self, status: str, reason: str, attempts: int = 1):
        super().__init__(reason)
        self.status, self.reason, self.attempts = status, reason, attempts


def _abandoned(attempts: int = 1) -> ItemFailed:
    """The outcome of an item given up because the run is stopping (Ctrl-C)."""
    return ItemFailed(FAILED, Abandoned.REASON, attempts)


class _Retryable(ItemError):
    "A failure worth another attempt (429, 5xx, network error)"

    def __init__(self, reason: str, retry_after: float | None = None):
        super().__init__(reason)
        self.reason, self.retry_after = reason, retry_after


_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_SPACE = re.compile(r"\s")  # what str.isspace() calls white space


# -- one item over HTTP -------------------------------------------------------------------

def check_url(url: str) -> urllib.parse.SplitResult:
    try:
        parts = urllib.parse.urlsplit(url.strip())
        parts.port  # noqa: B018  (raises on a bad port)
    except ValueError as exc:
        raise ItemFailed(FAILED, f"invalid URL: {exc}") from exc
    if not parts.scheme:
        raise ItemFailed(FAILED, "invalid URL: no scheme (http:// or https://)")
    if parts.scheme not in ("http", "https"):
        raise ItemFailed(FAILED, f"refused URL scheme {parts.scheme!r} (only http and https are fetched)")
    if not parts.hostname or _SPACE.search(url.strip()):
        raise ItemFailed(FAILED, "invalid URL: no host name" if not parts.hostname else "invalid URL: contains spaces")
    return parts


def _opted_out(response: http1.Response) -> str | None:
    for part in response.headers.get("X-Robots-Tag", "").split(","):
        agent, _, directive = part.rpartition(":")
        agent, directive = agent.strip().lower(), directive.strip().lower()
        if directive in OPT_OUT and agent in ("", "imgnet-build", "*"):
            return directive
    return None


def _network_reason(exc: BaseException) -> str:
    """A short reason for a network error, from the most telling error in its chain."""
    chain: list[BaseException] = []
    todo: list[BaseException | None] = [exc]
    while todo:
        error = todo.pop(0)
        if isinstance(error, BaseException) and all(error is not seen for seen in chain):
            chain.append(error)
            todo += [error.__cause__, error.__context__, getattr(error, "reason", None)]
    kinds: list[tuple[str, type[BaseException] | tuple[type[BaseException], ...]]] = [
             ("connection refused", ConnectionRefusedError),
             ("host name lookup timed out", LookupTimedOut),  # a gaierror: before "not found"
             ("host name not found", (NameResolutionError, socket.gaierror)),
             ("TLS error", ssl.SSLError),  # the ssl module's own error says what went wrong
             ("TLS error", (requests.exceptions.SSLError, Urllib3SSLError)),
             ("connect timed out", (requests.ConnectTimeout, http1.ConnectTimedOut)),
             ("read timed out", (requests.ReadTimeout, ReadTimeoutError, TimeoutError))]
    for reason, types in kinds:
        found = next((error for error in chain if isinstance(error, types)), None)
        if found is not None:
            return f"TLS error: {str(found)[:120]}" if reason == "TLS error" else reason
    if any(isinstance(error, ConnectTimeoutError) and not isinstance(error, NewConnectionError) for error in chain):
        return "connect timed out"
    return f"network error: {type(exc).__name__}: {str(exc)[:120]}"


class Downloader:
    """Fetches one URL's bytes under the item's deadline; keep-alive connections per thread (`imgnet_build.http1`)."""

    def __init__(self, settings: FetchSettings, hosts: HostLimiter | None = None):
        """`hosts` is the politeness limiter to use (default: a new one from the settings, for this downloader)."""
        self.settings = settings
        self.hosts = hosts or HostLimiter(settings.per_host, settings.host_rate)
        self.stopping = self.hosts.stopping  # set by `abandon`: stop waiting, give up what is in flight
        self._headers = {"User-Agent": settings.user_agent, "Accept": "image/*,*/*;q=0.8"}

    def _send(self, parts: urllib.parse.SplitResult) -> http1.Response:
        """One GET, redirects not followed, body not read yet, on this thread's keep-alive connections (kept
        across downloaders, so a Dask worker keeps them from one shard to the next). `http1` rather than
        urllib3: a quarter of the CPU per GET (162-248 -> 43-62 us), the same SSRF guard (see its docstring)."""
        settings = self.settings
        return http1.get(parts, self._headers, settings.allow_loopback, settings.connect_timeout,
                         settings.read_timeout)

    def get(self, url: str) -> tuple[bytes, int]:
        """The body of `url` and the number of attempts it took; raises ItemFailed."""
        settings = self.settings
        for attempt in range(1, settings.retries + 2):
            try:
                return self._get_once(url), attempt
            except ItemFailed as exc:
                exc.attempts = attempt
                raise
            except _Retryable as exc:
                if exc.retry_after is not None and exc.retry_after > settings.max_retry_after:
                    reason = (f"{exc.reason}; Retry-After {exc.retry_after:.0f} s is longer "
                              f"than the {settings.max_retry_after:.0f} s we wait")
                elif attempt > settings.retries:
                    reason = f"{exc.reason} (after {attempt} attempts)"
                else:
                    pause = exc.retry_after if exc.retry_after is not None else \
                        settings.backoff * 2 ** (attempt - 1) * random.uniform(0.5, 1.5)
                    if pause < time_left():
                        if self.stopping.wait(pause):
                            raise _abandoned(attempt) from exc
                        continue
                    reason = f"{exc.reason} (no time left to retry)"
                raise ItemFailed(FAILED, reason, attempt) from exc
        raise AssertionError("unreachable")

    def abandon(self) -> None:
        """Stop: waits end and the sockets of requests in flight are shut, so workers return at once."""
        self.stopping.set()
        abandon_requests()

    def _get_once(self, url: str) -> bytes:
        settings, seen = self.settings, {url}
        for _hop in range(settings.max_redirects + 1):
            parts = check_url(url)
            host = parts.hostname or ""  # check_url refuses a URL without one
            refused = literal_refusal(host, settings.allow_loopback)  # no politeness slot for these
            if refused:
                raise ItemFailed(FAILED, refused)
            try:
                with self.hosts.slot(host):
                    response = self._send(parts)
                    with response:
                        if response.status not in _REDIRECTS or "Location" not in response.headers:
                            return self._body(response, host)
                        location = urllib.parse.urljoin(url, response.headers["Location"])
            except (ItemFailed, _Retryable):
                raise
            except (AddressRefused, Abandoned) as exc:
                raise ItemFailed(FAILED, str(exc)) from exc
            except Exception as exc:  # requests, urllib3, http.client and socket errors
                if self.stopping.is_set():  # Ctrl-C shut the socket (a cut TLS handshake reads as a TLS error)
                    raise _abandoned() from exc
                if time_left() <= 0:
                    raise ItemFailed(FAILED, f"timed out: no complete response within {settings.deadline:g} s") from exc
                reason = _network_reason(exc)
                if reason.startswith(("host name", "TLS error")):  # retrying will not help (or wait as long again)
                    raise ItemFailed(FAILED, reason) from exc
                raise _Retryable(reason) from exc
            if location in seen:
                raise ItemFailed(FAILED, f"redirect loop: {location}")
            seen.add(location)
            url = location
        raise ItemFailed(FAILED, f"too many redirects (more than {settings.max_redirects})")

    def _body(self, response: http1.Response, host: str) -> bytes:
        settings, status = self.settings, response.status
        if status == 429 or status >= 500:
            wait = retry_after(response.headers.get("Retry-After"))
            if wait is not None and wait <= settings.max_retry_after:
                self.hosts.pause(host, wait)
            raise _Retryable(f"HTTP {status} {response.reason or ''}".strip(), wait)
        if status != 200:
            raise ItemFailed(FAILED, f"HTTP {status} {response.reason or ''}".strip())
        directive = settings.respect_opt_out and _opted_out(response)
        if directive:
            raise ItemFailed(SKIPPED, f"opt-out: X-Robots-Tag {directive}")
        length = response.headers.get("Content-Length", "")
        if length.isascii() and length.isdigit() and int(length) > settings.max_bytes:  # not "²": int() fails
            raise ItemFailed(FAILED, f"too large: {int(length)} bytes (cap {settings.max_bytes})")
        chunks, total = [], 0
        while chunk := response.read1(256 * 1024):
            total += len(chunk)
            if total > settings.max_bytes:
                raise ItemFailed(FAILED, f"too large: over {settings.max_bytes} bytes (cap)")
            if time_left() <= 0:
                raise ItemFailed(FAILED, f"timed out: no complete response within {settings.deadline:g} s")
            chunks.append(chunk)
        if time_left() <= 0:  # the watchdog shut the socket: what came is not the whole file
            raise ItemFailed(FAILED, f"timed out: no complete response within {settings.deadline:g} s")
        if self.stopping.is_set():  # Ctrl-C shut it: a body that ends at the close looks complete, and is not
            raise _abandoned()
        return b"".join(chunks)
