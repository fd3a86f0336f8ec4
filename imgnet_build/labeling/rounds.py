"""Labeling in rounds: issue the votes needed now, bring answers in, decide what can be decided.

    settings = LabelSettings(votes=3, max_votes=12)
    plan = submit(workspace, "simulated", settings)   # imgnet label submit
    collect(workspace, settings)                       # imgnet label collect
    run(workspace, "simulated", settings)              # both, until nothing is left to ask

The labeled unit is the (cluster, category) pair: a cluster of duplicates is asked about
once, through its representative, and its label applies to every image of the cluster; a
picture gathered for two categories is two pairs. Candidates that failed or were skipped
are never asked about; images join the labeling once `imgnet dedup` gave them a cluster.

What a pair needs: three votes when it is new (the baseline; `--votes`), `seed_votes` for
the seed sample of each category (dynamic consensus), then one more per round while the
consensus method leaves it undecided, up to `max_votes`. Votes already given and votes
that open tasks will bring count, so submitting twice submits nothing twice. A worker takes a
whole task or none, and never one showing a pair they voted on: with a crowd of known size
(the simulated one) a pair asks for no more votes than its other workers can give, and pairs
with the same voters share tasks where mixing them would leave a task with nobody to take it. Categories
are planned in chunks, each chunk's tasks made in one transaction; a killed submit leaves whole categories
behind and the rerun plans only what is still missing. Votes are stored as they arrive
(`answers.store_answers`), so a killed collect loses nothing either.
"""

from __future__ import annotations

import ctypes
import dataclasses
import datetime as dt
import random
import sys
from collections import defaultdict
from collections.abc import Mapping
from decimal import Decimal
from typing import Any, cast

import numpy as np
from sqlalchemy import ColumnElement, CursorResult, Select, case, delete, func, insert, select, update
from sqlalchemy.orm import Session

from imgnet_build.arrays import find_sorted
from imgnet_build.dbutil import allocate_ids, batched
from imgnet_build.errors import BadInput
from imgnet_build.labeling.backends import Backend, get_backend
from imgnet_build.labeling.consensus import METHODS, ConsensusSettings, Method, VoteTable, seed_tables, tally
from imgnet_build.labeling.consensus import Result as Decision
from imgnet_build.labeling.controls import Elsewhere, control_pools, pick_controls
from imgnet_build.labeling.locks import lock_planning
from imgnet_build.labeling.quality import update_workers
from imgnet_build.stage import Document, Progress, Result, Say
from imgnet_build.store import (
    Assignment,
    Candidate,
    CandidateStatus,
    Category,
    CategoryConsensus,
    Cluster,
    Gold,
    Image,
    Label,
    LabelHistory,
    Task,
    TaskItem,
    Vote,
    Worker,
    analyze_if_grown,
)
from imgnet_build.workspace import Workspace

__all__ = ["LabelSettings", "Plan", "MarketQuote", "Collected", "RunResult", "Expired", "submit", "issue", "collect",
           "decide", "run", "expire", "pairs_without_clusters"]

WORK_STATUSES = ("submitted", "approved", "rejected")
PLAN_CHUNK = 500  # categories planned per transaction (one query per kind and chunk, not per category)


@dataclasses.dataclass(frozen=True)
class LabelSettings:
    """How labels are decided; the CLI's options, checked once."""

    votes: int = 3
    images_per_task: int = 48
    controls: int = 6
    max_votes: int = 12
    method: str = "dynamic"
    accept: float = 0.99
    reject: float = 0.01
    seed_images: int = 10  # per category, dynamic consensus
    seed_votes: int = 10
    block_below: float = 0.6  # workers surely under this balanced accuracy are blocked (labeling/quality.py)
    prefer_above: float = 0.75  # workers surely under this are set aside while the crowd can spare them

    categories: tuple[str, ...] = ()  # wnids; empty: every category
    include_test: bool = False  # count test answers (MTurk sandbox) as evidence; their labels are marked

    def __post_init__(self) -> None:
        if self.votes < 1:
            raise BadInput(f"--votes must be at least 1, not {self.votes}")
        if self.max_votes < self.votes:
            raise BadInput(f"--max-votes ({self.max_votes}) must be at least --votes ({self.votes})")
        if not 0 <= self.controls < self.images_per_task:
            raise BadInput(f"--controls must be between 0 and --images-per-task - 1, not {self.controls}")
        if not 2 <= self.images_per_task <= 500:
            raise BadInput(f"--images-per-task must be between 2 and 500, not {self.images_per_task}")
        if self.method not in METHODS:
            raise BadInput(f"unknown consensus method {self.method!r}; choose one of: {', '.join(METHODS)}")
        self.consensus()  # checks the thresholds
        if not 0 <= self.block_below <= 1:
            raise BadInput(f"--block-below must be between 0 and 1, not {self.block_below}")
        if not self.block_below <= self.prefer_above <= 1:
            raise BadInput(f"--prefer-above must be between --block-below and 1, not {self.prefer_above}")

    @property
    def reserve(self) -> int:
        """Workers estimated at `prefer_above` or better before weaker ones are set aside."""
        return 2 * self.max_votes

    @property
    def seeded(self) -> bool:
        return self.method == "dynamic"

    def consensus(self) -> Method:
        return METHODS[self.method](ConsensusSettings(self.votes, self.accept, self.reject,
                                                      self.seed_votes if self.seeded else self.votes))


@dataclasses.dataclass
class Plan:
    """What one submit issued (or, with dry_run, would issue), and why pairs got nothing."""

    round: int
    backend: str
    tasks: int = 0
    assignments: int = 0
    votes: int = 0  # candidate votes asked for
    pairs: int = 0
    controls: int = 0
    per_category: dict[str, dict[str, int]] = dataclasses.field(default_factory=dict)
    dry_run: bool = False
    not_clustered: int = 0  # ok images that `imgnet dedup` has not clustered yet
    task_sizes: dict[int, int] = dataclasses.field(default_factory=dict)  # {assignments per task: tasks} (pricing)
    published: int = 0  # tasks an earlier, interrupted submit made and this one published
    discarded: int = 0  # never-published tasks of another backend or marketplace, dropped
    held: dict[str, int] = dataclasses.field(default_factory=dict)  # {reason: pairs} that got nothing now
    waiting_on: dict[str, int] = dataclasses.field(default_factory=dict)  # {backend: open tasks} holding votes
    needs: list[str] = dataclasses.field(default_factory=list)  # (dry run) what a real submit still lacks
    quote: MarketQuote | None = None  # a paid marketplace's price of the plan

    def summary(self) -> str:
        verb = "would issue" if self.dry_run else "issued"
        text = (f"label submit ({self.backend}, round {self.round}): {verb} {self.tasks} tasks, {self.assignments} "
                f"assignments, {self.votes} votes on {self.pairs} pairs in {len(self.per_category)} categories")
        if self.published or self.discarded:
            text += f"; {self.published} tasks of an earlier submit published, {self.discarded} never-published discarded"
        if self.not_clustered:
            text += f"; {self.not_clustered} images wait for `imgnet dedup`"
        if self.tasks == 0:
            text += "\n" + self.why_nothing()
        if self.needs:
            text += "\na real submit still needs: " + "; ".join(self.needs)
        if self.quote is not None:
            text += "\n" + self.quote.summary()
        return text

    def why_nothing(self) -> str:
        """One line on why nothing was issued."""
        reasons = [f"{count} pairs {reason}" for reason, count in sorted(self.held.items()) if count]
        if not reasons and not self.not_clustered:
            return "nothing to ask: no labeled pairs yet (gather candidates, then run imgnet dedup)"
        text = "nothing to ask: " + ("; ".join(reasons) if reasons else "no clustered candidates yet")
        if self.waiting_on:
            open_tasks = ", ".join(f"{count} {backend}" for backend, count in sorted(self.waiting_on.items()))
            text += (f" (open tasks: {open_tasks}; run imgnet label collect, or imgnet label expire --backend NAME "
                     f"to stop them and ask elsewhere)")
        return text

    def as_dict(self) -> dict:
        document = dataclasses.asdict(self)
        del document["quote"]
        document["why_nothing"] = self.why_nothing() if self.tasks == 0 else None
        return document | (self.quote.as_dict() if self.quote is not None else {})


@dataclasses.dataclass(frozen=True)
class MarketQuote:
    """What a plan costs on MTurk: the endpoint (sandbox or live), the price, the cap given."""

    endpoint: str
    price: Result
    max_cost: Decimal | None = None

    def as_dict(self) -> dict:
        return {"endpoint": self.endpoint, "price": self.price.as_dict(),
                "max_cost_usd": None if self.max_cost is None else str(self.max_cost)}

    def summary(self) -> str:
        return f"mturk {self.endpoint}: {self.price.summary()}" + ("" if self.max_cost is None else f" (cap ${self.max_cost})")


def submit(workspace: Workspace, backend: str, settings: LabelSettings = LabelSettings(), *, dry_run: bool = False,
           options: dict | None = None, live: bool = False, max_cost: Decimal | None = None,
           progress: Progress | None = None) -> Plan:
    """`imgnet label submit`: issue the tasks needed now on `backend` (see `issue`).

    On mturk the plan is priced first (`Plan.quote`) and a real submit is refused when it, with
    what was spent and committed, would pass `max_cost`; `live` (the real marketplace, which
    needs `max_cost`) and `max_cost` are for mturk only."""
    if backend != "mturk":
        if live or max_cost is not None:
            raise BadInput("--live and --max-cost are for --backend mturk")
        return issue(workspace, backend, settings, dry_run=dry_run, options=options, progress=progress)
    from imgnet_build.labeling import mturk

    plan, price = mturk.submit(workspace, settings, live=live, max_cost=max_cost, dry_run=dry_run, progress=progress)
    plan.quote = MarketQuote("live" if live else "sandbox", price, max_cost)
    return plan


def issue(workspace: Workspace, backend: str, settings: LabelSettings = LabelSettings(), *, dry_run: bool = False,
          options: dict | None = None, progress: Progress | None = None) -> Plan:
    """Issue the tasks needed now; tasks an earlier submit made but did not publish go first.

    Categories are planned `PLAN_CHUNK` at a time, each chunk read by one query per kind (pairs,
    votes, open tasks, labels, controls) and its tasks made under the labeling lock, in one
    transaction, so concurrent submits (any processes, SQLite or PostgreSQL) never issue a vote twice;
    a backend that costs money reserves what the tasks cost there too (`reserve`).
    """
    chosen = get_backend(backend, workspace, options)
    with workspace.session() as session:
        round_ = (session.scalar(select(func.max(Task.round))) or 0) + 1
        category_ids = _category_ids(session, settings.categories)
        plan = Plan(round_, backend, dry_run=dry_run, not_clustered=pairs_without_clusters(session))
        elsewhere = Elsewhere(session) if settings.controls else None  # negatives of last resort, read once
    if not dry_run:
        plan.discarded, plan.published = settle_unpublished(workspace, chosen)
    held: dict[str, int] = defaultdict(int)
    items = 0  # task items written
    for done in range(0, len(category_ids), PLAN_CHUNK):
        if progress:
            progress(done, len(category_ids))
        chunk = category_ids[done:done + PLAN_CHUNK]
        made: list[int] = []
        with workspace.session() as session:
            if not dry_run:
                lock_planning(session)
            pairs = category_pairs_of(session, chunk)
            needs = _needs_of(session, chunk, pairs, settings, chosen, held)
            pool: int | None = getattr(chosen, "pool", lambda session: None)(session)  # a crowd of known size
            voters: dict[int, dict[int, set[int]]] = {}
            if pool is not None and needs:
                voters = _voters_of(session, needs)
                for category_id, need in needs.items():
                    for cluster in list(need):
                        seen = voters.get(category_id, {}).get(cluster, ())
                        need[cluster] = min(need[cluster], pool - len(seen))  # the others can give
                        if need[cluster] <= 0:
                            del need[cluster]
                            held["have a vote from every worker of the crowd"] += 1
            needs = {category_id: need for category_id, need in needs.items() if need}
            if not needs:
                continue
            chosen.check_pairs(session, [(cluster, category_id) for category_id, need in needs.items()
                                         for cluster in need])
            pools = control_pools(session, {category_id: (set(need), set(pairs[category_id]))
                                            for category_id, need in needs.items()}, elsewhere) if settings.controls else {}
            wnids = dict(session.execute(select(Category.id, Category.wnid).where(Category.id.in_(needs))).all())
            tasks: list[_NewTask] = []
            for category_id, need in needs.items():  # in category order
                made_now = _make_tasks(session, category_id, pairs[category_id], need, settings, round_, chosen, dry_run,
                                       voters.get(category_id, {}), pool, pools.get(category_id, ([], [])))
                plan.per_category[wnids[category_id]] = {"pairs": len(need), "votes": sum(need.values()),
                                                         "tasks": len(made_now)}
                plan.pairs += len(need)
                plan.votes += sum(need.values())
                tasks += made_now
            if not dry_run:
                _insert_tasks(session, tasks)
                items += sum(len(task.items) for task in tasks)
                reserve = getattr(chosen, "reserve", None)
                if reserve is not None:
                    reserve(session, [t.task for t in tasks])  # refuses (and rolls back) what would pass a cost cap
                if _publishes_in_transaction(chosen):
                    chosen.publish(session, [t.task for t in tasks if t.task is not None])
            plan.tasks += len(tasks)
            plan.assignments += sum(task.assignments_wanted for task in tasks)
            plan.controls += sum(task.controls * task.assignments_wanted for task in tasks)
            for task in tasks:
                plan.task_sizes[task.assignments_wanted] = plan.task_sizes.get(task.assignments_wanted, 0) + 1
            made = [task.task.id for task in tasks if task.task is not None]
        if made and not dry_run and not _publishes_in_transaction(chosen):
            with workspace.session() as session:  # committed first: a backend may commit per task (a HIT id)
                chosen.publish(session, list(session.scalars(select(Task).where(Task.id.in_(made)).order_by(Task.id))))
    if progress:
        progress(len(category_ids), len(category_ids))
    # `collect` reads the tasks' items 200 tasks at a time (`task_item.task_id IN ...`): with statistics
    # taken before they existed, PostgreSQL planned each read as a scan of every item and every image.
    analyze_if_grown(workspace.engine, "task_item", items, tables=("task", "task_item"))
    plan.held = dict(held)
    if plan.tasks == 0:
        with workspace.session() as session:
            plan.waiting_on = dict(session.execute(select(Task.backend, func.count()).where(
                Task.status.in_(("new", "open"))).group_by(Task.backend)).all())
    return plan


def _publishes_in_transaction(backend: Backend) -> bool:
    """Backends whose publish is a database update (local, simulated) open their tasks in the
    transaction that makes them; remote ones (MTurk) publish committed tasks afterwards."""
    return getattr(backend, "publish_in_transaction", True)


def _is_test(backend: Backend | None) -> bool:
    return bool(getattr(backend, "test", False))


def _may_be_published() -> ColumnElement[bool]:
    """A task a marketplace has, or may have: its id came back, or its publishing began."""
    return Task.external_id.is_not(None) | Task.publish_token.is_not(None)


def settle_unpublished(workspace: Workspace, backend: Backend) -> tuple[int, int]:
    """Tasks left unpublished (status `new`) by an earlier submit: those of another backend or
    marketplace that never reached it are discarded (they asked nobody), this backend's are
    published. Returns (discarded, published)."""
    with workspace.session() as session:
        lock_planning(session)
        mine = (Task.backend == backend.name) & (Task.test.is_(_is_test(backend)))
        stale = list(session.scalars(select(Task.id).where(Task.status == "new", ~_may_be_published(), ~mine)))
        for chunk in batched(stale, 1000):
            session.execute(delete(TaskItem).where(TaskItem.task_id.in_(chunk)))
            session.execute(delete(Task).where(Task.id.in_(chunk)))
    with workspace.session() as session:
        waiting = list(session.scalars(select(Task).where(Task.status == "new", Task.backend == backend.name,
                                                         Task.test.is_(_is_test(backend))).order_by(Task.id)))
        if waiting:
            backend.publish(session, waiting)
    return len(stale), len(waiting)

def pairs_without_clusters(session: Session) -> int:
    return session.scalar(select(func.count(func.distinct(Image.sha256))).join(
        Candidate, Candidate.image_sha256 == Image.sha256).where(
        Candidate.status == CandidateStatus.OK, Image.cluster_id.is_(None))) or 0


def _category_ids(session: Session, wnids: tuple[str, ...]) -> list[int]:
    if not wnids:
        return list(session.scalars(select(Candidate.category_id).where(Candidate.status == CandidateStatus.OK)
                                    .distinct().order_by(Candidate.category_id)))
    from imgnet_build.taxonomy import find_category  # the one SYNSET resolution

    return [find_category(session, spec).id for spec in wnids]


def category_pairs(session: Session, category_id: int) -> dict[int, tuple[str, str]]:
    """{cluster id: (representative sha256, cluster key)} of the category's candidate pairs."""
    return category_pairs_of(session, [category_id]).get(category_id, {})


def category_pairs_of(session: Session, category_ids: list[int]) -> dict[int, dict[int, tuple[str, str]]]:
    """{category id: {cluster id: (representative sha256, cluster key)}} of the categories' candidate
    pairs, in the order of `category_ids` (categories without pairs left out); one query."""
    rows = session.execute(select(Candidate.category_id, Cluster.id, Cluster.representative, Cluster.key).join(
        Image, Image.cluster_id == Cluster.id).join(Candidate, Candidate.image_sha256 == Image.sha256).where(
        Candidate.category_id.in_(category_ids), Candidate.status == CandidateStatus.OK).distinct())
    found: dict[int, dict[int, tuple[str, str]]] = defaultdict(dict)
    for category_id, cluster, representative, key in rows:
        found[category_id][cluster] = (representative, key)
    return {category_id: found[category_id] for category_id in category_ids if category_id in found}


def counted_votes(include_test: bool = False) -> Select[int | None, int, int]:
    """The query of (cluster_id, category_id, votes): per candidate pair, the workers whose vote
    counts (test answers only when `include_test`); filter it by category, or aggregate it whole."""
    query = (select(Image.cluster_id.label("cluster_id"), Vote.category_id.label("category_id"),
                    func.count(func.distinct(Vote.worker_id)).label("votes")).select_from(Vote)
             .join(Image, Image.sha256 == Vote.image_sha256)
             .join(Worker, Worker.id == Vote.worker_id)
             .join(Assignment, Assignment.id == Vote.assignment_id)
             .where(Vote.control.is_(False), Worker.blocked.is_(False), Assignment.status != "rejected",
                    Image.cluster_id.is_not(None))
             .group_by(Vote.category_id, Image.cluster_id))
    return query if include_test else query.where(Vote.test.is_(False))


def _counted_votes(session: Session, category_id: int, include_test: bool = False) -> dict[int, int]:
    """{cluster id: workers whose vote counts} on the category's candidate pairs."""
    return _counted_votes_of(session, [category_id], include_test).get(category_id, {})


def _counted_votes_of(session: Session, category_ids: list[int], include_test: bool = False
                      ) -> dict[int, dict[int, int]]:
    """{category id: {cluster id: workers whose vote counts}} on the categories' candidate pairs."""
    found: dict[int, dict[int, int]] = defaultdict(dict)
    for row in session.execute(counted_votes(include_test).where(Vote.category_id.in_(category_ids))):
        found[row.category_id][row.cluster_id] = row.votes
    return found


def _pending_votes(session: Session, category_id: int, backend: Backend | None = None) -> dict[int, int]:
    """{cluster id: votes that open tasks will still bring} (see `_pending_votes_of`)."""
    return _pending_votes_of(session, [category_id], backend).get(category_id, {})


def _pending_votes_of(session: Session, category_ids: list[int], backend: Backend | None = None
                      ) -> dict[int, dict[int, int]]:
    """{category id: {cluster id: votes that open tasks will still bring}}. Tasks not yet published
    count only when this submit (on `backend`) would publish them; test tasks only for a test backend."""
    of_categories = Task.category_id.in_(category_ids)
    done = (select(Assignment.task_id, func.count().label("done")).where(
        Assignment.status.in_(WORK_STATUSES),
        Assignment.task_id.in_(select(Task.id).where(of_categories)))  # not every task's
            .group_by(Assignment.task_id).subquery())
    live = Task.status == "open"
    if backend is None:
        live = Task.status.in_(("new", "open"))
    else:
        mine = (Task.backend == backend.name) & Task.test.is_(_is_test(backend))
        live = live | ((Task.status == "new") & (mine | _may_be_published()))
    query = (select(Task.category_id, TaskItem.cluster_id,
                    func.sum(Task.assignments_wanted - func.coalesce(done.c.done, 0)))
             .join(Task, Task.id == TaskItem.task_id).outerjoin(done, done.c.task_id == Task.id)
             .where(of_categories, live, TaskItem.kind == "candidate")
             .group_by(Task.category_id, TaskItem.cluster_id))
    if backend is not None and not _is_test(backend):
        query = query.where(Task.test.is_(False))
    found: dict[int, dict[int, int]] = defaultdict(dict)
    for category_id, cluster, left in session.execute(query).all():
        if cluster is not None:
            found[category_id][cluster] = max(0, int(left))
    return found


def _needs(session: Session, category_id: int, pairs: dict[int, tuple[str, str]],
           settings: LabelSettings, backend: Backend | None = None, held: dict[str, int] | None = None) -> dict[int, int]:
    """{cluster id: votes to ask for now} for the category (see `_needs_of`)."""
    return _needs_of(session, [category_id], {category_id: pairs}, settings, backend, held).get(category_id, {})


def _needs_of(session: Session, category_ids: list[int], pairs: dict[int, dict[int, tuple[str, str]]],
              settings: LabelSettings, backend: Backend | None = None, held: dict[str, int] | None = None
              ) -> dict[int, dict[int, int]]:
    """{category id: {cluster id: votes to ask for now}} for the categories with pairs (`pairs`, as
    `category_pairs_of` reads them), in their order, one query per kind; `held` counts the pairs
    that get nothing, by reason."""
    category_ids = [category_id for category_id in category_ids if pairs.get(category_id)]
    if not category_ids:
        return {}
    # Pending first: an answer committed between the two reads is then counted twice (a vote too
    # few asked for, asked next round), not missed by both (a vote past --max-votes; PostgreSQL
    # reads each statement at its own moment).
    pending = _pending_votes_of(session, category_ids, backend)
    have = _counted_votes_of(session, category_ids, include_test=settings.include_test or _is_test(backend))
    labels: dict[int, dict[int, str]] = defaultdict(dict)
    for category_id, cluster, status in session.execute(select(Label.category_id, Label.cluster_id, Label.status)
                                                        .where(Label.category_id.in_(category_ids))):
        labels[category_id][cluster] = status
    held = held if held is not None else defaultdict(int)
    return {category_id: _category_needs(pairs[category_id], have.get(category_id, {}),
                                         pending.get(category_id, {}), labels.get(category_id, {}), settings, held)
            for category_id in category_ids}


def _category_needs(pairs: dict[int, tuple[str, str]], have: dict[int, int], pending: dict[int, int],
                    labels: dict[int, str], settings: LabelSettings, held: dict[str, int]) -> dict[int, int]:
    """{cluster id: votes to ask for now} of one category, from what its pairs have, what open
    tasks will bring and its labels."""
    seed = _seed(pairs, have, pending, labels, settings) if settings.seeded else set()
    need = {}
    for cluster in pairs:
        if labels.get(cluster) in ("accepted", "rejected"):
            held["are decided"] += 1
            continue
        total = have.get(cluster, 0) + pending.get(cluster, 0)
        target = settings.seed_votes if cluster in seed else settings.votes
        if total < target:
            wanted = target - total
        elif pending.get(cluster, 0) == 0 and labels.get(cluster) == "undecided":
            wanted = 1
        else:
            wanted = 0
        wanted = min(wanted, settings.max_votes - total)
        if wanted > 0:
            need[cluster] = wanted
        elif pending.get(cluster, 0):
            held["wait for answers of open tasks"] += 1
        elif total >= settings.max_votes:
            held["reached --max-votes undecided"] += 1
        else:
            held["wait for label collect to decide them"] += 1
    return need


def _seed(pairs: dict, have: dict, pending: dict, labels: dict, settings: LabelSettings) -> set[int]:
    """The category's seed sample: pairs that already have the seed's votes, filled up to
    `seed_images` with undecided pairs in the order of their cluster key (a content hash)."""
    seed = {c for c in pairs if have.get(c, 0) + pending.get(c, 0) >= settings.seed_votes}
    for cluster in sorted(pairs, key=lambda c: pairs[c][1]):
        if len(seed) >= settings.seed_images:
            break
        if labels.get(cluster) not in ("accepted", "rejected"):
            seed.add(cluster)
    return seed


@dataclasses.dataclass
class _NewTask:
    assignments_wanted: int
    controls: int
    task: Task | None = None  # the row made (None in a dry run)
    items: list = dataclasses.field(default_factory=list)  # (sha256, cluster id, kind, expected), in position order


def _make_tasks(session: Session, category_id: int, pairs: dict[int, tuple[str, str]], need: dict[int, int],
                settings: LabelSettings, round_: int, backend: Backend, dry_run: bool,
                voters: dict[int, set[int]], pool: int | None, controls: tuple[list, list] = ([], [])) -> list[_NewTask]:
    """The category's tasks (rows not yet inserted: `_insert_tasks`), `controls` as `control_pools` gives them."""
    per_task = settings.images_per_task - settings.controls
    by_votes: dict[int, list[int]] = defaultdict(list)
    for cluster, wanted in sorted(need.items()):
        by_votes[wanted].append(cluster)
    rng = random.Random(f"{category_id}:{round_}")
    batch = f"r{round_}" + getattr(backend, "batch_suffix", lambda: "")()
    made: list[_NewTask] = []
    for wanted, clusters in sorted(by_votes.items()):
        for chunk in takeable_chunks(clusters, per_task, voters, None if pool is None else pool - wanted):
            items = [(pairs[c][0], c, "candidate", None) for c in chunk]
            items += pick_controls(_apart_from(controls, set(chunk)), settings.controls, rng)
            rng.shuffle(items)
            if dry_run:
                made.append(_NewTask(wanted, len(items) - len(chunk)))
                continue
            task = Task(category_id=category_id, round=round_, batch=batch, backend=backend.name,
                        status="new", assignments_wanted=wanted, test=_is_test(backend),
                        **getattr(backend, "task_columns", dict)())
            made.append(_NewTask(wanted, len(items) - len(chunk), task, items))
    return made


def _insert_tasks(session: Session, tasks: list[_NewTask]) -> None:
    """Insert the tasks (their ids allocated in one block, then one executemany: SQLite sent one
    INSERT ... RETURNING per task) and their items (one executemany); under `lock_planning`."""
    rows = [task.task for task in tasks if task.task is not None]
    if not rows:
        return
    for row, id_ in zip(rows, allocate_ids(session, Task, len(rows)), strict=True):
        row.id = id_
    session.add_all(rows)
    session.flush()
    session.connection().execute(insert(TaskItem), [
        {"task_id": task.task.id, "position": position, "image_sha256": sha, "cluster_id": cluster, "kind": kind,
         "expected": expected}
        for task in tasks if task.task is not None
        for position, (sha, cluster, kind, expected) in enumerate(task.items)])


def _apart_from(pool: tuple[list, list], clusters: set[int]) -> tuple[list, list]:
    """The control pool without the task's own candidates, one control per cluster: a task never
    shows one cluster twice (a gold answer on a candidate image, two images of one cluster)."""
    seen = set(clusters)
    kept: tuple[list, list] = ([], [])
    for side, items in zip(kept, pool, strict=True):
        for item in items:
            if item[1] is None or item[1] not in seen:
                seen.add(item[1])
                side.append(item)
    return kept


def _voters(session: Session, category_id: int, clusters: set[int]) -> dict[int, set[int]]:
    """{cluster id: workers not blocked who voted on it for the category}: they cannot take a task showing it."""
    return _voters_of(session, {category_id: clusters}).get(category_id, {})


def _voters_of(session: Session, clusters: dict[int, Any]) -> dict[int, dict[int, set[int]]]:
    """{category id: {cluster id: workers not blocked who voted on it}} for the clusters of each
    category in `clusters` ({category id: cluster ids}); one query."""
    rows = session.execute(select(Vote.category_id, Image.cluster_id, Vote.worker_id)
                           .join(Image, Image.sha256 == Vote.image_sha256)
                           .join(Worker, Worker.id == Vote.worker_id)
                           .where(Vote.category_id.in_(list(clusters)), Worker.blocked.is_(False))).all()
    voters: dict[int, dict[int, set[int]]] = defaultdict(lambda: defaultdict(set))
    for category_id, cluster, worker in rows:
        if cluster is not None and cluster in clusters[category_id]:
            voters[category_id][cluster].add(worker)
    return voters


def takeable_chunks(clusters: list, size: int, voters: dict, room: int | None) -> list[list]:
    """Tasks of at most `size` pairs, as even as possible; where the crowd is known (`room`: its workers
    not blocked, less the answers each task wants) and a task would show every worker who could answer
    it a pair they voted on (a worker takes a whole task or none), pairs with the same voters are
    grouped instead, so no task holds more than `room` of them: a late pair still finds its workers."""
    even = _even_chunks(clusters, size)
    if room is None or all(len(set().union(*(voters.get(c, ()) for c in chunk))) <= room for chunk in even):
        return even
    chunks: list[list] = []
    union: set = set()
    for cluster in sorted(clusters, key=lambda c: (sorted(voters.get(c, ())), c)):
        seen = voters.get(cluster, set())
        if chunks and len(chunks[-1]) < size and len(union | seen) <= room:
            chunks[-1].append(cluster)
            union |= seen
        else:
            chunks.append([cluster])
            union = set(seen)
    return chunks


def _even_chunks(items: list, size: int) -> list[list]:
    """Chunks of at most `size`, as even as possible (47 items at 42 a task: 24 + 23, not 42 + 5)."""
    count = max(1, -(-len(items) // size))
    step = len(items) / count
    return [items[round(i * step):round((i + 1) * step)] for i in range(count)]


@dataclasses.dataclass(frozen=True)
class Collected(Document):
    """What `collect` did: assignments stored, then the labels by status."""

    assignments: int
    accepted: int
    rejected: int
    undecided: int

    def as_dict(self) -> dict[str, int]:
        return dataclasses.asdict(self)

    def summary(self) -> str:
        return (f"label collect: {self.assignments} assignments stored; labels: {self.accepted} accepted, "
                f"{self.rejected} rejected, {self.undecided} undecided")


def collect(workspace: Workspace, settings: LabelSettings = LabelSettings(), *,
            options: dict | None = None) -> Collected:
    """Bring answers in from every backend with open tasks, close finished tasks, decide."""
    with workspace.session() as session:
        backends = list(session.scalars(select(Task.backend).where(Task.status == "open").distinct()))
        last_vote = session.scalar(select(func.max(Vote.id))) or 0  # the primary key's last entry
    stored = sum(get_backend(name, workspace, options).collect(workspace) for name in backends)
    with workspace.session() as session:
        votes = (session.scalar(select(func.max(Vote.id))) or 0) - last_vote  # about the votes stored now
    analyze_if_grown(workspace.engine, "vote", votes)  # before `decide` reads them
    _close_finished(workspace)
    decided = decide(workspace, settings)
    return Collected(stored, decided["accepted"], decided["rejected"], decided["undecided"])


def _close_finished(workspace: Workspace) -> None:
    with workspace.session() as session:
        done = (select(func.count()).where(Assignment.task_id == Task.id, Assignment.status.in_(WORK_STATUSES))
                .scalar_subquery())
        session.execute(update(Task).where(Task.status == "open", done >= Task.assignments_wanted)
                        .values(status="done"))


def decide(workspace: Workspace, settings: LabelSettings = LabelSettings()) -> dict:
    """Run the consensus method over every vote that counts; write labels, worker quality,
    blocks and (dynamic) each category's seed table. Returns counts by label status."""
    _release_freed_memory()
    counted = _read_counted(workspace, settings)
    for _ in range(2):  # a newly blocked worker's votes stop counting: decide once more without them
        votes, pairs, meta, workers = _vote_table(counted, settings)
        result = settings.consensus().fit(votes)
        assert result.workers is not None  # every registered method estimates its workers
        newly_blocked = update_workers(workspace, workers, result.workers, settings)
        if not newly_blocked:
            break
        with workspace.session() as session:  # the votes read once, less the blocked workers': not read again
            blocked = list(session.scalars(select(Worker.id).where(Worker.blocked.is_(True))))
        counted = counted.without(~np.isin(counted.workers, blocked)[counted.worker])
    _write_labels(workspace, votes, pairs, meta, result, settings)
    if settings.seeded:
        _write_category_state(workspace, votes, meta, result)
    with workspace.session() as session:
        counts = dict(session.execute(select(Label.status, func.count()).group_by(Label.status)).all())
    return {status: counts.get(status, 0) for status in ("accepted", "rejected", "undecided")}


def _release_freed_memory() -> None:
    """Give the memory freed so far (a collect's answering part) back to the system before
    `decide` allocates its arrays: glibc keeps freed heap otherwise, and the process's peak is
    that heap plus decide's arrays. A no-op off glibc."""
    if not sys.platform.startswith("linux"):
        return
    trim = getattr(ctypes.CDLL(None), "malloc_trim", None)  # glibc's; musl has none
    if trim is not None:
        trim(0)


VOTE_CHUNK = 10_000  # votes read per fetch by `decide`, turned into arrays at once (~7 MB of rows)


@dataclasses.dataclass(frozen=True)
class _Pairs:
    """The voted (cluster, category) pairs, in the order of their first counted vote (-1: no cluster)."""

    cluster: np.ndarray  # int64 cluster id per pair
    category: np.ndarray  # int64 category id per pair

    def keys(self, indices: np.ndarray) -> list[tuple[int | None, int]]:
        return [(None if cluster < 0 else cluster, category) for cluster, category in
                zip(self.cluster[indices].tolist(), self.category[indices].tolist(), strict=True)]


@dataclasses.dataclass(frozen=True)
class _Counted:
    """The votes that count, in vote order (see `_read_votes`): per vote its pair and worker as
    indices, numbered in the order of their first vote, and its flags; the pairs and worker ids
    behind the indices; the gold answers. 13 bytes per vote (int32 indices), which the consensus
    `VoteTable` shares rather than copies."""

    pair: np.ndarray  # int32 index into `pairs`
    worker: np.ndarray  # int32 index into `workers`
    answer: np.ndarray  # bool
    control: np.ndarray  # bool
    expected: np.ndarray  # int8 a control's expected answer (-1: none)
    simulated: np.ndarray  # bool
    test: np.ndarray  # bool
    pairs: _Pairs
    workers: np.ndarray  # int64 worker id per index
    gold: Mapping[tuple[int | None, int], bool | None]  # {(cluster, category): answer}
    width: int  # past every category id (`_pair_keys`)

    def without(self, keep: np.ndarray) -> _Counted:
        """Only the votes where `keep` (bool per vote) is true, their pairs and workers numbered
        again in the order of their first vote."""
        kept_pair, kept_worker = self.pair[keep], self.worker[keep]
        pair, first = _first_seen(kept_pair)
        worker, first_worker = _first_seen(kept_worker)
        pair_of, worker_of = kept_pair[first], kept_worker[first_worker]
        del kept_pair, kept_worker
        return dataclasses.replace(self, pair=pair, worker=worker, **{field: getattr(self, field)[keep]
                                                                      for field in FLAG_FIELDS},
                                   pairs=_Pairs(self.pairs.cluster[pair_of], self.pairs.category[pair_of]),
                                   workers=self.workers[worker_of])


FLAG_FIELDS = ("answer", "control", "expected", "simulated", "test")
VOTE_FIELDS = ("pair", "worker", *FLAG_FIELDS)


def _read_counted(workspace: Workspace, settings: LabelSettings) -> _Counted:
    """Every vote that counts, read `VOTE_CHUNK` votes at a time into arrays (no Python object per
    vote): a worker counts once per (current cluster, category) pair, their first vote."""
    with workspace.session() as session:
        width = (session.scalar(select(func.max(Category.id))) or 0) + 1
        gold = {(c, cat): answer for c, cat, answer in session.execute(
            select(Image.cluster_id, Gold.category_id, Gold.answer).join(Image, Image.sha256 == Gold.image_sha256))}
        key, worker, *flags, moved = _read_votes(session, settings.include_test, width)
    keep = _first_votes(worker, key, moved)
    del moved
    if not keep.all():  # two images of one cluster (a dedup merged them)
        key, worker, *flags = (column[keep] for column in (key, worker, *flags))
    pair, first = _first_seen(key)
    pair_keys = key[first]
    del key
    worker_ids = worker
    worker, first_worker = _first_seen(worker_ids)
    workers = worker_ids[first_worker].astype(np.int64)
    del worker_ids
    pairs = _Pairs(pair_keys // width - 1, pair_keys % width)  # `_pair_keys` undone
    return _Counted(pair, worker, **dict(zip(FLAG_FIELDS, flags, strict=True)), pairs=pairs, workers=workers,
                    gold=gold, width=width)


def _vote_table(counted: _Counted, settings: LabelSettings) -> tuple[VoteTable, _Pairs, dict[str, Any], list[int]]:
    """The `VoteTable` of the counted votes (sharing their index arrays), with the pairs, per-pair
    flags and worker ids behind its indices."""
    p, control, expected, pairs = counted.pair, counted.control, counted.expected, counted.pairs
    n = len(pairs.cluster)
    candidate = np.zeros(n, bool)
    candidate[p[~control]] = True
    known = _gold_answers(counted.gold, pairs, counted.width)
    given = control & (expected >= 0)  # a control's expected answer; the pair's last one stands
    last, at = np.unique(p[given][::-1], return_index=True)
    control_expected = np.full(n, -1, np.int8)
    control_expected[last] = expected[given][::-1][at]
    borrowed = (control_expected >= 0) & (known < 0) & ~candidate  # a control borrowed from elsewhere is a known
    known[borrowed] = control_expected[borrowed]  # answer; a candidate serving as a positive control stays open
    flags = {}
    for name, voted in (("simulated", counted.simulated | counted.test), ("test", counted.test)):
        flags[name] = np.zeros(n, bool)
        flags[name][p[voted]] = True
    category_ids, pair_category = np.unique(pairs.category, return_inverse=True)
    seed = candidate & (tally(p, n) >= settings.seed_votes)
    table = VoteTable.build(p, counted.worker, counted.answer, pair_category.reshape(-1), known,
                            seed if settings.seeded else None, len(counted.workers), candidate)
    meta = {"candidate": candidate, "simulated": flags["simulated"], "test": flags["test"],
            "categories": {int(category_id): i for i, category_id in enumerate(category_ids.tolist())}}
    return table, pairs, meta, counted.workers.tolist()


def _read_votes(session: Session, include_test: bool, width: int) -> list[np.ndarray]:
    """The counted votes' columns in vote order: the key of the (current cluster, category) pair
    (`_pair_keys`), worker id, answer, control, expected answer (-1: none), simulated, test, and
    whether the image's cluster changed since the vote was stored."""
    query = (select(func.coalesce(Image.cluster_id, -1), Vote.category_id, Vote.worker_id, Vote.answer, Vote.control,
                    case((TaskItem.expected.is_(None), -1), (TaskItem.expected.is_(True), 1), else_=0), Vote.simulated,
                    Vote.test, func.coalesce(Vote.cluster_id, -1))
             .join(Image, Image.sha256 == Vote.image_sha256)
             .join(TaskItem, TaskItem.id == Vote.task_item_id)
             .join(Worker, Worker.id == Vote.worker_id)
             .join(Assignment, Assignment.id == Vote.assignment_id)
             .where(Worker.blocked.is_(False), Assignment.status != "rejected")
             .order_by(Vote.id))
    if not include_test:
        query = query.where(Vote.test.is_(False))
    types = (np.int64, np.int32, bool, bool, np.int8, bool, bool, bool)  # worker ids are Integer
    chunks: list[list[np.ndarray]] = [[] for _ in types]  # per column, its chunks
    for rows in session.execute(query, execution_options={"yield_per": VOTE_CHUNK}).partitions():
        cluster, category, *values, stored = zip(*rows, strict=True)
        current = np.array(cluster, np.int64)
        chunks[0].append(_pair_keys(current, np.array(category, np.int64), width))
        for column, chunk, dtype in zip(chunks[1:], values, types[1:], strict=False):
            column.append(np.array(chunk, dtype))
        stored_cluster = np.array(stored, np.int64)
        chunks[-1].append((stored_cluster < 0) | (stored_cluster != current))
    columns = []
    for column, dtype in zip(chunks, types, strict=True):  # one column's chunks at a time: no second copy
        columns.append(np.concatenate(column) if column else np.zeros(0, dtype))
        column.clear()
    return columns


def _pair_keys(cluster: np.ndarray, category: np.ndarray, width: int) -> np.ndarray:
    """One int64 per (cluster, category) pair (cluster -1: none), `width` past every category id."""
    if len(cluster) and (int(cluster.max()) + 2) * width >= 2 ** 63:
        raise OverflowError(f"cluster ids up to {int(cluster.max())} with {width} categories do not fit one int64")
    return (cluster + 1) * width + category


def _first_seen(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Number the distinct values in the order they first appear: (int32 number per element,
    position of each number's first element). One stable sort (a value's first element leads its
    run), the rest a chunk at a time: 17 bytes per element beside the values (np.unique with its
    index and inverse: about 40)."""
    n = len(values)
    order = np.argsort(values, kind="stable")
    new = np.ones(n, bool)  # the element leads its run of equal values in sorted order
    for start in range(1, n, VOTE_CHUNK * 10):
        stop = min(start + VOTE_CHUNK * 10, n)
        new[start:stop] = values[order[start:stop]] != values[order[start - 1:stop - 1]]
    first = order[new]  # per run, its first element
    dtype = np.int32 if n < 2 ** 31 else np.int64
    rank = np.empty(len(first), dtype)  # per run, its number: runs ordered by their first element
    rank[np.argsort(first)] = np.arange(len(first), dtype=dtype)
    run = np.cumsum(new, dtype=dtype) - 1
    del new
    number = np.empty(n, dtype)
    for start in range(0, n, VOTE_CHUNK * 10):
        number[order[start:start + VOTE_CHUNK * 10]] = rank[run[start:start + VOTE_CHUNK * 10]]
    return number, np.sort(first)


def _first_votes(worker: np.ndarray, pair: np.ndarray, moved: np.ndarray) -> np.ndarray:
    """Which votes count (bool per vote): a worker's first vote on a pair. Only votes on the pairs
    of a vote whose image changed cluster can repeat one (the unique constraint on (worker,
    cluster when stored, category) keeps the others apart), so only those are sorted."""
    keep = np.ones(len(worker), bool)
    if not moved.any():
        return keep
    suspect = np.flatnonzero(np.isin(pair, pair[moved]))
    order = suspect[np.lexsort((pair[suspect], worker[suspect]))]  # stable: a key's votes stay in vote order
    repeat = (worker[order][1:] == worker[order][:-1]) & (pair[order][1:] == pair[order][:-1])
    keep[order[1:][repeat]] = False
    return keep


def _gold_answers(gold: Mapping[tuple[int | None, int], bool | None], pairs: _Pairs, width: int) -> np.ndarray:
    """Per pair the gold answer (int8: 1 yes, 0 no, -1 none)."""
    known = np.full(len(pairs.cluster), -1, np.int8)
    given = [(-1 if cluster is None else cluster, category, int(answer))
             for (cluster, category), answer in gold.items() if answer is not None]
    if given:
        cluster, category, answer = (np.array(column, np.int64) for column in zip(*given, strict=True))
        keys = _pair_keys(cluster, category, width)
        order = np.argsort(keys)
        keys, answer = keys[order], answer[order]
        at, found = find_sorted(keys, _pair_keys(pairs.cluster, pairs.category, width))
        known[found] = answer[at[found]]
    return known


LABEL_COLUMNS = ("status", "confidence", "yes_votes", "no_votes", "method", "simulated", "test")


def _write_labels(workspace: Workspace, votes: VoteTable, pairs: _Pairs, meta: dict, result: Decision,
                  settings: LabelSettings) -> None:
    """Insert or update the label of every candidate pair whose decision changed (and its history),
    2,000 pairs per transaction: one read, one insert and one update statement each."""
    yes, no = votes.counts()
    now = dt.datetime.now(dt.UTC)
    decided = np.flatnonzero(meta["candidate"])
    for start in range(0, len(decided), 2000):
        chunk = decided[start:start + 2000]
        keys = pairs.keys(chunk)
        rows = zip(keys, result.status[chunk].tolist(), result.posterior[chunk].tolist(), yes[chunk].tolist(),
                   no[chunk].tolist(), meta["simulated"][chunk].tolist(), meta["test"][chunk].tolist(), strict=True)
        with workspace.session() as session:  # under the lock: concurrent collects never insert one label twice
            lock_planning(session)
            round_ = session.scalar(select(func.max(Task.round))) or 0
            existing = {(row[1], row[2]): row for row in session.execute(
                select(Label.id, Label.cluster_id, Label.category_id, *(getattr(Label, k) for k in LABEL_COLUMNS))
                .where(Label.cluster_id.in_({cluster for cluster, _ in keys})))}
            history, added, changed = [], [], []
            for key, status, posterior, yes_votes, no_votes, simulated, test in rows:
                values = {"status": str(status), "confidence": round(float(posterior), 6), "yes_votes": yes_votes,
                          "no_votes": no_votes, "method": settings.method, "simulated": simulated, "test": test}
                row = existing.get(key)
                if row is not None and all(stored == values[k] for k, stored in zip(LABEL_COLUMNS, row[3:], strict=True)):
                    continue
                if row is None:
                    added.append({"cluster_id": key[0], "category_id": key[1], "round": round_, "updated_at": now,
                                  **values})
                else:
                    changed.append({"id": row[0], "round": round_, "updated_at": now, **values})
                history.append({"cluster_id": key[0], "category_id": key[1], "round": round_, "created_at": now,
                                **{k: v for k, v in values.items() if k not in ("simulated", "test")}})
            if added:
                session.execute(insert(Label), added)
            if changed:
                session.execute(update(Label), changed)  # by primary key: one executemany
            if history:
                session.execute(insert(LabelHistory), history)
    _drop_unsupported(workspace, pairs, meta["candidate"])


def _drop_unsupported(workspace: Workspace, pairs: _Pairs, decided: np.ndarray) -> None:
    """Labels no counted vote supports any more (their votes were test answers, or their workers
    were blocked) are removed: their pairs are asked again. The labels are read in chunks and
    matched against the decided pairs' sorted keys."""
    with workspace.session() as session:
        lock_planning(session)
        width = (session.scalar(select(func.max(Category.id))) or 0) + 1
        supported = np.sort(_pair_keys(pairs.cluster[decided], pairs.category[decided], width))
        stale: list[int] = []
        query = select(Label.id, Label.cluster_id, Label.category_id)
        for rows in session.execute(query, execution_options={"yield_per": VOTE_CHUNK}).partitions():
            ids, clusters, categories = (np.array(column, np.int64) for column in zip(*rows, strict=True))
            _, found = find_sorted(supported, _pair_keys(clusters, categories, width))
            stale += ids[~found].tolist()
        for chunk in batched(stale, 500):
            session.execute(delete(Label).where(Label.id.in_(chunk)))


def _write_category_state(workspace: Workspace, votes: VoteTable, meta: dict, result: Decision) -> None:
    """Each voted category's consensus state, 2,000 categories per transaction (one read and their
    objects each, not every category's at once)."""
    now = dt.datetime.now(dt.UTC)
    seeded = np.bincount(votes.pair_category[votes.seed], minlength=len(meta["categories"]))
    tables = seed_tables(votes, result.posterior, np.flatnonzero(seeded).tolist())  # one pass over the votes
    for chunk in batched(meta["categories"].items(), 2000):
        with workspace.session() as session:
            lock_planning(session)
            states = {state.category_id: state for state in session.scalars(
                select(CategoryConsensus).where(CategoryConsensus.category_id.in_([c for c, _ in chunk])))}
            for category_id, index in chunk:
                state = states.get(category_id) or CategoryConsensus(category_id=category_id)
                state.seed_images = int(seeded[index])
                state.prior = None if result.category_prior is None else round(float(result.category_prior[index]), 4)
                state.table = tables.get(index)
                state.hard = bool(result.hard[index]) if result.hard is not None else False
                state.updated_at = now
                session.add(state)


@dataclasses.dataclass(frozen=True)
class RunResult(Document):
    """What `run` did: rounds that issued tasks, then the last collect's counts."""

    rounds: int
    assignments: int
    accepted: int
    rejected: int
    undecided: int

    def as_dict(self) -> dict[str, int]:
        return dataclasses.asdict(self)

    def summary(self) -> str:
        return (f"label run: {self.rounds} rounds; labels: {self.accepted} accepted, "
                f"{self.rejected} rejected, {self.undecided} undecided")


def run(workspace: Workspace, backend: str, settings: LabelSettings = LabelSettings(), *,
        options: dict | None = None, max_rounds: int = 100, say: Say | None = None) -> RunResult:
    """Submit and collect until nothing is left to ask (all decided, or `max_votes` spent);
    `say` takes each round's submit and collect lines."""
    chosen = get_backend(backend, workspace, options)
    if not chosen.answers_itself:
        raise BadInput(f"label run drives backends that answer by themselves (simulated); {backend!r} tasks are "
                       f"answered by people: use imgnet label submit, then imgnet label collect")
    decided = collect(workspace, settings, options=options)  # what a killed run left open, and fresh labels
    rounds = 0
    for number in range(1, max_rounds + 1):
        plan = submit(workspace, backend, settings, options=options)
        if say:
            say(plan.summary())
        if plan.tasks == 0:
            break
        rounds = number
        decided = collect(workspace, settings, options=options)
        if say:
            say(f"label collect: {decided.assignments} assignments; labels: {decided.accepted} accepted, "
                f"{decided.rejected} rejected, {decided.undecided} undecided")
        if decided.assignments == 0:  # the crowd has nobody left for what is still open
            break
    return RunResult(rounds, **decided.as_dict())


@dataclasses.dataclass(frozen=True)
class Expired(Document):
    """What `expire` stopped: tasks (and per backend), MTurk HITs, assignments collected first."""

    tasks: int
    hits_expired: int
    assignments_collected: int
    per_backend: dict[str, int]

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def summary(self) -> str:
        per = ", ".join(f"{name} {count}" for name, count in sorted(self.per_backend.items())) or "none open"
        return (f"label expire: {self.tasks} tasks closed ({per}); {self.hits_expired} HITs expired, "
                f"{self.assignments_collected} assignments collected first")


def expire(workspace: Workspace, backend: str | None = None, batch: str | None = None, *,
           live: bool = False) -> Expired:
    """Stop open and unpublished tasks on every backend (or only `backend`; only batch `batch`, as
    `label status` shows it, e.g. r2): MTurk's answers already submitted are collected first and its
    HITs expire on the marketplace; the others close at once (a worker's late submission is then
    refused). Returns the counts (`Expired`)."""
    with workspace.session() as session:
        names = list(session.scalars(select(Task.backend).where(Task.status.in_(("new", "open"))).distinct()))
    if backend is not None:
        get_backend(backend, workspace, {"live": live})  # an unknown name is refused
        names = [name for name in names if name == backend]
    result: dict[str, Any] = {"tasks": 0, "hits_expired": 0, "assignments_collected": 0, "per_backend": {}}
    for name in sorted(names):
        if name == "mturk":
            from imgnet_build.labeling.mturk import expire as expire_hits

            done = expire_hits(workspace, batch, live=live)
        else:
            with workspace.session() as session:
                lock_planning(session)
                query = update(Task).where(Task.backend == name, Task.status.in_(("new", "open")))
                if batch:
                    query = query.where((Task.batch == batch) | Task.batch.like(f"{batch}-%"))
                expired = cast(CursorResult, session.execute(query.values(status="expired")))
                done = {"tasks": expired.rowcount, "hits_expired": 0,
                        "assignments_collected": 0}
        result["per_backend"][name] = done["tasks"]
        for key in ("tasks", "hits_expired", "assignments_collected"):
            result[key] += done[key]
    return Expired(**result)
