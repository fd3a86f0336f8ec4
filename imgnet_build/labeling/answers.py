"""Storing one worker's answers to one task: the one way votes get into the database.

Every backend (the local web app, the simulated crowd, Mechanical Turk) ends here, so the
rules hold everywhere: one vote per item of the task, a worker votes on a pair once,
a submission counts once, and control answers update the worker's control record.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from imgnet_build.dbutil import insert_ignore
from imgnet_build.store import Assignment, Task, TaskItem, Vote, Worker

__all__ = ["store_answers"]


def store_answers(session: Session, assignment: Assignment, selected: set[int]) -> bool:
    """Store `assignment`'s answers: `selected` holds the ids of the task items the worker
    marked as showing the category; every other item of the task is a no.

    Returns False, writing nothing, when the assignment was already submitted (a retried
    request, a second collect). The caller validates that `selected` belongs to the task.
    """
    now = dt.datetime.now(dt.UTC)
    claimed = session.execute(update(Assignment).where(Assignment.id == assignment.id, Assignment.status == "given")
                              .values(status="submitted", submitted_at=now))
    if claimed.rowcount != 1:  # submitted before, or by a concurrent request
        return False
    category_id = session.scalar(select(Task.category_id).where(Task.id == assignment.task_id))
    items = session.execute(select(TaskItem.id, TaskItem.image_sha256, TaskItem.kind, TaskItem.expected)
                            .where(TaskItem.task_id == assignment.task_id)).all()
    votes = [{"assignment_id": assignment.id, "worker_id": assignment.worker_id, "task_item_id": item.id,
              "image_sha256": item.image_sha256, "category_id": category_id, "answer": item.id in selected,
              "control": item.kind != "candidate", "simulated": assignment.simulated, "created_at": now}
             for item in items]
    insert_ignore(session, Vote, votes)  # a pair this worker already voted on keeps its first vote
    controls = [item for item in items if item.kind != "candidate" and item.expected is not None]
    if controls:
        correct = sum((item.id in selected) == item.expected for item in controls)
        session.execute(update(Worker).where(Worker.id == assignment.worker_id)
                        .values(control_answers=Worker.control_answers + len(controls),
                                control_correct=Worker.control_correct + correct))
    return True
