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
from typing import TYPE_CHECKING, Protocol

from sqlalchemy import and_, func, select, update
from sqlalchemy.orm import Session

from imgnet_build.errors import BadInput
from imgnet_build.registry import Registry
from imgnet_build.store import Assignment, Task

if TYPE_CHECKING:
    from imgnet_build.workspace import Workspace

__all__ = ["Backend", "LocalBackend", "Spend", "register", "get_backend", "workspace_spend", "BACKENDS"]


@dataclasses.dataclass(frozen=True)
class Spend:
    """What labeling on one marketplace cost: `paid` says whether it is real money (the MTurk
    sandbox's figures are its free test money). Spent is rewards plus fees of submitted or
    approved work; committed is what open tasks may still cost."""

    marketplace: str
    paid: bool
    tasks: int = 0
    assignments: int = 0  # submitted or approved
    reward_usd: Decimal = Decimal("0.00")
    fee_usd: Decimal = Decimal("0.00")
    committed_usd: Decimal = Decimal("0.00")

    @property
    def spent_usd(self) -> Decimal:
        return self.reward_usd + self.fee_usd

    def as_dict(self) -> dict:
        return {"marketplace": self.marketplace, "paid": self.paid, "tasks": self.tasks,
                "assignments": self.assignments, "reward_usd": str(self.reward_usd), "fee_usd": str(self.fee_usd),
                "spent_usd": str(self.spent_usd), "committed_usd": str(self.committed_usd)}


class Backend(Protocol):
    name: str
    simulated: bool  # its votes and labels are marked simulated
    answers_itself: bool  # `label run` may loop submit -> collect on it
    costs_money: bool

    def __init__(self, workspace: Workspace, options: dict | None = None) -> None: ...

    def publish(self, session: Session, tasks: list[Task]) -> None: ...

    def collect(self, workspace: Workspace) -> int:
        """Fetch and store new answers; returns the number of assignments stored."""
        ...

    def check_pairs(self, session: Session, pairs: list[tuple[int, int]]) -> None:
        """Refuse (BadInput) pairs this backend cannot ask about, before any task is made."""
        ...

    # Optional: `test` (its answers are not evidence), `reserve(session, tasks)` (refuse tasks over a cost cap,
    # under the planning lock), `publish_in_transaction` (False: publish committed tasks afterwards),
    # `spend(session, workspace) -> list[Spend]` (a classmethod; a backend without it costs nothing, and
    # workspace_spend counts its tasks and paid assignments).


class LocalBackend:
    """Real people in a browser: tasks are opened for the web app of `imgnet label serve`."""

    name = "local"
    simulated = False
    answers_itself = False
    costs_money = False

    def __init__(self, workspace: Workspace, options: dict | None = None) -> None:
        self.workspace = workspace

    def publish(self, session: Session, tasks: list[Task]) -> None:
        session.execute(update(Task).where(Task.id.in_([task.id for task in tasks])).values(status="open"))

    def collect(self, workspace: Workspace) -> int:
        return 0  # the web app stores every submission as it arrives

    def check_pairs(self, session: Session, pairs: list[tuple[int, int]]) -> None:
        return None


BACKENDS: Registry[type[Backend]] = Registry(
    "labeling backend", optional=("imgnet_build.labeling.simulated", "imgnet_build.labeling.mturk"))


def register(backend: type[Backend]) -> type[Backend]:
    """Register a backend under its `name`."""
    return BACKENDS.add(backend)


register(LocalBackend)


def workspace_spend(session: Session, workspace: Workspace) -> list[Spend]:
    """What labeling cost, per marketplace, each backend computing its own: the one computation
    of cost that `label status` and the report show."""
    BACKENDS.load()
    paid_work = (select(Task.backend, func.count(func.distinct(Task.id)), func.count(Assignment.id))
                 .outerjoin(Assignment, and_(Assignment.task_id == Task.id, Assignment.simulated.is_(False),
                                             Assignment.status.in_(("submitted", "approved"))))
                 .group_by(Task.backend))
    spends: list[Spend] = []
    for name, tasks, assignments in session.execute(paid_work.order_by(Task.backend)):
        spend = getattr(BACKENDS.get(name), "spend", None)
        spends += spend(session, workspace) if spend is not None else [Spend(name, False, tasks, assignments)]
    return spends


def get_backend(name: str, workspace: Workspace, options: dict | None = None):
    if name not in BACKENDS:
        BACKENDS.load()
    if name not in BACKENDS:
        raise BadInput(f"unknown labeling backend {name!r}; choose one of: {', '.join(sorted(BACKENDS))}")
    return BACKENDS[name](workspace, options or {})

