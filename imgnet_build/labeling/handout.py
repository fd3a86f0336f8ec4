"""Handing out local tasks to workers and checking what they send back.

`next_assignment` gives a worker the next open local task that still needs answers and
that shows them no pair they have voted on; `check_submission` binds a submission
(schemas/submission.schema.json) to the assignment it answers. Both run inside the
caller's short transaction; `answers.store_answers` then stores the votes.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import and_, exists, func, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, aliased

from imgnet_build.errors import BadInput
from imgnet_build.labeling.invites import BACKEND
from imgnet_build.labeling.locks import lock_task
from imgnet_build.store import Assignment, Image, Task, TaskItem, Vote, Worker

__all__ = ["ABANDONED_AFTER", "SubmissionRejected", "NotYourTask", "TaskClosed", "next_assignment",
           "check_submission", "held_assignment", "lock_for_writing"]

ABANDONED_AFTER = dt.timedelta(hours=1)  # a task given this long ago and not submitted frees its slot
_ATTEMPTS = 20  # tasks filled by others while we looked, tried one after another


class SubmissionRejected(BadInput):
    "A submission that does not fit the task it names (malformed, or items not in the task)"


class NotYourTask(SubmissionRejected):
    "A submission for a task that was not given to this worker"


class TaskClosed(NotYourTask):
    "A late submission: the worker's slot was freed and taken by another, or the task was closed"


def _live_assignments(task_id, now: dt.datetime):
    """Assignments that hold a slot of the task: submitted or reviewed, or given recently."""
    return (select(func.count()).select_from(Assignment)
            .where(Assignment.task_id == task_id,
                   or_(Assignment.status.in_(("submitted", "approved")),
                       and_(Assignment.status == "given", Assignment.given_at > now - ABANDONED_AFTER))))


def _open_tasks_for(worker_id: int, now: dt.datetime):
    has_assignment = exists().where(Assignment.task_id == Task.id, Assignment.worker_id == worker_id)
    voted_on_the_image = exists(select(TaskItem.id).join(Vote, and_(Vote.image_sha256 == TaskItem.image_sha256,
                                                                     Vote.category_id == Task.category_id))
                                .where(TaskItem.task_id == Task.id, Vote.worker_id == worker_id))
    shown, voted = aliased(Image), aliased(Image)  # the pair is the cluster: any image of it, as clustered now
    voted_on_the_cluster = exists(select(TaskItem.id).join(shown, shown.sha256 == TaskItem.image_sha256)
                                  .join(voted, voted.cluster_id == shown.cluster_id)
                                  .join(Vote, and_(Vote.image_sha256 == voted.sha256,
                                                   Vote.category_id == Task.category_id))
                                  .where(TaskItem.task_id == Task.id, Vote.worker_id == worker_id))
    voted_on_a_pair = voted_on_the_image | voted_on_the_cluster
    return (select(Task.id, Task.assignments_wanted)
            .where(Task.status == "open", Task.backend == BACKEND, ~has_assignment, ~voted_on_a_pair,
                   _live_assignments(Task.id, now).scalar_subquery() < Task.assignments_wanted)
            .order_by(Task.round, Task.id))


def lock_for_writing(session: Session, worker_id: int) -> None:
    """Start the transaction with a write to the worker's row: on SQLite that takes the database's
    write lock before anything is read (BEGIN IMMEDIATE), on PostgreSQL it serialises one worker's tabs."""
    session.execute(update(Worker).where(Worker.id == worker_id).values(blocked=Worker.blocked))


def held_assignment(session: Session, worker_id: int) -> Assignment | None:
    """The open local task the worker was given and has not submitted yet, if any."""
    return session.scalar(select(Assignment).join(Task, Task.id == Assignment.task_id)
                          .where(Assignment.worker_id == worker_id, Assignment.status == "given",
                                 Task.status == "open", Task.backend == BACKEND)
                          .order_by(Assignment.given_at.desc()).limit(1))


def next_assignment(session: Session, worker_id: int) -> Assignment | None:
    """The worker's current assignment, or a new one on the next task that needs them; None when
    there is no such task. Safe against workers racing for a task's last slot: on SQLite the
    transaction starts with a write (so it holds the write lock, like BEGIN IMMEDIATE); on
    PostgreSQL the chosen task row is locked (FOR UPDATE SKIP LOCKED, then waiting for the rows
    others hold, so no worker is told "nothing left" while a slot is free) and its slots recounted."""
    lock_for_writing(session, worker_id)
    held = held_assignment(session, worker_id)
    if held is not None:
        return held
    now = dt.datetime.now(dt.UTC)
    passed_over: list[int] = []
    skip_locked = True  # first the tasks nobody is taking right now, then wait for the others
    for _ in range(_ATTEMPTS):
        query = _open_tasks_for(worker_id, now).where(Task.id.not_in(passed_over)).limit(1)
        task = session.execute(query.with_for_update(of=Task, skip_locked=skip_locked)).first()
        if task is None:
            if not skip_locked:
                return None
            skip_locked = False
            continue
        if session.scalar(_live_assignments(task.id, now)) < task.assignments_wanted:  # recount under the lock
            assignment = Assignment(task_id=task.id, worker_id=worker_id, status="given", given_at=now)
            try:
                with session.begin_nested():
                    session.add(assignment)
            except IntegrityError:  # the same worker, in another tab, got this task a moment ago
                return held_assignment(session, worker_id)
            return assignment
        passed_over.append(task.id)
    return None


def check_submission(session: Session, worker_id: int, document: dict) -> tuple[Assignment, set[int]]:
    """The worker's assignment that `document` (already schema-valid) answers, and the ids of the
    task items it selects. Raises NotYourTask or SubmissionRejected."""
    task_id = document["task"]
    assignment = session.scalar(select(Assignment).where(Assignment.task_id == task_id,
                                                         Assignment.worker_id == worker_id))
    if assignment is None or assignment.status in ("rejected", "abandoned"):
        raise NotYourTask(f"task {task_id} was not given to you; open the next task from the start page")
    if assignment.status == "given":
        _check_still_yours(session, assignment)
    ids_by_position = dict(session.execute(select(TaskItem.position, TaskItem.id)
                                           .where(TaskItem.task_id == task_id)).all())
    unknown = sorted(set(document["selected"]) - set(ids_by_position))
    if unknown:
        raise SubmissionRejected(f"task {task_id} has no image at position(s) {', '.join(map(str, unknown[:10]))}")
    return assignment, {ids_by_position[position] for position in document["selected"]}


def _check_still_yours(session: Session, assignment: Assignment) -> None:
    """A given assignment may still be submitted unless its task was closed, or its hour ran out
    and others now hold every slot (TaskClosed). Takes the task's lock, so that the check and the
    store that follows are one step."""
    lock_task(session, assignment.task_id)
    task = session.execute(select(Task.status, Task.assignments_wanted).where(Task.id == assignment.task_id)).one()
    now = dt.datetime.now(dt.UTC)
    given_at = assignment.given_at if assignment.given_at.tzinfo else assignment.given_at.replace(tzinfo=dt.UTC)
    others = session.scalar(_live_assignments(assignment.task_id, now).where(Assignment.id != assignment.id))
    if task.status == "expired":
        raise TaskClosed(f"task {assignment.task_id} was closed by the requester before your answers arrived, so "
                         f"they were not stored; open the next task from the start page")
    if others >= task.assignments_wanted and (given_at <= now - ABANDONED_AFTER or task.status != "open"):
        raise TaskClosed(f"your time for task {assignment.task_id} ran out (an hour) and another worker took your "
                         f"place, so these answers were not stored; open the next task from the start page")
