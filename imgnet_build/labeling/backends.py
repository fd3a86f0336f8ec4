"""Labeling backends: where tasks go and where answers come from. One Protocol, one registry.

    backend = get_backend("simulated", workspace, options)
    backend.publish(session, tasks)      # tasks just made (status "new") -> "open"
    backend.collect(workspace)           # bring answers in through answers.store_answers

`local` tasks are answered in the web app (`imgnet label serve`), which stores each
submission as it comes, so its collect has nothing to fetch. Backends that answer by
themselves (`simulated`) can be driven by `imgnet label run`.
"""

from __future__ import annotations

import dataclasses
from decimal import Decimal
from typing import Protocol

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from imgnet_build.errors import BadInput
from imgnet_build.store import Task

__all__ = ["Backend", "LocalBackend", "Spend", "register", "get_backend", "workspace_spend", "BACKENDS"]


@dataclasses.dataclass(frozen=True)
class Spend:
    """What labeling on one marketplace cost: `paid` says whether it is real money."""

    marketplace: str
    paid: bool
    spent_usd: Decimal = Decimal("0.00")  # work submitted or approved, fees included
    committed_usd: Decimal = Decimal("0.00")  # what open tasks may still cost

    def as_dict(self) -> dict:
        return {"marketplace": self.marketplace, "paid": self.paid, "spent_usd": str(self.spent_usd),
                "committed_usd": str(self.committed_usd)}


class Backend(Protocol):
    name: str
    simulated: bool  # its votes and labels are marked simulated
    answers_itself: bool  # `label run` may loop submit -> collect on it
    costs_money: bool

    def publish(self, session: Session, tasks: list[Task]) -> None: ...

    def collect(self, workspace) -> int:
        """Fetch and store new answers; returns the number of assignments stored."""
        ...

    def check_pairs(self, session: Session, pairs: list[tuple[int, int]]) -> None:
        """Refuse (BadInput) pairs this backend cannot ask about, before any task is made."""
        ...

    # Optional: `test` (its answers are not evidence), `reserve(session, tasks)` (refuse tasks over a cost cap,
    # under the planning lock), `publish_in_transaction` (False: publish committed tasks afterwards),
    # `spend(session, workspace) -> list[Spend]` (a classmethod; a backend without it costs nothing).


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


BACKENDS: dict[str, type] = {}


def register(backend: type) -> type:
    BACKENDS[backend.name] = backend
    return backend


register(LocalBackend)


def workspace_spend(session: Session, workspace) -> list[Spend]:
    """What labeling cost, per marketplace, each backend computing its own: the one computation
    of cost that `label status` and the report show."""
    _load_optional()
    spends: list[Spend] = []
    for name in sorted(set(session.scalars(select(Task.backend).distinct()))):
        spend = getattr(BACKENDS.get(name), "spend", None)
        spends += spend(session, workspace) if spend is not None else [Spend(name, paid=False)]
    return spends


def get_backend(name: str, workspace, options: dict | None = None):
    if name not in BACKENDS:
        _load_optional()
    if name not in BACKENDS:
        raise BadInput(f"unknown labeling backend {name!r}; choose one of: {', '.join(sorted(BACKENDS))}")
    return BACKENDS[name](workspace, options or {})


def _load_optional() -> None:
    from importlib import import_module

    for module in ("simulated", "mturk"):
        try:
            import_module(f"imgnet_build.labeling.{module}")
        except ModuleNotFoundError as exc:
            if exc.name != f"imgnet_build.labeling.{module}":
                raise
