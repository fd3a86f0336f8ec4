"""The workspace database: SQLAlchemy models for the whole data model, engine and sessions.

The schema is defined here once and created/upgraded by the Alembic migrations in
`imgnet_build/migrations`. Everything here runs on SQLite and on PostgreSQL alike.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections import Counter
from collections.abc import Iterable
from enum import StrEnum
from pathlib import Path

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
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
    text,
)
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker

from imgnet_build import __version__
from imgnet_build.errors import DatabaseUnavailable

__all__ = [
    "Base",
    "Category",
    "CategoryEdge",
    "Query",
    "Candidate",
    "Image",
    "Cluster",
    "DedupSummary",
    "Worker",
    "Task",
    "TaskItem",
    "Assignment",
    "Vote",
    "Label",
    "LabelHistory",
    "Gold",
    "CategoryConsensus",
    "Export",
    "CandidateStatus",
    "Split",
    "TaskStatus",
    "ItemKind",
    "AssignmentStatus",
    "LabelStatus",
    "make_engine",
    "migrate",
    "analyze",
    "analyze_if_grown",
    "stage_counts",
]


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


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


# The vocabularies of the status columns: each a StrEnum (its members are the strings stored)
# and a CHECK constraint on its column, so the database refuses any other value.

class CandidateStatus(StrEnum):
    PENDING = "pending"  # proposed, not fetched yet
    OK = "ok"  # fetched and valid; image_sha256 is set
    FAILED = "failed"  # fetch or validation failed; error says why
    SKIPPED = "skipped"  # not fetched on purpose (quota reached, known sha1, opt-out)


class Split(StrEnum):
    TRAIN = "train"
    VAL = "val"


class TaskStatus(StrEnum):
    NEW = "new"  # not yet published to its backend
    OPEN = "open"
    DONE = "done"
    EXPIRED = "expired"


class ItemKind(StrEnum):
    CANDIDATE = "candidate"  # an image whose label is wanted
    POSITIVE = "positive"  # controls: images whose answer is known
    NEGATIVE = "negative"


class AssignmentStatus(StrEnum):
    GIVEN = "given"
    SUBMITTED = "submitted"
    APPROVED = "approved"
    REJECTED = "rejected"
    ABANDONED = "abandoned"


class LabelStatus(StrEnum):
    ACCEPTED = "accepted"
    REJECTED = "rejected"
    UNDECIDED = "undecided"


SPLITS = tuple(Split)
TASK_STATUSES = tuple(TaskStatus)
ITEM_KINDS = tuple(ItemKind)
ASSIGNMENT_STATUSES = tuple(AssignmentStatus)
LABEL_STATUSES = tuple(LabelStatus)


def _one_of(column: str, values: Iterable[str], name: str) -> CheckConstraint:
    return CheckConstraint(f"{column} IN ({', '.join(repr(str(v)) for v in values)})", name=name)


ID64 = BigInteger().with_variant(Integer, "sqlite")  # 64-bit ids; SQLite's rowid is 64-bit already
_UNHASHED = text("phash IS NULL")  # partial index: the images dedup has still to hash
_HASHED = text("phash IS NOT NULL")  # (a "phash IS NULL" lookup must take the index above, in sha256 order)
_PIXELS = text("pixel_sha256 IS NOT NULL")  # partial: dedup digests the pixels of a few images only


def url_hash(url: str) -> str:
    """The key of a candidate's URL (any length; a btree over the URL itself overflows on PostgreSQL)."""
    return hashlib.sha256(url.encode("utf-8", "surrogatepass")).hexdigest()


def _url_hash_default(context) -> str:
    return url_hash(context.get_current_parameters()["url"])


class Candidate(Base):
    """One image URL or path proposed for one category; unique per category and URL (by its hash).

    A fetch run claims pending rows by setting `lease_owner` and `lease_until`; a claim
    whose time has passed (its process died) is free again. Results are written only
    under the claim.
    """

    __tablename__ = "candidate"
    id: Mapped[int] = mapped_column(ID64, primary_key=True)
    category_id: Mapped[int] = mapped_column(ForeignKey("category.id", ondelete="CASCADE"))
    query_id: Mapped[int | None] = mapped_column(ForeignKey("query.id", ondelete="SET NULL"))
    source: Mapped[str] = mapped_column(String(64))
    url: Mapped[str] = mapped_column(Text)
    url_hash: Mapped[str] = mapped_column(String(64), default=_url_hash_default)  # sha256 of the URL
    rank: Mapped[int | None] = mapped_column(Integer)
    license: Mapped[str | None] = mapped_column(Text)
    attribution: Mapped[str | None] = mapped_column(Text)
    source_sha1: Mapped[str | None] = mapped_column(String(40))  # when the source tells it
    truth: Mapped[bool | None] = mapped_column(Boolean)  # known answer (URL lists, tests, gold)
    status: Mapped[str] = mapped_column(String(16), default=CandidateStatus.PENDING)
    error: Mapped[str | None] = mapped_column(Text)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    image_sha256: Mapped[str | None] = mapped_column(ForeignKey("image.sha256"))
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=_now)
    fetched_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    lease_owner: Mapped[str | None] = mapped_column(String(32))  # the fetch run that claimed it
    lease_until: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    __table_args__ = (
        UniqueConstraint("category_id", "url_hash", name="uq_candidate"),
        Index("ix_candidate_url_hash", "url_hash"),
        Index("ix_candidate_status", "status"),
        Index("ix_candidate_image", "image_sha256"),
        Index("ix_candidate_lease", "lease_owner"),
        # fetch claims pending rows in this order (imgnet_build/claims.py); "already stored?" by source SHA-1
        Index("ix_candidate_pending", "category_id", "rank", "id", sqlite_where=text("status = 'pending'"),
              postgresql_where=text("status = 'pending'")),
        Index("ix_candidate_source_sha1", "source_sha1"),
        Index("ix_candidate_category", "category_id", "status", "image_sha256", "truth"),  # ok pairs per category (truth: the simulated crowd's check)
        _one_of("status", CandidateStatus, "ck_candidate_status"),
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
    detail: Mapped[float | None] = mapped_column(Float)  # grey-level spread of the hashed thumbnail (dedup)
    dedup_threshold: Mapped[int | None] = mapped_column(Integer)  # of the dedup run that clustered it
    cluster_id: Mapped[int | None] = mapped_column(ForeignKey("cluster.id"))  # set by dedup
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=_now)
    __table_args__ = (
        Index("ix_image_pixel", "pixel_sha256", sqlite_where=_PIXELS, postgresql_where=_PIXELS),
        Index("ix_image_cluster", "cluster_id"),
        Index("ix_image_unhashed", "sha256", sqlite_where=_UNHASHED, postgresql_where=_UNHASHED),
        Index("ix_image_dedup_threshold", "dedup_threshold", "phash"),  # what a dedup rerun reads
        Index("ix_image_phash", "phash", sqlite_where=_HASHED, postgresql_where=_HASHED),
    )




class Cluster(Base):
    """A set of duplicate images with a stable identity: labels and the split follow the
    cluster, not its representative, which a later dedup run may change. Two clusters that
    new images join keep the older one (lowest id); the other points to it (merged_into)."""

    __tablename__ = "cluster"
    id: Mapped[int] = mapped_column(ID64, primary_key=True)
    key: Mapped[str] = mapped_column(String(64))  # sha256 of the image that founded it; never changes
    representative: Mapped[str] = mapped_column(String(64))  # the image shown to workers
    # No index on merged_into: its queries take `IS NULL` (nearly every row) or `split IS NOT NULL OR merged_into
    # IS NOT NULL` (a scan either way), and no cluster row is deleted; EXPLAIN at 1M clusters, commit message.
    merged_into: Mapped[int | None] = mapped_column(ForeignKey("cluster.id"))
    split: Mapped[str | None] = mapped_column(String(8))  # where the last export put it
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=_now)
    __table_args__ = (Index("ix_cluster_key", "key"), _one_of("split", SPLITS, "ck_cluster_split"))


class DedupSummary(Base):
    """The duplicate counts of the stored clusters (`dedup.duplicate_counts`) and what they were
    counted from: one row, written by `imgnet dedup`, removed with the clusters it counted. While no
    image and no ok candidate was added since, a rerun and `imgnet status` read the counts here."""

    __tablename__ = "dedup_summary"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)  # always 1
    images: Mapped[int] = mapped_column(BigInteger)  # image rows when counted
    ok_candidates: Mapped[int] = mapped_column(BigInteger)  # ok candidate rows when counted
    exact_files: Mapped[int] = mapped_column(BigInteger)
    exact_pixels: Mapped[int] = mapped_column(BigInteger)
    near: Mapped[int] = mapped_column(BigInteger)
    clusters: Mapped[int] = mapped_column(BigInteger)
    conflicts: Mapped[int] = mapped_column(BigInteger)
    counted_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=_now)


class Worker(Base):
    """One person (or simulated worker) on one backend."""

    __tablename__ = "worker"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    backend: Mapped[str] = mapped_column(String(32))
    external_id: Mapped[str] = mapped_column(String(255))  # invite name, MTurk WorkerId, sim-N
    name: Mapped[str | None] = mapped_column(String(255))
    token_hash: Mapped[str | None] = mapped_column(String(64), unique=True)  # sha256 of the invite token
    accuracy: Mapped[float | None] = mapped_column(Float)  # balanced accuracy, estimated by consensus
    accuracy_low: Mapped[float | None] = mapped_column(Float)  # its 95% interval
    accuracy_high: Mapped[float | None] = mapped_column(Float)
    sensitivity: Mapped[float | None] = mapped_column(Float)  # P(yes | the image shows the category)
    specificity: Mapped[float | None] = mapped_column(Float)  # P(no | it does not)
    control_answers: Mapped[int] = mapped_column(Integer, default=0)
    control_correct: Mapped[int] = mapped_column(Integer, default=0)
    blocked: Mapped[bool] = mapped_column(Boolean, default=False)
    revoked: Mapped[bool] = mapped_column(Boolean, default=False)
    simulated: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=_now)
    __table_args__ = (UniqueConstraint("backend", "external_id", name="uq_worker"),)


class Task(Base):
    """One crowd task (a HIT): images of one category to judge, controls among them."""

    __tablename__ = "task"
    id: Mapped[int] = mapped_column(ID64, primary_key=True)
    category_id: Mapped[int] = mapped_column(ForeignKey("category.id", ondelete="CASCADE"))
    round: Mapped[int] = mapped_column(Integer)
    batch: Mapped[str] = mapped_column(String(64))
    backend: Mapped[str] = mapped_column(String(32))
    external_id: Mapped[str | None] = mapped_column(String(255))  # the marketplace's id once published (MTurk HITId)
    publish_token: Mapped[str | None] = mapped_column(String(64))  # MTurk: the HIT's UniqueRequestToken, on record first
    status: Mapped[str] = mapped_column(String(16), default="new")
    assignments_wanted: Mapped[int] = mapped_column(Integer)
    reward_cents: Mapped[int | None] = mapped_column(Integer)  # per assignment, what the marketplace pays
    live: Mapped[bool] = mapped_column(Boolean, default=False)  # MTurk's live endpoint: real money
    test: Mapped[bool] = mapped_column(Boolean, default=False)  # a non-paying test (MTurk sandbox): not evidence
    crowd: Mapped[dict | None] = mapped_column(JSON)  # the simulated crowd that answers it (simulated.Crowd's fields)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=_now)
    __table_args__ = (Index("ix_task_status", "status"), Index("ix_task_category", "category_id"),
                      _one_of("status", TASK_STATUSES, "ck_task_status"))


class TaskItem(Base):
    """One image shown in one task: a candidate pair, or a control with a known answer."""

    __tablename__ = "task_item"
    id: Mapped[int] = mapped_column(ID64, primary_key=True)
    task_id: Mapped[int] = mapped_column(ForeignKey("task.id", ondelete="CASCADE"))
    position: Mapped[int] = mapped_column(Integer)
    image_sha256: Mapped[str] = mapped_column(ForeignKey("image.sha256"))
    cluster_id: Mapped[int | None] = mapped_column(ForeignKey("cluster.id"))
    kind: Mapped[str] = mapped_column(String(16))  # candidate, positive (control), negative (control)
    expected: Mapped[bool | None] = mapped_column(Boolean)  # controls only
    __table_args__ = (UniqueConstraint("task_id", "position", name="uq_task_item"),
                      Index("ix_task_item_cluster", "cluster_id"), Index("ix_task_item_image", "image_sha256"),
                      _one_of("kind", ITEM_KINDS, "ck_task_item_kind"))


class Assignment(Base):
    """One worker's work on one task: given (handed out), then submitted, then reviewed."""

    __tablename__ = "assignment"
    id: Mapped[int] = mapped_column(ID64, primary_key=True)
    task_id: Mapped[int] = mapped_column(ForeignKey("task.id", ondelete="CASCADE"))
    worker_id: Mapped[int] = mapped_column(ForeignKey("worker.id", ondelete="CASCADE"))
    external_id: Mapped[str | None] = mapped_column(String(255))  # e.g. the MTurk AssignmentId
    status: Mapped[str] = mapped_column(String(16), default="given")
    simulated: Mapped[bool] = mapped_column(Boolean, default=False)
    feedback: Mapped[str | None] = mapped_column(Text)
    given_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=_now)
    submitted_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    reviewed_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    __table_args__ = (UniqueConstraint("task_id", "worker_id", name="uq_assignment"),
                      Index("ix_assignment_worker", "worker_id"), Index("ix_assignment_status", "status"),
                      _one_of("status", ASSIGNMENT_STATUSES, "ck_assignment_status"))


class Vote(Base):
    """One yes/no by one worker on one (cluster, category) pair, through one image of the cluster;
    a worker votes on a pair once. `cluster_id` is the image's cluster when the vote was stored
    (a later dedup may merge it into another: consensus counts a worker once per current cluster).
    `test` votes come from a non-paying test (the MTurk sandbox): stored and shown, not evidence."""

    __tablename__ = "vote"
    id: Mapped[int] = mapped_column(ID64, primary_key=True)
    assignment_id: Mapped[int] = mapped_column(ForeignKey("assignment.id", ondelete="CASCADE"))
    worker_id: Mapped[int] = mapped_column(ForeignKey("worker.id", ondelete="CASCADE"))
    task_item_id: Mapped[int] = mapped_column(ForeignKey("task_item.id", ondelete="CASCADE"))
    image_sha256: Mapped[str] = mapped_column(ForeignKey("image.sha256"))
    category_id: Mapped[int] = mapped_column(ForeignKey("category.id", ondelete="CASCADE"))
    answer: Mapped[bool] = mapped_column(Boolean)
    control: Mapped[bool] = mapped_column(Boolean, default=False)
    simulated: Mapped[bool] = mapped_column(Boolean, default=False)
    cluster_id: Mapped[int | None] = mapped_column(ForeignKey("cluster.id"))
    test: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=_now)
    __table_args__ = (
        UniqueConstraint("worker_id", "image_sha256", "category_id", name="uq_vote"),
        UniqueConstraint("worker_id", "cluster_id", "category_id", name="uq_vote_cluster"),
        Index("ix_vote_pair", "image_sha256", "category_id"),
        Index("ix_vote_cluster", "cluster_id", "category_id"),
        Index("ix_vote_assignment", "assignment_id"),
        Index("ix_vote_category", "category_id", "image_sha256"),
    )


class Label(Base):
    """The consensus on one (cluster, category) pair: it applies to every image of the cluster."""

    __tablename__ = "label"
    id: Mapped[int] = mapped_column(ID64, primary_key=True)
    cluster_id: Mapped[int] = mapped_column(ForeignKey("cluster.id"))
    category_id: Mapped[int] = mapped_column(ForeignKey("category.id", ondelete="CASCADE"))
    status: Mapped[str] = mapped_column(String(16))
    confidence: Mapped[float] = mapped_column(Float)  # posterior probability that the image shows the category
    yes_votes: Mapped[int] = mapped_column(Integer, default=0)
    no_votes: Mapped[int] = mapped_column(Integer, default=0)
    method: Mapped[str] = mapped_column(String(32))
    round: Mapped[int] = mapped_column(Integer)
    simulated: Mapped[bool] = mapped_column(Boolean, default=False)  # not decided by people alone (simulated or test votes)
    test: Mapped[bool] = mapped_column(Boolean, default=False)  # test (sandbox) votes counted, on request
    updated_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=_now)
    __table_args__ = (UniqueConstraint("cluster_id", "category_id", name="uq_label"),
                      Index("ix_label_category", "category_id", "status"),
                      _one_of("status", LABEL_STATUSES, "ck_label_status"))


class LabelHistory(Base):
    """Every decision a label went through, one row per change."""

    __tablename__ = "label_history"
    id: Mapped[int] = mapped_column(ID64, primary_key=True)
    cluster_id: Mapped[int] = mapped_column(ForeignKey("cluster.id"))
    category_id: Mapped[int] = mapped_column(ForeignKey("category.id", ondelete="CASCADE"))
    status: Mapped[str] = mapped_column(String(16))
    confidence: Mapped[float] = mapped_column(Float)
    yes_votes: Mapped[int] = mapped_column(Integer)
    no_votes: Mapped[int] = mapped_column(Integer)
    method: Mapped[str] = mapped_column(String(32))
    round: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=_now)
    __table_args__ = (Index("ix_label_history_pair", "cluster_id", "category_id"),)


class Gold(Base):
    """A known answer for an (image, category) pair, given by the user; used as a control."""

    __tablename__ = "gold"
    image_sha256: Mapped[str] = mapped_column(ForeignKey("image.sha256"), primary_key=True)
    category_id: Mapped[int] = mapped_column(ForeignKey("category.id", ondelete="CASCADE"), primary_key=True)
    answer: Mapped[bool] = mapped_column(Boolean)


class CategoryConsensus(Base):
    """Per category, what dynamic consensus learnt from its seed sample."""

    __tablename__ = "category_consensus"
    category_id: Mapped[int] = mapped_column(ForeignKey("category.id", ondelete="CASCADE"), primary_key=True)
    prior: Mapped[float | None] = mapped_column(Float)  # P(good) among the seed images
    table: Mapped[dict | None] = mapped_column(JSON)  # {"yes,no": P(good | yes, no)} from the seed
    seed_images: Mapped[int] = mapped_column(Integer, default=0)
    hard: Mapped[bool] = mapped_column(Boolean, default=False)  # seed never reached a majority
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
    except DBAPIError as exc:  # unreachable server, or a file that is not an SQLite database
        engine.dispose()
        raise DatabaseUnavailable(f"cannot connect to database {_redact(url)}: {database_reason(exc)}") from exc
    return engine


def database_reason(exc: DBAPIError) -> str:
    """The driver's own message, first line only."""
    reason = str(exc.orig if exc.orig is not None else exc).strip().splitlines()
    return reason[0] if reason else type(exc).__name__


def _redact(url: str) -> str:
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return url


MIGRATION_LOCK = 0x696D676E6574  # PostgreSQL advisory lock key ("imgnet")


def _alembic():
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    config = Config()
    config.set_main_option("script_location", str(Path(__file__).parent / "migrations"))
    return config, ScriptDirectory.from_config(config)


def schema_revision(connection) -> str | None:
    """The Alembic revision of the database on `connection` (None: no schema yet)."""
    from alembic.migration import MigrationContext

    return MigrationContext.configure(connection).get_current_revision()


def migrate(engine: Engine) -> None:
    """Bring the schema up to the newest Alembic revision (creates it on a new database).

    The revision is checked first and nothing is done when it is current. Upgrades run
    under a lock (a PostgreSQL advisory lock, SQLite's write lock) so that processes
    opening one database at once do not race; a database newer than this code raises
    `DatabaseUnavailable` asking to update imgnet.
    """
    from alembic import command

    config, script = _alembic()
    head = script.get_current_head()
    with engine.connect() as connection:
        current = schema_revision(connection)
    if current == head:
        return
    _check_known(script, current)
    if engine.dialect.name == "sqlite":  # BEGIN IMMEDIATE takes the write lock now (busy timeout applies)
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
            # A migration that rebuilds a table drops the old one; with foreign keys on, that drop would
            # delete (ON DELETE CASCADE) every row referring to it. SQLite's way: keys off outside the
            # transaction, check them before the commit.
            connection.exec_driver_sql("PRAGMA foreign_keys=OFF")
            try:
                connection.exec_driver_sql("BEGIN IMMEDIATE")
                try:
                    if schema_revision(connection) != head:
                        config.attributes["connection"] = connection
                        command.upgrade(config, "head")
                        broken = connection.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
                        if broken:
                            raise DatabaseUnavailable(f"upgrading the workspace database would break {len(broken)} "
                                                      f"references (first: {tuple(broken[0])}); nothing was changed")
                except BaseException:
                    connection.exec_driver_sql("ROLLBACK")
                    raise
                connection.exec_driver_sql("COMMIT")
            finally:
                connection.exec_driver_sql("PRAGMA foreign_keys=ON")
        analyze(engine)
        return
    with engine.begin() as connection:
        if engine.dialect.name == "postgresql":
            connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK})
        current = schema_revision(connection)
        _check_known(script, current)
        if current != head:
            config.attributes["connection"] = connection
            command.upgrade(config, "head")
    analyze(engine)  # new indexes and tables: give the planner statistics now


def analyze(engine: Engine, tables: tuple[str, ...] = ()) -> None:
    """Refresh the query planner's statistics of `tables` (all when none are named; PostgreSQL
    `ANALYZE`; SQLite `ANALYZE` on a sample of 1,000 rows per index, which takes milliseconds at a
    million rows). Run after migrations and after a stage wrote many rows: without statistics
    PostgreSQL plans sequential scans and SQLite may pick a poor index."""
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        if engine.dialect.name == "sqlite":
            connection.exec_driver_sql("PRAGMA analysis_limit=1000")
        for table in tables or ("",):
            connection.exec_driver_sql(f'ANALYZE "{table}"' if table else "ANALYZE")


ANALYZE_AT_LEAST = 1_000  # rows a run writes to a table before it may refresh the statistics
ANALYZE_SHARE = 0.1  # ... and this share of the rows the statistics last counted in that table


def analyze_if_grown(engine: Engine, table: str, written: int, *, tables: tuple[str, ...] = ()) -> bool:
    """`analyze` after a run that wrote `written` rows to `table` (inserted or updated), when that is at least
    `ANALYZE_AT_LEAST` rows and a tenth of the rows the statistics last counted there (PostgreSQL's
    `pg_class.reltuples`, SQLite's `sqlite_stat1`; 0 when never counted). Whether it runs costs one
    catalogue read; small runs, and runs that add a little to a large table, leave the statistics as
    they are (PostgreSQL's autovacuum refreshes them too, later). The same rule on both databases:
    `ANALYZE` samples (PostgreSQL ~30,000 rows per table, SQLite 1,000 per index), so it costs about
    the same at 10,000 rows as at a million. It analyzes `tables` (every table when none are named:
    `analyze`). Returns whether it ran."""
    if written < ANALYZE_AT_LEAST:
        return False
    with engine.connect() as connection:
        if engine.dialect.name == "postgresql":
            known = connection.scalar(text("SELECT reltuples FROM pg_class WHERE oid = to_regclass(:name)"),
                                      {"name": table})
        else:
            try:
                known = connection.scalar(text("SELECT max(CAST(stat AS INTEGER)) FROM sqlite_stat1 "
                                               "WHERE tbl = :name"), {"name": table})
            except OperationalError:  # no statistics yet at all
                known = None
    if written < ANALYZE_SHARE * max(0.0, float(known or 0)):
        return False
    analyze(engine, tables)
    return True


def _check_known(script, current: str | None) -> None:
    from alembic.util import CommandError

    if current is None:
        return
    try:
        script.get_revision(current)
    except CommandError as exc:
        raise DatabaseUnavailable(
            f"the workspace database is at schema revision {current}, newer than this imgnet {__version__} "
            f"knows (up to {script.get_current_head()}); update imgnet: pip install -U imgnet-build") from exc


def session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


def failure_reasons(session: Session, limit: int = 10) -> dict[str, int]:
    """Failed candidates grouped by the kind of reason ("HTTP 404 Not Found", "refused", "TLS error"…), commonest first."""
    kinds: Counter = Counter()
    for error, count in session.execute(select(Candidate.error, func.count()).where(
            Candidate.status == CandidateStatus.FAILED).group_by(Candidate.error)):
        kinds[(error or "no reason").split(":", 1)[0]] += count
    return dict(kinds.most_common(limit))


def stage_counts(session: Session) -> dict[str, object]:
    """Counts per pipeline stage, the numbers behind `imgnet status`."""
    from imgnet_build.dedup import duplicate_counts

    duplicates = duplicate_counts(session)
    candidates = dict(session.execute(select(Candidate.status, func.count()).group_by(Candidate.status)).all())
    labels = dict(session.execute(select(Label.status, func.count()).group_by(Label.status)).all())
    count = lambda model: session.scalar(select(func.count()).select_from(model))  # noqa: E731
    return {
        "categories": count(Category),
        "edges": count(CategoryEdge),
        "queries": count(Query),
        "candidates": {status: candidates.get(status, 0) for status in ("pending", "ok", "failed", "skipped")},
        "images": count(Image),
        "duplicates": duplicates.duplicates,  # the counts `imgnet dedup` prints (dedup.duplicate_counts)
        "clusters": duplicates.clusters,
        "tasks": count(Task),
        "votes": count(Vote),
        "labels": {status: labels.get(status, 0) for status in ("accepted", "rejected", "undecided")},
        "exports": count(Export),
    }
