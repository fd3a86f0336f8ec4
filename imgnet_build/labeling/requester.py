"""What the requester's page shows: progress per category and the quality of every worker."""

from __future__ import annotations

from sqlalchemy import case, distinct, func, select
from sqlalchemy.orm import Session

from imgnet_build.store import Assignment, Category, Label, Task, TaskItem, Vote, Worker

__all__ = ["overview"]


def _counts_by_category(session: Session, query) -> dict[int, object]:
    return {row[0]: row[1:] for row in session.execute(query).all()}


def overview(session: Session) -> dict[str, list[dict]]:
    """{"categories": [...], "workers": [...]}: one dict per category that has tasks, and per worker."""
    tasks = _counts_by_category(session, select(Task.category_id, func.count(), func.sum(case((Task.status == "open", 1), else_=0)),
                                                func.sum(case((Task.status == "done", 1), else_=0)))
                                .group_by(Task.category_id))
    pairs = _counts_by_category(session, select(Task.category_id, func.count(distinct(TaskItem.image_sha256)))
                                .join(TaskItem, TaskItem.task_id == Task.id).where(TaskItem.kind == "candidate")
                                .group_by(Task.category_id))
    votes = _counts_by_category(session, select(Vote.category_id, func.count(), func.sum(case((Vote.control, 1), else_=0)))
                                .group_by(Vote.category_id))
    labels = _counts_by_category(session, select(Label.category_id, *(func.sum(case((Label.status == status, 1), else_=0))
                                                                      for status in ("accepted", "rejected", "undecided")))
                                 .group_by(Label.category_id))
    names = session.execute(select(Category.id, Category.wnid, Category.name).where(Category.id.in_(tasks))
                            .order_by(Category.wnid)).all()
    categories = [{"wnid": wnid, "name": name, "pairs": pairs.get(cid, (0,))[0], "tasks": tasks[cid][0],
                   "tasks_open": tasks[cid][1] or 0, "tasks_done": tasks[cid][2] or 0,
                   "votes": votes.get(cid, (0, 0))[0], "control_votes": votes.get(cid, (0, 0))[1] or 0,
                   **dict(zip(("accepted", "rejected", "undecided"), labels.get(cid, (0, 0, 0))))}
                  for cid, wnid, name in names]

    submitted = dict(session.execute(select(Assignment.worker_id, func.count()).where(Assignment.status != "given")
                                     .group_by(Assignment.worker_id)).all())
    workers = [{"name": worker.name or worker.external_id, "backend": worker.backend, "simulated": worker.simulated,
                "tasks": submitted.get(worker.id, 0), "control_answers": worker.control_answers,
                "control_accuracy": worker.control_correct / worker.control_answers if worker.control_answers else None,
                "accuracy": worker.accuracy, "blocked": worker.blocked, "revoked": worker.revoked}
               for worker in session.scalars(select(Worker).order_by(Worker.backend, Worker.external_id))]
    return {"categories": categories, "workers": workers}
