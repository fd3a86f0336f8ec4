"""Small database helpers shared by the stages, written once for SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from itertools import islice

from sqlalchemy import insert
from sqlalchemy.dialects import postgresql, sqlite
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
    statement: postgresql.Insert | sqlite.Insert
    if dialect == "postgresql":
        statement = postgresql.insert(model).on_conflict_do_nothing()
    elif dialect == "sqlite":
        statement = sqlite.insert(model).on_conflict_do_nothing()
    else:  # portable fallback: one savepoint per row
        from sqlalchemy.exc import IntegrityError

        inserted: list = []
        for row in rows:
            try:
                with session.begin_nested():
                    one = insert(model).returning(*returning) if returning else insert(model)
                    result = session.execute(one, [row])
                    inserted += result.all() if returning else []
            except IntegrityError:
                pass
        return inserted
    if not returning:
        session.execute(statement, rows)
        return []
    return list(session.execute(statement.returning(*returning), rows).all())
