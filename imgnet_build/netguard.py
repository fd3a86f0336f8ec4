"""HTTP plumbing for the downloader: an SSRF guard, per-item deadlines, per-host politeness.

- `GuardedAdapter` is a requests adapter whose connections resolve the host once, refuse
  it when any address is private, loopback, link-local, reserved or otherwise not global
  (loopback is allowed on request, for tests and local mirrors), and then connect to the
  checked address itself, so a second DNS answer cannot slip in (DNS rebinding). TLS still
  verifies the certificate against the host name.
- `deadline(seconds, stopping)` gives the current thread a wall-clock deadline; every socket a
  guarded connection reads from during it is shut down by a watchdog thread when it
  passes, so no slow or endless response (headers or body) blocks past it, or at once when
  the run stops (`abandon_requests`, then `stopping` for sockets handed over later).
- Host name lookups run in a few daemon threads (`_Resolver`), so that one that hangs is
  waited for only within the deadline (at most RESOLVE_TIMEOUT) and not at all after Ctrl-C;
  a socket is under the deadline and Ctrl-C from before its connect (Linux ends a connect
  in progress when it is shut).
- `HostLimiter` caps concurrent requests and the request rate per host, and lets a 429's
  Retry-After pause a whole host.
- `USER_AGENT` and `retry_after` are what every HTTP client of the tool (downloads and
  the API sources) sends and reads.
"""

from __future__ import annotations

import collections
import contextlib
import email.utils
import functools
import heapq
import ipaddress
import itertools
import os
import re
import socket
import threading
import time
from collections.abc import Iterator

from requests.adapters import HTTPAdapter
from urllib3 import PoolManager
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import ConnectTimeoutError, NameResolutionError, NewConnectionError
from urllib3.response import HTTPResponse

from imgnet_build import __version__
from imgnet_build.errors import ItemError

__all__ = ["redact", "checked_socket", "check_stopping", "watch_socket", "Abandoned", "AddressRefused", "LookupTimedOut", "abandon_requests", "literal_refusal", "GuardedAdapter", "guarded_pool_manager", "HostLimiter", "deadline", "refusal", "time_left", "USER_AGENT",
           "retry_after"]

USER_AGENT = os.environ.get("IMGNET_USER_AGENT") or (
    f"imgnet-build/{__version__} (ImageNet-style dataset builder; https://pypi.org/project/imgnet-build/)")


_CREDENTIALS = re.compile(r"(?<=://)([^/@\s:]*):[^/@\s]*@")


def redact(text: str) -> str:
    """`text` with the password of every URL in it hidden: http://user:pw@host/ -> http://user:***@host/."""
    return _CREDENTIALS.sub(r"\1:***@", text)


def retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header: delta-seconds or an HTTP date; None when absent or bad."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        try:
            return max(0.0, email.utils.parsedate_to_datetime(value).timestamp() - time.time())
        except (TypeError, ValueError):
            return None


class Abandoned(ItemError):
    "A request given up because the run is stopping (Ctrl-C)"

    REASON = "abandoned: the run is stopping"  # the item's reason, here and in the downloader

    def __init__(self, reason: str = REASON) -> None:
        super().__init__(reason)


class AddressRefused(ItemError):
    "A URL's host resolves to an address the SSRF guard refuses (private, loopback, link-local…)"


def refusal(address: str, allow_loopback: bool = False) -> str | None:
    """Why connecting to `address` is refused, or None when it is a public address."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if ip.version == 6 and ip.ipv4_mapped:
        ip = ip.ipv4_mapped
    if ip.is_loopback:
        return None if allow_loopback else "a loopback address (allow it with --allow-loopback)"
    for kind in ("unspecified", "link_local", "multicast", "private", "reserved"):
        if getattr(ip, f"is_{kind}"):
            return f"{'an' if kind[0] == 'u' else 'a'} {kind.replace('_', '-')} address"
    if not ip.is_global:
        return "not a public address"
    return None


@functools.lru_cache(maxsize=4096)  # asked once per request and redirect hop; the answer never changes
def literal_refusal(host: str, allow_loopback: bool = False) -> str | None:
    """The SSRF guard's refusal of a host that is an IP address, found without any lookup; None otherwise."""
    try:
        why = refusal(host, allow_loopback)
    except ValueError:  # a name: checked when its connection resolves it
        return None
    return f"refused: {host} is {why}" if why else None


def _checked_addresses(host: str, port: int, allow_loopback: bool) -> list[tuple]:
    """The getaddrinfo entries of `host`, the first one per address, every address checked (AddressRefused)."""
    infos: dict[str, tuple] = {}
    for info in _resolve(host, port):
        infos.setdefault(str(info[4][0]), info)
    for address in infos:
        why = refusal(address, allow_loopback)
        if why:
            where = address if host == address else f"{host} ({address})"
            raise AddressRefused(f"refused: {where} is {why}")
    return list(infos.values())


# -- deadlines -------------------------------------------------------------------------

_GRAIN = 0.05  # seconds: how late the watchdog may be for a deadline


class _Watchdog:
    """One thread that shuts sockets down when their deadline passes."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._heap: list[tuple[float, int]] = []
        self._sockets: dict[int, socket.socket] = {}
        self._ids = itertools.count()
        self._thread: threading.Thread | None = None

    def watch(self, sock: socket.socket, when: float) -> int:
        with self._cond:
            token = next(self._ids)
            self._sockets[token] = sock
            heapq.heappush(self._heap, (when, token))
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="imgnet-watchdog", daemon=True)
                self._thread.start()
            if self._heap[0][1] == token:  # wake the thread only when the next deadline moved earlier
                self._cond.notify()
            return token

    def cancel(self, tokens: list[int]) -> None:
        with self._cond:
            for token in tokens:
                self._sockets.pop(token, None)

    def shut_all(self) -> None:
        """Shut every watched socket now."""
        with self._cond:
            sockets, self._sockets = list(self._sockets.values()), {}
        for sock in sockets:
            with contextlib.suppress(OSError):
                socket.socket.shutdown(sock, socket.SHUT_RDWR)

    def _run(self) -> None:
        while True:
            due: list[socket.socket] = []
            with self._cond:
                while not self._heap:
                    self._cond.wait()
                now = time.monotonic()
                if self._heap[0][0] > now:
                    # Most entries are of requests that ended long ago (cancelled, left in the heap): waking at
                    # most every GRAIN seconds and taking every entry due then costs one wake-up per GRAIN, not
                    # one per request; a deadline is kept to within GRAIN.
                    self._cond.wait(max(self._heap[0][0] - now, _GRAIN))
                    continue
                while self._heap and self._heap[0][0] <= now:
                    sock = self._sockets.pop(heapq.heappop(self._heap)[1], None)
                    if sock is not None:
                        due.append(sock)
            for sock in due:
                with contextlib.suppress(OSError):
                    socket.socket.shutdown(sock, socket.SHUT_RDWR)  # base method: also for TLS sockets


_WATCHDOG = _Watchdog()
_local = threading.local()


@contextlib.contextmanager
def deadline(seconds: float, stopping: threading.Event | None = None) -> Iterator[None]:
    """Run the block under a wall-clock deadline; time spent waiting for a host slot does not count.
    `stopping`: the run's event, set before `abandon_requests`; a request reading after it is abandoned."""
    _local.deadline = time.monotonic() + seconds
    _local.tokens = []
    _local.stopping = stopping
    try:
        yield
    finally:
        _WATCHDOG.cancel(_local.tokens)
        _local.deadline, _local.tokens, _local.stopping = None, [], None


def abandon_requests() -> None:
    """Shut the sockets of every request in flight under a deadline (a run stopping at Ctrl-C)."""
    _WATCHDOG.shut_all()
    _RESOLVER.wake_all()


def time_left() -> float:
    """Seconds left before the current thread's deadline (infinite outside `deadline`)."""
    when = getattr(_local, "deadline", None)
    return float("inf") if when is None else when - time.monotonic()


def _extend(seconds: float) -> None:
    if getattr(_local, "deadline", None) is not None:
        _local.deadline += seconds


# -- host name lookups -------------------------------------------------------------------

RESOLVE_TIMEOUT = 20.0  # seconds one host name lookup may take (besides the item's deadline)
_RESOLVERS = 16  # lookup threads at most: hung lookups cannot pile up threads


class LookupTimedOut(socket.gaierror):
    "A host name lookup that did not answer in time (a hung resolver): the host is not asked"


class _Lookup:
    __slots__ = ("answer", "done", "error", "host", "port", "started")

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port, self.done = host, port, threading.Event()
        self.answer: list[tuple] | None = None
        self.error: BaseException | None = None
        self.started = 0.0


class _Resolver:
    """A few daemon threads that run getaddrinfo, which takes no timeout and cannot be interrupted: whoever
    asks waits only as long as it may (`wait`), and a lookup nobody waits for any more ends in its thread."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._cond = threading.Condition()
        self._queue: collections.deque[_Lookup] = collections.deque()
        self._running: set[_Lookup] = set()
        self._waiting: set[_Lookup] = set()
        self._threads = self._idle = 0

    def _reset(self) -> None:
        """In a forked child: the parent's threads are not there."""
        self._cond = threading.Condition()
        self._queue.clear()
        self._running.clear()
        self._waiting.clear()
        self._threads = self._idle = 0

    def lookup(self, host: str, port: int, seconds: float) -> list[tuple]:
        """getaddrinfo(host, port) for a TCP connection within `seconds`; LookupTimedOut when it takes longer
        or every thread is stuck on an older lookup, Abandoned when the run stops (`wake_all`) meanwhile."""
        lookup = _Lookup(host, port)
        with self._cond:
            now = time.monotonic()
            if sum(now - old.started > RESOLVE_TIMEOUT for old in self._running) >= self.size:
                raise LookupTimedOut(socket.EAI_AGAIN, f"host name lookup timed out: {self.size} lookups hang")
            self._queue.append(lookup)
            self._waiting.add(lookup)
            if self._idle:
                self._cond.notify()
            elif self._threads < self.size:
                self._threads += 1
                threading.Thread(target=self._run, name="imgnet-resolver", daemon=True).start()
        try:
            check_stopping()  # after joining `_waiting`: a later stop wakes this wait
            lookup.done.wait(seconds)
            if lookup.answer is not None:
                return lookup.answer
            if lookup.error is not None:
                raise lookup.error
            check_stopping()
            if lookup.done.is_set():  # woken by `wake_all`, the run's sockets being shut
                raise Abandoned()
            raise LookupTimedOut(socket.EAI_AGAIN, f"host name lookup timed out after {seconds:.3g} s")
        finally:
            with self._cond:
                self._waiting.discard(lookup)
                if not lookup.started:  # never begun: it never will
                    with contextlib.suppress(ValueError):
                        self._queue.remove(lookup)

    def wake_all(self) -> None:
        """End every wait for a lookup now (the run is stopping); the lookups themselves end in their threads."""
        with self._cond:
            waiting = list(self._waiting)
        for lookup in waiting:
            lookup.done.set()

    def _run(self) -> None:
        while True:
            with self._cond:
                self._idle += 1
                while not self._queue:
                    self._cond.wait()
                self._idle -= 1
                lookup = self._queue.popleft()
                lookup.started = time.monotonic()
                self._running.add(lookup)
            try:
                lookup.answer = socket.getaddrinfo(lookup.host, lookup.port, 0, socket.SOCK_STREAM)
            except BaseException as exc:  # handed to the waiting thread, if any
                lookup.error = exc
            with self._cond:
                self._running.discard(lookup)
            lookup.done.set()


_RESOLVER = _Resolver(_RESOLVERS)
os.register_at_fork(after_in_child=_RESOLVER._reset)


@functools.lru_cache(maxsize=4096)
def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False
    return True


def _resolve(host: str, port: int) -> list[tuple]:
    """getaddrinfo for a TCP connection to `host`, within the current deadline (RESOLVE_TIMEOUT at most) and
    ended by Ctrl-C. An IP address needs no lookup and is answered here; a name goes to `_RESOLVER`."""
    if _is_ip(host):
        return socket.getaddrinfo(host, port, 0, socket.SOCK_STREAM)
    seconds = min(time_left(), RESOLVE_TIMEOUT)
    if seconds <= 0:
        raise LookupTimedOut(socket.EAI_AGAIN, "host name lookup timed out: no time left")
    return _RESOLVER.lookup(host, port, seconds)


# -- the guarded connections -------------------------------------------------------------

def checked_socket(host: str, port: int, allow_loopback: bool, timeout: float | None, *,
                   source_address: tuple[str, int] | None = None, socket_options=None) -> socket.socket:
    """A socket connected to `host`: resolved once, every address checked (AddressRefused), then the
    checked address itself connected to, so a second DNS answer cannot slip in. Under a `deadline` the
    lookup and each connect end with it and at Ctrl-C (Abandoned). Raises what the resolution
    (socket.gaierror, LookupTimedOut) and the connection (TimeoutError, OSError) raise."""
    error: OSError | None = None
    for family, kind, proto, _name, address in _checked_addresses(host, port, allow_loopback):
        sock = socket.socket(family, kind, proto)
        try:
            for option in socket_options or ():
                sock.setsockopt(*option)
            if timeout is None or isinstance(timeout, (int, float)):  # else urllib3's "default" sentinel
                sock.settimeout(timeout)
            if source_address:
                sock.bind(source_address)
            watch_socket(sock)  # Ctrl-C and the deadline shut a connect in progress (Linux ends it then)
            sock.connect(address)
            return sock
        except OSError as exc:
            sock.close()
            error = exc
        except BaseException:
            sock.close()
            raise
    raise error or OSError(f"no address for {host}")


def watch_socket(sock: socket.socket) -> None:
    """Put `sock` under the current thread's deadline (the watchdog shuts it when the deadline passes or the
    run stops); call once a request is about to be read from it. Raises Abandoned when the run has stopped."""
    when = getattr(_local, "deadline", None)
    if when is not None:
        _local.tokens.append(_WATCHDOG.watch(sock, when))
        check_stopping()  # stopped before the watchdog had it


def check_stopping() -> None:
    """Raise Abandoned when the current thread's run is stopping (Ctrl-C): before connecting or sending."""
    stopping = getattr(_local, "stopping", None)
    if stopping is not None and stopping.is_set():
        raise Abandoned()


class _Guarded(HTTPConnection):
    """The connect step of HTTPConnection and HTTPSConnection (mixed in first), with the SSRF guard."""

    allow_loopback = False

    def _new_conn(self) -> socket.socket:
        try:
            return checked_socket(self._dns_host, self.port, self.allow_loopback, self.timeout,
                                  source_address=self.source_address, socket_options=self.socket_options)
        except socket.gaierror as exc:
            raise NameResolutionError(self.host, self, exc) from exc
        except TimeoutError as exc:
            raise ConnectTimeoutError(self, f"Connection to {self.host} timed out") from exc
        except OSError as exc:
            raise NewConnectionError(self, f"Failed to establish a new connection: {exc}") from exc

    def getresponse(self) -> HTTPResponse:  # type: ignore[override]  # as urllib3 declares it
        if self.sock is not None:
            watch_socket(self.sock)
        return super().getresponse()


def _pool_classes(allow_loopback: bool) -> dict[str, type]:
    http = type("GuardedHTTPConnection", (_Guarded, HTTPConnection), {"allow_loopback": allow_loopback})
    https = type("GuardedHTTPSConnection", (_Guarded, HTTPSConnection), {"allow_loopback": allow_loopback})
    return {
        "http": type("GuardedHTTPConnectionPool", (HTTPConnectionPool,), {"ConnectionCls": http}),
        "https": type("GuardedHTTPSConnectionPool", (HTTPSConnectionPool,), {"ConnectionCls": https}),
    }


_POOLS = {flag: _pool_classes(flag) for flag in (False, True)}


def guarded_pool_manager(allow_loopback: bool = False, **kwargs) -> PoolManager:
    """A urllib3 PoolManager whose connections pass the SSRF guard (for clients that skip requests)."""
    manager = PoolManager(**kwargs)
    manager.pool_classes_by_scheme = _POOLS[allow_loopback]
    return manager


class GuardedAdapter(HTTPAdapter):
    """A requests adapter whose connections pass the SSRF guard (mount it for http and https)."""

    def __init__(self, allow_loopback: bool = False, **kwargs) -> None:
        self._pool_classes = _POOLS[allow_loopback]
        super().__init__(**kwargs)

    def init_poolmanager(self, *args, **kwargs) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = self._pool_classes


# -- politeness --------------------------------------------------------------------------

class HostLimiter:
    """At most `concurrency` requests in flight and `rate` requests per second per host (0: no rate cap)."""

    def __init__(self, concurrency: int, rate: float, stopping: threading.Event | None = None,
                 shares: dict[str, tuple[int, float]] | None = None) -> None:
        """`shares`: host -> (concurrency, rate) for hosts whose limits differ (a Dask shard's share of a host)."""
        self.concurrency, self.rate = concurrency, rate
        self.stopping = stopping or threading.Event()  # once set, waiting for a turn raises Abandoned
        self._lock = threading.Lock()
        self._shares = dict(shares or {})
        self._slots: dict[str, threading.BoundedSemaphore] = {}
        self._next: dict[str, float] = {}

    def _limits(self, host: str) -> tuple[int, float]:
        return self._shares.get(host, (self.concurrency, self.rate))

    @contextlib.contextmanager
    def slot(self, host: str) -> Iterator[None]:
        """Wait for a turn at `host`; the wait is added to the current thread's deadline."""
        waited = time.monotonic()
        concurrency, rate = self._limits(host)
        semaphore = self._slots.get(host)
        if semaphore is None:
            with self._lock:
                semaphore = self._slots.setdefault(host, threading.BoundedSemaphore(concurrency))
        while not semaphore.acquire(timeout=0.25):
            if self.stopping.is_set():
                raise Abandoned()
        try:
            with self._lock:
                now = time.monotonic()
                start = max(now, self._next.get(host, now))
                self._next[host] = start + (1.0 / rate if rate > 0 else 0.0)
            if start > now and self.stopping.wait(start - now):
                raise Abandoned()
            _extend(time.monotonic() - waited)
            try:
                yield
            except AddressRefused:  # nothing was sent: give the turn back
                with self._lock:
                    self._next[host] = max(time.monotonic(), self._next[host] - (1.0 / rate if rate else 0.0))
                raise
        finally:
            semaphore.release()

    def paused(self) -> dict[str, float]:
        """Hosts that may not be asked before some time from now (a Retry-After): host -> seconds left."""
        now = time.monotonic()
        with self._lock:
            return {host: when - now for host, when in self._next.items() if when - now > 1.0}

    def pause(self, host: str, seconds: float) -> None:
        """Send nothing more to `host` for `seconds` (a 429 with Retry-After)."""
        with self._lock:
            self._next[host] = max(self._next.get(host, 0.0), time.monotonic() + seconds)
