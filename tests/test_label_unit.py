"""The vote unit is the (cluster, category) pair: handout, uniqueness, consensus input and the
controls of a task; a late submission for a freed slot is refused."""

from __future__ import annotations

import dataclasses
import datetime as dt

import imagegen as gen
import pytest
from labelkit import build_world, store_picture
from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError

from imgnet_build import dedup
from imgnet_build.labeling import handout, rounds
from imgnet_build.labeling.answers import store_answers
from imgnet_build.labeling.gold import load_gold
from imgnet_build.labeling.rounds import LabelSettings
from imgnet_build.store import Assignment, Candidate, Cluster, Image, Task, TaskItem, Vote, Worker

ONE_PER_TASK = LabelSettings(seed_images=0, images_per_task=12, controls=0, votes=1, max_votes=3)


def _worker(session, name: str) -> int:
    worker = Worker(backend="local", external_id=name, name=name)
    session.add(worker)
    session.flush()
    return worker.id


def _answer(workspace, worker_id: int, task_id: int, yes: bool = True) -> bool:
    with workspace.session() as session:
        assignment = Assignment(task_id=task_id, worker_id=worker_id, status="given")
        session.add(assignment)
        session.flush()
        items = set(session.scalars(select(TaskItem.id).where(TaskItem.task_id == task_id))) if yes else set()
        return store_answers(session, assignment, items)


def _grow_representative(workspace, category_id: int, sha: str, number: int) -> str:
    """A bigger copy of generated photo `number` (image `sha`) as a new candidate; dedup makes it the
    representative of the same cluster."""
    bigger = store_picture(workspace, gen.photo(number, size=(128, 96)))
    with workspace.session() as session:
        session.add(Candidate(category_id=category_id, source="test", url=f"https://example.org/big-{number}.jpg",
                              status="ok", image_sha256=bigger, truth=True))
    dedup.run(workspace)
    with workspace.session() as session:
        assert session.get(Image, bigger).cluster_id == session.get(Image, sha).cluster_id
    return bigger


def test_a_worker_never_votes_twice_on_one_cluster_after_dedup_picks_a_new_representative(any_workspace):
    workspace = any_workspace
    build_world(workspace, categories=1, images=3, positives=1.0)
    rounds.submit(workspace, "local", ONE_PER_TASK)
    with workspace.session() as session:
        [task_id] = session.scalars(select(Task.id)).all()
        category_id = session.scalar(select(Task.category_id))
        first = session.scalar(select(Candidate.image_sha256).order_by(Candidate.id).limit(1))
        ann = _worker(session, "ann")
    assert _answer(workspace, ann, task_id)
    rounds.collect(workspace, ONE_PER_TASK)  # one vote each: undecided, more votes wanted
    bigger = _grow_representative(workspace, category_id, first, 1)
    plan = rounds.submit(workspace, "local", ONE_PER_TASK)
    assert plan.tasks == 1
    with workspace.session() as session:
        new_task = session.scalar(select(Task.id).where(Task.id != task_id))
        shown = set(session.scalars(select(TaskItem.image_sha256).where(TaskItem.task_id == new_task)))
        assert bigger in shown and first not in shown  # the cluster, through its new representative
        assert handout.next_assignment(session, ann) is None  # ann voted on every cluster of it already
    assert _answer(workspace, ann, new_task)  # stored through another backend's path: votes on seen pairs are not
    with workspace.session() as session:
        cluster = session.get(Image, first).cluster_id
        votes = session.scalar(select(func.count()).select_from(Vote).join(Image, Image.sha256 == Vote.image_sha256)
                               .where(Vote.worker_id == ann, Image.cluster_id == cluster))
        assert votes == 1
        assert rounds._counted_votes(session, category_id)[cluster] == 1
        with pytest.raises(IntegrityError), session.begin_nested():  # the database refuses a second vote too
            vote = session.scalars(select(Vote).where(Vote.worker_id == ann, Vote.cluster_id == cluster)).one()
            session.add(Vote(assignment_id=vote.assignment_id, worker_id=ann, task_item_id=vote.task_item_id,
                             image_sha256=bigger, cluster_id=cluster, category_id=category_id, answer=False))


def test_consensus_counts_a_worker_once_per_cluster_after_clusters_merge(workspace):
    build_world(workspace, categories=1, images=2, positives=1.0)
    rounds.submit(workspace, "local", ONE_PER_TASK)
    with workspace.session() as session:
        [task_id] = session.scalars(select(Task.id)).all()
        shas = list(session.scalars(select(Candidate.image_sha256).order_by(Candidate.id)))
        ann = _worker(session, "ann")
    assert _answer(workspace, ann, task_id)
    with workspace.session() as session:  # dedup merges the two clusters (as a lower threshold run would)
        keep, gone = (session.get(Image, sha).cluster_id for sha in shas)
        session.execute(update(Cluster).where(Cluster.id == gone).values(merged_into=keep))
        session.execute(update(Image).where(Image.sha256 == shas[1]).values(cluster_id=keep))
    result = rounds.collect(workspace, LabelSettings(method="majority", votes=1, seed_images=0))
    with workspace.session() as session:
        from imgnet_build.store import Label

        label = session.scalars(select(Label).where(Label.cluster_id == keep)).one()
        assert (label.yes_votes, label.no_votes) == (1, 0)  # one worker, one pair: one vote, not two
    assert result["accepted"] == 1


def test_controls_never_repeat_a_candidate_of_the_task(workspace, tmp_path):
    world = build_world(workspace, categories=1, images=6, positives=0.5)
    gold = tmp_path / "gold.csv"  # known answers on the very images that are asked about
    gold.write_text("sha256,wnid,answer\n" + "".join(f"{sha},n00000001,{'yes' if truth else 'no'}\n"
                                                     for sha, truth in world["n00000001"].items()))
    load_gold(workspace, gold)
    rounds.submit(workspace, "local", LabelSettings(seed_images=0, images_per_task=12, controls=6))
    with workspace.session() as session:
        repeated = session.execute(select(TaskItem.task_id, Image.cluster_id)
                                   .join(Image, Image.sha256 == TaskItem.image_sha256)
                                   .group_by(TaskItem.task_id, Image.cluster_id).having(func.count() > 1)).all()
    assert repeated == []


def test_a_late_submission_for_a_freed_slot_is_refused(workspace):
    build_world(workspace, categories=1, images=3)
    rounds.submit(workspace, "local", ONE_PER_TASK)
    with workspace.session() as session:
        [task_id] = session.scalars(select(Task.id)).all()
        late, fresh = _worker(session, "late"), _worker(session, "fresh")
    with workspace.session() as session:
        assert handout.next_assignment(session, late).task_id == task_id
        session.execute(update(Assignment).values(given_at=dt.datetime.now(dt.UTC) - dt.timedelta(hours=2)))
    with workspace.session() as session:
        assert handout.next_assignment(session, fresh).task_id == task_id  # the hour ran out: the slot is free
    with workspace.session() as session, pytest.raises(handout.TaskClosed, match="another worker took your place"):
        handout.check_submission(session, late, {"task": task_id, "selected": []})
    with workspace.session() as session:
        assignment, selected = handout.check_submission(session, fresh, {"task": task_id, "selected": [0]})
        assert store_answers(session, assignment, selected)
    with workspace.session() as session:  # however the late answers reach the store, the task takes 1 of 1
        late_assignment = session.scalars(select(Assignment).where(Assignment.worker_id == late)).one()
        assert not store_answers(session, late_assignment, set())
    with workspace.session() as session:
        statuses = dict(session.execute(select(Assignment.worker_id, Assignment.status)).all())
        assert statuses == {late: "abandoned", fresh: "submitted"}
        assert session.scalar(select(func.count()).select_from(Vote).where(Vote.worker_id == late)) == 0


def test_a_late_submission_is_stored_when_nobody_took_the_slot(workspace):
    build_world(workspace, categories=1, images=3)
    rounds.submit(workspace, "local", ONE_PER_TASK)
    with workspace.session() as session:
        [task_id] = session.scalars(select(Task.id)).all()
        slow = _worker(session, "slow")
        assert handout.next_assignment(session, slow).task_id == task_id
        session.execute(update(Assignment).values(given_at=dt.datetime.now(dt.UTC) - dt.timedelta(hours=2)))
    with workspace.session() as session:
        assignment, selected = handout.check_submission(session, slow, {"task": task_id, "selected": []})
        assert store_answers(session, assignment, selected)


def test_label_status_asks_once_for_the_workspace_not_once_per_category(tmp_path):
    """Before: label status ran the pairs and the votes queries once per category (14 s at 100k
    images, 29 min at a million). Now the number of statements does not grow with the categories,
    and each category's pairs and waiting votes are what the per-category queries give."""
    from sqlalchemy import delete, event

    from imgnet_build.labeling.status import label_status
    from imgnet_build.store import Category, Label
    from imgnet_build.workspace import Workspace

    settings = LabelSettings(votes=2, controls=0, seed_images=0)
    statements = {}
    for categories in (2, 6):
        workspace = Workspace.init(tmp_path / f"ws{categories}")
        build_world(workspace, categories=categories, images=4)
        rounds.submit(workspace, "simulated", settings)
        rounds.collect(workspace, settings)
        with workspace.session() as session:  # a pair whose votes wait for the next decision
            session.execute(delete(Label).where(Label.id == session.scalar(select(func.min(Label.id)))))
        seen: list[str] = []

        def record(conn, cursor, statement, *args, seen=seen):
            seen.append(statement)

        event.listen(workspace.engine, "before_cursor_execute", record)
        try:
            status = label_status(workspace)
        finally:
            event.remove(workspace.engine, "before_cursor_execute", record)
        statements[categories] = len(seen)
        assert len(status["categories"]) == categories and status["waiting_votes"] >= 2
        with workspace.session() as session:
            for row in status["categories"]:
                category = session.scalar(select(Category.id).where(Category.wnid == row["wnid"]))
                assert row["pairs"] == len(rounds.category_pairs(session, category)) == 4
                counted = rounds._counted_votes(session, category)
                decided = dict(session.execute(select(Label.cluster_id, Label.yes_votes + Label.no_votes)
                                               .where(Label.category_id == category)).all())
                assert row["waiting_votes"] == sum(max(0, votes - (decided.get(c) or 0)) for c, votes in counted.items())
        workspace.close()
    assert statements[6] == statements[2]


def test_label_submit_plans_categories_together_as_it_would_one_by_one(tmp_path):
    """Before: a submit planned each category with a dozen queries of its own (595 s for a dry run at
    10k images). Now the categories are planned a chunk at a time, one query per kind: the number of
    statements does not grow with the categories, and each category's plan, controls included, is
    what a submit of that category alone gives."""
    from sqlalchemy import event

    from imgnet_build.labeling.controls import control_pools
    from imgnet_build.workspace import Workspace

    settings = LabelSettings(votes=3, max_votes=6, images_per_task=8, controls=4, seed_images=2, seed_votes=5)
    statements = {}
    for categories in (2, 5):
        workspace = Workspace.init(tmp_path / f"ws{categories}")
        world = build_world(workspace, categories=categories, images=8, positives=0.5)
        gold = tmp_path / f"gold{categories}.csv"  # known answers for the first category
        gold.write_text("sha256,wnid,answer\n" + "".join(f"{sha},n00000001,{'yes' if truth else 'no'}\n"
                                                         for sha, truth in list(world["n00000001"].items())[:4]))
        load_gold(workspace, gold)
        rounds.submit(workspace, "simulated", settings)  # votes, agreed pairs and accepted labels for the controls
        rounds.collect(workspace, settings)
        seen: list[str] = []

        def record(conn, cursor, statement, *args, seen=seen):
            seen.append(statement)

        event.listen(workspace.engine, "before_cursor_execute", record)
        try:
            together = rounds.submit(workspace, "simulated", settings, dry_run=True)
        finally:
            event.remove(workspace.engine, "before_cursor_execute", record)
        statements[categories] = len(seen)
        alone = [rounds.submit(workspace, "simulated", dataclasses.replace(settings, categories=(wnid,)), dry_run=True)
                 for wnid in sorted(world)]
        assert together.per_category == {wnid: row for plan in alone for wnid, row in plan.per_category.items()}
        assert together.per_category and together.controls == sum(plan.controls for plan in alone) > 0
        assert (together.tasks, together.votes) == (sum(p.tasks for p in alone), sum(p.votes for p in alone))
        with workspace.session() as session:
            asked = {category_id: (set(), set(pairs)) for category_id, pairs in
                     rounds.category_pairs_of(session, sorted(session.scalars(select(Candidate.category_id).distinct())))
                     .items()}
            pools = control_pools(session, asked)
            assert pools == {category_id: control_pools(session, {category_id: sides})[category_id]
                             for category_id, sides in asked.items()}
            assert any(positives for positives, _ in pools.values()) and all(negatives for _, negatives in pools.values())
        workspace.close()
    assert statements[5] == statements[2]


def test_a_simulated_collect_answers_many_tasks_per_statement(tmp_path):
    """Before: the simulated crowd answered one task per transaction with a dozen statements per
    task and more per assignment (24 assignments/s on PostgreSQL at 100k images). Now it answers
    a chunk of tasks with a few statements for all of them: the count does not grow with the tasks."""
    from sqlalchemy import event

    from imgnet_build.labeling.simulated import SimulatedBackend
    from imgnet_build.workspace import Workspace

    settings = LabelSettings(votes=3, controls=2, images_per_task=4, seed_images=0)
    statements = {}
    for categories in (2, 5):
        workspace = Workspace.init(tmp_path / f"ws{categories}")
        build_world(workspace, categories=categories, images=6)
        plan = rounds.submit(workspace, "simulated", settings)
        seen: list[str] = []

        def record(conn, cursor, statement, *args, seen=seen):
            seen.append(statement)

        event.listen(workspace.engine, "before_cursor_execute", record)
        try:
            stored = SimulatedBackend(workspace).collect(workspace)
        finally:
            event.remove(workspace.engine, "before_cursor_execute", record)
        statements[categories] = len(seen)
        assert stored == plan.assignments == 3 * plan.tasks >= 3 * categories
        with workspace.session() as session:
            assert session.scalar(select(func.count()).select_from(Vote)) == sum(
                3 * n for n in session.scalars(select(func.count()).select_from(TaskItem).group_by(TaskItem.task_id)))
        workspace.close()
    assert statements[5] == statements[2]


def _task_dump(workspace) -> list[tuple]:
    """Every task and task item as a submit wrote them, task ids as their rank (the sequence of a
    PostgreSQL database moves on past deleted tasks), creation times left out."""
    with workspace.session() as session:
        rank = {id_: i for i, id_ in enumerate(session.scalars(select(Task.id).order_by(Task.id)))}
        tasks = [(rank[row.id], row.category_id, row.round, row.batch, row.backend, row.status,
                  row.assignments_wanted, row.test, row.crowd)
                 for row in session.scalars(select(Task).order_by(Task.id))]
        items = [(rank[row.task_id], row.position, row.image_sha256, row.cluster_id, row.kind, row.expected)
                 for row in session.scalars(select(TaskItem).order_by(TaskItem.task_id, TaskItem.position))]
    return tasks + items


def test_a_submit_writes_the_tasks_and_items_that_one_insert_per_task_wrote(workspace, monkeypatch):
    """The tasks are inserted with ids allocated in one block (dbutil.allocate_ids) instead of one
    INSERT ... RETURNING each: the rows written are the same, task for task and item for item."""
    from sqlalchemy import delete, insert

    settings = LabelSettings(votes=3, images_per_task=6, controls=2, seed_images=2, seed_votes=4)
    build_world(workspace, categories=3, images=8, positives=0.5)
    rounds.submit(workspace, "simulated", settings)
    rounds.collect(workspace, settings)  # a second round has labels, votes and controls to plan with
    with workspace.session() as session:
        before = session.scalar(select(func.max(Task.id)))
    batched = rounds.submit(workspace, "simulated", settings)
    with workspace.session() as session:
        assert session.scalar(select(func.min(Task.id)).where(Task.id > before)) == before + 1
    dump = _task_dump(workspace)

    def one_by_one(session, tasks):  # the insert before allocate_ids
        rows = [task.task for task in tasks if task.task is not None]
        session.add_all(rows)
        session.flush()
        session.execute(insert(TaskItem), [
            {"task_id": task.task.id, "position": position, "image_sha256": sha, "cluster_id": cluster,
             "kind": kind, "expected": expected}
            for task in tasks for position, (sha, cluster, kind, expected) in enumerate(task.items)])

    with workspace.session() as session:
        second = select(Task.id).where(Task.round == batched.round)
        session.execute(delete(TaskItem).where(TaskItem.task_id.in_(second)))
        session.execute(delete(Task).where(Task.id.in_(second)))
    monkeypatch.setattr(rounds, "_insert_tasks", one_by_one)
    again = rounds.submit(workspace, "simulated", settings)
    assert (again.tasks, again.round) == (batched.tasks, batched.round) and batched.tasks > 3
    assert _task_dump(workspace) == dump


def test_a_real_submit_inserts_tasks_with_statements_flat_in_tasks(tmp_path):
    """Before: each task was its own INSERT ... RETURNING on SQLite (SQLAlchemy cannot tie a
    multi-row RETURNING to its rows there): 19,068 statements for a submit at 100k images. Now
    the ids are allocated in one block and the tasks inserted in one executemany."""
    from sqlalchemy import event

    from imgnet_build.workspace import Workspace

    settings = LabelSettings(votes=3, controls=2, images_per_task=4, seed_images=0)
    statements = {}
    for categories in (2, 5):
        workspace = Workspace.init(tmp_path / f"ws{categories}")
        build_world(workspace, categories=categories, images=6)
        seen: list[str] = []

        def record(conn, cursor, statement, *args, seen=seen):
            seen.append(statement)

        event.listen(workspace.engine, "before_cursor_execute", record)
        try:
            plan = rounds.submit(workspace, "simulated", settings)
        finally:
            event.remove(workspace.engine, "before_cursor_execute", record)
        assert plan.tasks >= 2 * categories
        statements[categories] = len(seen)
        assert sum(statement.startswith("INSERT INTO task ") for statement in seen) == 1
        workspace.close()
    assert statements[5] == statements[2]


@pytest.mark.sqlite_only("EXPLAIN QUERY PLAN is SQLite's; on a table this small PostgreSQL scans it whole")
def test_the_simulated_truth_check_reads_the_category_index_only(workspace):
    """Before: the check read each candidate's table row for its truth (about 60 ms of CPU per chunk
    of 500 categories at a million images); truth is in ix_candidate_category now (migration 0014)."""
    from imgnet_build.labeling.simulated import SimulatedBackend

    build_world(workspace, categories=2, images=3)
    with workspace.session() as session:
        ids = list(session.scalars(select(Candidate.category_id).distinct()))
    query = SimulatedBackend._clusters(ids, Candidate.truth.is_(None))
    sql = str(query.compile(workspace.engine, compile_kwargs={"literal_binds": True}))
    with workspace.engine.connect() as connection:
        plan = " | ".join(row[3] for row in connection.exec_driver_sql("EXPLAIN QUERY PLAN " + sql))
    assert "candidate USING COVERING INDEX ix_candidate_category" in plan, plan


def _old_load_votes(workspace, settings):
    """`rounds._load_votes` before issue 16 (a Python loop over every vote, a set of every counted
    (worker, cluster, category)): the reference the array reading must equal."""
    import numpy as np

    from imgnet_build.labeling.consensus import VoteTable
    from imgnet_build.store import Gold

    pair_index, worker_index, known, candidate, simulated, test = {}, {}, [], [], [], []
    control_expected, p, w, a, counted = {}, [], [], [], set()
    with workspace.session() as session:
        gold = {(c, cat): answer for c, cat, answer in session.execute(
            select(Image.cluster_id, Gold.category_id, Gold.answer).join(Image, Image.sha256 == Gold.image_sha256))}
        query = (select(Image.cluster_id, Vote.category_id, Vote.worker_id, Vote.answer, Vote.control,
                        TaskItem.expected, Vote.simulated, Vote.test)
                 .join(Image, Image.sha256 == Vote.image_sha256).join(TaskItem, TaskItem.id == Vote.task_item_id)
                 .join(Worker, Worker.id == Vote.worker_id).join(Assignment, Assignment.id == Vote.assignment_id)
                 .where(Worker.blocked.is_(False), Assignment.status != "rejected").order_by(Vote.id))
        if not settings.include_test:
            query = query.where(Vote.test.is_(False))
        for cluster, category, worker, answer, control, expected, is_simulated, is_test in session.execute(query):
            if (worker, cluster, category) in counted:
                continue
            counted.add((worker, cluster, category))
            key = (cluster, category)
            index = pair_index.get(key)
            if index is None:
                index = pair_index[key] = len(known)
                known.append(-1 if gold.get(key) is None else int(gold[key]))
                candidate.append(False)
                simulated.append(False)
                test.append(False)
            if control and expected is not None and gold.get(key) is None:
                control_expected[index] = int(expected)
            candidate[index] |= not control
            simulated[index] |= bool(is_simulated) or bool(is_test)
            test[index] |= bool(is_test)
            p.append(index)
            w.append(worker_index.setdefault(worker, len(worker_index)))
            a.append(answer)
    for index, expected_answer in control_expected.items():
        if not candidate[index]:
            known[index] = expected_answer
    pairs = list(pair_index)
    categories = {category: i for i, category in enumerate(sorted({category for _, category in pairs}))}
    counts = np.bincount(np.asarray(p, dtype=np.int64), minlength=len(pairs))
    seed = np.asarray([candidate[i] and counts[i] >= settings.seed_votes for i in range(len(pairs))], dtype=bool)
    table = VoteTable.build(p, w, a, [categories[category] for _, category in pairs], known,
                            seed if settings.seeded else None, len(worker_index), candidate)
    meta = {"candidate": np.asarray(candidate, bool), "simulated": np.asarray(simulated, bool),
            "test": np.asarray(test, bool), "categories": categories}
    return table, pairs, meta, list(worker_index)


def test_decide_reads_the_votes_into_arrays_as_the_per_vote_loop_did(workspace, tmp_path):
    """Before: `decide` kept every counted vote in Python lists and a set of (worker, cluster,
    category) tuples (403 MB at 100k images, 1M votes). Now it reads them into arrays a chunk at a
    time; the consensus input is the same: pairs and workers in the same order, the same known
    answers (gold, borrowed controls), seeds, flags, and a worker counted once per merged cluster."""
    import numpy as np

    settings = LabelSettings(votes=3, max_votes=5, images_per_task=6, controls=2, seed_images=2, seed_votes=4)
    world = build_world(workspace, categories=3, images=10, positives=0.5)
    gold = tmp_path / "gold.csv"
    gold.write_text("sha256,wnid,answer\n" + "".join(f"{sha},n00000001,{'yes' if truth else 'no'}\n"
                                                     for sha, truth in list(world["n00000001"].items())[:3]))
    load_gold(workspace, gold)
    rounds.run(workspace, "simulated", settings, options={"sim_workers": 12}, max_rounds=2)
    with workspace.session() as session:  # a merge (repeated votes), a test vote, a rejected assignment
        shas = list(session.scalars(select(Candidate.image_sha256).where(Candidate.category_id == select(
            Candidate.category_id).order_by(Candidate.id).limit(1).scalar_subquery()).order_by(Candidate.id)))
        keep, gone = (session.get(Image, sha).cluster_id for sha in shas[:2])
        session.execute(update(Cluster).where(Cluster.id == gone).values(merged_into=keep))
        session.execute(update(Image).where(Image.sha256 == shas[1]).values(cluster_id=keep))
        session.execute(update(Vote).where(Vote.id == select(func.min(Vote.id)).scalar_subquery()).values(test=True))
        session.execute(update(Assignment).where(Assignment.id == select(func.max(Assignment.id)).scalar_subquery())
                        .values(status="rejected"))
    for include_test in (False, True):
        chosen = dataclasses.replace(settings, include_test=include_test)
        old, old_pairs, old_meta, old_workers = _old_load_votes(workspace, chosen)
        counted = rounds._read_counted(workspace, chosen)
        assert len(counted.worker) < len(old.pair) + 10  # the merge repeated votes: some do not count
        new, pairs, meta, workers = rounds._vote_table(counted, chosen)
        assert pairs.keys(np.arange(new.pairs)) == old_pairs and workers == old_workers
        for field in ("pair", "worker", "answer", "pair_category", "known", "seed", "candidate"):
            assert np.array_equal(getattr(new, field), getattr(old, field)), field
            assert getattr(new, field).dtype == getattr(old, field).dtype, field
        assert new.workers == old.workers and meta["categories"] == old_meta["categories"]
        assert all(np.array_equal(meta[name], old_meta[name]) for name in ("candidate", "simulated", "test"))
        assert (old.known >= 0).sum() > 3 and old_meta["test"].any() == include_test  # gold and borrowed controls
    before = rounds._read_counted(workspace, settings)
    with workspace.session() as session:  # decide drops a newly blocked worker's votes instead of reading again
        session.execute(update(Worker).where(Worker.id == old_workers[0]).values(blocked=True))
    again = rounds._read_counted(workspace, settings)
    dropped = before.without(before.workers[before.worker] != old_workers[0])
    assert all(np.array_equal(getattr(dropped, field), getattr(again, field)) for field in rounds.VOTE_FIELDS)
    assert np.array_equal(dropped.workers, again.workers) and dropped.pairs.keys(np.arange(len(dropped.pairs.cluster))) \
        == again.pairs.keys(np.arange(len(again.pairs.cluster)))
    assert rounds._vote_table(again, settings)[3] == _old_load_votes(workspace, settings)[3] != old_workers

def test_seed_tables_group_the_votes_once_and_equal_one_category_at_a_time():
    """Before: the seed table of each seeded category scanned every vote (categories x votes:
    18,545 scans of a million votes at 100k images). Now the seed votes are grouped by category once,
    each category's sums taken over the same votes in the same order: the same tables, float for
    float, and the elements looked at do not grow with the categories."""
    import numpy as np

    from imgnet_build.labeling.consensus import VoteTable, seed_tables

    def reference(votes, truth, category, max_votes=5):  # consensus.seed_table before issue 16
        in_seed = votes.seed[votes.pair] & (votes.pair_category[votes.pair] == category)
        good = truth[votes.pair[in_seed]]
        said_yes = votes.answer[in_seed]
        prior = np.clip((truth[votes.seed & (votes.pair_category == category)].sum() + 1) /
                        ((votes.seed & (votes.pair_category == category)).sum() + 2), 0.02, 0.98)
        p_yes_good = (np.sum(said_yes * good) + 1) / (np.sum(good) + 2)
        p_yes_bad = (np.sum(said_yes * (1 - good)) + 1) / (np.sum(1 - good) + 2)
        table = {}
        for n in range(1, max_votes + 1):
            for yes in range(n + 1):
                a = prior * p_yes_good ** yes * (1 - p_yes_good) ** (n - yes)
                b = (1 - prior) * p_yes_bad ** yes * (1 - p_yes_bad) ** (n - yes)
                table[f"{yes},{n - yes}"] = round(float(a / (a + b)), 4)
        return table

    class Counted(np.ndarray):
        looked_at = 0

        def __getitem__(self, key):
            if isinstance(key, np.ndarray):
                Counted.looked_at += key.size  # a fancy index or a mask: one look per element
            return super().__getitem__(key)

    looked = {}
    for categories in (20, 200):
        rng = np.random.default_rng(categories)
        pairs = categories * 6
        pair = rng.integers(0, pairs, 40 * pairs)
        votes = VoteTable.build(pair, rng.integers(0, 30, len(pair)), rng.random(len(pair)) < 0.4,
                                rng.integers(0, categories, pairs), seed=rng.random(pairs) < 0.5)
        truth = rng.random(pairs)
        chosen = sorted(set(votes.pair_category[votes.seed].tolist()))
        assert seed_tables(votes, truth, chosen) == {c: reference(votes, truth, c) for c in chosen}
        counted = dataclasses.replace(votes, **{field: getattr(votes, field).view(Counted) for field in
                                                ("pair", "answer", "pair_category", "seed")})
        Counted.looked_at = 0
        seed_tables(counted, truth.view(Counted), chosen)
        looked[categories] = Counted.looked_at / (len(pair) + pairs)
    assert looked[200] < 1.5 * looked[20] < 15  # per vote and pair: flat in the categories (was 4 x categories)


def test_worker_quality_intervals_do_not_import_scipy_stats():
    """scipy.stats costs 45 MB resident and a second to import; the intervals are Beta quantiles,
    which scipy.special gives (`betaincinv`, what `scipy.stats.beta.ppf` computes: the same floats)."""
    import subprocess
    import sys

    import numpy as np
    from scipy.stats import beta

    from imgnet_build.labeling.consensus import INTERVAL, balanced_interval

    right, seen = np.arange(0, 400, dtype=float), np.arange(0, 400, dtype=float) * 1.5 + 1
    low, high = balanced_interval(right, seen, right, seen)
    tail = (1 - INTERVAL) / 2
    assert np.array_equal(low, beta.ppf(tail, right + 1, seen - right + 1))
    assert np.array_equal(high, beta.ppf(1 - tail, right + 1, seen - right + 1))
    code = ("import sys, numpy as np; from imgnet_build.labeling.consensus import balanced_interval as b; "
            "b(np.ones(3), np.ones(3) * 2, np.ones(3), np.ones(3) * 2); assert 'scipy.stats' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_a_simulated_collect_counts_the_controls_its_workers_got_right(workspace, tmp_path):
    """Before: the simulated collect added numpy integers to `Worker.control_correct`, which SQLite
    bound as 8-byte blobs that add 0: every simulated worker had 0 controls right. Now its answers
    go through `answers.votes_of` and `count_controls`, as every backend's do."""
    settings = LabelSettings(votes=3, images_per_task=6, controls=4, seed_images=0)
    world = build_world(workspace, categories=2, images=8, positives=0.5)
    gold = tmp_path / "gold.csv"
    gold.write_text("sha256,wnid,answer\n" + "".join(f"{sha},n00000001,{'yes' if truth else 'no'}\n"
                                                     for sha, truth in world["n00000001"].items()))
    load_gold(workspace, gold)
    rounds.submit(workspace, "simulated", settings)
    rounds.collect(workspace, settings)
    with workspace.session() as session:
        answers, correct = session.execute(select(func.sum(Worker.control_answers), func.sum(Worker.control_correct))
                                           ).one()
        right_votes = session.scalar(select(func.count()).select_from(Vote).join(TaskItem, TaskItem.id == Vote.task_item_id)
                                     .where(Vote.control.is_(True), Vote.answer == TaskItem.expected))
    assert answers >= correct >= right_votes > 0  # a control whose vote is not stored is counted all the same


def test_controls_rank_labels_tied_across_categories_the_same_whatever_their_insertion_order(workspace):
    """Before: the most confident labels were ranked by (confidence, cluster) only, so the labels of
    two categories on one cluster at one confidence came in whatever order the database read them,
    and a pool cut at its limit kept one or the other. Now category, then label, break the tie."""
    from sqlalchemy import delete

    from imgnet_build.labeling.controls import Elsewhere, _most_confident_of, _similar_of
    from imgnet_build.store import Category, Label

    build_world(workspace, categories=3, images=4)
    with workspace.session() as session:
        first, second, third = session.scalars(select(Category.id).where(Category.depth == 1).order_by(Category.id))
        clusters = list(session.scalars(select(Cluster.id).where(Cluster.merged_into.is_(None)).order_by(Cluster.id)))
    picked = []
    for categories in ((third, second), (second, third)):
        with workspace.session() as session:
            session.execute(delete(Label))
            session.add_all(Label(cluster_id=cluster, category_id=category, status="accepted", confidence=0.995,
                                  method="test", round=1) for cluster in clusters for category in categories)
        with workspace.session() as session:
            picked.append((_most_confident_of(session, None, limit=3), _similar_of(session, [first], limit=3),
                           Elsewhere(session).rows, Elsewhere(session).for_category(session, second)))
    assert picked[0] == picked[1]
    assert [category for _, _, category in picked[0][0][0]] == [second, third, second]
    assert [category for _, _, category in picked[0][1][first]] == [second, third, second]


def test_the_consensus_fit_holds_one_float_per_vote_not_a_few():
    """Before: the dynamic fit built several float64 arrays the size of the votes (each vote's
    P(good), its evidence, its pair's log-odds, the sigmoid's temporaries): 78 bytes per vote at
    its peak, 315 MB live over 4.45M votes at 1M images. Now every per-vote quantity is computed a
    chunk of votes at a time; the one float64 per vote it keeps is each vote's P(good) without it.
    By design the fit's peak is that array, arrays per pair and a chunk's temporaries (measured:
    about 15 bytes per vote here)."""
    import tracemalloc

    import numpy as np
    import scipy.special  # noqa: F401  imported by the fit's intervals: not the fit's memory

    from imgnet_build.labeling.consensus import CHUNK, Dynamic, VoteTable

    rng = np.random.default_rng(0)
    votes, pairs, workers = 1_500_000, 50_000, 300
    pair, worker = rng.integers(0, pairs, votes), rng.integers(0, workers, votes)
    truth, honest = rng.random(pairs) < 0.5, rng.random(workers) < 0.8
    answer = np.where(honest[worker], truth[pair], rng.random(votes) < 0.5)
    table = VoteTable.build(pair, worker, answer, rng.integers(0, 500, pairs), np.where(rng.random(pairs) < 0.05,
                            truth, -1), rng.random(pairs) < 0.1, workers)
    del pair, worker, answer
    tracemalloc.start()
    try:
        start = tracemalloc.get_traced_memory()[0]
        result = Dynamic().fit(table)
        peak = tracemalloc.get_traced_memory()[1] - start
    finally:
        tracemalloc.stop()
    assert (result.status == "accepted").sum() > pairs / 4  # the crowd decided most of the good pairs
    assert peak < 8 * votes + 20 * 8 * pairs + 20 * 8 * CHUNK, peak / votes  # was 78 bytes per vote


def test_a_simulated_round_refreshes_the_statistics_its_later_reads_plan_with(any_workspace, monkeypatch):
    """Before: a submit and the first collect kept the statistics taken before any task or vote
    existed, so PostgreSQL planned the collect's reads of each chunk's items (`task_item.task_id IN`)
    and of the votes stored so far (`vote.category_id IN ... AND image.cluster_id IN`) as scans of
    whole tables (bench_scale 1M workspace: 1.5 s per item read; a vote table growing to 4.45M rows
    scanned ten times a chunk). Now a submit refreshes them once it wrote its items, and a collect
    whenever a chunk grew the votes by a tenth (`store.analyze_if_grown`) before the next chunk."""
    from sqlalchemy import event

    from imgnet_build import store
    from imgnet_build.labeling import simulated

    workspace = any_workspace
    build_world(workspace, categories=4, images=6)
    monkeypatch.setattr(simulated, "COLLECT_CHUNK", 2)
    monkeypatch.setattr(store, "ANALYZE_AT_LEAST", 5)  # 1,000 rows: a small table stands in for a large one
    seen: list[str] = []

    def record(connection, cursor, statement, *args):
        words = " ".join(statement.split())
        if words.upper().startswith("ANALYZE"):
            seen.append(words.replace('"', "").lower())
        elif words.startswith("INSERT INTO task_item"):
            seen.append("items written")
        elif "FROM task_item JOIN image" in words:
            seen.append("items read")
        elif "FROM vote JOIN image" in words and "vote.category_id IN" in words:
            seen.append("votes read")

    event.listen(workspace.engine, "before_cursor_execute", record)
    try:
        plan = rounds.submit(workspace, "simulated", LabelSettings(votes=3, controls=2, images_per_task=4, seed_images=0))
        rounds.collect(workspace, LabelSettings(votes=3, controls=2, images_per_task=4, seed_images=0))
    finally:
        event.remove(workspace.engine, "before_cursor_execute", record)
    assert plan.tasks > 2 * simulated.COLLECT_CHUNK, plan  # several chunks
    read = seen.index("items read")
    assert "analyze task_item" in seen[seen.index("items written"):read], seen  # the items read with them
    assert "analyze vote" in seen[read:] and "votes read" in seen[seen.index("analyze vote", read):], seen
