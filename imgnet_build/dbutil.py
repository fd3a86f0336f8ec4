"""Small database helpers shared by the stages, written once for SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from itertools import islice

from sqlalchemy import func, insert, select, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

__all__ = ["insert_ignore", "batched", "allocate_ids"]


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


def allocate_ids(session: Session, model: type, count: int) -> list[int]:
    """`count` new ids of `model`'s table, in ascending order, for rows inserted with their ids
    given: one executemany instead of one INSERT ... RETURNING per row (SQLite cannot tie
    RETURNING rows to a multi-row insert's parameters, so SQLAlchemy sends those one by one).

    PostgreSQL: taken from the id's sequence, one round trip. SQLite: the ids the database would
    give (max(id) + 1 onwards): the caller must hold the write lock (a write earlier in the
    transaction, e.g. `labeling.locks.lock_planning`), so nobody else inserts before it does."""
    if count <= 0:
        return []
    table = model.__table__  # type: ignore[attr-defined]
    if session.get_bind().dialect.name == "postgresql":
        return sorted(session.scalars(text("SELECT nextval(pg_get_serial_sequence(:table, 'id')) "
                                           "FROM generate_series(1, :count)"), {"table": table.name, "count": count}))
    start = (session.scalar(select(func.max(table.c.id))) or 0) + 1
    return list(range(start, start + count))
