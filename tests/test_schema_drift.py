"""The models and the migrated schema are the same schema, on SQLite and on PostgreSQL (issue 15, item 1).

A workspace's tables come from the Alembic migrations; the code reads and writes them through
the SQLAlchemy models in store.py. Alembic's `compare_metadata` lists every table, column, type,
index and foreign key where the two differ; it does not see CHECK constraints, so those are
compared by name. A model changed without a migration (or the reverse) fails here."""

from __future__ import annotations

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import CheckConstraint, insert, inspect
from sqlalchemy.exc import IntegrityError

from imgnet_build.store import (
    ASSIGNMENT_STATUSES,
    ITEM_KINDS,
    LABEL_STATUSES,
    SPLITS,
    TASK_STATUSES,
    Base,
    Candidate,
    CandidateStatus,
    Category,
)


def test_models_and_migrations_agree(any_workspace):
    with any_workspace.engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        assert compare_metadata(context, Base.metadata) == []
        schema = inspect(connection)
        for table in Base.metadata.sorted_tables:
            modelled = {c.name for c in table.constraints if isinstance(c, CheckConstraint)}
            migrated = {c["name"] for c in schema.get_check_constraints(table.name)}
            assert modelled == migrated, table.name


def test_every_status_column_refuses_a_word_outside_its_vocabulary(any_workspace):
    """Before: candidate.status took any string (the only status column without a CHECK)."""
    with any_workspace.session() as session:
        session.add(Category(id=1, wnid="n02091244", synset="ibizan_hound.n.01", name="Ibizan hound",
                             lemmas=["Ibizan hound"], gloss="", lexname="noun.animal",
                             depth=0))
    with pytest.raises(IntegrityError, match="ck_candidate_status"), any_workspace.session() as session:
        session.execute(insert(Candidate).values(category_id=1, source="urls", url="http://a.test/1.jpg",
                                                 status="fetched"))
    with any_workspace.session() as session:  # every word of the vocabulary is taken
        session.execute(insert(Candidate), [
            {"category_id": 1, "source": "urls", "url": f"http://a.test/{status}.jpg", "status": status}
            for status in CandidateStatus])


def test_vocabularies_are_the_strings_stored():
    assert [str(s) for s in CandidateStatus] == ["pending", "ok", "failed", "skipped"]
    assert CandidateStatus.OK == "ok" and f"{CandidateStatus.FAILED}" == "failed"
    assert SPLITS == ("train", "val")
    assert TASK_STATUSES == ("new", "open", "done", "expired")
    assert ITEM_KINDS == ("candidate", "positive", "negative")
    assert ASSIGNMENT_STATUSES == ("given", "submitted", "approved", "rejected", "abandoned")
    assert LABEL_STATUSES == ("accepted", "rejected", "undecided")
