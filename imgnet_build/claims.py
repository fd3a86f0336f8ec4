"""Claims on candidate rows: which rows a fetch run holds, and writing its results under them.

    claims = Claims(workspace, retry_failed=False, quota=200)
    batch = claims.claim(128)          # rows now leased to this run, with what is already stored
    claims.write(rows, images)         # results, only where this run still holds the claim
    claims.release()                   # what was not finished goes back to pending

A claim is `lease_owner` + `lease_until` on the row. Claims of a process that died on
this machine are freed at once (its pid is in the owner name); elsewhere they expire
after `LEASE` unless the run renews them. Every statement here is served by an index:
pending rows in claim order by the partial index `ix_candidate_pending`
(`category_id, rank, id WHERE status = 'pending'`), known URLs by `ix_candidate_url_hash`,
known files by `ix_candidate_source_sha1`, a category's ok count by `uq_candidate`.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import os
import socket
import time
import uuid
from typing import TYPE_CHECKING, Any, NamedTuple, cast

from sqlalchemy import CursorResult, Table, and_, bindparam, func, literal_column, or_, select, text, update

from imgnet_build.store import Candidate, CandidateStatus

if TYPE_CHECKING:
    from imgnet_build.workspace import Workspace

__all__ = ["Claims", "Claimed", "Item", "Result", "QUOTA_REASON", "LEASE"]

OK, FAILED, SKIPPED, PENDING = CandidateStatus.OK, CandidateStatus.FAILED, CandidateStatus.SKIPPED, \
    CandidateStatus.PENDING
QUOTA_REASON = "quota reached"
LEASE = dt.timedelta(minutes=5)  # how long a claim lasts unless renewed (a run renews its claims as it goes)
_HOST = hashlib.sha256(socket.gethostname().encode()).hexdigest()[:8]  # claims of dead local runs are freed at once


_PENDING = Candidate.status == literal_column("'pending'")  # a literal, so the partial index applies
_SQLITE_SHA1 = ("SELECT category_id, url, source_sha1, image_sha256, status FROM candidate "
                "INDEXED BY ix_candidate_source_sha1 WHERE source_sha1 IN :sha1s")
_SQLITE_PENDING = ("SELECT id FROM candidate INDEXED BY ix_candidate_pending WHERE status = 'pending' "
                   "AND (lease_until IS NULL OR lease_until < :now) ORDER BY category_id, rank, id LIMIT :limit")


class Item(NamedTuple):
    """One claimed candidate row: what a worker needs to fetch it."""

    id: int
    category_id: int
    url: str
    url_hash: str
    source: str
    source_sha1: str | None
    attempts: int


class Result(NamedTuple):
    """How one claimed row ended, as written to it."""

    row_id: int
    status: str
    error: str | None
    attempts: int
    image: str | None  # sha256 of its image, when ok
    fetched_at: dt.datetime


@dataclasses.dataclass
class Claimed:
    """One claimed batch: its rows, the ok counts of categories new to this run (with a quota), and what is
    already stored."""

    items: list[Item]
    ok_counts: dict[int, int]
    known_urls: dict[str, str]  # url -> sha256 of an ok candidate
    known_sha1s: dict[str, tuple[str, int]]  # source sha1 -> (sha256, category id) of an ok candidate


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # another user's process
        return True
    return True


class Claims:
    """One run's claims on the candidate table. Only the run's own thread calls it."""

    def __init__(self, workspace: Workspace, retry_failed: bool = False, quota: int | None = None) -> None:
        self.workspace, self.retry_failed, self.quota = workspace, retry_failed, quota
        self.owner = f"{os.getpid()}:{_HOST}:{uuid.uuid4().hex[:8]}"  # this run's name on the rows it claims
        self.started = _now()
        self.renewed = time.monotonic()
        self.counted: set[int] = set()  # categories whose ok count this run has read (it keeps its own after)
        self.pending_only = False  # once no quota-skipped or failed row is left to retry, claim pending rows only

    # -- what may be claimed -------------------------------------------------------------

    def _free(self, now: dt.datetime) -> Any:
        return or_(Candidate.lease_until.is_(None), Candidate.lease_until < now)

    def _retryable(self) -> Any:
        """Rows other than pending that this run takes again: quota-skipped ones (and failed, with retry_failed)."""
        not_this_run = or_(Candidate.fetched_at.is_(None), Candidate.fetched_at < self.started)
        condition = and_(Candidate.status == SKIPPED, Candidate.error == QUOTA_REASON, not_this_run)
        if self.retry_failed:  # attempts 0: a row the source marked failed, nothing to fetch
            condition = or_(condition, and_(Candidate.status == FAILED, Candidate.attempts > 0, not_this_run))
        return condition

    def _full(self) -> Any:
        return (select(Candidate.category_id).where(Candidate.status == OK).group_by(Candidate.category_id)
                .having(func.count() >= self.quota))

    def count(self) -> int:
        """Rows this run would fetch (after freeing dead local claims): the progress total."""
        self.return_dead_claims()
        now = _now()
        eligible = and_(or_(Candidate.status == PENDING, self._retryable()), self._free(now))
        if self.quota is not None:
            eligible = and_(eligible, Candidate.category_id.not_in(self._full()))
        with self.workspace.session() as session:
            return session.scalar(select(func.count()).select_from(Candidate).where(eligible)) or 0

    def return_dead_claims(self) -> None:
        """Free the claims of runs on this machine whose process is gone (killed), without waiting for their lease."""
        table = cast(Table, Candidate.__table__)
        with self.workspace.session() as session:
            owners = session.scalars(select(table.c.lease_owner).distinct().where(
                table.c.lease_owner.like(f"%:{_HOST}:%"))).all()
            dead = [owner for owner in owners if not _alive(int(owner.split(":", 1)[0]))]
            if dead:
                session.execute(update(table).where(table.c.lease_owner.in_(dead))
                                .values(lease_owner=None, lease_until=None))

    # -- claiming --------------------------------------------------------------------------

    def claim(self, limit: int) -> Claimed:
        """Lease up to `limit` rows (pending first, in category and rank order) and learn what is stored for them.

        One statement claims: `FOR UPDATE SKIP LOCKED` on PostgreSQL, SQLite's write lock,
        so two runs never hold one row. Quota-skipped (and, with retry_failed, failed) rows
        come after the pending ones.
        """
        now = _now()
        with self.workspace.session() as session:
            rows = self._lease(session, _PENDING, limit, now)
            if len(rows) < limit and not self.pending_only:
                retryable = self._retryable()
                if self.quota is not None:
                    retryable = and_(retryable, Candidate.category_id.not_in(self._full()))
                more = self._lease(session, retryable, limit - len(rows), now)
                self.pending_only = not more
                rows += more
            items = sorted((Item(*row) for row in rows), key=lambda item: item.id)
            categories = sorted({item.category_id for item in items} - self.counted) if self.quota else []
            self.counted.update(categories)
            hashes = sorted({item.url_hash for item in items})
            sha1s = sorted({item.source_sha1 for item in items if item.source_sha1})
            counts = dict(session.execute(select(Candidate.category_id, func.count()).where(
                Candidate.category_id.in_(categories), Candidate.status == OK)
                .group_by(Candidate.category_id)).all()) if categories else {}
            # Two lookups, each served by its own index (an OR of both is served by neither), and the status
            # checked here: with `status = 'ok'` in the query a planner without statistics walks every ok row.
            columns = (Candidate.category_id, Candidate.url, Candidate.source_sha1, Candidate.image_sha256,
                       Candidate.status)
            known: list[Any] = list(session.execute(select(*columns).where(Candidate.url_hash.in_(hashes)))) \
                if hashes else []
            if sha1s:
                by_sha1: Any = select(*columns).where(Candidate.source_sha1.in_(sha1s))
                if session.get_bind().dialect.name == "sqlite":
                    # With statistics (ANALYZE) SQLite takes the NULLs of source_sha1 (most rows: URL lists
                    # have no SHA-1) for one value shared by the whole table, and scans the table instead.
                    by_sha1 = text(_SQLITE_SHA1).bindparams(bindparam("sha1s", expanding=True))
                known += session.execute(by_sha1, {"sha1s": sha1s}).all()
        claimed = Claimed(items, counts, {}, {})
        for category_id, url, sha1, sha256, status in known:
            if status != OK or sha256 is None:  # an ok row has its image
                continue
            claimed.known_urls[url] = sha256
            if sha1:
                claimed.known_sha1s.setdefault(sha1, (sha256, category_id))
        return claimed

    def _lease(self, session: Any, status: Any, limit: int, now: dt.datetime) -> list[Any]:
        # Pending rows in exactly the order of ix_candidate_pending, so the database walks it and stops at
        # `limit` (pending rows always have a rank; rows without one are proposals that failed on arrival).
        order = (Candidate.category_id, Candidate.rank, Candidate.id)
        batch = (select(Candidate.id).where(status, self._free(now)).order_by(*order).limit(limit)
                 .with_for_update(skip_locked=True))
        if status is _PENDING and session.get_bind().dialect.name == "sqlite":
            # Without statistics SQLite's planner prefers ix_candidate_status and sorts every pending row.
            batch = select(text(_SQLITE_PENDING).bindparams(
                bindparam("now", now, type_=Candidate.__table__.c.lease_until.type), limit=limit)
                .columns(Candidate.__table__.c.id).subquery().c.id)
        return list(session.execute(
            update(Candidate).where(Candidate.id.in_(batch.scalar_subquery()))
            .values(lease_owner=self.owner, lease_until=now + LEASE)
            .returning(Candidate.id, Candidate.category_id, Candidate.url, Candidate.url_hash, Candidate.source,
                       Candidate.source_sha1, Candidate.attempts)
            .execution_options(synchronize_session=False)).all())

    # -- writing results -------------------------------------------------------------------

    def skip_full(self, categories: set[int] | None = None) -> int:
        """Mark the unclaimed pending rows of these full categories (None: of every full category, found with
        one aggregate, for the start of a run) skipped with the quota reason; how many."""
        if self.quota is None or (categories is not None and not categories):
            return 0
        now = _now()
        which = self._full() if categories is None else sorted(categories)
        with self.workspace.session() as session:
            return cast(CursorResult, session.execute(
                update(Candidate).where(Candidate.category_id.in_(which), Candidate.status == PENDING,
                                        self._free(now))
                .values(status=SKIPPED, error=QUOTA_REASON, fetched_at=now)
                .execution_options(synchronize_session=False))).rowcount or 0

    def write(self, results: list[Result], images: list[dict[str, Any]]) -> None:
        """Store results and new image rows (dicts with sha256, width, height, format, bytes, blob_key), each
        result only where this run still holds its claim; renew the claims now and then.

        Two plain `executemany` statements: SQLAlchemy's per-row parameter handling cost as much CPU as
        SQLite's own work, on the thread that shares the interpreter with the downloads."""
        renew = time.monotonic() - self.renewed > LEASE.total_seconds() / 3
        if not results and not renew:
            return
        table = cast(Table, Candidate.__table__)
        with self.workspace.session() as session:
            if results:
                connection = session.connection()
                mark = "?" if connection.dialect.name == "sqlite" else "%s"
                stamp = table.c.fetched_at.type.bind_processor(connection.dialect) or (lambda value: value)
                now = stamp(_now())
                if images:
                    connection.exec_driver_sql(
                        f"INSERT INTO image (sha256, width, height, format, bytes, blob_key, created_at) "
                        f"VALUES ({', '.join([mark] * 7)}) ON CONFLICT DO NOTHING",
                        [(image["sha256"], image["width"], image["height"], image["format"], image["bytes"],
                          image["blob_key"], now) for image in images])
                connection.exec_driver_sql(
                    f"UPDATE candidate SET status = {mark}, error = {mark}, attempts = {mark}, image_sha256 = {mark}, "
                    f"fetched_at = {mark}, lease_owner = NULL, lease_until = NULL "
                    f"WHERE id = {mark} AND lease_owner = {mark}",
                    [(result.status, result.error, result.attempts, result.image, stamp(result.fetched_at),
                      result.row_id, self.owner) for result in results])
            if renew:
                session.execute(update(table).where(table.c.lease_owner == self.owner)
                                .values(lease_until=_now() + LEASE))
                self.renewed = time.monotonic()

    def release(self) -> None:
        """Give back the claims on rows not finished (abandoned in flight, or still queued): they stay pending."""
        table = cast(Table, Candidate.__table__)
        with self.workspace.session() as session:
            session.execute(update(table).where(table.c.lease_owner == self.owner)
                            .values(lease_owner=None, lease_until=None))
