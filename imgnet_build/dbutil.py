"""Small database helpers shared by the stages, written once for SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from itertools import islice

from sqlalchemy import insert
from sqlalchemy.orm import Session

__all__ = ["insert_ignore", "batched"]


def batched(items: Iterable, size: int) -> Iterator[list]:
    """Lists of up to `size` items, in order (a list or a stream); for bounded statements and commits."""
    iterator = iter(items)
    while batch := list(islice(iterator, size)):
        yield batch


def insert_ignore(session: Session, model: type, rows: list[dict]) -> None:
    """Insert `rows`, silently skipping any that would break a unique constraint.

    Safe against concurrent writers: the database decides (ON CONFLICT DO NOTHING).
    """
    if not rows:
        return
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as dialect_insert
    elif dialect == "sqlite":
        from sqlalchemy.dialects.sqlite import insert as dialect_insert
    else:  # portable fallback: one savepoint per row
        from sqlalchemy.exc import IntegrityError

        for row in rows:
            try:
                with session.begin_nested():
                    session.execute(insert(model), [row])
            except IntegrityError:
                pass
        return
    session.execute(dialect_insert(model).on_conflict_do_nothing(), rows)
