"""Locks that make labeling exactly-once when several processes share one workspace.

Each is taken as the first statement of a transaction and held until it ends:

- `lock_planning`: one at a time may plan and make tasks, reserve money, write labels
  (PostgreSQL: a transaction-level advisory lock; SQLite: the database's write lock).
- `lock_task` (`lock_tasks` for many): one at a time may hand out, answer or store answers for a task (PostgreSQL:
  the task's row lock; SQLite: the database's write lock).

On SQLite the first write of a transaction takes the write lock (waiting up to the busy
timeout) and every read after it sees what others committed before: the read-then-write
races of a deferred transaction cannot happen.
"""

from __future__ import annotations

from sqlalchemy import select, text, update
from sqlalchemy.orm import Session

from imgnet_build.store import Task

__all__ = ["lock_planning", "lock_task", "lock_tasks", "PLANNING_LOCK"]

PLANNING_LOCK = 0x696D676E6C62  # PostgreSQL advisory lock key ("imgnlb")


def lock_planning(session: Session) -> None:
    """Hold the workspace's labeling lock until the transaction ends."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": PLANNING_LOCK})
    else:  # a write that changes nothing still takes SQLite's write lock
        session.execute(update(Task).where(Task.id == -1).values(status=Task.status))


def lock_task(session: Session, task_id: int) -> None:
    """Hold the task's row (SQLite: the database) until the transaction ends."""
    session.execute(update(Task).where(Task.id == task_id).values(status=Task.status))


def lock_tasks(session: Session, task_ids: list[int]) -> None:
    """Hold the tasks' rows (SQLite: the database) until the transaction ends; PostgreSQL takes
    them in id order, so two processes locking overlapping sets wait instead of deadlocking."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(select(Task.id).where(Task.id.in_(task_ids)).order_by(Task.id).with_for_update())
    else:
        session.execute(update(Task).where(Task.id.in_(task_ids)).values(status=Task.status))
