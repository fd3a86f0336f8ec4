"""Labeling core: consensus on hand-checkable tables, rounds, controls, the simulated crowd."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import imagegen as gen
import pytest
from labelkit import build_world, store_picture
from sqlalchemy import func, select

from imgnet_build import dedup
from imgnet_build.cli.main import cli
from imgnet_build.errors import BadInput
from imgnet_build.labeling import rounds
from imgnet_build.labeling.answers import store_answers
from imgnet_build.labeling.consensus import ConsensusSettings, DawidSkene, Dynamic, Majority, VoteTable, seed_table
from imgnet_build.labeling.rounds import LabelSettings
from imgnet_build.store import (
    Assignment,
    Candidate,
    Category,
    Cluster,
    Image,
    Label,
    LabelHistory,
    Task,
    TaskItem,
    Vote,
    Worker,
)

SMALL = LabelSettings(seed_images=4)


def table(votes: list[tuple[int, int, bool]], pairs: int, known=None) -> VoteTable:
    p, w, a = zip(*votes, strict=True)
    return VoteTable.build(p, w, a, [0] * pairs, known)


def test_majority_accepts_two_of_three_and_leaves_ties_and_shortfalls():
    votes = [(0, 0, True), (0, 1, True), (0, 2, False),  # 2 of 3 yes
             (1, 0, True), (1, 1, False), (1, 2, False),  # 1 of 3
             (2, 0, True), (2, 1, True),  # two votes only
             (3, 0, True), (3, 1, True), (3, 2, False), (3, 3, False)]  # a tie
    result = Majority().fit(table(votes, 4))
    assert list(result.status) == ["accepted", "rejected", "undecided", "undecided"]
    assert result.posterior[0] == pytest.approx(2 / 3)


def test_dawid_skene_uses_controls_to_discount_yes_sayers():
    # workers 0, 1 answer right; workers 2, 3 say yes to everything. Pairs 0-3 are controls
    # (known answers), pairs 4-7 unknown: 4, 5 good, 6, 7 bad.
    truth = [True, False, True, False, True, True, False, False]
    votes = []
    for pair, good in enumerate(truth):
        votes += [(pair, 0, good), (pair, 1, good), (pair, 2, True), (pair, 3, True)]
    known = [1, 0, 1, 0, -1, -1, -1, -1]
    majority = Majority().fit(table(votes, 8, known))
    assert list(majority.status[6:]) == ["undecided", "undecided"]  # 2 yes, 2 no
    result = DawidSkene(ConsensusSettings(accept=0.9, reject=0.1)).fit(table(votes, 8, known))
    assert list(result.status[4:]) == ["accepted", "accepted", "rejected", "rejected"]
    assert result.worker_accuracy[0] > 0.7 > result.worker_accuracy[2]


def test_dynamic_needs_more_votes_from_weak_workers():
    strong = [(0, w, True) for w in range(3)]  # three accurate workers agree
    settings = ConsensusSettings(min_votes=3)
    result = Dynamic(settings).fit(VoteTable.build(*zip(*strong, strict=True), [0]))
    assert result.status[0] == "accepted"  # only the prior opposes them
    split = [(0, 0, True), (0, 1, True), (0, 2, False)]
    result = Dynamic(settings).fit(VoteTable.build(*zip(*split, strict=True), [0]))
    assert result.status[0] == "undecided" and 0.5 < result.posterior[0] < 0.99


def test_settings_refuse_nonsense():
    with pytest.raises(BadInput, match="--max-votes"):
        LabelSettings(votes=5, max_votes=3)
    with pytest.raises(BadInput, match="--controls"):
        LabelSettings(images_per_task=6, controls=6)
    with pytest.raises(BadInput, match="thresholds"):
        LabelSettings(accept=0.4)


def test_store_answers_counts_once_and_one_vote_per_worker_and_pair(workspace):
    build_world(workspace, categories=1, images=4)
    rounds.submit(workspace, "local", LabelSettings(controls=0))
    with workspace.session() as session:
        task = session.scalars(select(Task)).first()
        items = session.scalars(select(TaskItem.id).where(TaskItem.task_id == task.id)).all()
        worker = Worker(backend="local", external_id="ann", name="ann")
        session.add(worker)
        session.flush()
        first = Assignment(task_id=task.id, worker_id=worker.id, status="given")
        session.add(first)
        session.flush()
        assert store_answers(session, first, {items[0]})
        assert not store_answers(session, first, set(items))  # a retried submit
        votes = session.execute(select(Vote.answer).where(Vote.assignment_id == first.id)).scalars().all()
        assert sorted(votes) == [False] * (len(items) - 1) + [True]
        other = Task(category_id=task.category_id, round=9, batch="x", backend="local", status="open",
                     assignments_wanted=1)
        session.add(other)
        session.flush()
        item = session.get(TaskItem, items[0])
        session.add(TaskItem(task_id=other.id, position=0, image_sha256=item.image_sha256, cluster_id=item.cluster_id,
                             kind="candidate"))
        second = Assignment(task_id=other.id, worker_id=worker.id, status="given")
        session.add(second)
        session.flush()
        assert store_answers(session, second, set())  # the same pair again: its first vote stands
        assert session.scalar(select(func.count()).select_from(Vote).where(Vote.worker_id == worker.id)) == len(items)


def test_submit_plans_three_votes_and_never_twice(workspace):
    world = build_world(workspace, categories=2, images=10)
    plan = rounds.submit(workspace, "local", SMALL, dry_run=True)
    assert plan.dry_run and plan.pairs == 20 and plan.votes == 20 * 3 + 2 * 4 * 7  # seed images get 10
    with workspace.session() as session:
        assert session.scalar(select(func.count()).select_from(Task)) == 0
    plan = rounds.submit(workspace, "local", SMALL)
    assert (plan.pairs, plan.votes) == (20, 20 * 3 + 2 * 4 * 7)
    again = rounds.submit(workspace, "local", SMALL)
    assert (again.tasks, again.votes) == (0, 0)
    with workspace.session() as session:
        assert set(session.scalars(select(Task.status))) == {"open"}
        shown = session.scalars(select(TaskItem.image_sha256).where(TaskItem.kind == "candidate")).all()
        assert set(shown) == {sha for images in world.values() for sha in images}


def test_simulated_run_decides_and_marks_everything_simulated(any_workspace):
    world = build_world(any_workspace, categories=3, images=30)
    result = rounds.run(any_workspace, "simulated", SMALL, options={"sim_seed": 3})
    assert result["undecided"] <= 3 and result["rounds"] >= 2
    truth = {sha: value for images in world.values() for sha, value in images.items()}
    with any_workspace.session() as session:
        accepted = session.execute(select(Cluster.representative).join(Label, Label.cluster_id == Cluster.id)
                                   .where(Label.status == "accepted")).scalars().all()
        assert set(session.scalars(select(Label.simulated))) == {True}
        assert set(session.scalars(select(Vote.simulated))) == {True}
        assert set(session.scalars(select(Label.method))) == {"dynamic"}
        assert session.scalar(select(func.count()).select_from(LabelHistory)) >= 90
        over = session.execute(select(Task.id).join(Assignment, Assignment.task_id == Task.id)
                               .group_by(Task.id, Task.assignments_wanted)
                               .having(func.count() > Task.assignments_wanted)).all()
        assert over == []
    precision = sum(truth[sha] for sha in accepted) / len(accepted)
    recall = sum(truth[sha] for sha in accepted) / sum(truth.values())
    assert precision >= 0.95 and recall >= 0.8
    assert rounds.submit(any_workspace, "simulated", SMALL, options={"sim_seed": 3}).tasks == 0


def test_tasks_carry_controls_from_accepted_images_and_siblings(workspace):
    build_world(workspace, categories=2, images=30)
    rounds.run(workspace, "simulated", SMALL)
    with workspace.session() as session:  # new candidates for the first category: a new round
        category_id = session.scalar(select(Category.id).where(Category.wnid == "n00000001"))
    new = []
    for number in range(5):
        sha = store_picture(workspace, gen.photo(900 + number, size=(64, 48)))
        new.append(sha)
        with workspace.session() as session:
            session.add(Candidate(category_id=category_id, source="test", url=f"https://example.org/new{number}",
                                  status="ok", image_sha256=sha, truth=True))
    dedup.run(workspace)
    plan = rounds.submit(workspace, "local", SMALL)
    assert plan.pairs >= 5 and plan.controls > 0
    with workspace.session() as session:
        task = session.scalars(select(Task).join(TaskItem, TaskItem.task_id == Task.id)
                               .where(Task.backend == "local", TaskItem.image_sha256 == new[0])).one()
        items = session.execute(select(TaskItem.position, TaskItem.kind, TaskItem.expected, TaskItem.cluster_id)
                                .where(TaskItem.task_id == task.id).order_by(TaskItem.position)).all()
        assert [item.position for item in items] == list(range(len(items)))
        kinds = [item.kind for item in items]
        assert kinds.count("candidate") >= 1 and kinds.count("positive") == 3 and kinds.count("negative") == 3
        accepted_here = set(session.scalars(select(Label.cluster_id).where(Label.category_id == category_id,
                                                                           Label.status == "accepted")))
        accepted_sibling = set(session.scalars(select(Label.cluster_id).where(Label.category_id != category_id,
                                                                              Label.status == "accepted")))
        assert all(item.cluster_id in accepted_here and item.expected for item in items if item.kind == "positive")
        assert all(item.cluster_id in accepted_sibling and item.expected is False
                   for item in items if item.kind == "negative")


def test_a_categorys_first_tasks_get_positive_controls_from_seed_agreement(workspace):
    # Nothing is accepted yet (no collect), so no positive control existed: a worker who said no to
    # everything passed every control. Pairs three workers independently called good are positives.
    world = build_world(workspace, categories=1, images=12, positives=0.5)
    truth = world["n00000001"]
    settings = LabelSettings(seed_images=0, images_per_task=12, controls=6)
    rounds.submit(workspace, "local", settings)
    for name in ("honest-1", "honest-2", "honest-3"):
        _answer_all(workspace, name, lambda item: truth[item.image_sha256])
    with workspace.session() as session:
        category_id = session.scalar(select(Category.id).where(Category.wnid == "n00000001"))
        session.add(Candidate(category_id=category_id, source="test", url="https://example.org/new", status="ok",
                              image_sha256=store_picture(workspace, gen.photo(900, size=(64, 48))), truth=True))
    dedup.run(workspace)
    assert rounds.submit(workspace, "local", settings).pairs == 1
    with workspace.session() as session:
        items = session.execute(select(TaskItem.kind, TaskItem.expected, TaskItem.image_sha256)
                                .join(Task, Task.id == TaskItem.task_id).where(Task.round == 2)).all()
    positives = [item for item in items if item.kind == "positive"]
    assert len(positives) == 3 and all(item.expected and truth[item.image_sha256] for item in positives)


def test_late_pairs_find_workers_in_a_small_crowd(workspace):
    # A worker takes a whole task or none, and none that shows a pair they voted on. Late tasks made
    # of pairs voted on by different workers left nobody to take them in a crowd of 10: tasks expired
    # and 10 pairs stayed undecided at 7-8 votes. Pairs with the same voters now share tasks, and a
    # pair asks for no more than the workers who have not voted on it.
    build_world(workspace, categories=2, images=30, positives=0.4)
    crowd = {"sim_workers": 10, "sim_accuracy": "0.75-0.9", "sim_spammers": 0}
    rounds.run(workspace, "simulated", SMALL, options=crowd)
    with workspace.session() as session:
        assert session.scalar(select(func.count()).select_from(Task).where(Task.status == "expired")) == 0
        workers = session.scalar(select(func.count()).select_from(Worker).where(Worker.blocked.is_(False)))
        for label in session.scalars(select(Label).where(Label.status == "undecided")):
            voters = session.scalar(select(func.count(func.distinct(Vote.worker_id))).join(
                Image, Image.sha256 == Vote.image_sha256).join(Worker, Worker.id == Vote.worker_id).where(
                Image.cluster_id == label.cluster_id, Vote.category_id == label.category_id,
                Worker.blocked.is_(False)))
            assert voters in (workers, SMALL.max_votes)  # every worker who could answer did, or the cap


def test_simulated_crowd_refuses_pairs_without_truth(workspace):
    build_world(workspace, categories=1, images=3)
    with workspace.session() as session:
        session.execute(Candidate.__table__.update().values(truth=None))
    with pytest.raises(BadInput, match="3 of 3 pairs of n00000001 have none"):
        rounds.submit(workspace, "simulated")
    with workspace.session() as session:
        assert session.scalar(select(func.count()).select_from(Task)) == 0


def _answer_all(workspace, name: str, answer) -> None:
    """A local worker `name` answers every task once: answer(item) -> True for yes."""
    with workspace.session() as session:
        worker = Worker(backend="local", external_id=name)
        session.add(worker)
        session.flush()
        for task in session.scalars(select(Task)):
            assignment = Assignment(task_id=task.id, worker_id=worker.id, status="given")
            session.add(assignment)
            session.flush()
            items = session.scalars(select(TaskItem).where(TaskItem.task_id == task.id)).all()
            store_answers(session, assignment, {item.id for item in items if answer(item)})


def test_a_worker_who_says_yes_to_everything_is_caught_by_controls(workspace, tmp_path):
    # two honest workers and one who says yes to everything answer every task; gold gives
    # controls of both kinds. Blocking needs confidence: the yes-man's specificity is 0 on
    # about 20 known or agreed negatives, so its whole interval lies under the bar.
    world = build_world(workspace, categories=1, images=30)
    truth = world["n00000001"]
    known = [store_picture(workspace, gen.photo(700 + number, size=(64, 48))) for number in range(12)]
    dedup.run(workspace)  # known answers on pictures that are not candidates: controls never repeat a candidate
    gold = tmp_path / "gold.csv"
    gold.write_text("sha256,wnid,answer\n" + "".join(f"{sha},n00000001,{'yes' if number % 2 else 'no'}\n"
                                                     for number, sha in enumerate(known)))
    from imgnet_build.labeling.gold import load_gold

    assert load_gold(workspace, gold)["stored"] == 12
    rounds.submit(workspace, "local", LabelSettings(seed_images=0, images_per_task=12, controls=6))
    _answer_all(workspace, "yes-man", lambda item: True)
    for name in ("honest-1", "honest-2"):  # each task wants three assignments
        _answer_all(workspace, name, lambda item: item.expected if item.kind != "candidate"
                    else truth[item.image_sha256])
    rounds.collect(workspace, LabelSettings(seed_images=0))
    with workspace.session() as session:
        worker = session.scalars(select(Worker).where(Worker.external_id == "yes-man")).one()
        assert worker.blocked and worker.control_correct < worker.control_answers
        assert worker.accuracy_high < 0.6 and worker.specificity < 0.3
        honest = session.scalars(select(Worker).where(Worker.external_id.like("honest-%"))).all()
        assert not any(w.blocked for w in honest) and all(w.accuracy_low > 0.6 for w in honest)
        labels = {session.get(Cluster, label.cluster_id).representative: label.status
                  for label in session.scalars(select(Label))}
    # its yes votes do not count: nothing is accepted that is not true (two votes left: undecided)
    assert labels and all(status != ("rejected" if truth[sha] else "accepted") for sha, status in labels.items())


def test_labels_follow_their_cluster_when_dedup_picks_a_new_representative(workspace):
    build_world(workspace, categories=1, images=20, positives=0.5)
    rounds.run(workspace, "simulated", SMALL)
    with workspace.session() as session:
        label = session.scalars(select(Label).where(Label.status == "accepted")).first()
        cluster = session.get(Cluster, label.cluster_id)
        old = cluster.representative
        labels_before = session.scalar(select(func.count()).select_from(Label))
    number = next(n for n in range(1, 21) if _sha_of_photo(n) == old)  # which generated photo it was
    bigger = store_picture(workspace, gen.photo(number, size=(128, 96)))
    with workspace.session() as session:
        session.add(Candidate(category_id=label.category_id, source="test", url="https://example.org/bigger.jpg",
                              status="ok", image_sha256=bigger, truth=True))
    dedup.run(workspace)
    with workspace.session() as session:
        assert session.get(Image, bigger).cluster_id == label.cluster_id
        assert session.get(Cluster, label.cluster_id).representative == bigger != old
        assert session.scalar(select(func.count()).select_from(Label)) == labels_before
        assert session.get(Label, label.id).status == "accepted"
    assert rounds.submit(workspace, "simulated", SMALL).pairs == 0  # nothing new to ask


def _sha_of_photo(number: int) -> str:
    import hashlib
    import io

    buffer = io.BytesIO()
    gen.photo(number, size=(64, 48)).save(buffer, "JPEG", quality=85)
    return hashlib.sha256(buffer.getvalue()).hexdigest()


def test_cli_round_trip(workspace, runner):
    build_world(workspace, categories=2, images=8)
    root = str(workspace.root)
    result = runner.invoke(cli, ["-w", root, "label", "submit", "--backend", "simulated", "--dry-run", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["dry_run"] is True
    result = runner.invoke(cli, ["-w", root, "label", "run", "--backend", "simulated", "--sim-workers", "30"])
    assert result.exit_code == 0, result.output
    assert "label run:" in result.output.splitlines()[-1]
    status = json.loads(runner.invoke(cli, ["-w", root, "label", "status", "--json"]).output)
    assert [row["wnid"] for row in status["categories"]] == ["n00000001", "n00000002"]
    assert all(row["pairs"] == 8 and row["unvoted"] == 0 for row in status["categories"])
    assert all(worker["simulated"] for worker in status["workers"])
    result = runner.invoke(cli, ["-w", root, "label", "submit", "--backend", "local", "--max-votes", "2"])
    assert result.exit_code == 1 and result.output.startswith("Error: --max-votes (2) must be at least --votes (3)")
    result = runner.invoke(cli, ["-w", root, "label", "run", "--sim-accuracy", "high"])
    assert result.exit_code == 1 and "--sim-accuracy must look like 0.6-0.95" in result.output
    result = runner.invoke(cli, ["-w", root, "label", "submit", "--backend", "local", "--category", "n99999999"])
    assert result.exit_code == 1 and "n99999999: not in this workspace's tree" in result.output


def test_gold_file_errors(workspace, runner, tmp_path):
    build_world(workspace, categories=1, images=2)
    bad = tmp_path / "gold.csv"
    bad.write_text("image,wnid\nx,n00000001\n")
    result = runner.invoke(cli, ["-w", str(workspace.root), "label", "gold", str(bad)])
    assert result.exit_code == 1 and "needs the columns url or sha256, wnid and answer" in result.output
    bad.write_text("url,wnid,answer\nhttps://example.org/nothing.jpg,n00000001,maybe\n")
    result = runner.invoke(cli, ["-w", str(workspace.root), "label", "gold", str(bad)])
    assert result.exit_code == 1 and "gold.csv:2:" in result.output


def test_kill_9_mid_run_loses_nothing(workspace, tmp_path):
    build_world(workspace, categories=4, images=40)
    command = [sys.executable, "-m", "imgnet_build.cli.main", "-w", str(workspace.root), "label", "run",
               "--backend", "simulated"]
    env = dict(os.environ)
    process = subprocess.Popen([sys.executable, "-c", "from imgnet_build.cli.main import main; main()", *command[3:]],
                               env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=tmp_path)
    deadline = time.monotonic() + 60
    while True:  # wait until some votes are in, then kill it mid-run
        assert process.poll() is None, f"the run ended before it was killed: {process.communicate()}"
        assert time.monotonic() < deadline, "no votes within 60 s"
        with workspace.session() as session:
            if session.scalar(select(func.count()).select_from(Vote)) > 300:
                break
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    assert process.wait() == -signal.SIGKILL  # it was still running: the kill, not the end of the run, stopped it
    result = subprocess.run([sys.executable, "-c", "from imgnet_build.cli.main import main; main()", *command[3:],
                             "--json"], env=env, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["undecided"] <= 16  # 10%: a few pairs stay honestly undecided under the cap
    with workspace.session() as session:
        over = session.execute(select(Task.id).join(Assignment, Assignment.task_id == Task.id)
                               .group_by(Task.id, Task.assignments_wanted)
                               .having(func.count() > Task.assignments_wanted)).all()
        assert over == []
        pairs = session.scalar(select(func.count()).select_from(Label))
        assert pairs == 160


def test_dynamic_flags_a_category_whose_seed_never_reaches_a_clear_majority():
    # category 0: seed images with 9 of 10 workers agreeing; category 1: split 5 to 5 or 6 to 4
    votes, categories, seed = [], [], []
    for pair in range(8):
        category = pair // 4
        agree = 9 if category == 0 else 5 + pair % 2
        truth = pair % 2 == 0
        votes += [(pair, worker, truth if worker < agree else not truth) for worker in range(10)]
        categories.append(category)
        seed.append(True)
    table = VoteTable.build(*zip(*votes, strict=True), categories, seed=seed)
    result = Dynamic(ConsensusSettings(seed_votes=10)).fit(table)
    assert list(result.hard) == [False, True]
    assert set(result.status[4:]) == {"undecided"}  # the hard category's seed decides nothing
    seeds = seed_table(table, result.posterior, 0)
    assert seeds["3,0"] > seeds["2,1"] > 0.5 > seeds["1,2"] > seeds["0,3"]  # ImageNet's table, monotone in votes


def test_run_stops_when_the_crowd_has_nobody_left(workspace):
    build_world(workspace, categories=1, images=6)
    result = rounds.run(workspace, "simulated", LabelSettings(seed_images=0), options={"sim_workers": 4})
    assert result["rounds"] <= 6  # four workers give each pair at most four votes: no 100-round loop
    with workspace.session() as session:
        assert session.scalar(select(func.max(Label.yes_votes + Label.no_votes))) <= 4
        assert session.scalar(select(func.count()).select_from(Task).where(Task.status == "open")) == 0


def test_run_continues_a_run_killed_between_answers_and_decisions(workspace):
    build_world(workspace, categories=2, images=20)
    rounds.submit(workspace, "simulated", SMALL)
    from imgnet_build.labeling.simulated import SimulatedBackend

    SimulatedBackend(workspace).collect(workspace)  # answers stored; tasks not closed, nothing decided
    result = rounds.run(workspace, "simulated", SMALL)
    assert result["undecided"] <= 4 and result["rounds"] >= 1  # 10%: honestly undecided under the cap


def test_simulated_crowd_counts_a_pair_with_truth_on_any_of_its_candidates(workspace):
    """The check reads closer only the pairs with a candidate lacking truth: a pair whose
    cluster has another candidate of the category with truth passes, the others are counted."""
    world = build_world(workspace, categories=2, images=4)
    first, second = (list(shas) for shas in world.values())
    with workspace.session() as session:
        session.execute(Candidate.__table__.update().where(Candidate.image_sha256.in_(first[:3])).values(truth=None))
        category_id = session.scalar(select(Candidate.category_id).where(Candidate.image_sha256 == first[0]))
        session.add(Candidate(category_id=category_id, source="test", url="https://example.org/again.jpg",
                              status="ok", image_sha256=first[0], truth=True))  # the same picture, with truth
        session.execute(Candidate.__table__.update().where(Candidate.image_sha256 == second[0]).values(truth=None))
    with pytest.raises(BadInput, match="2 of 4 pairs of n00000001 have none"):
        rounds.submit(workspace, "simulated")
