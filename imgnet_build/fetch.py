"""Download pending candidates concurrently, validate them, store each valid image once.

    summary = fetch_pending(workspace, FetchSettings(workers=32), per_category=200)

What happens to one candidate (each ends `ok`, `failed` or `skipped` with a short reason):
- `imgnet_build.download` fetches it: http(s) only, hosts that resolve to public
  addresses only (SSRF guard in `imgnet_build.netguard`; `allow_loopback` for tests and
  local mirrors), each redirect hop checked again, at most `max_redirects`; connect and
  read timeouts plus a wall-clock `deadline` per item covering retries, headers and body;
  a `max_bytes` cap while the body streams in; 429, 5xx and network errors retried with
  exponential backoff and jitter, honouring Retry-After up to `max_retry_after` (which
  also pauses the host); at most `per_host` requests in flight and `host_rate` requests/s
  per host; `X-Robots-Tag: noai / noimageai / noindex / noimageindex` makes it skipped.
  Candidates of local sources (`dir`) are read from disk instead.
- `imgnet_build.validate` decodes it fully and judges it (formats, size, bombs,
  animations, EXIF orientation).
- The original bytes are stored unchanged under `blob_key(sha256, ext)`, once per distinct
  file; an `image` row records width and height (after EXIF orientation), format and size.

A URL already stored for another category, or a file whose source SHA-1 matches one
already stored, is not downloaded again. Per-category quotas: a category stops when it has
`per_category` ok candidates; the rest are skipped with "quota reached" and are taken up
again by a later run with a larger quota. Failed candidates stay failed unless
`retry_failed` is set.

Where things happen: `imgnet_build.claims` leases rows and writes results under the
lease; `_Run` here schedules (per-category queues, quotas, one download per URL); one
item's work is `imgnet_build.fetch_item.fetch_item`, run by the executor
(`imgnet_build.executor`: threads here, or shards on Dask workers). Only this process
writes to the database, in batches of up to `FLUSH_ROWS` results and at least every
`FLUSH_SECONDS`, so a killed run loses at most the items in flight and the results of
the last fraction of a second (their blobs are kept; a rerun fetches them again). A
blob store that cannot be written stops the run with `BlobStoreFailed` rather than
failing every candidate.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import itertools
import time
from collections import Counter, defaultdict, deque
from concurrent.futures import Future, ThreadPoolExecutor

from imgnet_build.claims import LEASE, QUOTA_REASON, Claimed, Claims, Item, Result
from imgnet_build.download import USER_AGENT
from imgnet_build.errors import BadInput
from imgnet_build.executor import Batch, Executor, open_executor, parse_executor
from imgnet_build.fetch_item import BlobStoreFailed, Outcome
from imgnet_build.netguard import redact
from imgnet_build.stage import Progress
from imgnet_build.store import CandidateStatus, analyze_if_grown
from imgnet_build.workspace import Workspace

__all__ = ["FetchSettings", "FetchSummary", "fetch_pending", "BlobStoreFailed", "QUOTA_REASON", "LEASE"]

OK, FAILED, SKIPPED = CandidateStatus.OK, CandidateStatus.FAILED, CandidateStatus.SKIPPED
MAX_HOST_RATE = 10_000.0
CLAIM_PER_WORKER = 4  # rows claimed at a time, per worker
FLUSH_ROWS = 256  # results written per commit at most
FLUSH_SECONDS = 0.25  # and at least this often while results come in
KNOWN_CACHE = 100_000  # stored URLs and SHA-1s remembered by a run (more are looked up again per claim)


@dataclasses.dataclass(frozen=True)
class FetchSettings:
    """How the downloader behaves. Times in seconds, sizes in bytes."""

    workers: int = 32
    connect_timeout: float = 5.0
    read_timeout: float = 10.0
    deadline: float = 30.0  # wall clock per item, retries included
    retries: int = 2  # extra attempts after the first, for 429 / 5xx / network errors
    backoff: float = 0.5  # first retry waits about this long, doubling each time (with jitter)
    max_retry_after: float = 60.0  # a longer Retry-After fails the item instead of waiting
    max_redirects: int = 5
    max_bytes: int = 25 * 2**20
    max_pixels: int = 80_000_000
    decode_memory: int = 512 * 2**20  # decoded pixels in memory at once, all workers together (bytes)
    min_side: int = 32
    per_host: int = 16  # requests in flight per host
    host_rate: float = 50.0  # requests per second per host; 0 = no cap
    allow_loopback: bool = False
    respect_opt_out: bool = True  # X-Robots-Tag noai / noimageai / noindex / noimageindex
    user_agent: str = USER_AGENT
    local_sources: frozenset[str] = frozenset({"dir"})  # candidates read from disk, not HTTP
    retry_failed: bool = False  # fetch failed candidates again (not rows the source itself marked failed)
    executor: str | None = None  # local | dask-local:N | dask://HOST:PORT; None: the workspace's setting

    def __post_init__(self) -> None:
        for name in ("workers", "per_host", "max_redirects", "max_bytes", "max_pixels", "decode_memory"):
            if getattr(self, name) < (0 if name == "max_redirects" else 1):
                raise BadInput(f"fetch setting {name} must be at least {0 if name == 'max_redirects' else 1}")
        for name in ("connect_timeout", "read_timeout", "deadline"):
            if not getattr(self, name) > 0:
                raise BadInput(f"fetch setting {name} must be more than 0 seconds")
        if not 0 <= self.host_rate <= MAX_HOST_RATE:  # also refuses nan
            raise BadInput(f"host rate {self.host_rate} is not a number of requests per second from 0 (no cap) "
                           f"to {MAX_HOST_RATE:g}")
        if self.executor is not None:
            parse_executor(self.executor)
        if self.retries < 0 or self.backoff < 0 or self.min_side < 0:
            raise BadInput("fetch settings retries, backoff and min_side cannot be negative")


@dataclasses.dataclass
class FetchSummary:
    """What one fetch run did: counts per final status, the commonest reasons, the time."""

    ok: int = 0
    failed: int = 0
    skipped: int = 0
    downloaded: int = 0  # candidates read over HTTP or from disk (not settled from a known URL or SHA-1)
    reasons: Counter = dataclasses.field(default_factory=Counter)
    seconds: float = 0.0

    @property
    def images_per_second(self) -> float:
        return self.ok / self.seconds if self.seconds > 0 else 0.0

    def summary(self) -> str:
        return (f"fetched: {self.ok} ok, {self.failed} failed, {self.skipped} skipped "
                f"in {self.seconds:.1f} s ({self.images_per_second:.0f} images/s)")

    def as_dict(self) -> dict:
        return {"ok": self.ok, "failed": self.failed, "skipped": self.skipped, "downloaded": self.downloaded,
                "seconds": round(self.seconds, 3), "images_per_second": round(self.images_per_second, 1),
                "reasons": dict(self.reasons.most_common(20))}


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class _Run:
    """One fetch run's scheduling: claimed rows queue per category, go to the executor round-robin while their
    category has room under the quota, and their outcomes are recorded and written in batches under the claim.

    The database work is in `imgnet_build.claims`, one item's work in `imgnet_build.fetch_item`, where it
    runs in `imgnet_build.executor`."""

    def __init__(self, workspace: Workspace, settings: FetchSettings, per_category: int | None,
                 progress: Progress | None):
        self.workspace, self.settings, self.quota, self.progress = workspace, settings, per_category, progress
        self.claims = Claims(workspace, settings.retry_failed, per_category)
        self.summary = FetchSummary()
        self.queues: dict[int, deque[Item]] = {}
        self.ok_count: Counter = Counter()
        self.in_flight: Counter = Counter()  # per category, waiters included
        self.waiting: dict[str, list[Item]] = defaultdict(list)  # url in flight -> same url, other categories
        self.url_image: dict[str, str] = {}  # url -> sha256 of ok candidates
        self.sha1_image: dict[str, tuple[str, int]] = {}  # source sha1 -> (sha256, category id)
        self.pending_rows: list[Result] = []
        self.pending_images: list[dict] = []
        self.newly_full: set[int] = set()  # categories this run filled: their unclaimed rows are skipped at once
        self.queued = self.ready = 0  # rows queued; of those, rows whose category has room
        self.done = self.total = 0
        self.exhausted = False  # nothing left to claim
        self.flushed = time.monotonic()
        # Claims and writes run in one thread of their own, one at a time, so the downloads never wait on
        # the database (on SQLite a write takes 0.3-0.6 ms per result, growing with the table's indexes).
        self.database = ThreadPoolExecutor(1, thread_name_prefix="imgnet-db")
        self.claiming: Future[Claimed] | None = None
        self.writing: Future[int] | None = None

    def _skipped(self, count: int) -> None:
        if not count:
            return
        self.summary.skipped += count
        self.summary.reasons[QUOTA_REASON] += count
        self.done += count

    def claim(self, batch: Batch) -> None:
        """Ask the database thread for the next rows, unless it is already fetching some."""
        if self.claiming is None and not self.exhausted:
            size = max(self.settings.workers * CLAIM_PER_WORKER, batch.capacity // 2)
            self.claiming = self.database.submit(self.claims.claim, size)

    def take_claimed(self, batch: Batch, wait: bool = False) -> None:
        """Queue the rows of a finished claim per category (waiting for it with `wait`)."""
        if self.claiming is None or not (wait or self.claiming.done()):
            return
        claimed, self.claiming = self.claiming.result(), None
        self.exhausted = not claimed.items
        if len(self.url_image) > KNOWN_CACHE:  # bounded memory: a URL forgotten here is found by the next claim
            _forget_oldest(self.url_image)
        if len(self.sha1_image) > KNOWN_CACHE:
            _forget_oldest(self.sha1_image)
        for category_id, count in claimed.ok_counts.items():
            self.ok_count[category_id] = max(self.ok_count[category_id], count)
        self.url_image.update(claimed.known_urls)
        for sha1, known in claimed.known_sha1s.items():
            self.sha1_image.setdefault(sha1, known)
        for item in claimed.items:
            self.queues.setdefault(item.category_id, deque()).append(item)
        self.queued += len(claimed.items)
        self.total = max(self.total, self.done + self.queued + batch.in_flight())

    def room(self, category_id: int) -> bool:
        return self.quota is None or self.ok_count[category_id] + self.in_flight[category_id] < self.quota

    def fill(self, batch: Batch) -> None:
        """Submit work round-robin over categories while there is room; settle what needs no download."""
        capacity, self.ready = batch.capacity, 0
        progressed = True
        while progressed and batch.in_flight() < capacity:
            progressed = False
            for category_id in list(self.queues):
                queue = self.queues[category_id]
                if self.quota is not None and self.ok_count[category_id] >= self.quota:
                    while queue:
                        self.record(self.take(queue), Outcome(SKIPPED, QUOTA_REASON))
                if not queue:
                    del self.queues[category_id]
                    continue
                if not self.room(category_id) or batch.in_flight() >= capacity:
                    continue
                self.start(self.take(queue), batch)
                progressed = True
        self.ready = sum(len(queue) for category_id, queue in self.queues.items() if self.room(category_id))

    def take(self, queue: deque[Item]) -> Item:
        self.queued -= 1
        return queue.popleft()

    def start(self, item: Item, batch: Batch) -> None:
        known = self.url_image.get(item.url)
        if known is None and item.source_sha1 in self.sha1_image:
            known, category_id = self.sha1_image[item.source_sha1]
            if category_id == item.category_id:
                self.record(item, Outcome(SKIPPED, "same file (source SHA-1) as another candidate of this category"))
                return
        if known is not None:
            self.record(item, Outcome(OK, None, 0, {"sha256": known}))
        elif item.url in self.waiting:
            self.waiting[item.url].append(item)
            self.in_flight[item.category_id] += 1
        else:
            self.waiting[item.url] = []
            self.in_flight[item.category_id] += 1
            batch.submit(item)

    def finish(self, item: Item, outcome: Outcome) -> None:
        self.summary.downloaded += 1
        self.in_flight[item.category_id] -= 1
        self.record(item, outcome)
        for other in self.waiting.pop(item.url, []):
            self.in_flight[other.category_id] -= 1
            if outcome.status == OK and self.quota is not None and self.ok_count[other.category_id] >= self.quota:
                self.record(other, Outcome(SKIPPED, QUOTA_REASON))
            else:
                image = {"sha256": outcome.image["sha256"]} if outcome.image else None
                self.record(other, dataclasses.replace(outcome, attempts=0, image=image))

    def record(self, item: Item, outcome: Outcome) -> None:
        image = outcome.image
        if outcome.status == OK:
            assert image is not None  # an OK outcome carries its image
            self.ok_count[item.category_id] += 1
            if self.quota is not None and self.ok_count[item.category_id] == self.quota:
                self.newly_full.add(item.category_id)
            self.url_image[item.url] = image["sha256"]
            if item.source_sha1:
                self.sha1_image.setdefault(item.source_sha1, (image["sha256"], item.category_id))
            if len(image) > 1:
                self.pending_images.append(image)
        reason = redact(outcome.reason) if outcome.reason else None
        self.pending_rows.append(Result(item.id, outcome.status, reason, item.attempts + outcome.attempts,
                                        image["sha256"] if image else None, _now()))
        setattr(self.summary, outcome.status, getattr(self.summary, outcome.status) + 1)
        if reason:
            self.summary.reasons[reason.split(":")[0] if outcome.status != SKIPPED else reason] += 1
        self.done += 1

    def flush(self, wait: bool = False) -> None:
        """Hand the results so far to the database thread, which writes them under the claims (renewing the
        claims now and then) and skips the rest of full categories. One write at a time: while one runs,
        results gather for the next. With `wait`, write everything now."""
        if self.writing is not None and (wait or self.writing.done()):
            self._written()
        if self.writing is not None:
            return
        rows, images, full = self.pending_rows, self.pending_images, self.newly_full
        self.pending_rows, self.pending_images, self.newly_full = [], [], set()
        self.writing = self.database.submit(self._write, rows, images, full)
        self.flushed = time.monotonic()
        if wait:
            self._written()

    def _written(self) -> None:
        """Wait for the write in progress; count its quota skips and report progress."""
        assert self.writing is not None
        skipped, self.writing = self.writing.result(), None
        self._skipped(skipped)
        if self.progress:
            self.progress(self.done, self.total)

    def _write(self, rows: list[Result], images: list[dict], full: set[int]) -> int:
        """In the database thread: the results, then the quota skips; how many rows were skipped."""
        self.claims.write(rows, images)
        return self.claims.skip_full(full)

    def run(self, executor: Executor) -> FetchSummary:
        started = time.monotonic()
        self.total = self.claims.count()
        if self.progress:
            self.progress(0, self.total)
        self._skipped(self.claims.skip_full())
        batch = executor.fetch(self.settings, self.workspace.blob_store)
        try:
            while batch.in_flight() or self.queued or not self.exhausted or self.claiming:
                self.take_claimed(batch, wait=not batch.in_flight() and not self.ready)
                if self.ready < batch.capacity // 2:
                    self.claim(batch)  # ahead of need: the next rows arrive while these are fetched
                self.fill(batch)
                if not batch.in_flight():
                    continue
                finished = batch.completed(FLUSH_SECONDS)
                for item, outcome in finished:
                    self.finish(item, outcome)
                self.fill(batch)
                if not finished or len(self.pending_rows) >= FLUSH_ROWS or \
                        time.monotonic() - self.flushed > FLUSH_SECONDS:
                    self.flush()
        except BaseException:  # Ctrl-C, a broken blob store: abandon what is in flight, now
            batch.abandon()
            raise
        finally:
            batch.close()
            try:
                if self.claiming is not None:
                    self.claiming.result()  # its rows are returned by release() below
                    self.claiming = None
                self.flush(wait=True)
            finally:
                self.database.shutdown()
                self.claims.release()
        self.summary.seconds = time.monotonic() - started
        return self.summary


def _forget_oldest(cache: dict) -> None:
    for key in list(itertools.islice(cache, len(cache) // 2)):
        del cache[key]


def fetch_pending(workspace: Workspace, settings: FetchSettings = FetchSettings(), per_category: int | None = None,
                  *, progress: Progress | None = None, executor: str | Executor | None = None) -> FetchSummary:
    """Fetch every pending candidate of `workspace` (and quota-skipped ones, while under quota).

    `progress(done, total)` is called from the calling thread as results are committed.
    `executor`: `local`, `dask-local:N`, `dask://HOST:PORT` or an open `Executor` (kept
    open); None takes the workspace's setting (IMGNET_EXECUTOR, then imgnet.toml).
    Returns the counts of this run; candidates' rows carry each status and reason.
    """
    if executor is None:
        executor = settings.executor or getattr(workspace, "executor", None)
    runner = open_executor(executor)
    try:
        summary = _Run(workspace, settings, per_category, progress).run(runner)
    finally:
        if runner is not executor:
            runner.close()
    analyze_if_grown(workspace.engine, "candidate", summary.ok + summary.failed + summary.skipped)
    return summary
