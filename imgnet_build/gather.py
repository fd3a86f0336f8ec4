"""Gathering: queries for every category, candidates from a source, then the download.

    summary = gather(workspace, "urls:candidates.csv", per_category=200)
    print(summary.summary())   # gathered: 812 ok, 57 failed, 3 skipped in 4.2 s (193 images/s)

Steps, each idempotent, so running the same gather again continues where it stopped:
1. `queries.expand_queries` makes (or finds) each category's search strings, for sources
   that search (not for `urls` and `dir`, which bring their own candidates: expansion
   loads WordNet, seconds of start-up for nothing; a source says so with `searches`);
2. the source proposes candidates; each becomes a `candidate` row (unique per category
   and URL; inserted in committed batches). A proposal with an error and a known
   category becomes a failed row with that reason; one that cannot be attached to a
   category (unknown wnid, unreadable row, stray folder) is counted and reported in
   `GatherSummary.rejected`, since the schema has no row for it;
3. `fetch.fetch_pending` downloads what is pending, honouring the per-category quota.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import re
import time
from collections import Counter
from collections.abc import Iterable, Iterator

from sqlalchemy import func, select
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from imgnet_build.dbutil import batched, insert_ignore
from imgnet_build.errors import BadInput, SourceUnreachable
from imgnet_build.fetch import FetchSettings, FetchSummary, fetch_pending
from imgnet_build.netguard import redact
from imgnet_build.sources import CategoryQueries, Proposal, Source, open_source
from imgnet_build.stage import Progress
from imgnet_build.store import (
    Candidate,
    CandidateStatus,
    Category,
    analyze_if_grown,
    database_reason,
    failure_reasons,
    url_hash,
)
from imgnet_build.workspace import Workspace

__all__ = ["gather", "GatherSummary", "propose_candidates", "list_candidates", "CandidateListing", "candidate_rows",
           "failure_reasons", "DEFAULT_PROPOSALS", "CANDIDATE_FIELDS", "LISTING_FORMATS"]

DEFAULT_PROPOSALS = 100  # what a search source is asked for per category when there is no quota
# Web search is about 10% precise and some downloads fail: a search source is asked for
# this many times the per-category quota, so failures do not leave a category short.
OVERASK = 3
BATCH = 500
EXAMPLES = 5
SHA1 = re.compile(r"[0-9a-fA-F]{40}")


@dataclasses.dataclass
class GatherSummary:
    """What one gather did: proposals seen, rows added, proposals rejected, and the fetch."""

    source: str
    proposed: int = 0
    new_candidates: int = 0
    invalid: int = 0  # new proposals with an error, recorded as failed candidate rows
    outside: int = 0  # proposals for categories that --category left out (not stored)
    rejected: Counter = dataclasses.field(default_factory=Counter)  # reason -> count, not attached
    examples: list[str] = dataclasses.field(default_factory=list)  # a few rejected proposals, verbatim
    fetch: FetchSummary = dataclasses.field(default_factory=FetchSummary)
    seconds: float = 0.0

    @property
    def ok(self) -> int:
        return self.fetch.ok

    @property
    def failed(self) -> int:
        return self.fetch.failed + self.invalid

    @property
    def skipped(self) -> int:
        return self.fetch.skipped

    def summary(self) -> str:
        rate = self.ok / self.seconds if self.seconds > 0 else 0.0
        return (f"gathered: {self.ok} ok, {self.failed} failed, {self.skipped} skipped "
                f"in {self.seconds:.1f} s ({rate:.0f} images/s)")

    def warnings(self) -> list[str]:
        total = sum(self.rejected.values())
        if not total:
            return []
        reasons = "; ".join(f"{reason} ({count})" for reason, count in self.rejected.most_common(5))
        return [f"{total} proposal(s) not attached to any category: {reasons}"]

    def as_dict(self) -> dict:
        return {"source": self.source, "proposed": self.proposed, "new_candidates": self.new_candidates,
                "ok": self.ok, "failed": self.failed, "skipped": self.skipped, "invalid": self.invalid,
                "outside_categories": self.outside,
                "rejected": sum(self.rejected.values()), "rejected_reasons": dict(self.rejected.most_common(20)),
                "rejected_examples": self.examples, "seconds": round(self.seconds, 3),
                "images_per_second": round(self.ok / self.seconds, 1) if self.seconds > 0 else 0.0,
                "fetch": self.fetch.as_dict()}


def gather(workspace: Workspace, source_spec: str, per_category: int | None = None, languages: Iterable[str] = ("en",),
           settings: FetchSettings = FetchSettings(), source_settings: dict | None = None, *,
           categories: Iterable[str] = (), progress: Progress | None = None,
           search_progress: Progress | None = None) -> GatherSummary:
    """Propose candidates for every category of `workspace` from `source_spec` and fetch them.

    `per_category` is the quota of valid images per category (None: no quota);
    `categories` (SYNSETs) limits the proposals to those categories and the ones below them.
    `search_progress(done, total)` follows a search source's categories, `progress(done,
    total)` the downloads. Raises an ImgnetError only when the whole gather cannot run (no
    categories, unusable source or input file, missing language data, a search API that
    cannot be reached); everything per item is recorded in the database.
    """
    started = time.monotonic()
    source = open_source(source_spec, **(source_settings or {}))
    summary = GatherSummary(source=source_spec)
    propose_candidates(workspace, source, per_category, languages, summary, categories, search_progress)
    analyze_if_grown(workspace.engine, "candidate", summary.new_candidates)  # the claims then plan with the new rows
    if source.local:
        settings = dataclasses.replace(settings, local_sources=settings.local_sources | {source.name})
    summary.fetch = fetch_pending(workspace, settings, per_category, progress=progress)
    summary.seconds = time.monotonic() - started
    return summary


def _category_queries(workspace: Workspace, languages: Iterable[str], source: Source, only: Iterable[str] = ()
                      ) -> tuple[list[CategoryQueries], dict[str, int], set[str] | None]:
    """What the source is asked about, every category's id by wnid, and the wnids `only`
    selects (None: all). A search source is asked about the selected categories only; a list
    or folder source is read whole and its rows for other categories are left out later.

    For a search source, queries it already answered in an earlier run (queries that
    brought it candidates) are left out, and each category says how many URLs it already
    has from this source, so a rerun continues instead of asking the API everything again."""
    from imgnet_build.taxonomy import find_category, load_tree

    with workspace.session() as session:
        categories = list(session.scalars(select(Category).order_by(Category.id)))
        if not categories:
            raise BadInput("the workspace has no categories yet; build the tree first: imgnet tree build --root SYNSET")
        ids = {category.wnid: category.id for category in categories}
        only = list(only)
        chosen: set[str] | None = None
        if only:
            tree = load_tree(session)
            chosen = set()
            stack = [find_category(session, spec).wnid for spec in only]
            while stack:
                node = stack.pop()
                if node not in chosen:
                    chosen.add(node)
                    stack.extend(tree[node].children)
            if source.searches:
                categories = [category for category in categories if category.wnid in chosen]
        queries: dict = {}
        answered: set[int] = set()
        have: dict[int, int] = {}
        if source.searches:
            from imgnet_build.queries import expand_queries

            queries = expand_queries(session, categories, list(languages))
            answered = set(session.scalars(select(Candidate.query_id).where(
                Candidate.source == source.name, Candidate.query_id.is_not(None)).distinct()))
            have = dict(session.execute(select(Candidate.category_id, func.count()).where(
                Candidate.source == source.name).group_by(Candidate.category_id)).all())
        wanted = [CategoryQueries(wnid=category.wnid, synset=category.synset,
                                  queries=tuple((q.id, q.text, q.language) for q in queries.get(category.id, [])
                                                if q.id not in answered),
                                  have=have.get(category.id, 0))
                  for category in categories]
        return wanted, ids, chosen


def propose_candidates(workspace: Workspace, source: Source, per_category: int | None, languages: Iterable[str],
                       summary: GatherSummary, categories: Iterable[str] = (),
                       progress: Progress | None = None) -> None:
    """Insert the source's proposals as candidate rows (idempotent); count what cannot be attached.

    A search source reports `progress(categories searched, categories)` as it goes."""
    wanted, ids, chosen = _category_queries(workspace, languages, source, categories)
    if source.searches:
        wanted = [category for category in wanted if category.queries]  # the others were answered before
    stopped: list[SourceUnreachable] = []
    proposals = _until_unreachable(source.propose(_counted(wanted, progress) if source.searches else wanted,
                                                  per_category * OVERASK if per_category else DEFAULT_PROPOSALS),
                                   stopped)
    for batch in batched(proposals, BATCH):
        rows: dict[tuple[int, str], dict] = {}
        if chosen is not None:
            kept = [p for p in batch if p.wnid not in ids or p.wnid in chosen]
            summary.outside += len(batch) - len(kept)
            batch = kept
        for row in filter(None, (_row(proposal, source.name, ids, summary) for proposal in batch)):
            rows.setdefault((row["category_id"], row["url_hash"]), row)  # the first proposal of a URL wins
        try:
            new = _insert_new(workspace, rows)
        except DBAPIError:  # a row the database still refuses: find it, keep the others
            new = []
            for key, row in rows.items():
                try:
                    new += _insert_new(workspace, {key: row})
                except DBAPIError as exc:
                    _reject(summary, row["url"], f"cannot be stored: {database_reason(exc)}")
        summary.new_candidates += len(new)
        summary.invalid += sum(row["status"] == CandidateStatus.FAILED for row in new)
    if stopped:  # what came before is stored: the next run asks only the rest
        raise stopped[0]


def _until_unreachable(proposals: Iterator[Proposal], stopped: list[SourceUnreachable]) -> Iterator[Proposal]:
    """The proposals until the source finds its API unreachable (the error is kept in `stopped`)."""
    try:
        yield from proposals
    except SourceUnreachable as exc:
        stopped.append(exc)


def _counted(categories: list[CategoryQueries], progress: Progress | None
             ) -> Iterator[CategoryQueries]:
    """The categories, calling `progress(done, total)` as the source moves on to each next one."""
    for done, category in enumerate(categories):
        if progress:
            progress(done, len(categories))
        yield category
    if progress:
        progress(len(categories), len(categories))


def _insert_new(workspace: Workspace, rows: dict[tuple[int, str], dict]) -> list[dict]:
    with workspace.session() as session:
        known = set(session.execute(select(Candidate.category_id, Candidate.url_hash).where(
            Candidate.url_hash.in_({key for _, key in rows}))).all())
        new = [row for key, row in rows.items() if key not in known]
        # a concurrent writer may have added some meanwhile: count only what this insert added
        added = set(insert_ignore(session, Candidate, new, returning=(Candidate.category_id, Candidate.url_hash)))
    return [row for row in new if (row["category_id"], row["url_hash"]) in added]


def _reject(summary: GatherSummary, url: str | None, reason: str) -> None:
    summary.rejected[_reason_kind(reason)] += 1
    if len(summary.examples) < EXAMPLES:
        summary.examples.append(f"{redact(_storable(url) or '') if url else '-'}: {reason}")


def _storable(value: str | None) -> str | None:
    """Text every database stores: no NUL (PostgreSQL refuses it), no lone surrogates (not UTF-8)."""
    if value is None:
        return None
    return value.replace("\x00", "\ufffd").encode("utf-8", "replace").decode("utf-8")


def _row(proposal: Proposal, source: str, ids: dict[str, int], summary: GatherSummary) -> dict | None:
    summary.proposed += 1
    category_id = ids.get(proposal.wnid)
    if category_id is None or not proposal.url:
        _reject(summary, proposal.url, proposal.error or f"unknown wnid {proposal.wnid!r} (not a category of this workspace)")
        return None
    url, error = proposal.url, proposal.error
    if "\x00" in url:
        url, error = url.replace("\x00", "%00"), error or "invalid URL: contains a NUL byte"
    elif _storable(url) != url:
        url, error = url.encode("utf-8", "backslashreplace").decode("utf-8"), error or "invalid URL: not valid Unicode"
    sha1 = proposal.source_sha1 if proposal.source_sha1 and SHA1.fullmatch(proposal.source_sha1) else None
    return {"category_id": category_id, "query_id": proposal.query_id, "source": source, "url": url,
            "url_hash": url_hash(proposal.url), "rank": proposal.rank, "license": _storable(proposal.license),
            "attribution": _storable(proposal.attribution), "source_sha1": sha1, "truth": proposal.truth,
            "status": CandidateStatus.FAILED if error else CandidateStatus.PENDING,
            "error": _storable(error), "attempts": 0}


def _reason_kind(reason: str) -> str:
    """Group reasons for the summary: drop a leading "line N:" and keep the words before any detail."""
    if reason.startswith("line ") and ":" in reason:
        reason = reason.split(":", 1)[1].strip()
    return reason.split(" (", 1)[0]


CANDIDATE_FIELDS = ("id", "status", "wnid", "url", "reason", "attempts", "source", "rank", "license", "image_sha256")


def candidate_rows(session: Session, status: str | None = None, wnid: str | None = None, reason: str | None = None,
                   limit: int | None = None) -> Iterator[dict]:
    """Candidates as dicts (`CANDIDATE_FIELDS`), in id order; `reason` matches part of the error text
    (any case). Passwords in URLs and reasons are hidden."""
    query = (select(Candidate.id, Candidate.status, Category.wnid, Candidate.url, Candidate.error, Candidate.attempts,
                    Candidate.source, Candidate.rank, Candidate.license, Candidate.image_sha256)
             .join(Category, Category.id == Candidate.category_id).order_by(Candidate.id))
    if status:
        query = query.where(Candidate.status == status)
    if wnid:
        query = query.where(Category.wnid == wnid)
    if reason:
        query = query.where(func.lower(Candidate.error).contains(reason.lower(), autoescape=True))
    if limit:
        query = query.limit(limit)
    for row in session.execute(query).yield_per(1000):
        values = dict(zip(CANDIDATE_FIELDS, row, strict=True))
        values["url"] = redact(values["url"])
        values["reason"] = redact(values["reason"]) if values["reason"] else None
        yield values


LISTING_FORMATS = ("tsv", "json", "csv")


@dataclasses.dataclass(frozen=True)
class CandidateListing:
    """The candidates `list_candidates` selects, read when iterated (a listing may hold millions)."""

    workspace: Workspace
    status: str | None = None
    wnid: str | None = None
    reason: str | None = None
    limit: int | None = None

    def rows(self) -> Iterator[dict]:
        """Candidates as dicts (`CANDIDATE_FIELDS`), in id order."""
        with self.workspace.session() as session:
            yield from candidate_rows(session, self.status, self.wnid, self.reason, self.limit)

    def lines(self, fmt: str = "tsv") -> Iterator[str]:
        """The listing as text lines: tsv (status, wnid, url, reason), json (one object a line) or
        csv (a header, then `CANDIDATE_FIELDS`); a CSV record with a line break in it is one item."""
        if fmt == "tsv":
            for row in self.rows():
                yield "\t".join((row["status"], row["wnid"], row["url"], row["reason"] or ""))
        elif fmt == "json":
            for row in self.rows():
                yield json.dumps(row, ensure_ascii=False)
        elif fmt == "csv":
            yield ",".join(CANDIDATE_FIELDS)
            buffer = io.StringIO()
            writer = csv.DictWriter(buffer, CANDIDATE_FIELDS, lineterminator="\n")
            for row in self.rows():
                writer.writerow(row)
                yield buffer.getvalue()[:-1]  # one record: a line break inside a field stays in it
                buffer.seek(0)
                buffer.truncate()
        else:
            raise BadInput(f"unknown listing format {fmt!r}; use {', '.join(LISTING_FORMATS)}")

    def as_dict(self) -> list[dict]:
        return list(self.rows())

    def summary(self) -> str:
        return "\n".join(self.lines())


def list_candidates(workspace: Workspace, status: str | None = None, category: str | None = None,
                    reason: str | None = None, limit: int | None = None) -> CandidateListing:
    """Candidates with `status`, of `category` (a SYNSET), whose reason contains `reason` (any case),
    at most `limit`; passwords in URLs and reasons are hidden. UnknownSynset names a wrong category now."""
    wnid = None
    if category:
        from imgnet_build.taxonomy import find_category

        with workspace.session() as session:
            wnid = find_category(session, category).wnid
    return CandidateListing(workspace, status, wnid, reason, limit)
