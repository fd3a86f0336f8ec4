"""The numbers behind the report, read with aggregate queries (one row per group, never
one per image): memory grows with the number of categories and workers, not of images.

    facts = gather_facts(session, workspace)
    facts.truth.precision, facts.controls.accuracy, facts.cost, ...
"""

from __future__ import annotations

import dataclasses
from collections import Counter, defaultdict
from collections.abc import Iterator
from decimal import Decimal
from typing import TYPE_CHECKING

from sqlalchemy import and_, case, func, select
from sqlalchemy.orm import Session

from imgnet_build import taxonomy
from imgnet_build.dedup import duplicate_counts
from imgnet_build.labeling.backends import workspace_spend
from imgnet_build.store import (
    Candidate,
    CandidateStatus,
    Category,
    CategoryConsensus,
    Cluster,
    Image,
    Label,
    TaskItem,
    Vote,
    Worker,
)

if TYPE_CHECKING:
    from imgnet_build.workspace import Workspace

__all__ = ["Facts", "gather_facts", "reason_group", "MAX_TREE_ROWS", "MAX_WORKER_ROWS"]

MAX_TREE_ROWS = 1500  # rows of the category tree shown; the rest is counted in a note
MAX_WORKER_ROWS = 200  # workers shown, most votes first
MAX_REASONS = 30  # failure reasons shown, commonest first
MAX_CONFLICTS = 20  # cross-category clusters listed


def reason_group(status: str, error: str) -> str:
    """Failures group by the text before the first colon ("HTTP 404 Not Found", "not an image");
    skip reasons are short already and stay whole."""
    return error if status == CandidateStatus.SKIPPED else error.split(":")[0].strip()


@dataclasses.dataclass
class CategoryRow:
    wnid: str
    name: str
    gloss: str
    level: int = 0  # indentation in the tree
    below: int = 0  # distinct categories below it
    candidates: int = 0
    images: int = 0  # distinct images gathered (duplicates count once)
    accepted: int = 0  # labels (one per duplicate cluster)
    rejected: int = 0
    undecided: int = 0
    train: int = 0  # accepted clusters the last export put in train
    val: int = 0
    hard: bool = False
    true_positives: int = 0
    false_positives: int = 0

    @property
    def precision(self) -> float | None:
        judged = self.true_positives + self.false_positives
        return self.true_positives / judged if judged else None


@dataclasses.dataclass
class Reason:
    status: str
    reason: str
    count: int = 0
    by_source: Counter = dataclasses.field(default_factory=Counter)
    example_url: str = ""


@dataclasses.dataclass
class Duplicates:
    images: int = 0
    unclustered: int = 0  # images dedup has not seen yet
    duplicates: int = 0  # dedup.DuplicateCounts: candidates showing a picture another one shows
    exact_files: int = 0  # the same file fetched again
    exact_pixels: int = 0  # the same pixels in another file
    near: int = 0  # near copies
    clusters: int = 0  # duplicate clusters (as `imgnet dedup` and `imgnet status` count them)
    sizes: dict[int, int] = dataclasses.field(default_factory=dict)  # images in a cluster -> clusters
    conflicts: int = 0  # clusters gathered for more than one category
    conflict_examples: list[tuple[str, list[str]]] = dataclasses.field(default_factory=list)  # representative, wnids


@dataclasses.dataclass
class Controls:
    """Votes on control items against their known answers: (expected, answer) -> votes."""

    table: Counter = dataclasses.field(default_factory=Counter)

    @property
    def votes(self) -> int:
        return sum(self.table.values())

    @property
    def accuracy(self) -> float | None:
        return (self.table[True, True] + self.table[False, False]) / self.votes if self.votes else None

    @property
    def precision(self) -> float | None:
        """Of the yes answers on controls, the share that were right."""
        yes = self.table[True, True] + self.table[False, True]
        return self.table[True, True] / yes if yes else None

    @property
    def recall(self) -> float | None:
        """Of the positive controls' votes, the share answered yes."""
        positive = self.table[True, True] + self.table[True, False]
        return self.table[True, True] / positive if positive else None


@dataclasses.dataclass
class Truth:
    """Labels against candidates' known answers: (label status, truth) -> labels. A label's
    truth is the majority of its cluster's candidates for that category; ties are left out."""

    table: Counter = dataclasses.field(default_factory=Counter)
    ties: int = 0

    @property
    def labels(self) -> int:
        return sum(self.table.values())

    @property
    def precision(self) -> float | None:
        """Of the accepted labels, the share whose truth is yes."""
        accepted = self.table["accepted", True] + self.table["accepted", False]
        return self.table["accepted", True] / accepted if accepted else None

    @property
    def recall(self) -> float | None:
        """Of the labels whose truth is yes (accepted, rejected or undecided), the share accepted."""
        positive = sum(count for (_, truth), count in self.table.items() if truth)
        return self.table["accepted", True] / positive if positive else None


@dataclasses.dataclass
class WorkerRow:
    external_id: str
    name: str | None
    backend: str
    simulated: bool
    accuracy: float | None
    control_answers: int
    control_correct: int
    votes: int
    blocked: bool
    revoked: bool

    @property
    def control_accuracy(self) -> float | None:
        return self.control_correct / self.control_answers if self.control_answers else None


@dataclasses.dataclass
class Workers:
    total: int = 0
    blocked: int = 0
    simulated: int = 0
    rows: list[WorkerRow] = dataclasses.field(default_factory=list)  # the most active MAX_WORKER_ROWS
    accuracies: list[float] = dataclasses.field(default_factory=list)
    control_accuracies: list[float] = dataclasses.field(default_factory=list)


@dataclasses.dataclass
class CostRow:
    backend: str
    tasks: int = 0
    assignments: int = 0  # submitted or approved
    reward: Decimal = Decimal(0)
    fee: Decimal = Decimal(0)
    paid: bool = False  # False: a backend that costs nothing (local, simulated)

    @property
    def total(self) -> Decimal:
        return self.reward + self.fee


@dataclasses.dataclass
class HardCategory:
    wnid: str
    name: str
    seed_images: int
    prior: float | None


@dataclasses.dataclass
class Facts:
    stages: dict[str, object]
    categories: dict[str, CategoryRow]  # by wnid, in tree order
    tree_rows: list[tuple[int, str]]  # (level, wnid) in display order, at most MAX_TREE_ROWS
    tree_rows_left_out: int
    tree_pruned: bool  # only categories with candidates or labels in or below them are listed
    sources: dict[str, Counter]  # source -> status -> candidates
    reasons: list[Reason]
    reasons_left_out: int
    duplicates: Duplicates
    votes_per_pair: dict[int, int]  # votes on a pair (controls excluded) -> pairs
    vote_patterns: list[tuple[int, int, str, int]]  # (yes, no, label status, labels), commonest first
    simulated_labels: int
    controls: Controls
    truth: Truth
    workers: Workers
    cost: list[CostRow]
    hard: list[HardCategory]

    @property
    def total_cost(self) -> Decimal:
        return sum((row.total for row in self.cost), Decimal(0))

    @property
    def splits(self) -> dict[str, int]:
        rows = self.categories.values()
        return {"train": sum(r.train for r in rows), "val": sum(r.val for r in rows)}


def gather_facts(session: Session, workspace: Workspace) -> Facts:
    """Everything the report shows except pictures."""
    from imgnet_build.store import stage_counts

    categories, tree_rows, left_out, pruned = _categories(session)
    reasons, reasons_left_out = _reasons(session)
    return Facts(
        stages=stage_counts(session), categories=categories, tree_rows=tree_rows, tree_rows_left_out=left_out,
        tree_pruned=pruned,
        sources=_sources(session), reasons=reasons, reasons_left_out=reasons_left_out,
        duplicates=_duplicates(session), votes_per_pair=_votes_per_pair(session),
        vote_patterns=_vote_patterns(session),
        simulated_labels=session.scalar(select(func.count()).select_from(Label).where(Label.simulated.is_(True))) or 0,
        controls=_controls(session), truth=_truth(session, categories), workers=_workers(session),
        cost=_cost(session, workspace), hard=_hard(session))


def _tree_order(nodes: dict[str, taxonomy.TreeNode], wanted: set[str] | None, limit: int) -> Iterator[tuple[int, str]]:
    """(level, wnid) depth first from the tops, only through `wanted` (None: all); a category
    with several parents shows under each."""
    keep = (lambda wnid: True) if wanted is None else wanted.__contains__
    stack = [(root, 0) for root in reversed(taxonomy.tree_tops(nodes)) if keep(root)]
    shown = 0
    while stack and shown < limit:
        node, level = stack.pop()
        yield level, node
        shown += 1
        stack.extend((child, level + 1) for child in reversed(nodes[node].children) if keep(child))


def _with_ancestors(nodes: dict[str, taxonomy.TreeNode], wnids: set[str]) -> set[str]:
    found, todo = set(), list(wnids)
    while todo:
        wnid = todo.pop()
        if wnid not in found:
            found.add(wnid)
            todo.extend(nodes[wnid].parents)
    return found


def _categories(session: Session) -> tuple[dict[str, CategoryRow], list[tuple[int, str]], int, bool]:
    """Rows by wnid (tree order first), the tree's display rows, how many categories they leave
    out, and whether the tree was pruned to the categories with candidates or labels (and
    their ancestors): a tree of thousands of categories of which a few were gathered."""
    nodes = taxonomy.load_tree(session)
    below = taxonomy.descendant_counts(nodes)
    rows = {wnid: CategoryRow(wnid, node.name, node.gloss, below=below[wnid]) for wnid, node in nodes.items()}
    by_id = dict(session.execute(select(Category.id, Category.wnid)).all())
    for category_id, count in session.execute(select(Candidate.category_id, func.count())
                                              .group_by(Candidate.category_id)):
        rows[by_id[category_id]].candidates = count
    for wnid, count in taxonomy.image_counts(session).items():
        rows[wnid].images = count
    for category_id, status, count in session.execute(
            select(Label.category_id, Label.status, func.count()).group_by(Label.category_id, Label.status)):
        setattr(rows[by_id[category_id]], status, count)
    for category_id, split, count in session.execute(
            select(Label.category_id, Cluster.split, func.count()).join(Cluster, Cluster.id == Label.cluster_id)
            .where(Label.status == "accepted", Cluster.split.is_not(None)).group_by(Label.category_id, Cluster.split)):
        setattr(rows[by_id[category_id]], str(split), count)  # never None: the query says so
    for (category_id,) in session.execute(select(CategoryConsensus.category_id)
                                          .where(CategoryConsensus.hard.is_(True))):
        rows[by_id[category_id]].hard = True
    with_data = {w for w, r in rows.items() if r.candidates or r.accepted or r.rejected or r.undecided}
    wanted = _with_ancestors(nodes, with_data) if with_data else None
    tree_rows = list(_tree_order(nodes, wanted, MAX_TREE_ROWS))
    left_out = len(nodes) - len({wnid for _, wnid in tree_rows})  # categories not shown anywhere
    for level, wnid in reversed(tree_rows):  # the first (shallowest-listed) appearance wins
        rows[wnid].level = level
    order = [wnid for _, wnid in tree_rows] + sorted(rows)
    return {wnid: rows[wnid] for wnid in dict.fromkeys(order)}, tree_rows, left_out, wanted is not None


def _sources(session: Session) -> dict[str, Counter]:
    sources: dict[str, Counter] = defaultdict(Counter)
    for source, status, count in session.execute(
            select(Candidate.source, Candidate.status, func.count()).group_by(Candidate.source, Candidate.status)
            .order_by(Candidate.source)):
        sources[source][status] = count
    return dict(sources)


def _reasons(session: Session) -> tuple[list[Reason], int]:
    grouped: dict[tuple[str, str], Reason] = {}
    rows = session.execute(
        select(Candidate.source, Candidate.status, Candidate.error, func.count(), func.min(Candidate.url))
        .where(Candidate.error.is_not(None), Candidate.status.in_((CandidateStatus.FAILED, CandidateStatus.SKIPPED)))
        .group_by(Candidate.source, Candidate.status, Candidate.error), execution_options={"yield_per": 1000})
    for source, status, error, count, url in rows:
        key = (status, reason_group(status, error or ""))
        reason = grouped.setdefault(key, Reason(status, key[1], example_url=url))
        reason.count += count
        reason.by_source[source] += count
    ranked = sorted(grouped.values(), key=lambda r: (-r.count, r.status, r.reason))
    return ranked[:MAX_REASONS], max(0, len(ranked) - MAX_REASONS)


def _duplicates(session: Session) -> Duplicates:
    found = Duplicates()
    found.images = session.scalar(select(func.count()).select_from(Image)) or 0
    found.unclustered = session.scalar(select(func.count()).select_from(Image).where(Image.cluster_id.is_(None))) or 0
    counts = duplicate_counts(session)  # the one definition dedup and status use too
    found.duplicates, found.clusters, found.conflicts = counts.duplicates, counts.clusters, counts.conflicts
    found.exact_files, found.exact_pixels, found.near = counts.exact_files, counts.exact_pixels, counts.near
    sizes = (select(func.count().label("size")).select_from(Image).where(Image.cluster_id.is_not(None))
             .group_by(Image.cluster_id).subquery())
    found.sizes = {size: count for size, count in session.execute(
        select(sizes.c.size, func.count()).where(sizes.c.size > 1).group_by(sizes.c.size).order_by(sizes.c.size))}
    if not found.conflicts:
        return found
    spread = func.count(func.distinct(Candidate.category_id))
    spans = (select(Image.cluster_id.label("cluster_id"), spread.label("categories"))
             .join(Candidate, Candidate.image_sha256 == Image.sha256)
             .where(Candidate.status == CandidateStatus.OK, Image.cluster_id.is_not(None))
             .group_by(Image.cluster_id).having(spread > 1).subquery())
    examples = session.execute(select(spans.c.cluster_id, Cluster.representative)
                               .join(Cluster, Cluster.id == spans.c.cluster_id)
                               .order_by(spans.c.categories.desc(), spans.c.cluster_id).limit(MAX_CONFLICTS)).all()
    wnids: dict[int | None, set[str]] = defaultdict(set)
    if examples:
        for cluster_id, wnid in session.execute(
                select(Image.cluster_id, Category.wnid).join(Candidate, Candidate.image_sha256 == Image.sha256)
                .join(Category, Category.id == Candidate.category_id)
                .where(Candidate.status == CandidateStatus.OK, Image.cluster_id.in_([e.cluster_id for e in examples]))):
            wnids[cluster_id].add(wnid)
    found.conflict_examples = [(e.representative, sorted(wnids[e.cluster_id])) for e in examples]
    return found


def _votes_per_pair(session: Session) -> dict[int, int]:
    per_pair = (select(func.count().label("votes")).select_from(Vote).where(Vote.control.is_(False))
                .group_by(Vote.image_sha256, Vote.category_id).subquery())
    return dict(session.execute(select(per_pair.c.votes, func.count()).group_by(per_pair.c.votes)
                                .order_by(per_pair.c.votes)).all())


def _vote_patterns(session: Session) -> list[tuple[int, int, str, int]]:
    rows = session.execute(select(Label.yes_votes, Label.no_votes, Label.status, func.count().label("labels"))
                           .group_by(Label.yes_votes, Label.no_votes, Label.status)
                           .order_by(func.count().desc(), Label.yes_votes, Label.no_votes).limit(20))
    return [(yes, no, status, count) for yes, no, status, count in rows]


def _controls(session: Session) -> Controls:
    controls = Controls()
    for expected, answer, count in session.execute(
            select(TaskItem.expected, Vote.answer, func.count()).join(TaskItem, TaskItem.id == Vote.task_item_id)
            .where(TaskItem.kind.in_(("positive", "negative")), TaskItem.expected.is_not(None))
            .group_by(TaskItem.expected, Vote.answer)):
        controls.table[bool(expected), bool(answer)] += count
    return controls


def _truth(session: Session, categories: dict[str, CategoryRow]) -> Truth:
    yes = func.sum(case((Candidate.truth.is_(True), 1), else_=0))
    no = func.sum(case((Candidate.truth.is_(False), 1), else_=0))
    per_label = (select(Label.category_id.label("category_id"), Label.status.label("status"),
                        yes.label("yes"), no.label("no"))
                 .join(Image, Image.cluster_id == Label.cluster_id)
                 .join(Candidate, and_(Candidate.image_sha256 == Image.sha256,
                                       Candidate.category_id == Label.category_id))
                 .where(Candidate.truth.is_not(None))
                 .group_by(Label.id, Label.category_id, Label.status).subquery())
    yes_wins, no_wins = per_label.c.yes > per_label.c.no, per_label.c.no > per_label.c.yes
    verdict = case((yes_wins, 1), (no_wins, 0), else_=-1).label("verdict")
    by_id = dict(session.execute(select(Category.id, Category.wnid)).all())
    truth = Truth()
    for category_id, status, value, count in session.execute(
            select(per_label.c.category_id, per_label.c.status, verdict, func.count())
            .group_by(per_label.c.category_id, per_label.c.status, verdict)):
        if value == -1:
            truth.ties += count
            continue
        truth.table[status, bool(value)] += count
        if status == "accepted":
            row = categories[by_id[category_id]]
            if value:
                row.true_positives += count
            else:
                row.false_positives += count
    return truth


def _workers(session: Session) -> Workers:
    workers = Workers()
    workers.total = session.scalar(select(func.count()).select_from(Worker)) or 0
    workers.blocked = session.scalar(select(func.count()).where(Worker.blocked.is_(True))) or 0
    workers.simulated = session.scalar(select(func.count()).where(Worker.simulated.is_(True))) or 0
    votes = select(Vote.worker_id, func.count().label("votes")).group_by(Vote.worker_id).subquery()
    count = func.coalesce(votes.c.votes, 0)
    for worker, n in session.execute(select(Worker, count).outerjoin(votes, votes.c.worker_id == Worker.id)
                                     .order_by(count.desc(), Worker.id).limit(MAX_WORKER_ROWS)):
        workers.rows.append(WorkerRow(worker.external_id, worker.name, worker.backend, worker.simulated,
                                      worker.accuracy, worker.control_answers, worker.control_correct, n,
                                      worker.blocked, worker.revoked))
    for accuracy, answers, correct in session.execute(
            select(Worker.accuracy, Worker.control_answers, Worker.control_correct),
            execution_options={"yield_per": 5000}):
        if accuracy is not None:
            workers.accuracies.append(accuracy)
        if answers:
            workers.control_accuracies.append(correct / answers)
    return workers


def _cost(session: Session, workspace: Workspace) -> list[CostRow]:
    """The cost table: `label status`'s computation, by marketplace; test money shows as nothing."""
    return [CostRow(spend.marketplace, spend.tasks, spend.assignments,
                    spend.reward_usd if spend.paid else Decimal(0), spend.fee_usd if spend.paid else Decimal(0),
                    paid=spend.paid) for spend in workspace_spend(session, workspace)]


def _hard(session: Session) -> list[HardCategory]:
    rows = session.execute(select(Category.wnid, Category.name, CategoryConsensus.seed_images, CategoryConsensus.prior)
                           .join(CategoryConsensus, CategoryConsensus.category_id == Category.id)
                           .where(CategoryConsensus.hard.is_(True)).order_by(Category.wnid))
    return [HardCategory(*row) for row in rows]
