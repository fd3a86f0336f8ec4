"""Control items for labeling tasks: images whose answer is known, mixed into each task
to measure the workers who answer it.

    positives, negatives = control_pool(session, category_id, asked, own)
    items = pick_controls((positives, negatives), 6, rng)
"""

from __future__ import annotations

import random

from sqlalchemy import case, func, select
from sqlalchemy.orm import Session

from imgnet_build.store import Assignment, CategoryEdge, Cluster, Gold, Image, Label, Vote, Worker

__all__ = ["CONTROL_CONFIDENCE", "CONTROL_POOL", "AGREED", "control_pool", "pick_controls"]

CONTROL_CONFIDENCE = 0.99  # accepted labels this sure (the most confident first) become controls
CONTROL_POOL = 200
AGREED = 3  # a pair this many workers independently called good, and nobody not, is a positive (seed agreement)


def control_pool(session: Session, category_id: int, asked: set[int], own: set[int]) -> tuple[list, list]:
    """(positives, negatives) as (sha256, cluster id, kind, expected) items for the category.

    Positives: the user's gold, the category's most confidently accepted pairs, then its pairs on
    which `AGREED` workers said yes and none no (seed agreement): a category's first tasks, before
    anything is accepted, test how a worker sees a positive too. Negatives: gold
    no's, then images accepted for the most similar categories (siblings in the tree,
    else any other category), never a cluster that is a candidate of this category."""
    gold = session.execute(select(Gold.image_sha256, Image.cluster_id, Gold.answer).join(
        Image, Image.sha256 == Gold.image_sha256).where(Gold.category_id == category_id)).all()
    positives = [(sha, cluster, "positive", True) for sha, cluster, answer in gold if answer and cluster not in asked]
    negatives = [(sha, cluster, "negative", False) for sha, cluster, answer in gold if not answer]
    accepted = session.execute(select(Cluster.representative, Cluster.id).join(Label, Label.cluster_id == Cluster.id)
                               .where(Label.category_id == category_id, Label.status == "accepted",
                                      Label.confidence >= CONTROL_CONFIDENCE)
                               .order_by(Label.confidence.desc(), Cluster.id).limit(CONTROL_POOL)).all()
    positives += [(sha, cluster, "positive", True) for sha, cluster in accepted if cluster not in asked]
    positives += [(sha, cluster, "positive", True) for sha, cluster in _agreed(session, category_id)
                  if cluster not in asked]
    for similar in (_siblings(session, category_id), None):
        query = (select(Cluster.representative, Cluster.id).join(Label, Label.cluster_id == Cluster.id)
                 .where(Label.status == "accepted", Label.category_id != category_id,
                        Label.confidence >= CONTROL_CONFIDENCE)
                 .order_by(Label.confidence.desc(), Cluster.id).limit(CONTROL_POOL))
        if similar is not None:
            query = query.where(Label.category_id.in_(similar))
        negatives += [(sha, cluster, "negative", False) for sha, cluster in session.execute(query)
                      if cluster not in own]
        if len(negatives) >= 50:
            break
    return positives, list(dict.fromkeys(negatives))


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
