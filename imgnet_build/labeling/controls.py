"""Control items for labeling tasks: images whose answer is known, mixed into each task
to measure the workers who answer it.

    positives, negatives = control_pool(session, category_id, asked, own)
    items = pick_controls((positives, negatives), 6, rng)

A submit plans every category in turn: `Elsewhere(session)`, read once and passed to each
`control_pool`, saves each category the workspace-wide search for negatives.
"""

from __future__ import annotations

import random

from sqlalchemy import ColumnElement, case, func, select
from sqlalchemy.orm import Session

from imgnet_build.dbutil import batched
from imgnet_build.store import Assignment, CategoryEdge, Cluster, Gold, Image, Label, Vote, Worker

__all__ = ["CONTROL_CONFIDENCE", "CONTROL_POOL", "AGREED", "Elsewhere", "control_pool", "pick_controls"]

CONTROL_CONFIDENCE = 0.99  # accepted labels this sure (the most confident first) become controls
CONTROL_POOL = 200
AGREED = 3  # a pair this many workers independently called good, and nobody not, is a positive (seed agreement)


def control_pool(session: Session, category_id: int, asked: set[int], own: set[int],
                 elsewhere: Elsewhere | None = None) -> tuple[list, list]:
    """(positives, negatives) as (sha256, cluster id, kind, expected) items for the category.

    Positives: the user's gold, the category's most confidently accepted pairs, then its pairs on
    which `AGREED` workers said yes and none no (seed agreement): a category's first tasks, before
    anything is accepted, test how a worker sees a positive too. Negatives: gold
    no's, then images accepted for the most similar categories (siblings in the tree,
    else any other category), never a cluster that is a candidate of this category. `elsewhere`:
    the workspace's most confident accepted labels, read once for many categories."""
    answers = session.execute(select(Gold.image_sha256, Gold.answer).where(Gold.category_id == category_id)).all()
    clusters: dict[str, int | None] = {}
    for chunk in batched([sha for sha, _ in answers], 500):  # apart: joined, SQLite without statistics walked every image
        clusters.update(session.execute(select(Image.sha256, Image.cluster_id).where(Image.sha256.in_(chunk))).tuples().all())
    gold = [(sha, clusters[sha], answer) for sha, answer in answers if sha in clusters]
    positives = [(sha, cluster, "positive", True) for sha, cluster, answer in gold if answer and cluster not in asked]
    negatives = [(sha, cluster, "negative", False) for sha, cluster, answer in gold if not answer]
    positives += [(sha, cluster, "positive", True) for sha, cluster, _ in _most_confident(
                  session, Label.category_id == category_id) if cluster not in asked]
    positives += [(sha, cluster, "positive", True) for sha, cluster in _agreed(session, category_id)
                  if cluster not in asked]
    similar = _most_confident(session, Label.category_id != category_id,
                              Label.category_id.in_(_siblings(session, category_id)))
    negatives += [(sha, cluster, "negative", False) for sha, cluster, _ in similar if cluster not in own]
    if len(negatives) < 50:
        anywhere = (elsewhere or Elsewhere(session)).for_category(session, category_id)
        negatives += [(sha, cluster, "negative", False) for sha, cluster, _ in anywhere if cluster not in own]
    return positives, list(dict.fromkeys(negatives))


def _most_confident(session: Session, *where: ColumnElement[bool], limit: int = CONTROL_POOL) -> list[tuple[str, int, int]]:
    """(representative, cluster id, category id) of the accepted labels at CONTROL_CONFIDENCE or more
    that match `where`, the most confident first, at most `limit`. The labels are chosen first and
    their clusters looked up after: joined the other way, SQLite without statistics on label (the
    first rounds) walked every cluster, once per category."""
    top = (select(Label.cluster_id, Label.category_id, Label.confidence)
           .where(Label.status == "accepted", Label.confidence >= CONTROL_CONFIDENCE, *where)
           .order_by(Label.confidence.desc(), Label.cluster_id).limit(limit).subquery())
    rows = session.execute(select(Cluster.representative, Cluster.id, top.c.category_id)
                           .join(top, top.c.cluster_id == Cluster.id).order_by(top.c.confidence.desc(), Cluster.id))
    return [(sha, cluster, category) for sha, cluster, category in rows]


class Elsewhere:
    """The workspace's most confident accepted labels, read once: the negatives of last resort
    of every category a submit plans (each category asked the whole label table before)."""

    def __init__(self, session: Session) -> None:
        self.rows = _most_confident(session, limit=2 * CONTROL_POOL)

    def for_category(self, session: Session, category_id: int) -> list[tuple[str, int, int]]:
        """What `_most_confident(session, Label.category_id != category_id)` gives: from the rows
        read once, unless the category holds so many of them that the query must be asked."""
        rows = [row for row in self.rows if row[2] != category_id][:CONTROL_POOL]
        if len(rows) < CONTROL_POOL and len(self.rows) == 2 * CONTROL_POOL:
            return _most_confident(session, Label.category_id != category_id)
        return rows


def _agreed(session: Session, category_id: int) -> list[tuple[str, int]]:
    """(representative, cluster id) of the category's undecided or unlabeled pairs with `AGREED` or
    more yes votes that count and no no, the most agreed first."""
    noes = func.sum(case((Vote.answer.is_(False), 1), else_=0))
    voters = func.count(func.distinct(Vote.worker_id))
    agreed = (select(Image.cluster_id).select_from(Vote).join(Image, Image.sha256 == Vote.image_sha256)
              .join(Worker, Worker.id == Vote.worker_id).join(Assignment, Assignment.id == Vote.assignment_id)
              .where(Vote.category_id == category_id, Vote.control.is_(False), Vote.test.is_(False),
                     Worker.blocked.is_(False), Assignment.status != "rejected")
              .group_by(Image.cluster_id).having(voters >= AGREED, noes == 0)
              .order_by(voters.desc(), Image.cluster_id).limit(CONTROL_POOL).subquery())
    decided = select(Label.cluster_id).where(Label.category_id == category_id, Label.status != "undecided")
    return [(sha, cluster) for sha, cluster in session.execute(
        select(Cluster.representative, Cluster.id).join(agreed, agreed.c.cluster_id == Cluster.id)
        .where(Cluster.id.not_in(decided)).order_by(Cluster.id))]


def _siblings(session: Session, category_id: int) -> list[int]:
    parents = select(CategoryEdge.parent_id).where(CategoryEdge.child_id == category_id)
    return list(session.scalars(select(CategoryEdge.child_id).where(CategoryEdge.parent_id.in_(parents),
                                                                     CategoryEdge.child_id != category_id)))


def pick_controls(pool: tuple[list, list], count: int, rng: random.Random) -> list:
    positives, negatives = pool
    chosen = rng.sample(positives, min(count // 2, len(positives)))
    return chosen + rng.sample(negatives, min(count - len(chosen), len(negatives)))
