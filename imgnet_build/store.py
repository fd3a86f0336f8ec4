"""The workspace database: SQLAlchemy models for the whole data model, engine and sessions.

The schema is defined here once and created/upgraded by the Alembic migrations in
`imgnet_build/migrations`. Everything here runs on SQLite and on PostgreSQL alike.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    create_engine,
    event,
    func,
    select,
)
from sqlalchemy.engine import Engine
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker

from imgnet_build.errors import DatabaseUnavailable

__all__ = [
    "Base",
    "Category",
    "CategoryEdge",
    "Query",
    "Candidate",
    "Image",
    "Task",
    "Assignment",
    "Vote",
    "Label",
    "Export",
    "CandidateStatus",
    "make_engine",
    "migrate",
    "stage_counts",
]


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


class Base(DeclarativeBase):
    pass


class Category(Base):
    """A selected WordNet noun synset."""

    __tablename__ = "category"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    wnid: Mapped[str] = mapped_column(String(16), unique=True)
    synset: Mapped[str] = mapped_column(String(255))  # nltk name, e.g. dog.n.01
    name: Mapped[str] = mapped_column(String(255))
    lemmas: Mapped[list[str]] = mapped_column(JSON)
    gloss: Mapped[str] = mapped_column(Text)
    lexname: Mapped[str] = mapped_column(String(32))
    depth: Mapped[int] = mapped_column(Integer)  # shortest distance from a selected root


class CategoryEdge(Base):
    """parent -> child; WordNet is a DAG, so a child may have several parents."""

    __tablename__ = "category_edge"
    parent_id: Mapped[int] = mapped_column(ForeignKey("category.id", ondelete="CASCADE"), primary_key=True)
    child_id: Mapped[int] = mapped_column(ForeignKey("category.id", ondelete="CASCADE"), primary_key=True)
    __table_args__ = (Index("ix_category_edge_child", "child_id"),)


class Query(Base):
    """A search string for a category and how it was made (lemma, parent_word, omw)."""

    __tablename__ = "query"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    category_id: Mapped[int] = mapped_column(ForeignKey("category.id", ondelete="CASCADE"))
    text: Mapped[str] = mapped_column(String(512))
    language: Mapped[str] = mapped_column(String(16), default="en")
    method: Mapped[str] = mapped_column(String(32))
    __table_args__ = (UniqueConstraint("category_id", "text", "language", name="uq_query"),)


class CandidateStatus:
    PENDING = "pending"  # proposed, not fetched yet
    OK = "ok"  # fetched and valid; image_sha256 is set
    FAILED = "failed"  # fetch or validation failed; error says why
    SKIPPED = "skipped"  # not fetched on purpose (quota reached, known sha1, opt-out)


class Candidate(Base):
    """One image URL or path proposed for one category."""

    __tablename__ = "candidate"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    category_id: Mapped[int] = mapped_column(ForeignKey("category.id", ondelete="CASCADE"))
    query_id: Mapped[int | None] = mapped_column(ForeignKey("query.id", ondelete="SET NULL"))
    source: Mapped[str] = mapped_column(String(64))
    url: Mapped[str] = mapped_column(Text)
    rank: Mapped[int | None] = mapped_column(Integer)
    license: Mapped[str | None] = mapped_column(String(255))
    attribution: Mapped[str | None] = mapped_column(Text)
    source_sha1: Mapped[str | None] = mapped_column(String(40))  # when the source tells it
    truth: Mapped[bool | None] = mapped_column(Boolean)  # known answer (URL lists, tests, gold)
    status: Mapped[str] = mapped_column(String(16), default=CandidateStatus.PENDING)
    error: Mapped[str | None] = mapped_column(Text)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    image_sha256: Mapped[str | None] = mapped_column(ForeignKey("image.sha256"))
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=_now)
    fetched_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    __table_args__ = (
        UniqueConstraint("category_id", "url", name="uq_candidate"),
        Index("ix_candidate_status", "status"),
        Index("ix_candidate_image", "image_sha256"),
    )


class Image(Base):
    """One distinct image file, keyed by the SHA-256 of its bytes."""

    __tablename__ = "image"
    sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    width: Mapped[int] = mapped_column(Integer)
    height: Mapped[int] = mapped_column(Integer)
    format: Mapped[str] = mapped_column(String(16))  # Pillow format name: JPEG, PNG, WEBP…
    bytes: Mapped[int] = mapped_column(BigInteger)
    blob_key: Mapped[str] = mapped_column(String(255))
    pixel_sha256: Mapped[str | None] = mapped_column(String(64))  # hash of decoded RGB pixels
    phash: Mapped[int | None] = mapped_column(BigInteger)  # 64-bit pHash as signed int64
    dhash: Mapped[int | None] = mapped_column(BigInteger)
    duplicate_of: Mapped[str | None] = mapped_column(String(64))  # representative's sha256
    dedup_threshold: Mapped[int | None] = mapped_column(Integer)  # of the dedup run that clustered it
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=_now)
    __table_args__ = (
        Index("ix_image_pixel", "pixel_sha256"),
        Index("ix_image_duplicate_of", "duplicate_of"),
    )


class Task(Base):
    """One crowd task (a HIT): images of one category to judge, with gold controls."""

    __tablename__ = "task"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    category_id: Mapped[int] = mapped_column(ForeignKey("category.id", ondelete="CASCADE"))
    batch: Mapped[str] = mapped_column(String(64))
    backend: Mapped[str] = mapped_column(String(32))
    external_id: Mapped[str | None] = mapped_column(String(255))
    status: Mapped[str] = mapped_column(String(16), default="open")
    items: Mapped[list] = mapped_column(JSON)  # [{"image": sha256, "gold": bool|None}]
    assignments_wanted: Mapped[int] = mapped_column(Integer, default=3)
    reward: Mapped[str | None] = mapped_column(String(16))
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=_now)
    __table_args__ = (Index("ix_task_status", "status"),)


class Assignment(Base):
    """One worker's answer to one task."""

    __tablename__ = "assignment"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    task_id: Mapped[int] = mapped_column(ForeignKey("task.id", ondelete="CASCADE"))
    worker_id: Mapped[str] = mapped_column(String(255))
    external_id: Mapped[str | None] = mapped_column(String(255))
    status: Mapped[str] = mapped_column(String(16), default="submitted")
    submitted_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=_now)
    __table_args__ = (UniqueConstraint("task_id", "worker_id", name="uq_assignment"),)


class Vote(Base):
    """One yes/no on one (image, category) pair."""

    __tablename__ = "vote"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    assignment_id: Mapped[int] = mapped_column(ForeignKey("assignment.id", ondelete="CASCADE"))
    image_sha256: Mapped[str] = mapped_column(ForeignKey("image.sha256"))
    category_id: Mapped[int] = mapped_column(ForeignKey("category.id", ondelete="CASCADE"))
    answer: Mapped[bool] = mapped_column(Boolean)
    __table_args__ = (
        UniqueConstraint("assignment_id", "image_sha256", "category_id", name="uq_vote"),
        Index("ix_vote_pair", "image_sha256", "category_id"),
    )


class Label(Base):
    """The consensus on one (image, category) pair."""

    __tablename__ = "label"
    image_sha256: Mapped[str] = mapped_column(ForeignKey("image.sha256"), primary_key=True)
    category_id: Mapped[int] = mapped_column(ForeignKey("category.id", ondelete="CASCADE"), primary_key=True)
    status: Mapped[str] = mapped_column(String(16))  # accepted / rejected / undecided
    confidence: Mapped[float] = mapped_column(Float)
    yes_votes: Mapped[int] = mapped_column(Integer, default=0)
    no_votes: Mapped[int] = mapped_column(Integer, default=0)
    method: Mapped[str] = mapped_column(String(32))
    updated_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=_now)


class Export(Base):
    """One written train/val split."""

    __tablename__ = "export"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    path: Mapped[str] = mapped_column(Text)
    format: Mapped[str] = mapped_column(String(32))
    parameters: Mapped[dict] = mapped_column(JSON)
    manifest: Mapped[dict] = mapped_column(JSON)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=_now)


def _sqlite_pragmas(dbapi_connection, _record) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def make_engine(url: str) -> Engine:
    """An engine for `url`; SQLite gets WAL, a busy timeout and foreign keys."""
    try:
        engine = create_engine(url, future=True, pool_pre_ping=not url.startswith("sqlite"))
    except Exception as exc:  # bad URL or missing driver
        raise DatabaseUnavailable(f"cannot use database URL {_redact(url)!r}: {exc}") from exc
    if engine.dialect.name == "sqlite":
        event.listen(engine, "connect", _sqlite_pragmas)
    try:
        with engine.connect():
            pass
    except OperationalError as exc:
        reason = str(exc.orig).strip().splitlines()[0] if exc.orig else str(exc)
        raise DatabaseUnavailable(f"cannot connect to database {_redact(url)}: {reason}") from exc
    return engine


def _redact(url: str) -> str:
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return url


def migrate(engine: Engine) -> None:
    """Bring the schema up to the newest Alembic revision (creates it on a new database)."""
    from alembic import command
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(Path(__file__).parent / "migrations"))
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "head")


def session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


def stage_counts(session: Session) -> dict[str, object]:
    """Counts per pipeline stage, the numbers behind `imgnet status`."""
    candidates = dict(session.execute(select(Candidate.status, func.count()).group_by(Candidate.status)).all())
    labels = dict(session.execute(select(Label.status, func.count()).group_by(Label.status)).all())
    count = lambda model: session.scalar(select(func.count()).select_from(model))  # noqa: E731
    return {
        "categories": count(Category),
        "edges": count(CategoryEdge),
        "queries": count(Query),
        "candidates": {status: candidates.get(status, 0) for status in ("pending", "ok", "failed", "skipped")},
        "images": count(Image),
        "duplicates": session.scalar(select(func.count()).where(Image.duplicate_of.is_not(None))),
        "tasks": count(Task),
        "votes": count(Vote),
        "labels": {status: labels.get(status, 0) for status in ("accepted", "rejected", "undecided")},
        "exports": count(Export),
    }
