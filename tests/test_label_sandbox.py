"""Test answers apart from evidence (the MTurk sandbox), a bad MTurk answer skipped, and
`label status` telling the truth. MTurk through botocore's Stubber (see test_mturk)."""

from __future__ import annotations

import json
from decimal import Decimal

import test_mturk
from sqlalchemy import func, select
from test_mturk import SETTINGS, TESTING, answer_xml, assignment, hit, positions, published, submission

from imgnet_build.cli.main import cli
from imgnet_build.labeling import mturk, rounds
from imgnet_build.store import Assignment, Label, Vote

ws, stub = test_mturk.ws, test_mturk.stub  # the fixtures: one category, 4 candidates, 4 gold; a stubbed sandbox


def _yes_men(ws, stub, task_id: int, hit_id: str) -> None:
    """Two sandbox workers answer yes to every candidate (their controls right); collect approves them."""
    yes = submission(task_id, positions(ws, task_id, candidates=True, controls="right"))
    stub.add_response("list_assignments_for_hit", {"NumResults": 2, "Assignments": [
        assignment("3ASSIGNMENT0001", "AYES1", hit_id, yes), assignment("3ASSIGNMENT0002", "AYES2", hit_id, yes)]},
        {"HITId": hit_id, "MaxResults": 100})
    stub.add_response("approve_assignment", {}, {"AssignmentId": "3ASSIGNMENT0001"})
    stub.add_response("approve_assignment", {}, {"AssignmentId": "3ASSIGNMENT0002"})


def test_sandbox_answers_are_stored_and_shown_but_decide_nothing_unless_asked(ws, stub, runner):
    task_id, hit_id = published(ws, stub)
    _yes_men(ws, stub, task_id, hit_id)
    result = rounds.collect(ws, SETTINGS)
    assert (result["assignments"], result["accepted"]) == (2, 0)  # stored, not evidence
    with ws.session() as session:
        assert session.scalar(select(func.count()).select_from(Vote).where(Vote.test.is_(True))) == 12
        assert session.scalar(select(func.count()).select_from(Label)) == 0
    status = json.loads(runner.invoke(cli, ["-w", str(ws.root), "label", "status", "--json"]).output)
    assert status["test_votes"] == 8 and status["waiting_votes"] == 0
    assert status["cost"]["spent_usd"] == "0.00"  # sandbox money is not money
    text = runner.invoke(cli, ["-w", str(ws.root), "label", "status"]).output
    assert "8 test answers (MTurk sandbox) stored; they decide nothing" in text

    plan, _ = mturk.submit(ws, SETTINGS, live=True, max_cost=Decimal("100"), dry_run=True)
    assert (plan.pairs, plan.votes) == (4, 8)  # the live plan asks for every pair: sandbox votes are no evidence

    result = rounds.collect(ws, TESTING)  # asked for explicitly: labels, marked as not by people
    assert result["accepted"] == 4
    with ws.session() as session:
        assert set(session.execute(select(Label.simulated, Label.test)).all()) == {(True, True)}
    assert rounds.collect(ws, SETTINGS)["accepted"] == 0  # without the flag the labels they made are gone again


def test_a_deeply_nested_answer_is_recorded_and_skipped_and_collect_goes_on(ws, stub):
    task_id, hit_id = published(ws, stub)
    nested = answer_xml({"submission": "[" * 100_000})
    good = submission(task_id, positions(ws, task_id, candidates=True, controls="right"))
    stub.add_response("list_assignments_for_hit", {"NumResults": 2, "Assignments": [
        assignment("3ASSIGNMENTBAD1", "ANESTED", hit_id, nested), assignment("3ASSIGNMENT0002", "AGOOD", hit_id, good)]},
        {"HITId": hit_id, "MaxResults": 100})
    stub.add_response("approve_assignment", {}, {"AssignmentId": "3ASSIGNMENT0002"})
    stub.add_response("get_hit", {"HIT": hit(hit_id, "t", 2, available=0)}, {"HITId": hit_id})
    assert rounds.collect(ws, TESTING)["assignments"] == 1
    with ws.session() as session:
        rows = dict(session.execute(select(Assignment.external_id, Assignment.status)).all())
        assert rows == {"3ASSIGNMENTBAD1": "abandoned", "3ASSIGNMENT0002": "approved"}
        feedback = session.scalar(select(Assignment.feedback).where(Assignment.external_id == "3ASSIGNMENTBAD1"))
        assert "nested too deeply" in feedback


def test_status_shows_votes_waiting_for_a_decision_names_and_every_worker(ws, stub, runner):
    task_id, hit_id = published(ws, stub)
    _yes_men(ws, stub, task_id, hit_id)
    from imgnet_build.labeling.mturk_review import collect_hits

    collect_hits(mturk.MTurkBackend(ws))  # answers in, nothing decided yet (a collect killed before deciding)
    status = json.loads(runner.invoke(cli, ["-w", str(ws.root), "label", "status", "--json"]).output)
    assert status["waiting_votes"] == 0  # test answers wait for nothing
    with ws.session() as session:  # the same votes as real ones
        session.execute(Vote.__table__.update().values(test=False))
    status = json.loads(runner.invoke(cli, ["-w", str(ws.root), "label", "status", "--json"]).output)
    assert status["waiting_votes"] == 8 and status["categories"][0]["name"] == "dog"
    text = runner.invoke(cli, ["-w", str(ws.root), "label", "status", "--all"]).output
    assert "8 votes waiting: run imgnet label collect" in text
    assert "n02084071   dog" in text and "AYES1" in text and "AYES2" in text
    rounds.decide(ws, SETTINGS)
    status = json.loads(runner.invoke(cli, ["-w", str(ws.root), "label", "status", "--json"]).output)
    assert status["waiting_votes"] == 0 and status["categories"][0]["accepted"] == 4
