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


def insert_ignore(session: Session, model: type, rows: list[dict], returning: tuple = ()) -> list:
    """Insert `rows`, silently skipping any that would break a unique constraint.

    Safe against concurrent writers: the database decides (ON CONFLICT DO NOTHING). With
    `returning` columns, returns those columns of the rows actually inserted.
    """
    if not rows:
        return []
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as dialect_insert
    elif dialect == "sqlite":
        from sqlalchemy.dialects.sqlite import insert as dialect_insert
    else:  # portable fallback: one savepoint per row
        from sqlalchemy.exc import IntegrityError

        inserted = []
        for row in rows:
            try:
                with session.begin_nested():
                    statement = insert(model).returning(*returning) if returning else insert(model)
                    result = session.execute(statement, [row])
                    inserted += result.all() if returning else []
            except IntegrityError:
                pass
        return inserted
    statement = dialect_insert(model).on_conflict_do_nothing()
    if not returning:
        session.execute(statement, rows)
        return []
    return list(session.execute(statement.returning(*returning), rows).all())
