"""`imgnet label status`: labels per category (votes waiting for a decision, test answers apart),
workers by quality, money spent per marketplace (each backend computes its own)."""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from decimal import Decimal
from typing import Any

from sqlalchemy import case, func, select
from sqlalchemy.orm import Session

from imgnet_build.labeling.backends import workspace_spend
from imgnet_build.labeling.rounds import counted_votes
from imgnet_build.stage import Document
from imgnet_build.store import (
    Assignment,
    Candidate,
    CandidateStatus,
    Category,
    CategoryConsensus,
    Image,
    Label,
    Task,
    TaskItem,
    Vote,
    Worker,
)
from imgnet_build.workspace import Workspace

__all__ = ["label_status", "LabelStatus"]

SHOWN_WORKERS = 10  # workers the text lists unless asked for all


@dataclasses.dataclass(frozen=True)
class LabelStatus(Document):
    """`imgnet label status`: `report` is the document (--json); `summary()` the table."""

    report: dict

    def as_dict(self) -> dict:
        return self.report

    def summary(self, *, all_workers: bool = False) -> str:
        return "\n".join(self.lines(all_workers=all_workers))

    def lines(self, *, all_workers: bool = False) -> list[str]:
        """The table of categories, then votes waiting, money and workers (the first 10 unless `all_workers`)."""
        report = self.report
        lines = [f"{'wnid':<11} {'name':<20} {'pairs':>6} {'accepted':>8} {'rejected':>8} {'undecided':>9} "
                 f"{'unvoted':>7} {'waiting':>7} {'votes/pair':>10} {'controls':>8}"]
        for row in report["categories"]:
            controls = "-" if row["control_accuracy"] is None else f"{row['control_accuracy']:.0%}"
            per_pair = "-" if row["votes_per_pair"] is None else f"{row['votes_per_pair']:.1f}"
            flag = "  hard to illustrate" if row["hard_to_illustrate"] else ""
            lines.append(f"{row['wnid']:<11} {row['name'][:20]:<20} {row['pairs']:>6} {row['accepted']:>8} "
                         f"{row['rejected']:>8} {row['undecided']:>9} {row['unvoted']:>7} {row['waiting_votes']:>7} "
                         f"{per_pair:>10} {controls:>8}{flag}")
        if report["waiting_votes"]:
            lines.append(f"{report['waiting_votes']} votes waiting: run imgnet label collect")
        if report["test_votes"]:
            lines.append(f"{report['test_votes']} test answers (MTurk sandbox) stored; they decide nothing "
                         f"(label collect --include-test counts them, marked as not human)")
        blocked = sum(worker["blocked"] for worker in report["workers"])
        cost = report["cost"]
        lines.append(f"workers: {len(report['workers'])} ({blocked} blocked); tasks: "
                     + ", ".join(f"{k} {v}" for k, v in sorted(report["tasks"].items()))
                     + f"; spent ${cost['spent_usd']}, committed ${cost['committed_usd']} (real money)")
        for market in cost["marketplaces"]:
            money = "real money" if market["paid"] else "no real money"
            lines.append(f"  {market['marketplace']}: spent ${market['spent_usd']}, committed "
                         f"${market['committed_usd']} ({money})")
        for endpoint, mturk in report.get("mturk", {}).items():
            lines.append(f"mturk {endpoint}: HITs " + ", ".join(f"{k} {v}" for k, v in sorted(mturk["hits"].items()))
                         + f"; {mturk['pending_review']} assignments pending review; spent ${mturk['spent_usd']}, "
                           f"committed ${mturk['committed_usd']}")
        shown = report["workers"] if all_workers else report["workers"][:SHOWN_WORKERS]
        lines += ["  " + worker_line(worker) for worker in shown]
        if len(shown) < len(report["workers"]):
            lines.append(f"  … {len(report['workers']) - len(shown)} more workers (--all lists them)")
        return lines


def worker_line(worker: dict) -> str:
    """One worker of `label status`: estimate, interval, evidence (controls right/seen on
    positives and negatives, votes)."""
    if worker["accuracy"] is None:
        estimate = "accuracy -"
    else:
        low, high = worker["interval"] or (worker["accuracy"], worker["accuracy"])
        estimate = f"accuracy {worker['accuracy']:.2f} [{low:.2f}-{high:.2f}]"
    positive, negative = worker["controls"]["positive"], worker["controls"]["negative"]
    return (f"{worker['name']:<24} {estimate:<27} controls yes {positive[0]}/{positive[1]} no {negative[0]}/{negative[1]}"
            f"  votes {worker['votes']}" + ("  blocked" if worker["blocked"] else ""))


def label_status(workspace: Workspace) -> LabelStatus:
    """{"categories": [...], "workers": [...], "tasks": {...}, "cost": {...}} for the workspace."""
    with workspace.session() as session:
        category_ids = list(session.scalars(select(Candidate.category_id).where(Candidate.status == CandidateStatus.OK)
                                            .distinct().order_by(Candidate.category_id)))
        names = dict(session.execute(select(Category.id, Category.wnid)).all())
        titles = dict(session.execute(select(Category.id, Category.name)).all())
        test_votes = dict(session.execute(select(Vote.category_id, func.count()).where(
            Vote.test.is_(True), Vote.control.is_(False)).group_by(Vote.category_id)).all())
        labels: defaultdict[int, defaultdict[str, int]] = defaultdict(lambda: defaultdict(int))
        votes: defaultdict[int, int] = defaultdict(int)
        for category, status, count, vote_count in session.execute(
                select(Label.category_id, Label.status, func.count(), func.sum(Label.yes_votes + Label.no_votes))
                .group_by(Label.category_id, Label.status)):
            labels[category][status] = count
            votes[category] += int(vote_count or 0)
        controls: defaultdict[int, list[int]] = defaultdict(lambda: [0, 0])
        for category, right, total in session.execute(
                select(Vote.category_id, func.sum(case((Vote.answer == TaskItem.expected, 1), else_=0)), func.count())
                .join(TaskItem, TaskItem.id == Vote.task_item_id)
                .where(Vote.control.is_(True), TaskItem.expected.is_not(None)).group_by(Vote.category_id)):
            controls[category] = [int(right or 0), int(total)]
        states = {row.category_id: row for row in session.scalars(select(CategoryConsensus))}
        pairs_of = _pairs(session)
        waiting_of = _waiting_votes(session)
        categories: list[dict[str, Any]] = []
        for category in category_ids:
            pairs, waiting = pairs_of.get(category, 0), waiting_of.get(category, 0)
            counts = labels[category]
            decided = counts["accepted"] + counts["rejected"]
            voted = decided + counts["undecided"]
            right, total = controls[category]
            state = states.get(category)
            categories.append({
                "wnid": names[category], "name": titles[category], "pairs": pairs, "waiting_votes": waiting,
                "test_votes": int(test_votes.get(category, 0)), "decided": decided, "accepted": counts["accepted"],
                "rejected": counts["rejected"], "undecided": counts["undecided"], "unvoted": max(0, pairs - voted),
                "votes_per_pair": round(votes[category] / voted, 2) if voted else None,
                "control_accuracy": round(right / total, 3) if total else None,
                "hard_to_illustrate": bool(state and state.hard),
                "seed_table": state.table if state else None})
        workers = _workers(session)
        tasks = dict(session.execute(select(Task.status, func.count()).group_by(Task.status)).all())
        assignments = dict(session.execute(select(Assignment.status, func.count()).group_by(Assignment.status)).all())
        spends = workspace_spend(session, workspace)
        mturk = _mturk_status(session, workspace)
    report = {"categories": categories, "workers": workers, "tasks": tasks, "assignments": assignments,
              "waiting_votes": sum(row["waiting_votes"] for row in categories),
              "test_votes": sum(row["test_votes"] for row in categories),
              "cost": {"spent_usd": str(sum((x.spent_usd for x in spends if x.paid), Decimal("0.00"))),
                       "committed_usd": str(sum((x.committed_usd for x in spends if x.paid), Decimal("0.00"))),
                       "marketplaces": [x.as_dict() for x in spends]}}
    if mturk:
        report["mturk"] = mturk
    return LabelStatus(report)


def _workers(session: Session) -> list[dict]:
    """Per worker: the estimate (balanced accuracy), its 95% interval, both coins, and the
    evidence: control answers on positives and on negatives (right / seen), all votes."""
    evidence: dict[int, dict[str, int]] = defaultdict(lambda: {"positive": 0, "positive_right": 0, "negative": 0,
                                                               "negative_right": 0})
    for worker_id, expected, seen, right in session.execute(
            select(Vote.worker_id, TaskItem.expected, func.count(),
                   func.sum(case((Vote.answer == TaskItem.expected, 1), else_=0)))
            .join(TaskItem, TaskItem.id == Vote.task_item_id)
            .where(Vote.control.is_(True), TaskItem.expected.is_not(None)).group_by(Vote.worker_id, TaskItem.expected)):
        side = "positive" if expected else "negative"
        evidence[worker_id][side] += int(seen)
        evidence[worker_id][side + "_right"] += int(right or 0)
    workers = []
    for w, n in session.execute(select(Worker, func.count(Vote.id)).outerjoin(Vote, Vote.worker_id == Worker.id)
                                .group_by(Worker.id).order_by(Worker.accuracy.desc().nulls_last(), Worker.id)):
        controls = evidence[w.id]
        workers.append({
            "backend": w.backend, "name": w.name or w.external_id, "accuracy": w.accuracy,
            "interval": None if w.accuracy_low is None else [w.accuracy_low, w.accuracy_high],
            "sensitivity": w.sensitivity, "specificity": w.specificity,
            "controls": {"positive": [controls["positive_right"], controls["positive"]],
                         "negative": [controls["negative_right"], controls["negative"]]},
            "control_answers": w.control_answers,
            "control_accuracy": round(w.control_correct / w.control_answers, 3) if w.control_answers else None,
            "votes": n, "blocked": w.blocked, "revoked": w.revoked, "simulated": w.simulated})
    return workers


def _mturk_status(session: Session, workspace: Workspace) -> dict:
    """Per marketplace (sandbox, live) with HITs: HITs by state, assignments waiting for
    review, money spent and committed (rewards and MTurk's fees)."""
    from imgnet_build.labeling.mturk import workspace_cost

    rows = session.execute(select(Task.live, Task.status, Task.external_id).where(Task.backend == "mturk")).all()
    pending = dict(session.execute(select(Task.live, func.count()).join(Assignment, Assignment.task_id == Task.id)
                                   .where(Task.backend == "mturk", Assignment.status == "submitted")
                                   .group_by(Task.live)).all())
    report = {}
    for live in (False, True):
        mine = [row for row in rows if row.live == live]
        if not mine:
            continue
        states: defaultdict[str, int] = defaultdict(int)
        for row in mine:
            states["unpublished" if row.external_id is None else row.status] += 1
        cost = workspace_cost(session, live, reward=workspace.settings.mturk.reward_usd)
        report["live" if live else "sandbox"] = {
            "hits": dict(states), "pending_review": pending.get(live, 0),
            "spent_usd": str(cost["spent"].total_usd), "committed_usd": str(cost["committed"].total_usd)}
    return report



def _pairs(session: Session) -> dict[int, int]:
    """{category id: its candidate pairs (clusters with an ok candidate of it)}, in one query."""
    return {category: int(count) for category, count in session.execute(
        select(Candidate.category_id, func.count(func.distinct(Image.cluster_id)))
        .join(Image, Image.sha256 == Candidate.image_sha256)
        .where(Candidate.status == CandidateStatus.OK, Image.cluster_id.is_not(None))
        .group_by(Candidate.category_id))}


def _waiting_votes(session: Session) -> dict[int, int]:
    """{category id: votes that count and arrived after their pair was last decided} (`label collect`
    decides them): per pair, the workers who voted minus the votes its label was decided from; one query."""
    counted = counted_votes().subquery()
    left = counted.c.votes - func.coalesce(Label.yes_votes + Label.no_votes, 0)
    return {category: int(total or 0) for category, total in session.execute(
        select(counted.c.category_id, func.sum(case((left > 0, left), else_=0)))
        .outerjoin(Label, (Label.cluster_id == counted.c.cluster_id) & (Label.category_id == counted.c.category_id))
        .group_by(counted.c.category_id))}
