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
import os
import socket
import time
import uuid
from collections import Counter, defaultdict, deque
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from pathlib import Path
from typing import NamedTuple

from sqlalchemy import and_, bindparam, func, or_, select, update

from imgnet_build.blobs import blob_key
from imgnet_build.dbutil import insert_ignore
from imgnet_build.download import USER_AGENT, Downloader, ItemFailed
from imgnet_build.errors import BadInput, ImgnetError
from imgnet_build.netguard import deadline, redact
from imgnet_build.sources.dirs import local_path
from imgnet_build.store import Candidate, CandidateStatus, Image
from imgnet_build.validate import DecodeBudget, ImageRejected, check_image

__all__ = ["FetchSettings", "FetchSummary", "fetch_pending", "BlobStoreFailed", "QUOTA_REASON"]

OK, FAILED, SKIPPED = CandidateStatus.OK, CandidateStatus.FAILED, CandidateStatus.SKIPPED
QUOTA_REASON = "quota reached"
LEASE = dt.timedelta(minutes=5)  # how long a claim lasts unless renewed (a run renews its claims as it goes)
_HOST = hashlib.sha256(socket.gethostname().encode()).hexdigest()[:8]  # claims of dead local runs are freed at once
MAX_HOST_RATE = 10_000.0
CLAIM_PER_WORKER = 4  # rows claimed at a time, per worker


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
    decode_memory: int = 512 * 2**20  # decoded pixels in memory at once, all workers together (bytes)
    min_side: int = 32
    per_host: int = 16  # requests in flight per host
    host_rate: float = 50.0  # requests per second per host; 0 = no cap
    allow_loopback: bool = False
    respect_opt_out: bool = True  # X-Robots-Tag noai / noimageai / noindex / noimageindex
    user_agent: str = USER_AGENT
    local_sources: frozenset[str] = frozenset({"dir"})  # candidates read from disk, not HTTP
    retry_failed: bool = False  # fetch failed candidates again (not rows the source itself marked failed)

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

    def to_dict(self) -> dict:
        return {"ok": self.ok, "failed": self.failed, "skipped": self.skipped, "downloaded": self.downloaded,
                "seconds": round(self.seconds, 3), "images_per_second": round(self.images_per_second, 1),
                "reasons": dict(self.reasons.most_common(20))}


class _Item(NamedTuple):
    id: int
    category_id: int
    url: str
    url_hash: str
    source: str
    source_sha1: str | None
    attempts: int


@dataclasses.dataclass
class _Outcome:
    status: str
    reason: str | None = None
    attempts: int = 0
    image: dict | None = None  # an Image row, when ok


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class _Run:
    """One fetch run: claims pending rows in leased batches, downloads them, writes results under the claim."""

    def __init__(self, workspace, settings: FetchSettings, per_category: int | None,
                 progress: Callable[[int, int], None] | None):
        self.workspace, self.settings, self.quota, self.progress = workspace, settings, per_category, progress
        self.blobs = workspace.blob_store
        self.downloader = Downloader(settings)
        self.budget = DecodeBudget(settings.decode_memory)
        self.summary = FetchSummary()
        self.owner = f"{os.getpid()}:{_HOST}:{uuid.uuid4().hex[:8]}"  # this run's name on the rows it claims
        self.started = _now()
        self.renewed = time.monotonic()
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
        self.exhausted = False  # nothing left to claim

    def _eligible(self, now: dt.datetime):
        """Rows this run may claim: pending, quota-skipped (or failed, with retry_failed) and not claimed."""
        not_this_run = or_(Candidate.fetched_at.is_(None), Candidate.fetched_at < self.started)
        eligible = or_(Candidate.status == CandidateStatus.PENDING,
                       and_(Candidate.status == SKIPPED, Candidate.error == QUOTA_REASON, not_this_run))
        if self.settings.retry_failed:  # attempts 0: a row the source marked failed, nothing to fetch
            eligible = or_(eligible, and_(Candidate.status == FAILED, Candidate.attempts > 0, not_this_run))
        condition = and_(eligible, or_(Candidate.lease_until.is_(None), Candidate.lease_until < now))
        if self.quota is not None:
            condition = and_(condition, Candidate.category_id.not_in(self._full()))
        return condition

    def _full(self):
        return (select(Candidate.category_id).where(Candidate.status == OK).group_by(Candidate.category_id)
                .having(func.count() >= self.quota))

    def return_dead_claims(self) -> None:
        """Free the claims of runs on this machine whose process is gone (killed), without waiting for their lease."""
        table = Candidate.__table__
        with self.workspace.session() as session:
            owners = session.scalars(select(table.c.lease_owner).distinct().where(
                table.c.lease_owner.like(f"%:{_HOST}:%"))).all()
            dead = [owner for owner in owners if not _alive(int(owner.split(":", 1)[0]))]
            if dead:
                session.execute(update(table).where(table.c.lease_owner.in_(dead))
                                .values(lease_owner=None, lease_until=None))

    def count(self) -> None:
        self.return_dead_claims()
        with self.workspace.session() as session:
            self.total = session.scalar(select(func.count()).select_from(Candidate).where(self._eligible(_now())))

    def claim(self) -> None:
        """Claim the next batch (in category and rank order) and learn what is already stored for it.

        One statement claims: `FOR UPDATE SKIP LOCKED` on PostgreSQL, SQLite's write lock,
        so two runs never hold one row. Pending rows of categories already full are skipped.
        """
        self.flush()
        now = _now()
        with self.workspace.session() as session:
            if self.quota is not None:
                skipped = session.execute(
                    update(Candidate).where(Candidate.status == CandidateStatus.PENDING, Candidate.category_id.in_(
                        self._full()), or_(Candidate.lease_until.is_(None), Candidate.lease_until < now))
                    .values(status=SKIPPED, error=QUOTA_REASON, fetched_at=now)
                    .execution_options(synchronize_session=False)).rowcount
                self.summary.skipped += skipped
                self.summary.reasons[QUOTA_REASON] += skipped
                self.done += skipped
            batch = (select(Candidate.id).where(self._eligible(now))
                     .order_by(Candidate.category_id, Candidate.rank.is_(None), Candidate.rank, Candidate.id)
                     .limit(self.settings.workers * CLAIM_PER_WORKER).with_for_update(skip_locked=True))
            rows = session.execute(
                update(Candidate).where(Candidate.id.in_(batch.scalar_subquery()))
                .values(lease_owner=self.owner, lease_until=now + LEASE)
                .returning(Candidate.id, Candidate.category_id, Candidate.url, Candidate.url_hash, Candidate.source,
                           Candidate.source_sha1, Candidate.attempts)
                .execution_options(synchronize_session=False)).all()
            items = sorted((_Item(*row) for row in rows), key=lambda item: item.id)
            categories = {item.category_id for item in items}
            hashes = {item.url_hash for item in items}
            sha1s = {item.source_sha1 for item in items if item.source_sha1}
            counts = session.execute(select(Candidate.category_id, func.count()).where(
                Candidate.status == OK, Candidate.category_id.in_(categories)).group_by(Candidate.category_id)).all()
            known = session.execute(select(Candidate.category_id, Candidate.url, Candidate.source_sha1,
                                           Candidate.image_sha256).where(
                Candidate.status == OK, or_(Candidate.url_hash.in_(hashes), Candidate.source_sha1.in_(sha1s)))).all()
        self.exhausted = not items
        for category_id, count in counts:
            self.ok_count[category_id] = count
        for category_id, url, sha1, sha256 in known:
            self.url_image[url] = sha256
            if sha1:
                self.sha1_image.setdefault(sha1, (sha256, category_id))
        for item in items:
            self.queues.setdefault(item.category_id, deque()).append(item)
        self.total = max(self.total, self.done + self.queued() + len(self.futures))

    def queued(self) -> int:
        return sum(len(queue) for queue in self.queues.values())

    def ready(self) -> int:
        """Queued rows that could start now (their category is under its quota)."""
        return sum(len(queue) for category_id, queue in self.queues.items() if self.room(category_id))

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
            info = check_image(data, self.settings.min_side, self.settings.max_pixels, self.budget)
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
        reason = redact(outcome.reason) if outcome.reason else None
        self.pending_rows.append({
            "row_id": item.id, "new_status": outcome.status, "new_error": reason,
            "new_attempts": item.attempts + outcome.attempts, "new_image": image["sha256"] if image else None,
            "new_fetched_at": _now()})
        setattr(self.summary, outcome.status, getattr(self.summary, outcome.status) + 1)
        if reason:
            self.summary.reasons[reason.split(":")[0] if outcome.status != SKIPPED else reason] += 1
        self.done += 1

    def flush(self) -> None:
        """Write the results so far, each only where this run still holds the claim; renew the claims held."""
        renew = time.monotonic() - self.renewed > LEASE.total_seconds() / 3
        if not self.pending_rows and not renew:
            return
        table = Candidate.__table__
        with self.workspace.session() as session:
            if self.pending_rows:
                insert_ignore(session, Image, self.pending_images)
                session.execute(
                    update(table).where(table.c.id == bindparam("row_id"), table.c.lease_owner == self.owner)
                    .values(status=bindparam("new_status"), error=bindparam("new_error"),
                            attempts=bindparam("new_attempts"), image_sha256=bindparam("new_image"),
                            fetched_at=bindparam("new_fetched_at"), lease_owner=None, lease_until=None),
                    self.pending_rows)
            if renew:
                session.execute(update(table).where(table.c.lease_owner == self.owner)
                                .values(lease_until=_now() + LEASE))
                self.renewed = time.monotonic()
        self.pending_rows, self.pending_images = [], []
        if self.progress:
            self.progress(self.done, self.total)

    def release(self) -> None:
        """Give back the claims on rows not finished (abandoned in flight, or still queued): they stay pending."""
        table = Candidate.__table__
        with self.workspace.session() as session:
            session.execute(update(table).where(table.c.lease_owner == self.owner)
                            .values(lease_owner=None, lease_until=None))

    def run(self) -> FetchSummary:
        started = time.monotonic()
        self.count()
        if self.progress:
            self.progress(0, self.total)
        pool = ThreadPoolExecutor(self.settings.workers, thread_name_prefix="imgnet-fetch")
        try:
            self.claim()
            self.fill(pool)
            while self.futures or self.queued() or not self.exhausted:
                if self.ready() < self.settings.workers and not self.exhausted:
                    self.claim()
                    self.fill(pool)
                    if not self.futures:
                        continue
                done, _ = wait(self.futures, return_when=FIRST_COMPLETED)
                for future in done:
                    self.finish(self.futures.pop(future), future.result())
                self.fill(pool)
                self.flush()
        except BaseException:  # Ctrl-C, a broken blob store: abandon what is in flight, now
            self.downloader.abandon()
            self.budget.cancel()
            pool.shutdown(wait=False, cancel_futures=True)
            raise
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
            try:
                self.flush()
            finally:
                self.release()
        self.summary.seconds = time.monotonic() - started
        return self.summary


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # another user's process
        return True
    return True


def _read_local(url: str, max_bytes: int) -> bytes:
    file = Path(local_path(url))
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
