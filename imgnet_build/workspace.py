"""A workspace: a folder with `imgnet.toml`, the database and the blob store.

    ws = Workspace.init("ws")            # or Workspace.open("ws")
    with ws.session() as session:
        ...
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
import tomllib
import typing
from collections.abc import Iterator
from functools import cached_property
from pathlib import Path

from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from imgnet_build import store
from imgnet_build.errors import BadInput, DatabaseUnavailable, NotAWorkspace, ReadOnlyWorkspace, WorkspaceExists
from imgnet_build.labeling.mturk_settings import MTurkSettings
from imgnet_build.settings import StageSettings
from imgnet_build.stage import Document

if typing.TYPE_CHECKING:
    from imgnet_build.blobs import BlobStore

__all__ = ["Settings", "Workspace", "SETTINGS_FILE", "DATABASE_ENV", "S3_ENDPOINT_ENV", "WORKSPACE_ENV", "StatusReport", "workspace_status"]

SETTINGS_FILE = "imgnet.toml"
DATABASE_ENV = "IMGNET_DATABASE_URL"
S3_ENDPOINT_ENV = "IMGNET_S3_ENDPOINT_URL"
WORKSPACE_ENV = "IMGNET_WORKSPACE"
EXECUTOR_ENV = "IMGNET_EXECUTOR"
DEFAULT_DATABASE = "sqlite:///imgnet.db"  # relative to the workspace folder
DEFAULT_BLOBS = "blobs"


@dataclasses.dataclass(frozen=True)
class Settings:
    """What `imgnet.toml` holds. Relative paths are relative to the workspace folder.

    Precedence, for every setting: command-line flag > environment variable > this file >
    default (`IMGNET_DATABASE_URL` over `database`, `IMGNET_S3_ENDPOINT_URL` over
    `s3_endpoint_url`; the stage tables are read through `stages.make`)."""

    database: str = DEFAULT_DATABASE
    blobs: str = DEFAULT_BLOBS
    s3_endpoint_url: str | None = None
    executor: str = "local"  # local | dask-local:N | dask://HOST:PORT (imgnet_build/executor.py)
    mturk: MTurkSettings = MTurkSettings()  # the [mturk] table; labeling/mturk_settings.py
    stages: StageSettings = StageSettings()  # the [fetch], [label], [export] and [report] tables; settings.py

    def to_toml(self) -> str:
        lines = ["# imgnet-build workspace settings", f"database = {_quote(self.database)}", f"blobs = {_quote(self.blobs)}"]
        if self.s3_endpoint_url:
            lines.append(f"s3_endpoint_url = {_quote(self.s3_endpoint_url)}")
        if self.executor != "local":
            lines.append(f"executor = {_quote(self.executor)}")
        return "\n".join(lines) + "\n"

    @classmethod
    def from_toml(cls, text: str, path: Path) -> Settings:
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise BadInput(f"{path} is not valid TOML: {exc}") from exc
        mturk = MTurkSettings.from_table(data.pop("mturk", {}), path)  # checks its own types
        stages = StageSettings.from_tables(data, path)
        known = {field.name for field in dataclasses.fields(cls)} - {"mturk", "stages"}
        unknown = sorted(set(data) - known)
        if unknown:
            raise BadInput(f"{path}: unknown setting(s) {', '.join(unknown)}; known: "
                           f"{', '.join(sorted(known | {'[mturk]', '[fetch]', '[label]', '[export]', '[report]'}))}")
        for name, value in data.items():
            if not isinstance(value, str):
                raise BadInput(f"{path}: setting {name} must be a string in quotes, not {value!r}")
        return cls(**data, mturk=mturk, stages=stages)

    @classmethod
    def read(cls, path: Path) -> Settings:
        """The settings in the file `path`; BadInput when it cannot be read."""
        try:
            text = path.read_bytes().decode("utf-8")
            text = text.removeprefix("\ufeff")  # the byte order mark Notepad writes
        except UnicodeDecodeError as exc:
            raise BadInput(f"{path} is not UTF-8 text (byte 0x{exc.object[exc.start]:02x} at offset "
                           f"{exc.start}); save it as UTF-8") from None
        except OSError as exc:
            raise BadInput(f"cannot read {path}: {exc.strerror or exc}") from exc
        return cls.from_toml(text, path)


def _check_persistent(url: str) -> None:
    if url in ("sqlite://", "sqlite:///") or ":memory:" in url or "mode=memory" in url:
        raise BadInput(f"database {url!r} is in memory and would keep nothing; leave --database out for "
                       "imgnet.db in the workspace, or give a file or a PostgreSQL URL")


def _schema_head() -> str | None:
    """The newest schema revision this code knows."""
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    config = Config()
    config.set_main_option("script_location", str(Path(store.__file__).parent / "migrations"))
    return ScriptDirectory.from_config(config).get_current_head()


def _quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


class Workspace:
    """An open workspace. Create with `Workspace.init`, open with `Workspace.open`."""

    def __init__(self, root: Path, settings: Settings, read_only: bool = False):
        self.root = root
        self.settings = settings
        self.read_only = read_only  # only reads: an SQLite database in a read-only folder is opened read-only

    @classmethod
    def init(cls, root: str | os.PathLike, database: str | None = None, blobs: str | None = None) -> Workspace:
        """Create the folder, `imgnet.toml`, the database schema and the blob store: all or nothing.

        `imgnet.toml` is written last and atomically, so a failure (or a second `init` of
        the same folder at the same time) leaves no half-made workspace behind.
        """
        root = Path(root)
        if (root / SETTINGS_FILE).exists():
            raise WorkspaceExists(f"{root} is already a workspace; use it with: imgnet -w {root} status")
        if root.exists() and not root.is_dir():
            raise NotAWorkspace(f"{root} exists and is not a folder")
        settings = Settings(database=database or DEFAULT_DATABASE, blobs=blobs or DEFAULT_BLOBS)
        workspace = cls(root, settings)
        _check_persistent(workspace.database_url)
        made: list[Path] = []  # what this call created, removed again if it fails
        try:
            for folder in reversed([root, *root.parents]):
                if not folder.exists():
                    folder.mkdir()
                    made.append(folder)
            if "://" not in settings.blobs and not (root / settings.blobs).exists():
                made.append(root / settings.blobs)
            workspace.blob_store  # noqa: B018  (creates the local folder)
            sqlite_file = workspace._sqlite_path()
            if sqlite_file is not None and not sqlite_file.exists():
                made += [sqlite_file.with_name(sqlite_file.name + suffix) for suffix in ("", "-wal", "-shm")]
            workspace.engine  # noqa: B018  (connect and create the schema)
            temporary = root / f".{SETTINGS_FILE}.{os.getpid()}.tmp"
            temporary.write_text(settings.to_toml())
            made.append(temporary)
            try:
                os.link(temporary, root / SETTINGS_FILE)  # atomic, and fails when another init won
            except FileExistsError:
                made = [temporary]
                raise WorkspaceExists(f"{root} is already a workspace (made at the same time by another "
                                      f"imgnet init); use it with: imgnet -w {root} status") from None
            temporary.unlink()
        except BaseException as exc:
            workspace.close()
            for path in reversed(made):
                with contextlib.suppress(OSError):
                    shutil.rmtree(path) if path.is_dir() else path.unlink()
            if isinstance(exc, OSError):
                raise BadInput(f"cannot create workspace {root}: {exc.strerror or exc}"
                               f"{f' ({exc.filename})' if exc.filename else ''}") from exc
            raise
        return workspace

    @classmethod
    def open(cls, root: str | os.PathLike, read_only: bool = False) -> Workspace:
        """The workspace in `root`. `read_only`: the caller only reads, so a database in a
        read-only folder is opened read-only instead of refused."""
        root = Path(root)
        if not root.is_dir():
            raise NotAWorkspace(f"workspace {root} does not exist; create it with: imgnet init {root} "
                                f"(or name an existing one with -w DIR or {WORKSPACE_ENV})")
        settings_path = root / SETTINGS_FILE
        if not settings_path.exists():
            raise NotAWorkspace(f"{root} is not a workspace (no {SETTINGS_FILE}); create one with: imgnet init "
                                f"{root} (or name an existing one with -w DIR or {WORKSPACE_ENV})")
        workspace = cls(root, Settings.read(settings_path), read_only)
        _check_persistent(workspace.database_url)
        database = workspace._sqlite_path()
        if database is not None and (not database.exists() or database.stat().st_size == 0):
            what = "is missing" if not database.exists() else "is empty (0 bytes)"
            raise DatabaseUnavailable(f"the workspace database {database} {what}; restore it from a backup, "
                                      f"or make a new workspace with: imgnet init DIR")
        return workspace

    @property
    def database_url(self) -> str:
        url = os.environ.get(DATABASE_ENV) or self.settings.database
        prefix = "sqlite:///"
        if url.startswith(prefix) and not url.startswith(prefix + "/") and ":memory:" not in url:
            url = prefix + str((self.root / url[len(prefix):]).resolve())
        return url

    @property
    def executor(self) -> str:
        """Where fetching and hashing run: IMGNET_EXECUTOR, else `executor` in imgnet.toml, else local."""
        return os.environ.get(EXECUTOR_ENV) or self.settings.executor

    def _sqlite_path(self) -> Path | None:
        """The database file, when the database is SQLite."""
        url = self.database_url
        return Path(url[len("sqlite:///"):].split("?", 1)[0]) if url.startswith("sqlite:///") else None

    def _read_only_folder(self) -> Path | None:
        """The folder of an SQLite database that cannot be written there (read-only mount, permissions)."""
        database = self._sqlite_path()
        if database is None:
            return None
        folder = database.parent
        if not os.access(folder, os.W_OK) or (database.exists() and not os.access(database, os.W_OK)):
            return folder
        return None

    def _read_only_engine(self, database: Path) -> Engine | None:
        """A read-only engine on the SQLite file, or None when its schema needs an upgrade first.

        In WAL mode SQLite reads through the -shm file; in a read-only folder without one, the
        file is opened as immutable, which is safe when no -wal file holds unmerged changes."""
        from urllib.parse import quote

        wal = database.with_name(database.name + "-wal")
        shm = database.with_name(database.name + "-shm")
        flags = "mode=ro" if shm.exists() or (wal.exists() and wal.stat().st_size) else "mode=ro&immutable=1"
        engine = store.make_engine(f"sqlite:///file:{quote(str(database))}?{flags}&uri=true")
        with engine.connect() as connection:
            current = store.schema_revision(connection)
        if current != _schema_head():
            engine.dispose()
            return None
        return engine

    @cached_property
    def engine(self) -> Engine:
        folder = self._read_only_folder()
        if folder is not None and self.read_only:
            engine = self._read_only_engine(typing.cast(Path, self._sqlite_path()))
            if engine is not None:
                return engine
        if folder is not None:
            raise ReadOnlyWorkspace(f"the workspace folder {folder} is read-only, and this command writes to its "
                                    "database; run it where the folder is writable (commands that only read, "
                                    "like imgnet status, work as it is)")
        engine = store.make_engine(self.database_url)
        try:
            store.migrate(engine)
        except DBAPIError as exc:
            engine.dispose()
            raise DatabaseUnavailable(f"cannot prepare the workspace database: {store.database_reason(exc)}") from exc
        except BaseException:
            engine.dispose()
            raise
        return engine

    @cached_property
    def _sessions(self) -> sessionmaker[Session]:
        return store.session_factory(self.engine)

    @contextlib.contextmanager
    def session(self) -> Iterator[Session]:
        """A session that commits on success and rolls back on error."""
        try:
            with self._sessions() as session, session.begin():
                yield session
        except OperationalError as exc:  # locked past the busy timeout, disk full, connection lost
            raise DatabaseUnavailable(f"database error: {store.database_reason(exc)}") from exc

    @cached_property
    def blob_store(self) -> BlobStore:
        from imgnet_build.blobs import open_blob_store

        location = self.settings.blobs
        if "://" not in location:
            location = str((self.root / location).resolve())
        return open_blob_store(location, endpoint_url=os.environ.get(S3_ENDPOINT_ENV) or self.settings.s3_endpoint_url)

    def status(self) -> StatusReport:
        """Counts per stage, and failed candidates grouped by reason (`failures`)."""
        with self.session() as session:
            return StatusReport({"workspace": str(self.root),
                                 "database": self.engine.url.render_as_string(hide_password=True),
                                 **store.stage_counts(session), "failures": store.failure_reasons(session)})

    def close(self) -> None:
        if "engine" in self.__dict__:
            self.engine.dispose()


@dataclasses.dataclass(frozen=True)
class StatusReport(Document):
    """`imgnet status`: `counts` per stage (the document) and failed candidates by reason."""

    counts: dict[str, object]

    def as_dict(self) -> dict[str, object]:
        return self.counts

    def summary(self) -> str:
        lines = []
        for key, value in self.counts.items():
            if isinstance(value, dict):
                value = ", ".join(f"{k} {v}" for k, v in value.items()) or "none"
            lines.append(f"{key + ':':<12} {value}")
        if self.counts["failures"]:
            lines.append("(one by one: imgnet candidates --status failed [--reason TEXT])")
        return "\n".join(lines)


def workspace_status(workspace: Workspace) -> StatusReport:
    """Counts per stage, and failed candidates grouped by reason: what `imgnet status` prints."""
    return workspace.status()
