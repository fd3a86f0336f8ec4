"""Backends that behave: `label expire` on every backend, a submit that issues nothing says why,
unpublished tasks never count as pending, an MTurk dry run prices without being ready, and
`--max-cost` holds across concurrent submits (real processes, a loopback stand-in for MTurk)."""

from __future__ import annotations

import dataclasses
import multiprocessing
import traceback
from decimal import Decimal

import pytest
import test_mturk
from fake_mturk import FakeMTurk
from labelkit import build_world
from sqlalchemy import func, select
from test_mturk import SETTINGS, TOML, submitted, tasks

from imgnet_build.cli.main import cli
from imgnet_build.labeling import mturk, rounds
from imgnet_build.labeling.rounds import LabelSettings
from imgnet_build.store import Task
from imgnet_build.workspace import Workspace

ws, stub = test_mturk.ws, test_mturk.stub  # one category, 4 candidates, 4 gold; a stubbed sandbox
SMALL = LabelSettings(seed_images=0, images_per_task=12, controls=0)


def test_expire_works_for_local_tasks_and_a_submit_that_issues_nothing_says_why(workspace, runner):
    build_world(workspace, categories=2, images=6)
    root = str(workspace.root)
    rounds.submit(workspace, "local", SMALL)
    result = runner.invoke(cli, ["-w", root, "label", "submit", "--backend", "simulated", "--votes", "3",
                                 "--images-per-task", "12", "--controls", "0", "--method", "majority"])
    assert result.exit_code == 0, result.output
    assert "issued 0 tasks" in result.output
    assert "12 pairs wait for answers of open tasks (open tasks: 2 local;" in result.output
    assert "imgnet label expire --backend NAME" in result.output
    result = runner.invoke(cli, ["-w", root, "label", "expire", "--backend", "local"])
    assert result.exit_code == 0, result.output
    assert result.output.startswith("label expire: 2 tasks closed (local 2)")
    with workspace.session() as session:
        assert set(session.scalars(select(Task.status))) == {"expired"}
    plan = rounds.submit(workspace, "simulated", dataclasses.replace(SMALL, method="majority"))
    assert (plan.tasks, plan.pairs) == (2, 12)


def test_unpublished_tasks_of_a_failed_submit_never_count_as_pending(ws, stub):
    stub.add_client_error("get_account_balance", service_error_code="RequestError",
                          service_message="credentials refused", http_status_code=400)
    with pytest.raises(mturk.MTurkError):
        submitted(ws)  # the tasks were made; publishing them failed
    assert [task.status for task in tasks(ws)] == ["new"]
    plan = rounds.submit(ws, "local", SETTINGS, dry_run=True)
    assert plan.pairs == 4  # before: 0, the never-asked pairs counted as pending
    plan = rounds.submit(ws, "local", SETTINGS)
    assert (plan.discarded, plan.pairs) == (1, 4)
    assert [(task.backend, task.status) for task in tasks(ws)] == [("local", "open")]


def test_a_rerun_publishes_what_a_failed_submit_left(ws, stub):
    stub.add_client_error("get_account_balance", service_error_code="ServiceFault",
                          service_message="try later", http_status_code=500)
    with pytest.raises(mturk.MTurkError):
        submitted(ws)
    test_mturk.expect_publish(stub, ws, [1], 2)
    plan, _ = submitted(ws)
    assert (plan.published, plan.tasks) == (1, 0)
    assert [(task.id, task.status) for task in tasks(ws)] == [(1, "open")]


def test_an_mturk_dry_run_prices_without_being_ready_and_lists_what_is_missing(tmp_path, runner, monkeypatch):
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    workspace = Workspace.init(tmp_path / "bare")
    build_world(workspace, categories=1, images=6)
    workspace.close()
    result = runner.invoke(cli, ["-w", str(tmp_path / "bare"), "label", "submit", "--backend", "mturk", "--dry-run",
                                 "--live", "--images-per-task", "12", "--controls", "0", "--method", "majority"])
    assert result.exit_code == 0, result.output
    assert "mturk live: 1 HITs, 3 assignments: reward $0.30, MTurk fee $0.06, total $0.36" in result.output
    assert ("a real submit still needs: --max-cost USD together with --live; public_base_url in the [mturk] table "
            "of imgnet.toml") in result.output
    assert "AWS credentials: AWS_PROFILE, or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY" in result.output
    result = runner.invoke(cli, ["-w", str(tmp_path / "bare"), "label", "submit", "--backend", "mturk"])
    assert result.exit_code == 1 and "set public_base_url" in result.output  # a real submit still refuses


def _submit_one(root: str, endpoint: str, wnid: str, cap: str, barrier, results) -> None:
    try:
        workspace = Workspace.open(root)
        mturk.SANDBOX_ENDPOINT = endpoint  # the loopback stand-in
        settings = dataclasses.replace(SETTINGS, categories=(wnid,))
        barrier.wait(timeout=60)
        try:
            plan, _ = mturk.submit(workspace, settings, max_cost=Decimal(cap))
            results.put(("ok", plan.tasks))
        except mturk.CostCapExceeded as exc:
            results.put(("refused", str(exc)))
        workspace.close()
    except BaseException:
        results.put(("error", traceback.format_exc()))


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def two_categories(request, tmp_path, monkeypatch) -> Workspace:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    database = request.getfixturevalue("postgres_url") if request.param == "postgresql" else None
    Workspace.init(tmp_path / "ws", database=database).close()
    with open(tmp_path / "ws" / "imgnet.toml", "a") as handle:
        handle.write(TOML)
    workspace = Workspace.open(tmp_path / "ws")
    build_world(workspace, categories=2, images=6)
    yield workspace
    workspace.close()


def test_max_cost_holds_across_concurrent_submits(two_categories):
    workspace = two_categories
    one = mturk.submit(workspace, dataclasses.replace(SETTINGS, categories=("n00000001",)), dry_run=True)[1].total_usd
    cap = str(one + Decimal("0.10"))  # room for one category's HITs, not for both
    fake = FakeMTurk()
    try:
        context = multiprocessing.get_context("spawn")
        barrier, results = context.Barrier(2), context.Queue()
        processes = [context.Process(target=_submit_one, args=(str(workspace.root), fake.url, wnid, cap, barrier,
                                                               results)) for wnid in ("n00000001", "n00000002")]
        for process in processes:
            process.start()
        outcomes = sorted(results.get(timeout=300) for _ in processes)
        for process in processes:
            process.join(timeout=60)
    finally:
        fake.close()
    assert [kind for kind, _ in outcomes] == ["ok", "refused"], outcomes
    assert "over --max-cost" in outcomes[1][1]
    with workspace.session() as session:
        cost = mturk.workspace_cost(session, live=False)
        made = session.scalar(select(func.count()).select_from(Task))
    assert cost["spent"].total_usd + cost["committed"].total_usd <= Decimal(cap)
    assert len(fake.hits) == made == outcomes[0][1]  # every task made became one HIT, and nothing else did
