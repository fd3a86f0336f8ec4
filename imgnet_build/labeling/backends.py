"""Labeling backends: where tasks go and where answers come from. One Protocol, one registry.

    backend = get_backend("simulated", workspace, options)
    backend.publish(session, tasks)      # tasks just made (status "new") -> "open"
    backend.collect(workspace)           # bring answers in through answers.store_answers

`local` tasks are answered in the web app (`imgnet label serve`), which stores each
submission as it comes, so its collect has nothing to fetch. Backends that answer by
themselves (`simulated`) can be driven by `imgnet label run`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from sqlalchemy import update
from sqlalchemy.orm import Session

from imgnet_build.errors import BadInput
from imgnet_build.registry import Registry
from imgnet_build.store import Task

if TYPE_CHECKING:
    from imgnet_build.workspace import Workspace

__all__ = ["Backend", "LocalBackend", "register", "get_backend", "BACKENDS"]


class Backend(Protocol):
    name: str
    simulated: bool  # its votes and labels are marked simulated
    answers_itself: bool  # `label run` may loop submit -> collect on it
    costs_money: bool

    def __init__(self, workspace: Workspace, options: dict | None = None) -> None: ...

    def publish(self, session: Session, tasks: list[Task]) -> None: ...

    def collect(self, workspace) -> int:
        """Fetch and store new answers; returns the number of assignments stored."""
        ...

    def check_pairs(self, session: Session, pairs: list[tuple[int, int]]) -> None:
        """Refuse (BadInput) pairs this backend cannot ask about, before any task is made."""
        ...


class LocalBackend:
    """Real people in a browser: tasks are opened for the web app of `imgnet label serve`."""

    name = "local"
    simulated = False
    answers_itself = False
    costs_money = False

    def __init__(self, workspace, options: dict | None = None) -> None:
        self.workspace = workspace

    def publish(self, session: Session, tasks: list[Task]) -> None:
        session.execute(update(Task).where(Task.id.in_([task.id for task in tasks])).values(status="open"))

    def collect(self, workspace) -> int:
        return 0  # the web app stores every submission as it arrives

    def check_pairs(self, session: Session, pairs: list[tuple[int, int]]) -> None:
        return None


BACKENDS: Registry[type[Backend]] = Registry(
    "labeling backend", optional=("imgnet_build.labeling.simulated", "imgnet_build.labeling.mturk"))


def register(backend: type[Backend]) -> type[Backend]:
    """Register a backend under its `name`."""
    return BACKENDS.add(backend)


register(LocalBackend)


def get_backend(name: str, workspace, options: dict | None = None):
    if name not in BACKENDS:
        BACKENDS.load()
    if name not in BACKENDS:
        raise BadInput(f"unknown labeling backend {name!r}; choose one of: {', '.join(sorted(BACKENDS))}")
    return BACKENDS[name](workspace, options or {})

