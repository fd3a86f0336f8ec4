"""A workspace: a folder with `imgnet.toml`, the database and the blob store.

    ws = Workspace.init("ws")            # or Workspace.open("ws")
    with ws.session() as session:
        ...
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import tomllib
from collections.abc import Iterator
from functools import cached_property
from pathlib import Path

from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from imgnet_build import store
from imgnet_build.errors import BadInput, NotAWorkspace, WorkspaceExists
from imgnet_build.labeling.mturk_settings import MTurkSettings

__all__ = ["Settings", "Workspace", "SETTINGS_FILE", "DATABASE_ENV"]

SETTINGS_FILE = "imgnet.toml"
DATABASE_ENV = "IMGNET_DATABASE_URL"
DEFAULT_DATABASE = "sqlite:///imgnet.db"  # relative to the workspace folder
DEFAULT_BLOBS = "blobs"


@dataclasses.dataclass(frozen=True)
class Settings:
    """What `imgnet.toml` holds. Relative paths are relative to the workspace folder."""

    database: str = DEFAULT_DATABASE
    blobs: str = DEFAULT_BLOBS
    s3_endpoint_url: str | None = None
    mturk: MTurkSettings = MTurkSettings()  # the [mturk] table; labeling/mturk_settings.py

    def to_toml(self) -> str:
        lines = ["# imgnet-build workspace settings", f"database = {_quote(self.database)}", f"blobs = {_quote(self.blobs)}"]
        if self.s3_endpoint_url:
            lines.append(f"s3_endpoint_url = {_quote(self.s3_endpoint_url)}")
        return "\n".join(lines) + "\n"

    @classmethod
    def from_toml(cls, text: str, path: Path) -> Settings:
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise BadInput(f"{path} is not valid TOML: {exc}") from exc
        mturk = MTurkSettings.from_table(data.pop("mturk", {}), path)
        known = {field.name for field in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise BadInput(f"{path}: unknown setting(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        return cls(**data, mturk=mturk)


def _quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


class Workspace:
    """An open workspace. Create with `Workspace.init`, open with `Workspace.open`."""

    def __init__(self, root: Path, settings: Settings):
        self.root = root
        self.settings = settings

    @classmethod
    def init(cls, root: str | os.PathLike, database: str | None = None, blobs: str | None = None) -> Workspace:
        """Create the folder, `imgnet.toml`, the database schema and the blob store."""
        root = Path(root)
        if (root / SETTINGS_FILE).exists():
            raise WorkspaceExists(f"{root} is already a workspace; use it with: imgnet -w {root} status")
        if root.exists() and not root.is_dir():
            raise NotAWorkspace(f"{root} exists and is not a folder")
        settings = Settings(database=database or DEFAULT_DATABASE, blobs=blobs or DEFAULT_BLOBS)
        root.mkdir(parents=True, exist_ok=True)
        workspace = cls(root, settings)
        workspace.engine  # connect and create the schema before writing imgnet.toml
        (root / SETTINGS_FILE).write_text(settings.to_toml())
        workspace.blob_store  # creates the local folder
        return workspace

    @classmethod
    def open(cls, root: str | os.PathLike) -> Workspace:
        root = Path(root)
        if not root.is_dir():
            raise NotAWorkspace(f"workspace {root} does not exist; create it with: imgnet init {root}")
        settings_path = root / SETTINGS_FILE
        if not settings_path.is_file():
            raise NotAWorkspace(f"{root} is not a workspace (no {SETTINGS_FILE}); create one with: imgnet init {root}")
        return cls(root, Settings.from_toml(settings_path.read_text(), settings_path))

    @property
    def database_url(self) -> str:
        url = os.environ.get(DATABASE_ENV) or self.settings.database
        prefix = "sqlite:///"
        if url.startswith(prefix) and not url.startswith(prefix + "/") and url != "sqlite://" and ":memory:" not in url:
            url = prefix + str((self.root / url[len(prefix):]).resolve())
        return url

    @cached_property
    def engine(self) -> Engine:
        engine = store.make_engine(self.database_url)
        store.migrate(engine)
        return engine

    @cached_property
    def _sessions(self):
        return store.session_factory(self.engine)

    @contextlib.contextmanager
    def session(self) -> Iterator[Session]:
        """A session that commits on success and rolls back on error."""
        with self._sessions() as session, session.begin():
            yield session

    @cached_property
    def blob_store(self):
        from imgnet_build.blobs import open_blob_store

        location = self.settings.blobs
        if "://" not in location:
            location = str((self.root / location).resolve())
        return open_blob_store(location, endpoint_url=self.settings.s3_endpoint_url)

    def status(self) -> dict[str, object]:
        with self.session() as session:
            return {"workspace": str(self.root), "database": self.engine.url.render_as_string(hide_password=True),
                    **store.stage_counts(session)}

    def close(self) -> None:
        if "engine" in self.__dict__:
            self.engine.dispose()
