"""A simulated crowd that answers from the candidates' `truth` (URL lists carry it).

    imgnet label run --backend simulated --sim-workers 60 --sim-accuracy 0.6-0.95 --sim-spammers 0.1 [--sim-constant 0.05]

Each of `workers` workers has an accuracy drawn uniformly from `accuracy`; a share
`spammers` of them answers at random, and a share `constant` answers "no" to everything
(the constant answer that is hardest to catch: most pairs are no). The crowd is seeded, so a rerun gives the same
votes, and it is stored with each task (`Task.crowd`), so `imgnet label collect` answers
with the crowd the tasks were submitted for. Its votes, assignments and labels are marked
simulated everywhere. A worker never answers a task twice, nor a pair it voted on.
"""

from __future__ import annotations

import dataclasses
import random
import re

import numpy as np
from sqlalchemy import func, select, update

from imgnet_build.dbutil import insert_ignore
from imgnet_build.errors import BadInput
from imgnet_build.labeling.answers import store_answers
from imgnet_build.labeling.backends import register
from imgnet_build.labeling.locks import lock_task
from imgnet_build.store import Assignment, Candidate, CandidateStatus, Category, Image, Task, TaskItem, Vote, Worker
from imgnet_build.workspace import Workspace

__all__ = ["Crowd", "SimulatedBackend"]


@dataclasses.dataclass(frozen=True)
class Crowd:
    workers: int = 60
    accuracy: tuple[float, float] = (0.6, 0.95)
    spammers: float = 0.1
    seed: int = 0
    constant: float = 0.0

    def __post_init__(self) -> None:
        low, high = self.accuracy
        if not 1 <= self.workers <= 100_000:
            raise BadInput(f"--sim-workers must be between 1 and 100000, not {self.workers}")
        if not 0 <= low <= high <= 1:
            raise BadInput(f"--sim-accuracy must be LO-HI with 0 <= LO <= HI <= 1, not {low}-{high}")
        if not 0 <= self.spammers <= 1:
            raise BadInput(f"--sim-spammers must be a share between 0 and 1, not {self.spammers}")
        if not 0 <= self.constant <= 1 - self.spammers:
            raise BadInput(f"--sim-constant must be a share between 0 and 1 - --sim-spammers, not {self.constant}")

    @classmethod
    def from_options(cls, options: dict) -> Crowd:
        defaults = cls()  # the defaults are the fields' own, written once above
        accuracy = options.get("sim_accuracy") or defaults.accuracy
        if isinstance(accuracy, str):
            match = re.fullmatch(r"\s*([0-9.]+)\s*-\s*([0-9.]+)\s*", accuracy)
            if not match:
                raise BadInput(f"--sim-accuracy must look like 0.6-0.95, not {accuracy!r}")
            accuracy = (float(match[1]), float(match[2]))
        pick = lambda name, default: default if options.get(f"sim_{name}") is None else options[f"sim_{name}"]  # noqa: E731
        return cls(int(pick("workers", defaults.workers)), tuple(accuracy),
                   float(pick("spammers", defaults.spammers)), int(pick("seed", defaults.seed)),
                   float(pick("constant", defaults.constant)))

    def batch_suffix(self) -> str:
        constant = f"-c{self.constant:g}" if self.constant else ""
        return (f"-sim-w{self.workers}-a{self.accuracy[0]:g}-{self.accuracy[1]:g}-p{self.spammers:g}{constant}"
                f"-s{self.seed}")

    def as_dict(self) -> dict:
        """What `Task.crowd` stores."""
        return {"workers": self.workers, "accuracy": list(self.accuracy), "spammers": self.spammers,
                "seed": self.seed, "constant": self.constant}

    @classmethod
    def from_dict(cls, stored: dict | None) -> Crowd:
        if not isinstance(stored, dict):
            raise BadInput("a simulated task has no crowd stored with it; expire it (imgnet label expire) and submit again")
        low, high = stored["accuracy"]
        return cls(int(stored["workers"]), (float(low), float(high)), float(stored["spammers"]), int(stored["seed"]),
                   float(stored.get("constant", 0.0)))

    def profiles(self) -> tuple[np.ndarray, np.ndarray]:
        """(sensitivity P(yes | good), specificity P(no | bad)) per worker, the same for the
        same crowd: an honest worker's accuracy twice, 0.5 for a spammer, (0, 1) for an all-no."""
        rng = np.random.default_rng(self.seed)
        accuracy = rng.uniform(*self.accuracy, self.workers)
        spammers = round(self.spammers * self.workers)
        chosen = rng.choice(self.workers, spammers, replace=False)
        sensitivity, specificity = accuracy.copy(), accuracy.copy()
        sensitivity[chosen] = specificity[chosen] = 0.5
        if self.constant:
            rest = np.setdiff1d(np.arange(self.workers), chosen)
            constant = rng.choice(rest, min(len(rest), round(self.constant * self.workers)), replace=False)
            sensitivity[constant], specificity[constant] = 0.0, 1.0
        return sensitivity, specificity

    def external_id(self, index: int) -> str:
        return f"sim-{self.seed}-{index}"


class SimulatedBackend:
    name = "simulated"
    simulated = True
    answers_itself = True
    costs_money = False

    def __init__(self, workspace: Workspace, options: dict | None = None) -> None:
        self.workspace = workspace
        self.crowd = Crowd.from_options(options or {})

    def batch_suffix(self) -> str:
        return self.crowd.batch_suffix()

    def task_columns(self) -> dict:
        return {"crowd": self.crowd.as_dict()}

    def check_pairs(self, session, pairs: list[tuple[int, int]]) -> None:
        """Refuse pairs without truth (of any number of categories: one query)."""
        if not pairs:
            return
        asked: dict[int, set[int]] = {}
        for cluster, category_id in pairs:
            asked.setdefault(category_id, set()).add(cluster)
        known: dict[int, set[int]] = {category_id: set() for category_id in asked}
        for category_id, cluster in session.execute(
                select(Candidate.category_id, Image.cluster_id).join(Candidate, Candidate.image_sha256 == Image.sha256)
                .where(Candidate.category_id.in_(list(asked)), Candidate.truth.is_not(None),
                       Candidate.status == CandidateStatus.OK).distinct()):
            known[category_id].add(cluster)
        for category_id, clusters in asked.items():
            missing = len(clusters - known[category_id])
            if missing:
                wnid = session.scalar(select(Category.wnid).where(Category.id == category_id))
                raise BadInput(f"the simulated crowd answers from the candidates' truth, and {missing} of "
                               f"{len(clusters)} pairs of {wnid} have none; give URL lists a truth column, or label "
                               f"them with --backend local")

    def pool(self, session) -> int:
        """Workers of this crowd who may still answer (not blocked)."""
        blocked = session.scalar(select(func.count()).where(Worker.backend == self.name, Worker.blocked.is_(True),
                                                            Worker.external_id.like(f"sim-{self.crowd.seed}-%")))
        return self.crowd.workers - (blocked or 0)

    def publish(self, session, tasks: list[Task]) -> None:
        session.execute(update(Task).where(Task.id.in_([task.id for task in tasks])).values(status="open"))

    def collect(self, workspace: Workspace) -> int:
        with workspace.session() as session:
            tasks = session.execute(select(Task.id, Task.crowd).where(Task.status == "open", Task.backend == self.name)
                                    .order_by(Task.id)).all()
        stored = 0
        crowds: dict[Crowd, tuple] = {}  # crowd -> (its worker ids, its profiles), made once per collect
        for task_id, stored_crowd in tasks:
            with workspace.session() as session:  # one task, one transaction: a kill loses at most this task
                lock_task(session, task_id)  # a concurrent collect answers it before or after, never beside
                task = session.get(Task, task_id)
                if task is None or task.status != "open":
                    continue
                crowd = Crowd.from_dict(stored_crowd)
                if crowd not in crowds:
                    crowds[crowd] = (_workers(session, crowd), crowd.profiles())
                stored += _answer_task(session, task, crowd, *crowds[crowd])
        return stored


def _workers(session, crowd: Crowd) -> dict[int, int]:
    """{crowd index: worker id}, creating the crowd's worker rows once."""
    insert_ignore(session, Worker, [{"backend": SimulatedBackend.name, "external_id": crowd.external_id(i),
                                     "name": f"simulated worker {i}", "simulated": True, "control_answers": 0,
                                     "control_correct": 0, "blocked": False, "revoked": False}
                                    for i in range(crowd.workers)])
    ids = dict(session.execute(select(Worker.external_id, Worker.id).where(Worker.backend == SimulatedBackend.name,
                                                                           Worker.external_id.like(f"sim-{crowd.seed}-%"))).all())
    return {i: ids[crowd.external_id(i)] for i in range(crowd.workers)}


def _answer_task(session, task: Task, crowd: Crowd, workers: dict[int, int],
                 profiles: tuple[np.ndarray, np.ndarray]) -> int:
    items = session.execute(select(TaskItem.id, TaskItem.image_sha256, TaskItem.cluster_id, TaskItem.kind,
                                   TaskItem.expected).where(TaskItem.task_id == task.id)).all()
    clusters = [item.cluster_id for item in items if item.kind == "candidate"]
    done = session.scalar(select(func.count()).where(Assignment.task_id == task.id,
                                                     Assignment.status != "abandoned"))
    wanted = task.assignments_wanted - done
    if wanted <= 0:
        return 0
    busy = set(session.scalars(select(Vote.worker_id).join(Image, Image.sha256 == Vote.image_sha256)
                               .where(Vote.category_id == task.category_id, Image.cluster_id.in_(clusters))))
    busy |= set(session.scalars(select(Assignment.worker_id).where(Assignment.task_id == task.id)))
    blocked = set(session.scalars(select(Worker.id).where(Worker.blocked.is_(True))))
    rng = random.Random(f"{crowd.seed}:{task.id}")
    free = [i for i in range(crowd.workers) if workers[i] not in busy and workers[i] not in blocked]
    truth = _truth(session, task.category_id, [item.cluster_id for item in items])
    sensitivity, specificity = profiles
    stored = 0
    if len(free) < wanted:  # the crowd has nobody left for it: what it gets now is all it will get
        task.status = "expired"
    for index in rng.sample(free, min(wanted, len(free))):
        assignment = Assignment(task_id=task.id, worker_id=workers[index], status="given", simulated=True)
        session.add(assignment)
        session.flush()
        selected = set()
        for item in items:
            good = truth.get(item.cluster_id, item.expected)  # a control is answered from its truth when known
            if good:
                answer = rng.random() < sensitivity[index]
            else:
                answer = rng.random() >= specificity[index]
            if answer:
                selected.add(item.id)
        stored += store_answers(session, assignment, selected)
    return stored


def _truth(session, category_id: int, clusters: list[int]) -> dict[int, bool]:
    rows = session.execute(select(Image.cluster_id, Candidate.truth).join(Candidate, Candidate.image_sha256 == Image.sha256)
                           .where(Candidate.category_id == category_id, Image.cluster_id.in_(clusters),
                                  Candidate.truth.is_not(None)).order_by(Candidate.id))
    truth: dict[int, bool] = {}
    for cluster, value in rows:
        truth.setdefault(cluster, bool(value))
    return truth


register(SimulatedBackend)
