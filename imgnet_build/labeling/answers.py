"""Storing one worker's answers to one task: the one way votes get into the database.

Every backend (the local web app, the simulated crowd, Mechanical Turk) ends here, so the
rules hold everywhere: one vote per item of the task, a worker votes on a (cluster, category)
pair once (whichever image of the cluster they were shown, before or after a dedup merged
clusters), a submission counts once, a task never takes more submissions than it wants, test
tasks give test votes, and control answers update the worker's control record.
`add_workers` makes the worker rows of the backends whose workers arrive with their answers
(the simulated crowd, Mechanical Turk).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from typing import cast

from sqlalchemy import CursorResult, bindparam, func, select, update
from sqlalchemy.orm import Session

from imgnet_build.dbutil import insert_ignore
from imgnet_build.labeling.locks import lock_task
from imgnet_build.store import Assignment, Image, Task, TaskItem, Vote, Worker

__all__ = ["add_workers", "store_answers", "votes_of", "count_controls", "WORK_STATUSES", "TASK_FULL"]

WORK_STATUSES = ("submitted", "approved", "rejected")  # assignments that used one of the task's slots
TASK_FULL = "not stored: the task already had every answer it wanted"


def add_workers(session: Session, backend: str, workers: Iterable[tuple[str, str]], *, simulated: bool) -> None:
    """Create the `backend`'s (external id, name) workers that do not exist yet, with an empty control
    record (safe against a concurrent collect creating them too)."""
    insert_ignore(session, Worker, [{"backend": backend, "external_id": external_id, "name": name,
                                     "simulated": simulated, "control_answers": 0, "control_correct": 0,
                                     "blocked": False, "revoked": False} for external_id, name in workers])


def store_answers(session: Session, assignment: Assignment, selected: set[int]) -> bool:
    """Store `assignment`'s answers: `selected` holds the ids of the task items the worker
    marked as showing the category; every other item of the task is a no.

    Returns False, writing no vote, when the assignment was already submitted (a retried
    request, a second collect) or when the task already has all the submissions it wants (the
    assignment is then `abandoned` with that reason). Runs under the task's lock. The caller
    validates that `selected` belongs to the task.
    """
    now = dt.datetime.now(dt.UTC)
    lock_task(session, assignment.task_id)
    task = session.execute(select(Task.category_id, Task.test, Task.assignments_wanted)
                           .where(Task.id == assignment.task_id)).one()
    used = session.scalar(select(func.count()).where(Assignment.task_id == assignment.task_id,
                                                     Assignment.id != assignment.id,
                                                     Assignment.status.in_(WORK_STATUSES)))
    if used >= task.assignments_wanted:
        session.execute(update(Assignment).where(Assignment.id == assignment.id, Assignment.status == "given")
                        .values(status="abandoned", feedback=TASK_FULL))
        return False
    claimed = cast(CursorResult, session.execute(
        update(Assignment).where(Assignment.id == assignment.id, Assignment.status == "given")
        .values(status="submitted", submitted_at=now)))
    if claimed.rowcount != 1:  # submitted before, or by a concurrent request
        return False
    items = session.execute(select(TaskItem.id, TaskItem.image_sha256, TaskItem.kind, TaskItem.expected,
                                   Image.cluster_id).join(Image, Image.sha256 == TaskItem.image_sha256)
                            .where(TaskItem.task_id == assignment.task_id).order_by(TaskItem.position)).all()
    clusters = {item.cluster_id for item in items if item.cluster_id is not None}
    seen = set(session.scalars(select(Image.cluster_id).join(Vote, Vote.image_sha256 == Image.sha256).where(
        Vote.worker_id == assignment.worker_id, Vote.category_id == task.category_id,
        Image.cluster_id.in_(clusters)))) if clusters else set()
    votes, controls = votes_of(assignment.id, assignment.worker_id, task, items, selected, seen,
                               assignment.simulated, now)
    insert_ignore(session, Vote, votes)
    count_controls(session, {assignment.worker_id: controls})
    return True


def votes_of(assignment_id: int, worker_id: int, task, items, selected: set[int], seen: set, simulated: bool,
             now: dt.datetime) -> tuple[list[dict], tuple[int, int]]:
    """(the vote rows, (control answers, correct)) of one worker's answers to one task: `task` has
    `category_id` and `test`, each of `items` (in position order) `id`, `image_sha256`, `kind`,
    `expected` and `cluster_id` (its image's cluster now), `selected` the ids answered yes. An item
    on a cluster in `seen` (the clusters this worker voted on for the category; updated) gets no
    vote: the first vote on a pair stands. Control answers count whether their vote is stored or not."""
    votes = []
    answers = correct = 0
    for item in items:
        if item.kind != "candidate" and item.expected is not None:
            answers += 1
            correct += (item.id in selected) == item.expected
        if item.cluster_id is not None:
            if item.cluster_id in seen:  # this worker's first vote on the pair stands
                continue
            seen.add(item.cluster_id)
        votes.append({"assignment_id": assignment_id, "worker_id": worker_id, "task_item_id": item.id,
                      "image_sha256": item.image_sha256, "cluster_id": item.cluster_id,
                      "category_id": task.category_id, "answer": item.id in selected,
                      "control": item.kind != "candidate", "simulated": simulated, "test": task.test,
                      "created_at": now})
    return votes, (answers, correct)


def count_controls(session: Session, controls: dict[int, tuple[int, int]]) -> None:
    """Add {worker id: (control answers, correct)} to the workers' control records, one statement."""
    params = [{"worker": worker, "answers": n, "correct": right} for worker, (n, right) in controls.items() if n]
    if params:
        session.connection().execute(  # Core executemany: one statement for every worker
            update(Worker).where(Worker.id == bindparam("worker"))
            .values(control_answers=Worker.control_answers + bindparam("answers"),
                    control_correct=Worker.control_correct + bindparam("correct")), params)
