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
import datetime as dt
import random
import re
from collections import defaultdict

import numpy as np
from sqlalchemy import ColumnElement, Select, and_, func, insert, select, update

from imgnet_build.dbutil import batched, insert_ignore
from imgnet_build.errors import BadInput
from imgnet_build.labeling.answers import add_workers, count_controls, votes_of
from imgnet_build.labeling.backends import LocalBackend, register
from imgnet_build.labeling.locks import lock_tasks
from imgnet_build.store import (
    Assignment,
    Candidate,
    CandidateStatus,
    Category,
    Image,
    Task,
    TaskItem,
    Vote,
    Worker,
    analyze_if_grown,
)
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
        """Refuse pairs without truth (of any number of categories). The pairs are candidate pairs
        (`rounds.category_pairs_of`): only those with a candidate lacking truth are looked at
        closer, so when every candidate has its truth no image is read (a dry run at 1M images
        joined every candidate to its image for this check, as long as reading the pairs)."""
        if not pairs:
            return
        asked: dict[int, set[int]] = {}
        for cluster, category_id in pairs:
            asked.setdefault(category_id, set()).add(cluster)
        doubtful: dict[int, set[int]] = defaultdict(set)
        for category_id, cluster in session.execute(self._clusters(list(asked), Candidate.truth.is_(None))):
            if cluster in asked[category_id]:
                doubtful[category_id].add(cluster)
        known: dict[int, set[int]] = defaultdict(set)
        if doubtful:
            for category_id, cluster in session.execute(self._clusters(list(doubtful), Candidate.truth.is_not(None))):
                known[category_id].add(cluster)
        for category_id, clusters in asked.items():
            missing = len(doubtful.get(category_id, set()) - known[category_id])
            if missing:
                wnid = session.scalar(select(Category.wnid).where(Category.id == category_id))
                raise BadInput(f"the simulated crowd answers from the candidates' truth, and {missing} of "
                               f"{len(clusters)} pairs of {wnid} have none; give URL lists a truth column, or label "
                               f"them with --backend local")

    @staticmethod
    def _clusters(category_ids: list[int], truth: ColumnElement[bool]) -> Select:
        """(category id, cluster id) of the categories' ok candidates whose truth matches `truth`."""
        return (select(Candidate.category_id, Image.cluster_id).join(Image, Image.sha256 == Candidate.image_sha256)
                .where(Candidate.category_id.in_(category_ids), truth, Candidate.status == CandidateStatus.OK)
                .distinct())

    def pool(self, session) -> int:
        """Workers of this crowd who may still answer (not blocked)."""
        blocked = session.scalar(select(func.count()).where(_of_crowd(self.crowd), Worker.blocked.is_(True)))
        return self.crowd.workers - (blocked or 0)

    publish = LocalBackend.publish  # opened at once: the crowd answers them at collect

    def collect(self, workspace: Workspace) -> int:
        """Answer the open tasks, `COLLECT_CHUNK` tasks per transaction (read and written in a few
        statements for all of them); a kill loses at most one chunk's answers, which the next collect
        gives again (the crowd is seeded per task)."""
        with workspace.session() as session:
            tasks = list(session.scalars(select(Task.id).where(Task.status == "open", Task.backend == self.name)
                                         .order_by(Task.id)))
        stored = unanalyzed = 0
        crowds: dict[Crowd, tuple] = {}  # crowd -> (its worker ids, its profiles), made once per collect
        for chunk in batched(tasks, COLLECT_CHUNK):
            with workspace.session() as session:
                lock_tasks(session, chunk)  # a concurrent collect answers them before or after, never beside
                answered, votes = _answer_tasks(session, chunk, crowds)
            stored += answered
            unanalyzed += votes
            # The next chunks look up the votes and assignments stored so far (`vote.category_id IN ... AND
            # image.cluster_id IN ...`, `assignment.task_id IN ...`): with statistics taken before them,
            # PostgreSQL planned each lookup as a scan of the whole vote table (1M images: up to 4.45M votes).
            if analyze_if_grown(workspace.engine, "vote", unanalyzed, tables=("vote", "assignment")):
                unanalyzed = 0
        return stored


COLLECT_CHUNK = 200  # tasks answered per transaction


def _workers(session, crowd: Crowd) -> dict[int, int]:
    """{crowd index: worker id}, creating the crowd's worker rows once."""
    add_workers(session, SimulatedBackend.name, [(crowd.external_id(i), f"simulated worker {i}")
                                                 for i in range(crowd.workers)], simulated=True)
    ids = dict(session.execute(select(Worker.external_id, Worker.id).where(_of_crowd(crowd))).all())
    return {i: ids[crowd.external_id(i)] for i in range(crowd.workers)}


def _of_crowd(crowd: Crowd) -> ColumnElement[bool]:
    """The condition on `Worker` that holds for the workers of `crowd` (`Crowd.external_id`) only."""
    return and_(Worker.backend == SimulatedBackend.name, Worker.external_id.like(f"sim-{crowd.seed}-%"))


def _answer_tasks(session, task_ids: list[int], crowds: dict[Crowd, tuple]) -> tuple[int, int]:
    """Answer the open tasks among `task_ids` (locked), in id order, as each one's crowd would: a few
    statements for all of them. The rules of `answers.store_answers` hold: a task takes no more
    submissions than it wants, a worker answers a task once and votes on a (cluster, category) pair
    once (its first vote stands), control answers update the worker's record. Returns (the
    assignments stored, the votes written)."""
    tasks = session.execute(select(Task.id, Task.category_id, Task.assignments_wanted, Task.test, Task.crowd)
                            .where(Task.id.in_(task_ids), Task.status == "open").order_by(Task.id)).all()
    if not tasks:
        return 0, 0
    ids = [task.id for task in tasks]
    items: dict[int, list] = defaultdict(list)
    for item in session.execute(select(TaskItem.task_id, TaskItem.id, TaskItem.image_sha256,
                                       TaskItem.cluster_id.label("asked"), TaskItem.kind, TaskItem.expected,
                                       Image.cluster_id)
                                .join(Image, Image.sha256 == TaskItem.image_sha256)
                                .where(TaskItem.task_id.in_(ids)).order_by(TaskItem.task_id, TaskItem.position)):
        items[item.task_id].append(item)
    taken: dict[int, set[int]] = defaultdict(set)  # task -> workers holding an assignment of it
    done: dict[int, int] = defaultdict(int)  # task -> its assignments not abandoned
    for task_id, worker, status in session.execute(select(Assignment.task_id, Assignment.worker_id, Assignment.status)
                                                   .where(Assignment.task_id.in_(ids))):
        taken[task_id].add(worker)
        done[task_id] += status != "abandoned"
    categories = {task.category_id for task in tasks}
    clusters = {cluster for rows in items.values() for item in rows for cluster in (item.asked, item.cluster_id)
                if cluster is not None}
    voted: dict[tuple[int, int], set[int]] = defaultdict(set)  # (category, cluster now) -> workers who voted on it
    seen: dict[tuple[int, int], set[int]] = defaultdict(set)  # (worker, category) -> clusters it voted on, stored
    for chunk in batched(sorted(clusters), 500):
        for worker, category_id, cluster in session.execute(
                select(Vote.worker_id, Vote.category_id, Image.cluster_id).join(Image, Image.sha256 == Vote.image_sha256)
                .where(Vote.category_id.in_(categories), Image.cluster_id.in_(chunk))):
            voted[category_id, cluster].add(worker)
            seen[worker, category_id].add(cluster)
    blocked = set(session.scalars(select(Worker.id).where(Worker.blocked.is_(True))))
    truth = _truth_of(session, categories, clusters)
    now = dt.datetime.now(dt.UTC)
    expired: list[int] = []
    answered: list[tuple[dict, set[int]]] = []  # (assignment row, the task item ids answered yes)
    for task in tasks:
        crowd = Crowd.from_dict(task.crowd)
        if crowd not in crowds:
            crowds[crowd] = (_workers(session, crowd), crowd.profiles())
        workers, (sensitivity, specificity) = crowds[crowd]
        wanted = task.assignments_wanted - done[task.id]
        if wanted <= 0:
            continue
        asked = {item.asked for item in items[task.id] if item.kind == "candidate"}
        busy = set(taken[task.id]).union(*(voted.get((task.category_id, cluster), ()) for cluster in asked))
        rng = random.Random(f"{crowd.seed}:{task.id}")
        free = [i for i in range(crowd.workers) if workers[i] not in busy and workers[i] not in blocked]
        if len(free) < wanted:  # the crowd has nobody left for it: what it gets now is all it will get
            expired.append(task.id)
        for index in rng.sample(free, min(wanted, len(free))):
            selected: set[int] = set()
            for item in items[task.id]:
                good = truth.get((task.category_id, item.asked), item.expected)  # a control: its truth when known
                if (rng.random() < sensitivity[index]) if good else (rng.random() >= specificity[index]):
                    selected.add(item.id)
            answered.append(({"task_id": task.id, "worker_id": workers[index], "status": "submitted",
                              "simulated": True, "given_at": now, "submitted_at": now}, selected))
            for item in items[task.id]:
                if item.cluster_id is not None:
                    voted[task.category_id, item.cluster_id].add(workers[index])
    if expired:
        session.execute(update(Task).where(Task.id.in_(expired)).values(status="expired"))
    if not answered:
        return 0, 0
    session.execute(insert(Assignment), [row for row, _ in answered])  # one executemany; ids read back by
    tasks_by_id = {task.id: task for task in tasks}
    ids_of = {(task_id, worker): id_ for id_, task_id, worker in session.execute(  # (task, worker), unique
        select(Assignment.id, Assignment.task_id, Assignment.worker_id).where(Assignment.task_id.in_(ids)))}
    votes = []
    controls: dict[int, tuple[int, int]] = defaultdict(lambda: (0, 0))  # worker -> (control answers, correct)
    for row, selected in answered:  # as `answers.store_answers` stores each (a worker's first vote on a pair stands)
        task, worker = tasks_by_id[row["task_id"]], row["worker_id"]
        rows, (n, right) = votes_of(ids_of[task.id, worker], worker, task, items[task.id], selected,
                                    seen[worker, task.category_id], True, now)
        votes += rows
        controls[worker] = (controls[worker][0] + n, controls[worker][1] + right)
    insert_ignore(session, Vote, votes)
    count_controls(session, controls)
    return len(answered), len(votes)


def _truth_of(session, categories: set[int], clusters: set[int]) -> dict[tuple[int, int], bool]:
    """{(category id, cluster id): truth of the pair's first candidate that has one}."""
    truth: dict[tuple[int, int], bool] = {}
    for chunk in batched(sorted(clusters), 500):
        rows = session.execute(select(Candidate.category_id, Image.cluster_id, Candidate.truth)
                               .join(Candidate, Candidate.image_sha256 == Image.sha256)
                               .where(Candidate.category_id.in_(categories), Image.cluster_id.in_(chunk),
                                      Candidate.truth.is_not(None)).order_by(Candidate.id))
        for category_id, cluster, value in rows:
            truth.setdefault((category_id, cluster), bool(value))
    return truth


register(SimulatedBackend)
