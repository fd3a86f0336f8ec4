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
`retry_failed` is set. Results are committed as they arrive (only the main thread writes to the
database), so a killed run loses only the items in flight. A blob store that cannot be
written stops the run with `BlobStoreFailed` rather than failing every candidate.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import time
from collections import Counter, defaultdict, deque
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from pathlib import Path
from typing import NamedTuple

from sqlalchemy import and_, or_, select, update

from imgnet_build.blobs import blob_key
from imgnet_build.dbutil import insert_ignore
from imgnet_build.download import USER_AGENT, Downloader, ItemFailed
from imgnet_build.errors import BadInput, ImgnetError
from imgnet_build.netguard import deadline
from imgnet_build.store import Candidate, CandidateStatus, Image
from imgnet_build.validate import ImageRejected, check_image

__all__ = ["FetchSettings", "FetchSummary", "fetch_pending", "BlobStoreFailed", "QUOTA_REASON"]

OK, FAILED, SKIPPED = CandidateStatus.OK, CandidateStatus.FAILED, CandidateStatus.SKIPPED
QUOTA_REASON = "quota reached"


class BlobStoreFailed(ImgnetError):
    "Writing to the blob store failed; the run stops (no candidate is blamed for it)"


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
    min_side: int = 32
    per_host: int = 16  # requests in flight per host
    host_rate: float = 50.0  # requests per second per host; 0 = no cap
    allow_loopback: bool = False
    respect_opt_out: bool = True  # X-Robots-Tag noai / noimageai / noindex / noimageindex
    user_agent: str = USER_AGENT
    local_sources: frozenset[str] = frozenset({"dir"})  # candidates read from disk, not HTTP
    retry_failed: bool = False  # fetch failed candidates again (not rows the source itself marked failed)

    def __post_init__(self) -> None:
        for name in ("workers", "per_host", "max_redirects", "max_bytes", "max_pixels"):
            if getattr(self, name) < (0 if name == "max_redirects" else 1):
                raise BadInput(f"fetch setting {name} must be at least {0 if name == 'max_redirects' else 1}")
        for name in ("connect_timeout", "read_timeout", "deadline"):
            if not getattr(self, name) > 0:
                raise BadInput(f"fetch setting {name} must be more than 0 seconds")
        if self.retries < 0 or self.backoff < 0 or self.host_rate < 0 or self.min_side < 0:
            raise BadInput("fetch settings retries, backoff, host_rate and min_side cannot be negative")


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

    def to_dict(self) -> dict:
        return {"ok": self.ok, "failed": self.failed, "skipped": self.skipped, "downloaded": self.downloaded,
                "seconds": round(self.seconds, 3), "images_per_second": round(self.images_per_second, 1),
                "reasons": dict(self.reasons.most_common(20))}


class _Item(NamedTuple):
    id: int
    category_id: int
    url: str
    source: str
    source_sha1: str | None
    attempts: int


@dataclasses.dataclass
class _Outcome:
    status: str
    reason: str | None = None
    attempts: int = 0
    image: dict | None = None  # an Image row, when ok


class _Run:
    def __init__(self, workspace, settings: FetchSettings, per_category: int | None,
                 progress: Callable[[int, int], None] | None):
        self.workspace, self.settings, self.quota, self.progress = workspace, settings, per_category, progress
        self.blobs = workspace.blob_store
        self.downloader = Downloader(settings)
        self.summary = FetchSummary()
        self.queues: dict[int, deque[_Item]] = {}
        self.ok_count: Counter = Counter()
        self.in_flight: Counter = Counter()  # per category, waiters included
        self.futures: dict[Future, _Item] = {}
        self.waiting: dict[str, list[_Item]] = defaultdict(list)  # url in flight -> same url, other categories
        self.url_image: dict[str, str] = {}  # url -> sha256 of ok candidates
        self.sha1_image: dict[str, tuple[str, int]] = {}  # source sha1 -> (sha256, category id)
        self.pending_rows: list[dict] = []
        self.pending_images: list[dict] = []
        self.done = self.total = 0

    def load(self) -> None:
        with self.workspace.session() as session:
            eligible = or_(Candidate.status == CandidateStatus.PENDING,
                           and_(Candidate.status == SKIPPED, Candidate.error == QUOTA_REASON))
            if self.settings.retry_failed:  # attempts 0: a row the source marked failed, nothing to fetch
                eligible = or_(eligible, and_(Candidate.status == FAILED, Candidate.attempts > 0))
            rows = session.execute(
                select(Candidate.id, Candidate.category_id, Candidate.url, Candidate.source, Candidate.source_sha1,
                       Candidate.attempts).where(eligible)
                .order_by(Candidate.category_id, Candidate.rank.is_(None), Candidate.rank, Candidate.id)).all()
            ok_rows = session.execute(select(Candidate.category_id, Candidate.url, Candidate.source_sha1,
                                             Candidate.image_sha256).where(Candidate.status == OK)).all()
        for row in rows:
            self.queues.setdefault(row.category_id, deque()).append(_Item(*row))
        for category_id, url, sha1, sha256 in ok_rows:
            self.ok_count[category_id] += 1
            self.url_image[url] = sha256
            if sha1:
                self.sha1_image[sha1] = (sha256, category_id)
        self.total = len(rows)

    def room(self, category_id: int) -> bool:
        return self.quota is None or self.ok_count[category_id] + self.in_flight[category_id] < self.quota

    def fill(self, pool: ThreadPoolExecutor) -> None:
        """Submit work round-robin over categories while there is room; settle what needs no download."""
        capacity = self.settings.workers * 2
        progressed = True
        while progressed and len(self.futures) < capacity:
            progressed = False
            for category_id in list(self.queues):
                queue = self.queues[category_id]
                if self.quota is not None and self.ok_count[category_id] >= self.quota:
                    while queue:
                        self.record(queue.popleft(), _Outcome(SKIPPED, QUOTA_REASON))
                if not queue:
                    del self.queues[category_id]
                    continue
                if not self.room(category_id) or len(self.futures) >= capacity:
                    continue
                self.start(queue.popleft(), pool)
                progressed = True

    def start(self, item: _Item, pool: ThreadPoolExecutor) -> None:
        known = self.url_image.get(item.url)
        if known is None and item.source_sha1 in self.sha1_image:
            known, category_id = self.sha1_image[item.source_sha1]
            if category_id == item.category_id:
                self.record(item, _Outcome(SKIPPED, "same file (source SHA-1) as another candidate of this category"))
                return
        if known is not None:
            self.record(item, _Outcome(OK, None, 0, {"sha256": known}))
        elif item.url in self.waiting:
            self.waiting[item.url].append(item)
            self.in_flight[item.category_id] += 1
        else:
            self.waiting[item.url] = []
            self.in_flight[item.category_id] += 1
            self.futures[pool.submit(self.work, item)] = item

    def work(self, item: _Item) -> _Outcome:
        """One item, in a worker thread. Every failure of the item ends here as an outcome."""
        attempts = 1
        try:
            with deadline(self.settings.deadline):
                if item.source in self.settings.local_sources:
                    data = _read_local(item.url, self.settings.max_bytes)
                else:
                    data, attempts = self.downloader.get(item.url)
            info = check_image(data, self.settings.min_side, self.settings.max_pixels)
        except ItemFailed as exc:
            return _Outcome(exc.status, exc.reason, exc.attempts)
        except ImageRejected as exc:
            return _Outcome(FAILED, str(exc), attempts)
        except Exception as exc:  # the per-item boundary: a bug in one item must not stop the run
            return _Outcome(FAILED, f"internal error: {type(exc).__name__}: {exc}"[:300], attempts)
        sha256 = hashlib.sha256(data).hexdigest()
        key = blob_key(sha256, info.ext)
        try:
            self.blobs.put(key, data)
        except Exception as exc:
            raise BlobStoreFailed(f"cannot write to the blob store {self.blobs.location}: {exc}") from exc
        image = {"sha256": sha256, "width": info.width, "height": info.height, "format": info.format,
                 "bytes": len(data), "blob_key": key}
        return _Outcome(OK, None, attempts, image)

    def finish(self, item: _Item, outcome: _Outcome) -> None:
        self.summary.downloaded += 1
        self.in_flight[item.category_id] -= 1
        self.record(item, outcome)
        for other in self.waiting.pop(item.url, []):
            self.in_flight[other.category_id] -= 1
            if outcome.status == OK and self.quota is not None and self.ok_count[other.category_id] >= self.quota:
                self.record(other, _Outcome(SKIPPED, QUOTA_REASON))
            else:
                image = {"sha256": outcome.image["sha256"]} if outcome.image else None
                self.record(other, dataclasses.replace(outcome, attempts=0, image=image))

    def record(self, item: _Item, outcome: _Outcome) -> None:
        image = outcome.image
        if outcome.status == OK:
            self.ok_count[item.category_id] += 1
            self.url_image[item.url] = image["sha256"]
            if item.source_sha1:
                self.sha1_image.setdefault(item.source_sha1, (image["sha256"], item.category_id))
            if len(image) > 1:
                self.pending_images.append(image)
        self.pending_rows.append({
            "id": item.id, "status": outcome.status, "error": outcome.reason,
            "attempts": item.attempts + outcome.attempts, "image_sha256": image["sha256"] if image else None,
            "fetched_at": dt.datetime.now(dt.timezone.utc)})
        setattr(self.summary, outcome.status, getattr(self.summary, outcome.status) + 1)
        if outcome.reason:
            self.summary.reasons[outcome.reason.split(":")[0] if outcome.status != SKIPPED else outcome.reason] += 1
        self.done += 1

    def flush(self) -> None:
        if not self.pending_rows:
            return
        with self.workspace.session() as session:
            insert_ignore(session, Image, self.pending_images)
            session.execute(update(Candidate), self.pending_rows)
        self.pending_rows, self.pending_images = [], []
        if self.progress:
            self.progress(self.done, self.total)

    def run(self) -> FetchSummary:
        started = time.monotonic()
        self.load()
        if self.progress:
            self.progress(0, self.total)
        pool = ThreadPoolExecutor(self.settings.workers, thread_name_prefix="imgnet-fetch")
        try:
            self.fill(pool)
            while self.futures:
                done, _ = wait(self.futures, return_when=FIRST_COMPLETED)
                for future in done:
                    self.finish(self.futures.pop(future), future.result())
                self.fill(pool)
                self.flush()
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
            self.flush()
        self.summary.seconds = time.monotonic() - started
        return self.summary


def _read_local(path: str, max_bytes: int) -> bytes:
    file = Path(path)
    if not file.is_file():
        raise ItemFailed(FAILED, "no such file")
    size = file.stat().st_size
    if size > max_bytes:
        raise ItemFailed(FAILED, f"too large: {size} bytes (cap {max_bytes})")
    return file.read_bytes()


def fetch_pending(workspace, settings: FetchSettings = FetchSettings(), per_category: int | None = None,
                  progress: Callable[[int, int], None] | None = None) -> FetchSummary:
    """Fetch every pending candidate of `workspace` (and quota-skipped ones, while under quota).

    `progress(done, total)` is called from the calling thread as results are committed.
    Returns the counts of this run; candidates' rows carry each status and reason.
    """
    return _Run(workspace, settings, per_category, progress).run()
