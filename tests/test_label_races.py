"""Exactly once under concurrency: `label submit`, `collect` and `run` racing on one workspace, in real
processes started at the same moment (a multiprocessing barrier), on SQLite and on PostgreSQL."""

from __future__ import annotations

import multiprocessing
import traceback

import pytest
from labelkit import build_world
from sqlalchemy import func, select

from imgnet_build.labeling import rounds
from imgnet_build.labeling.rounds import LabelSettings
from imgnet_build.store import Assignment, Label, Task, TaskItem, Vote, Worker
from imgnet_build.workspace import Workspace

SETTINGS = LabelSettings(images_per_task=12, controls=2, seed_images=4)
RACERS = 4


def _race(root: str, what: str, barrier, results) -> None:
    """One racing process: open the workspace, wait for the others, do `what`; report the outcome."""
    try:
        workspace = Workspace.open(root)
        barrier.wait(timeout=60)
        if what == "submit":
            outcome = rounds.submit(workspace, "local", SETTINGS).tasks
        elif what == "collect":
            outcome = rounds.collect(workspace, SETTINGS)["assignments"]
        else:
            outcome = rounds.run(workspace, "simulated", SETTINGS, options={"sim_seed": 1})["rounds"]
        workspace.close()
        results.put(("ok", outcome))
    except BaseException:  # the failure itself is what the test reports
        results.put(("error", traceback.format_exc()))


def race(workspace: Workspace, what: str, racers: int = RACERS) -> list:
    """Run `what` in `racers` processes at once; the outcome of each (all must succeed)."""
    context = multiprocessing.get_context("spawn")
    barrier, results = context.Barrier(racers), context.Queue()
    processes = [context.Process(target=_race, args=(str(workspace.root), what, barrier, results))
                 for _ in range(racers)]
    for process in processes:
        process.start()
    outcomes = [results.get(timeout=600) for _ in processes]
    for process in processes:
        process.join(timeout=60)
    errors = [detail for kind, detail in outcomes if kind == "error"]
    assert errors == [], errors[0]
    return [detail for _, detail in outcomes]


def candidate_votes_asked(workspace: Workspace) -> dict[int, int]:
    """{cluster: votes asked for by every task} over every task ever made."""
    with workspace.session() as session:
        return dict(session.execute(select(TaskItem.cluster_id, func.sum(Task.assignments_wanted))
                                    .join(Task, Task.id == TaskItem.task_id).where(TaskItem.kind == "candidate")
                                    .group_by(TaskItem.cluster_id)).all())


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def world(request, tmp_path) -> Workspace:
    database = request.getfixturevalue("postgres_url") if request.param == "postgresql" else None
    workspace = Workspace.init(tmp_path / "ws", database=database)
    build_world(workspace, categories=3, images=20)
    yield workspace
    workspace.close()


def test_concurrent_submits_issue_each_vote_once(world):
    single = rounds.submit(world, "local", SETTINGS, dry_run=True)
    made = race(world, "submit")
    assert sum(made) == single.tasks  # one of them issued everything, the others nothing twice
    assert sum(candidate_votes_asked(world).values()) == single.votes


def test_concurrent_collects_and_runs_never_crash_and_never_overfill(world):
    rounds.submit(world, "simulated", SETTINGS, options={"sim_seed": 1})
    race(world, "collect")
    race(world, "run")
    with world.session() as session:
        over = session.execute(select(Task.id).join(Assignment, Assignment.task_id == Task.id)
                               .where(Assignment.status != "abandoned")
                               .group_by(Task.id, Task.assignments_wanted)
                               .having(func.count() > Task.assignments_wanted)).all()
        assert over == []
        twice = session.execute(select(Vote.worker_id, Vote.image_sha256).group_by(Vote.worker_id, Vote.image_sha256,
                                                                                    Vote.category_id)
                                .having(func.count() > 1)).all()
        assert twice == []
        assert session.scalar(select(func.count()).select_from(Label)) == 60
        votes = session.execute(select(func.count()).select_from(Vote).join(Worker, Worker.id == Vote.worker_id)
                                .where(Vote.control.is_(False), Worker.blocked.is_(False))
                                .group_by(Vote.cluster_id, Vote.category_id)).scalars().all()
        assert max(votes) <= SETTINGS.max_votes  # no pair was asked past --max-votes by racing rounds
