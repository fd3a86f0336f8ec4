"""Control items for labeling tasks: images whose answer is known, mixed into each task
to measure the workers who answer it.

    positives, negatives = control_pool(session, category_id, asked, own)
    items = pick_controls((positives, negatives), 6, rng)

A submit plans hundreds of categories at a time: `control_pools` reads each kind of control for
all of them in one query, and `Elsewhere(session)`, read once, saves each category the
workspace-wide search for negatives.
"""

from __future__ import annotations

import random
from collections import defaultdict

from sqlalchemy import ColumnElement, Select, Subquery, case, func, literal_column, select
from sqlalchemy.orm import Session, aliased

from imgnet_build.dbutil import batched
from imgnet_build.store import Assignment, CategoryEdge, Cluster, Gold, Image, Label, Vote, Worker

__all__ = ["CONTROL_CONFIDENCE", "CONTROL_POOL", "AGREED", "Elsewhere", "control_pool", "control_pools", "pick_controls"]

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
    return control_pools(session, {category_id: (asked, own)}, elsewhere)[category_id]


def control_pools(session: Session, categories: dict[int, tuple[set[int], set[int]]],
                  elsewhere: Elsewhere | None = None) -> dict[int, tuple[list, list]]:
    """`control_pool` of many categories ({category id: (asked, own)}), one query per kind of
    control for all of them (a submit plans hundreds of categories at a time)."""
    ids = list(categories)
    answers: dict[int, list[tuple[str, bool]]] = defaultdict(list)
    for category_id, sha, answer in session.execute(select(Gold.category_id, Gold.image_sha256, Gold.answer)
                                                    .where(Gold.category_id.in_(ids))
                                                    .order_by(Gold.category_id, Gold.image_sha256)):
        answers[category_id].append((sha, answer))
    clusters: dict[str, int | None] = {}
    shas = sorted({sha for rows in answers.values() for sha, _ in rows})
    for chunk in batched(shas, 500):  # apart: joined, SQLite without statistics walked every image
        clusters.update(session.execute(select(Image.sha256, Image.cluster_id).where(Image.sha256.in_(chunk))).all())
    confident = _most_confident_of(session, ids)
    agreed = _agreed_of(session, ids)
    similar = _similar_of(session, ids)
    pools: dict[int, tuple[list, list]] = {}
    for category_id, (asked, own) in categories.items():
        gold = [(sha, clusters[sha], answer) for sha, answer in answers.get(category_id, ()) if sha in clusters]
        positives = [(sha, cluster, "positive", True) for sha, cluster, answer in gold if answer and cluster not in asked]
        negatives = [(sha, cluster, "negative", False) for sha, cluster, answer in gold if not answer]
        positives += [(sha, cluster, "positive", True) for sha, cluster, _ in confident.get(category_id, ())
                      if cluster not in asked]
        positives += [(sha, cluster, "positive", True) for sha, cluster in agreed.get(category_id, ())
                      if cluster not in asked]
        negatives += [(sha, cluster, "negative", False) for sha, cluster, _ in similar.get(category_id, ())
                      if cluster not in own]
        if len(negatives) < 50:
            elsewhere = elsewhere or Elsewhere(session)  # read once, at the first category that needs it
            anywhere = elsewhere.for_category(session, category_id)
            negatives += [(sha, cluster, "negative", False) for sha, cluster, _ in anywhere if cluster not in own]
        pools[category_id] = (positives, list(dict.fromkeys(negatives)))
    return pools


# ties (one cluster accepted for several categories at one confidence) broken by category, then label: the
# same controls on every run and on either database
_MOST_CONFIDENT = (Label.confidence.desc(), Label.cluster_id, Label.category_id, Label.id)


def _top(ranked: Subquery, limit: int) -> Select:
    """(representative, cluster id, label's category id, ranked's `for_category`) of the `rank` <= `limit`
    rows of `ranked`, clusters looked up after the labels are chosen, most confident first."""
    return (select(Cluster.representative, Cluster.id, ranked.c.category_id, ranked.c.for_category)
            .join(ranked, ranked.c.cluster_id == Cluster.id).where(ranked.c.rank <= limit)
            .order_by(ranked.c.for_category, ranked.c.rank))


def _grouped(rows) -> dict[int, list[tuple[str, int, int]]]:
    found: dict[int, list[tuple[str, int, int]]] = defaultdict(list)
    for sha, cluster, category, for_category in rows:
        found[for_category].append((sha, cluster, category))
    return found


def _most_confident_of(session: Session, category_ids: list[int] | None, *where: ColumnElement[bool],
                       limit: int = CONTROL_POOL) -> dict[int, list[tuple[str, int, int]]]:
    """{category id: (representative, cluster id, category id) of its accepted labels at CONTROL_CONFIDENCE or
    more that match `where`, the most confident first, at most `limit`}, in one query. `category_ids` None:
    the labels of every category ranked as one, under the key 0 (`Elsewhere`)."""
    group = literal_column("0") if category_ids is None else Label.category_id
    mine = [] if category_ids is None else [Label.category_id.in_(category_ids)]
    ranked = (select(Label.cluster_id, Label.category_id, group.label("for_category"), Label.confidence,
                     func.row_number().over(partition_by=group,
                                            order_by=_MOST_CONFIDENT).label("rank"))
              .where(Label.status == "accepted", Label.confidence >= CONTROL_CONFIDENCE, *mine, *where).subquery())
    return _grouped(session.execute(_top(ranked, limit)))


def _similar_of(session: Session, category_ids: list[int], limit: int = CONTROL_POOL
                ) -> dict[int, list[tuple[str, int, int]]]:
    """{category id: the most confident accepted labels of its siblings in the tree}, in one query."""
    mine, theirs = aliased(CategoryEdge), aliased(CategoryEdge)
    siblings = (select(mine.child_id.label("for_category"), theirs.child_id.label("sibling"))
                .join(theirs, theirs.parent_id == mine.parent_id)
                .where(mine.child_id.in_(category_ids), theirs.child_id != mine.child_id).distinct().subquery())
    ranked = (select(Label.cluster_id, Label.category_id, siblings.c.for_category, Label.confidence,
                     func.row_number().over(partition_by=siblings.c.for_category,
                                            order_by=_MOST_CONFIDENT).label("rank"))
              .join(siblings, siblings.c.sibling == Label.category_id)
              .where(Label.status == "accepted", Label.confidence >= CONTROL_CONFIDENCE).subquery())
    return _grouped(session.execute(_top(ranked, limit)))


class Elsewhere:
    """The workspace's most confident accepted labels, read once: the negatives of last resort
    of every category a submit plans (each category asked the whole label table before)."""

    def __init__(self, session: Session) -> None:
        self.rows = _most_confident_of(session, None, limit=2 * CONTROL_POOL).get(0, [])

    def for_category(self, session: Session, category_id: int) -> list[tuple[str, int, int]]:
        """The most confident accepted labels of the other categories, at most `CONTROL_POOL`: from the rows
        read once, unless the category holds so many of them that the query must be asked."""
        rows = [row for row in self.rows if row[2] != category_id][:CONTROL_POOL]
        if len(rows) < CONTROL_POOL and len(self.rows) == 2 * CONTROL_POOL:
            return _most_confident_of(session, None, Label.category_id != category_id).get(0, [])
        return rows


def _agreed_of(session: Session, category_ids: list[int]) -> dict[int, list[tuple[str, int]]]:
    """{category id: (representative, cluster id) of its undecided or unlabeled pairs with `AGREED`
    or more yes votes that count and no no, the `CONTROL_POOL` most agreed (in cluster order)}."""
    noes = func.sum(case((Vote.answer.is_(False), 1), else_=0))
    voters = func.count(func.distinct(Vote.worker_id))
    agreed = (select(Vote.category_id, Image.cluster_id, voters.label("voters")).select_from(Vote)
              .join(Image, Image.sha256 == Vote.image_sha256)
              .join(Worker, Worker.id == Vote.worker_id).join(Assignment, Assignment.id == Vote.assignment_id)
              .where(Vote.category_id.in_(category_ids), Vote.control.is_(False), Vote.test.is_(False),
                     Worker.blocked.is_(False), Assignment.status != "rejected")
              .group_by(Vote.category_id, Image.cluster_id).having(voters >= AGREED, noes == 0).subquery())
    ranked = select(agreed.c.category_id, agreed.c.cluster_id, func.row_number().over(
        partition_by=agreed.c.category_id, order_by=(agreed.c.voters.desc(), agreed.c.cluster_id)).label("rank")).subquery()
    rows = session.execute(select(ranked.c.category_id, Cluster.representative, Cluster.id)
                           .join(ranked, ranked.c.cluster_id == Cluster.id).where(ranked.c.rank <= CONTROL_POOL)
                           .order_by(ranked.c.category_id, Cluster.id)).all()
    if not rows:
        return {}
    decided = set(session.execute(select(Label.category_id, Label.cluster_id).where(
        Label.category_id.in_({category_id for category_id, _, _ in rows}), Label.status != "undecided")).all())
    found: dict[int, list[tuple[str, int]]] = defaultdict(list)
    for category_id, sha, cluster in rows:
        if (category_id, cluster) not in decided:
            found[category_id].append((sha, cluster))
    return found


def pick_controls(pool: tuple[list, list], count: int, rng: random.Random) -> list:
    positives, negatives = pool
    chosen = rng.sample(positives, min(count // 2, len(positives)))
    return chosen + rng.sample(negatives, min(count - len(chosen), len(negatives)))
