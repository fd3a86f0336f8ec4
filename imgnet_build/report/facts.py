"""The numbers behind the report, read with aggregate queries (one row per group, never
one per image), so a workspace of millions of images costs the same memory as a small one.

    facts = gather_facts(session)
    facts.truth.precision, facts.controls.accuracy, facts.cost, ...
"""

from __future__ import annotations

import dataclasses
from collections import Counter, defaultdict
from collections.abc import Iterator
from decimal import Decimal, InvalidOperation

from sqlalchemy import and_, case, func, select
from sqlalchemy.orm import Session

from imgnet_build import taxonomy
from imgnet_build.store import (
    Assignment,
    Candidate,
    CandidateStatus,
    Category,
    CategoryConsensus,
    Cluster,
    Image,
    Label,
    Task,
    TaskItem,
    Vote,
    Worker,
)

__all__ = ["Facts", "gather_facts", "reason_group", "MAX_TREE_ROWS", "MAX_WORKER_ROWS"]

MAX_TREE_ROWS = 1500  # rows of the category tree shown; the rest is counted in a note
MAX_WORKER_ROWS = 200  # workers shown, most votes first
MAX_REASONS = 30  # failure reasons shown, commonest first
MAX_CONFLICTS = 20  # cross-category clusters listed
PAID_ASSIGNMENTS = ("submitted", "approved")  # work a requester pays for (rejected work is not paid)


def mturk_fee(reward: Decimal, assignments_wanted: int) -> Decimal:
    """Amazon's commission: 20% of the reward, 40% for tasks with 10 or more assignments."""
    return reward * (Decimal("0.40") if assignments_wanted >= 10 else Decimal("0.20"))


# Fees on top of the reward, per backend. A backend costs money when it is here or its class says
# `costs_money`; the others (local, simulated) cost 0.
MONEY_BACKENDS = {"mturk": mturk_fee}


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
    duplicate_images: int = 0  # images that point to another as their representative
    clusters: int = 0  # clusters with two images or more
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
    unpriced_tasks: int = 0  # tasks of a paid backend with no readable reward

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
        return {"train": sum(r.train for r in self.categories.values()), "val": sum(r.val for r in self.categories.values())}


def gather_facts(session: Session) -> Facts:
    """Everything the report shows except pictures."""
    from imgnet_build.store import stage_counts

    categories, tree_rows, left_out = _categories(session)
    reasons, reasons_left_out = _reasons(session)
    return Facts(
        stages=stage_counts(session), categories=categories, tree_rows=tree_rows, tree_rows_left_out=left_out,
        sources=_sources(session), reasons=reasons, reasons_left_out=reasons_left_out,
        duplicates=_duplicates(session), votes_per_pair=_votes_per_pair(session),
        vote_patterns=_vote_patterns(session),
        simulated_labels=session.scalar(select(func.count()).select_from(Label).where(Label.simulated.is_(True))) or 0,
        controls=_controls(session), truth=_truth(session, categories), workers=_workers(session),
        cost=_cost(session), hard=_hard(session))


def _tree_order(nodes: dict[str, taxonomy.TreeNode], limit: int) -> Iterator[tuple[int, str]]:
    """(level, wnid) depth first from the tops; a category with several parents shows under each."""
    stack = [(root, 0) for root in reversed(taxonomy.tree_tops(nodes))]
    shown = 0
    while stack and shown < limit:
        node, level = stack.pop()
        yield level, node
        shown += 1
        stack.extend((child, level + 1) for child in reversed(nodes[node].children))


def _categories(session: Session) -> tuple[dict[str, CategoryRow], list[tuple[int, str]], int]:
    nodes = taxonomy.load_tree(session)
    below = taxonomy.descendant_counts(nodes)
    rows = {wnid: CategoryRow(wnid, node.name, node.gloss, below=below[wnid]) for wnid, node in nodes.items()}
    tree_rows = list(_tree_order(nodes, MAX_TREE_ROWS))
    left_out = len(nodes) - len({wnid for _, wnid in tree_rows})  # categories not shown anywhere
    for level, wnid in reversed(tree_rows):  # the first (shallowest-listed) appearance wins
        rows[wnid].level = level
    by_id = dict(session.execute(select(Category.id, Category.wnid)).all())
    for category_id, count in session.execute(select(Candidate.category_id, func.count()).group_by(Candidate.category_id)):
        rows[by_id[category_id]].candidates = count
    for wnid, count in taxonomy.image_counts(session).items():
        rows[wnid].images = count
    for category_id, status, count in session.execute(
            select(Label.category_id, Label.status, func.count()).group_by(Label.category_id, Label.status)):
        setattr(rows[by_id[category_id]], status, count)
    for category_id, split, count in session.execute(
            select(Label.category_id, Cluster.split, func.count()).join(Cluster, Cluster.id == Label.cluster_id)
            .where(Label.status == "accepted", Cluster.split.is_not(None)).group_by(Label.category_id, Cluster.split)):
        setattr(rows[by_id[category_id]], split, count)
    for (category_id,) in session.execute(select(CategoryConsensus.category_id).where(CategoryConsensus.hard.is_(True))):
        rows[by_id[category_id]].hard = True
    order = [wnid for _, wnid in tree_rows] + sorted(rows)
    return {wnid: rows[wnid] for wnid in dict.fromkeys(order)}, tree_rows, left_out


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
        key = (status, reason_group(status, error))
        reason = grouped.setdefault(key, Reason(status, key[1], example_url=url))
        reason.count += count
        reason.by_source[source] += count
    ranked = sorted(grouped.values(), key=lambda r: (-r.count, r.status, r.reason))
    return ranked[:MAX_REASONS], max(0, len(ranked) - MAX_REASONS)


def _duplicates(session: Session) -> Duplicates:
    found = Duplicates()
    found.images = session.scalar(select(func.count()).select_from(Image)) or 0
    found.unclustered = session.scalar(select(func.count()).select_from(Image).where(Image.cluster_id.is_(None))) or 0
    found.duplicate_images = session.scalar(select(func.count()).where(Image.duplicate_of.is_not(None))) or 0
    sizes = (select(func.count().label("size")).select_from(Image).where(Image.cluster_id.is_not(None))
             .group_by(Image.cluster_id).subquery())
    found.sizes = {size: count for size, count in session.execute(
        select(sizes.c.size, func.count()).where(sizes.c.size > 1).group_by(sizes.c.size).order_by(sizes.c.size))}
    found.clusters = sum(found.sizes.values())
    spread = func.count(func.distinct(Candidate.category_id))
    spans = (select(Image.cluster_id.label("cluster_id"), spread.label("categories"))
             .join(Candidate, Candidate.image_sha256 == Image.sha256)
             .where(Candidate.status == CandidateStatus.OK, Image.cluster_id.is_not(None))
             .group_by(Image.cluster_id).having(spread > 1).subquery())
    found.conflicts = session.scalar(select(func.count()).select_from(spans)) or 0
    examples = session.execute(select(spans.c.cluster_id, Cluster.representative).join(Cluster, Cluster.id == spans.c.cluster_id)
                               .order_by(spans.c.categories.desc(), spans.c.cluster_id).limit(MAX_CONFLICTS)).all()
    wnids: dict[int, set[str]] = defaultdict(set)
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
    return [tuple(row) for row in rows]


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
                 .join(Candidate, and_(Candidate.image_sha256 == Image.sha256, Candidate.category_id == Label.category_id))
                 .where(Candidate.truth.is_not(None))
                 .group_by(Label.id, Label.category_id, Label.status).subquery())
    verdict = case((per_label.c.yes > per_label.c.no, 1), (per_label.c.no > per_label.c.yes, 0), else_=-1).label("verdict")
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
        workers.rows.append(WorkerRow(worker.external_id, worker.name, worker.backend, worker.simulated, worker.accuracy,
                                      worker.control_answers, worker.control_correct, n, worker.blocked, worker.revoked))
    for accuracy, answers, correct in session.execute(
            select(Worker.accuracy, Worker.control_answers, Worker.control_correct), execution_options={"yield_per": 5000}):
        if accuracy is not None:
            workers.accuracies.append(accuracy)
        if answers:
            workers.control_accuracies.append(correct / answers)
    return workers


def _cost(session: Session) -> list[CostRow]:
    paid = func.count(Assignment.id)
    rows: dict[str, CostRow] = {}
    for backend, reward, wanted, tasks, assignments in session.execute(
            select(Task.backend, Task.reward, Task.assignments_wanted, func.count(func.distinct(Task.id)), paid)
            .outerjoin(Assignment, and_(Assignment.task_id == Task.id, Assignment.status.in_(PAID_ASSIGNMENTS),
                                        Assignment.simulated.is_(False)))
            .group_by(Task.backend, Task.reward, Task.assignments_wanted).order_by(Task.backend)):
        row = rows.setdefault(backend, CostRow(backend, paid=_costs_money(backend)))
        row.tasks += tasks
        row.assignments += assignments
        if not row.paid:
            continue
        try:
            amount = Decimal(reward) * assignments
        except (InvalidOperation, TypeError):
            row.unpriced_tasks += tasks
            continue
        row.reward += amount
        row.fee += MONEY_BACKENDS[backend](amount, wanted) if backend in MONEY_BACKENDS else Decimal(0)
    return list(rows.values())


def _costs_money(backend: str) -> bool:
    from imgnet_build.labeling.backends import BACKENDS

    return backend in MONEY_BACKENDS or bool(getattr(BACKENDS.get(backend), "costs_money", False))


def _hard(session: Session) -> list[HardCategory]:
    rows = session.execute(select(Category.wnid, Category.name, CategoryConsensus.seed_images, CategoryConsensus.prior)
                           .join(CategoryConsensus, CategoryConsensus.category_id == Category.id)
                           .where(CategoryConsensus.hard.is_(True)).order_by(Category.wnid))
    return [HardCategory(*row) for row in rows]
