"""The Mechanical Turk backend against botocore's Stubber: every request asserted, every
response shaped as the MTurk API reference documents it (no test reaches AWS)."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from decimal import Decimal

import pytest
from botocore.stub import ANY, Stubber
from headless import playwright_or_skip
from sqlalchemy import select

from imgnet_build.cli.main import cli
from imgnet_build.errors import BadInput
from imgnet_build.labeling import mturk, rounds
from imgnet_build.labeling.mturk_review import AnswerInvalid, parse_answer
from imgnet_build.labeling.mturk_settings import MTurkSettings, assignment_cost
from imgnet_build.labeling.page import load_task_view
from imgnet_build.labeling.rounds import LabelSettings
from imgnet_build.store import Assignment, Candidate, Category, Cluster, Gold, Image, Task, TaskItem, Vote, Worker
from imgnet_build.workspace import Workspace

NOW = dt.datetime(2026, 1, 5, 12, 0, tzinfo=dt.UTC)
HIT_TYPE = "3HYP8T6TP5Y3Q0EXAMPLEHITTYPE1"
SETTINGS = LabelSettings(votes=2, images_per_task=6, controls=2, max_votes=6, method="majority")
TESTING = dataclasses.replace(SETTINGS, include_test=True)  # sandbox answers count only when asked for
TOML = '\n[mturk]\npublic_base_url = "https://images.example.org/blobs"\nreject_min_controls = 2\n'
QFA = ('<?xml version="1.0" encoding="ASCII"?><QuestionFormAnswers xmlns="http://mechanicalturk.amazonaws.com/'
       'AWSMechanicalTurkDataSchemas/2005-10-01/QuestionFormAnswers.xsd">{}</QuestionFormAnswers>')


def answer_xml(fields: dict[str, str]) -> str:
    return QFA.format("".join(f"<Answer><QuestionIdentifier>{name}</QuestionIdentifier><FreeText>{value}</FreeText>"
                              f"</Answer>" for name, value in fields.items()))


@pytest.fixture
def ws(tmp_path, monkeypatch):
    """A workspace with one category: 4 candidate images, 2 gold yes and 2 gold no (controls)."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    Workspace.init(tmp_path / "ws").close()
    with open(tmp_path / "ws" / "imgnet.toml", "a") as handle:
        handle.write(TOML)
    workspace = Workspace.open(tmp_path / "ws")
    with workspace.session() as session:
        session.add(Category(id=1, wnid="n02084071", synset="dog.n.01", name="dog", lemmas=["dog", "domestic dog"],
                             gloss="a member of the genus Canis", lexname="noun.animal", depth=3))
        for index in range(8):
            sha = f"{index:02d}" + "ab" * 31
            session.add(Cluster(id=index + 1, key=sha, representative=sha))
            session.flush()
            session.add(Image(sha256=sha, width=64, height=48, format="JPEG", bytes=1000,
                              blob_key=f"{sha[:2]}/{sha[2:4]}/{sha}.jpg", cluster_id=index + 1))
            session.flush()
            if index < 4:
                session.add(Candidate(category_id=1, source="urls", url=f"https://example.org/{index}.jpg",
                                      status="ok", image_sha256=sha))
            else:
                session.add(Gold(image_sha256=sha, category_id=1, answer=index < 6))
    yield workspace
    workspace.close()


@pytest.fixture
def stub(monkeypatch):
    """A sandbox client whose every call is answered by the Stubber; make_client returns it."""
    client = mturk.make_client(False)
    assert client.meta.endpoint_url == mturk.SANDBOX_ENDPOINT
    stubber = Stubber(client)
    stubber.activate()
    made = []
    monkeypatch.setattr(mturk, "make_client", lambda live: made.append(live) or client)
    monkeypatch.setattr(mturk, "_sleep", lambda seconds: made.append(("slept", seconds)))
    stubber.made = made
    yield stubber
    stubber.assert_no_pending_responses()
    stubber.deactivate()


def hit(hit_id: str, token: str, assignments: int, *, status: str = "Assignable", available: int | None = None,
        expiration: dt.datetime = NOW + dt.timedelta(days=3)) -> dict:
    """A HIT as GetHIT, CreateHITWithHITType and ListHITs return it."""
    return {"HITId": hit_id, "HITTypeId": HIT_TYPE, "HITGroupId": "3XJ7AEXAMPLEGROUP", "CreationTime": NOW,
            "Title": MTurkSettings().title, "Description": MTurkSettings().description, "Question": "<HTMLQuestion/>",
            "Keywords": MTurkSettings().keywords, "HITStatus": status, "MaxAssignments": assignments,
            "Reward": "0.10", "AutoApprovalDelayInSeconds": 259200, "Expiration": expiration,
            "AssignmentDurationInSeconds": 600, "RequesterAnnotation": token, "HITReviewStatus": "NotReviewed",
            "NumberOfAssignmentsPending": 0,
            "NumberOfAssignmentsAvailable": assignments if available is None else available,
            "NumberOfAssignmentsCompleted": 0}


def expect_publish(stub, workspace, task_ids: list[int], assignments: int, *, balance: str = "10000.00",
                   hit_type: bool = True) -> list[str]:
    stub.add_response("get_account_balance", {"AvailableBalance": balance})
    if hit_type:
        s = MTurkSettings(public_base_url="https://images.example.org/blobs")
        stub.add_response("create_hit_type", {"HITTypeId": HIT_TYPE}, {
            "AutoApprovalDelayInSeconds": 259200, "AssignmentDurationInSeconds": 600, "Reward": "0.10",
            "Title": s.title, "Keywords": s.keywords, "Description": s.description,
            "QualificationRequirements": s.qualification_requirements()})
    backend = mturk.MTurkBackend(workspace)
    hit_ids = []
    for task_id in task_ids:
        token = backend.token(task_id)
        hit_id = f"3HITEXAMPLE{task_id:04d}"
        hit_ids.append(hit_id)
        stub.add_response("create_hit_with_hit_type", {"HIT": hit(hit_id, token, assignments)}, {
            "HITTypeId": HIT_TYPE, "MaxAssignments": assignments, "LifetimeInSeconds": 259200, "Question": ANY,
            "RequesterAnnotation": token, "UniqueRequestToken": token})
    return hit_ids


def tasks(workspace) -> list[Task]:
    with workspace.session() as session:
        rows = list(session.scalars(select(Task).order_by(Task.id)))
        session.expunge_all()
    return rows


def items(workspace, task_id: int) -> list[TaskItem]:
    with workspace.session() as session:
        rows = list(session.scalars(select(TaskItem).where(TaskItem.task_id == task_id).order_by(TaskItem.position)))
        session.expunge_all()
    return rows


def assignment(assignment_id: str, worker: str, hit_id: str, answer: str, status: str = "Submitted") -> dict:
    """An assignment as ListAssignmentsForHIT returns it."""
    return {"AssignmentId": assignment_id, "WorkerId": worker, "HITId": hit_id, "AssignmentStatus": status,
            "AutoApprovalTime": NOW + dt.timedelta(days=3), "AcceptTime": NOW, "SubmitTime": NOW, "Answer": answer}


def submission(task_id: int, positions: list[int]) -> str:
    return answer_xml({"submission": json.dumps({"task": task_id, "selected": positions})})


def positions(workspace, task_id: int, *, candidates: bool, controls: str) -> list[int]:
    """Positions a worker selects: all candidates or none; controls 'right' or 'wrong'."""
    chosen = []
    for item in items(workspace, task_id):
        if item.kind == "candidate":
            chosen += [item.position] if candidates else []
        elif (item.expected if controls == "right" else not item.expected):
            chosen.append(item.position)
    return chosen


def submitted(workspace, live=False, max_cost=None):
    return mturk.submit(workspace, SETTINGS, live=live, max_cost=max_cost)


# -- settings and price ---------------------------------------------------------------------

@pytest.mark.parametrize("reward", ['"0.001"', '"-1"', "-1", '"1.234"', '"0.00"'])
def test_bad_reward_is_refused_when_the_workspace_opens(tmp_path, runner, reward):
    Workspace.init(tmp_path / "ws").close()
    (tmp_path / "ws" / "imgnet.toml").write_text((tmp_path / "ws" / "imgnet.toml").read_text()
                                                  + f"\n[mturk]\nreward = {reward}\n")
    result = runner.invoke(cli, ["-w", str(tmp_path / "ws"), "label", "submit", "--backend", "mturk", "--dry-run"])
    assert result.exit_code == 1
    assert result.output.startswith("Error: imgnet.toml [mturk] reward must be a quoted USD amount")


def test_fees_are_20_percent_and_40_from_ten_assignments_at_least_a_cent():
    assert assignment_cost(Decimal("0.10"), 3) == (Decimal("0.10"), Decimal("0.02"))
    assert assignment_cost(Decimal("0.10"), 10) == (Decimal("0.10"), Decimal("0.04"))
    assert assignment_cost(Decimal("0.01"), 3) == (Decimal("0.01"), Decimal("0.01"))


def test_dry_run_prints_the_price_and_makes_no_call(ws, runner, monkeypatch):
    monkeypatch.setattr(mturk, "make_client", lambda live: pytest.fail("the dry run made an MTurk client"))
    result = runner.invoke(cli, ["-w", str(ws.root), "label", "submit", "--backend", "mturk", "--dry-run", "--votes",
                                 "3", "--images-per-task", "6", "--controls", "2", "--method", "majority", "--json"])
    assert result.exit_code == 0, result.output
    document = json.loads(result.output)
    assert document["price"] == {"tasks": 1, "assignments": 3, "reward_usd": "0.30", "fee_usd": "0.06",
                                 "total_usd": "0.36"}
    assert document["endpoint"] == "sandbox"
    assert tasks(ws) == []
    text = runner.invoke(cli, ["-w", str(ws.root), "label", "submit", "--backend", "mturk", "--dry-run", "--votes",
                               "10", "--images-per-task", "6", "--controls", "2", "--method", "majority"]).output
    assert "10 assignments: reward $1.00, MTurk fee $0.40, total $1.40" in text


def test_live_needs_a_cost_cap_said_on_the_command_line(ws, runner, monkeypatch):
    monkeypatch.setattr(mturk, "make_client", lambda live: pytest.fail("no client without --max-cost"))
    result = runner.invoke(cli, ["-w", str(ws.root), "label", "submit", "--backend", "mturk", "--live"])
    assert result.exit_code == 1
    assert result.output == "Error: the live marketplace costs money: give --max-cost USD together with --live\n"
    result = runner.invoke(cli, ["-w", str(ws.root), "label", "submit", "--backend", "local", "--max-cost", "5"])
    assert result.output == "Error: --live and --max-cost are for --backend mturk\n"


def test_without_s3_or_a_public_base_url_workers_could_not_see_the_images(tmp_path, monkeypatch):
    Workspace.init(tmp_path / "bare").close()
    workspace = Workspace.open(tmp_path / "bare")
    with workspace.session() as session:
        session.add(Category(id=1, wnid="n02084071", synset="dog.n.01", name="dog", lemmas=["dog"], gloss="a dog",
                             lexname="noun.animal", depth=3))
        session.add(Cluster(id=1, key="ab" * 32, representative="ab" * 32))
        session.flush()
        session.add(Image(sha256="ab" * 32, width=1, height=1, format="JPEG", bytes=1, blob_key="k", cluster_id=1))
        session.flush()
        session.add(Candidate(category_id=1, source="urls", url="https://e.org/a", status="ok", image_sha256="ab" * 32))
    with pytest.raises(BadInput, match="MTurk workers must be able to load the images: set public_base_url"):
        submitted(workspace)
    assert tasks(workspace) == []
    workspace.close()


# -- submit exactly once ------------------------------------------------------------------

def test_submit_makes_one_hit_per_task_on_the_sandbox_and_stores_its_id(ws, stub):
    expect_publish(stub, ws, [1], 2)
    plan, price = submitted(ws)
    assert (plan.tasks, plan.assignments, str(price.total_usd)) == (1, 2, "0.24")
    [task] = tasks(ws)
    assert (task.status, task.external_id, task.reward_cents, task.batch, task.live) == (
        "open", "3HITEXAMPLE0001", 10, "r1-mturk-sandbox", False)
    assert stub.made == [False]  # one client, for the sandbox
    again, _ = submitted(ws)  # nothing missing: no call at all
    assert again.tasks == 0


def test_cost_cap_counts_what_the_workspace_already_committed(ws, stub):
    with pytest.raises(mturk.CostCapExceeded, match=r"costs \$0.24.* over --max-cost \$0.20"):
        submitted(ws, max_cost=Decimal("0.20"))
    assert tasks(ws) == []
    expect_publish(stub, ws, [1], 2)
    submitted(ws, max_cost=Decimal("0.24"))
    with ws.session() as session:  # a new candidate: 2 more votes, 0.24 more
        session.add(Cluster(id=20, key="cd" * 32, representative="cd" * 32))
        session.flush()
        session.add(Image(sha256="cd" * 32, width=1, height=1, format="JPEG", bytes=1, blob_key="cd.jpg",
                          cluster_id=20))
        session.flush()
        session.add(Candidate(category_id=1, source="urls", url="https://e.org/new", status="ok",
                              image_sha256="cd" * 32))
    with pytest.raises(mturk.CostCapExceeded, match=r"\$0.24 committed it would reach \$0.48, over --max-cost \$0.40"):
        submitted(ws, max_cost=Decimal("0.40"))
    assert len(tasks(ws)) == 1


def test_account_balance_is_checked_before_any_hit(ws, stub):
    stub.add_response("get_account_balance", {"AvailableBalance": "0.10"})
    with pytest.raises(mturk.CostCapExceeded, match=r"balance \(\$0.10\) is below what this submit costs \(\$0.24\)"):
        submitted(ws)
    [task] = tasks(ws)  # made, not published: the next submit publishes it first
    assert (task.status, task.external_id) == ("new", None)


def test_crash_between_create_hit_and_storing_its_id_makes_no_second_hit(ws, stub, monkeypatch):
    [hit_id] = expect_publish(stub, ws, [1], 2)
    real_store = mturk.MTurkBackend._store_hit

    def crash(self, task_id, hit_id):
        raise KeyboardInterrupt("killed")

    monkeypatch.setattr(mturk.MTurkBackend, "_store_hit", crash)
    with pytest.raises(KeyboardInterrupt):
        submitted(ws)
    [task] = tasks(ws)
    token = mturk.MTurkBackend(ws).token(task.id)
    assert (task.status, task.external_id, task.publish_token) == ("new", None, token)

    monkeypatch.setattr(mturk.MTurkBackend, "_store_hit", real_store)
    stub.add_response("get_account_balance", {"AvailableBalance": "10000.00"})
    stub.add_response("list_hits", {"NumResults": 2, "NextToken": "page2",
                                    "HITs": [hit("3OTHERHIT", "someone-else", 1), hit("3OTHERHIT2", "", 1)]},
                      {"MaxResults": 100})
    stub.add_response("list_hits", {"NumResults": 1, "HITs": [hit(hit_id, token, 2)]},
                      {"MaxResults": 100, "NextToken": "page2"})
    plan, _ = submitted(ws)  # no create_hit queued: a second HIT would fail the Stubber
    [task] = tasks(ws)
    assert (task.status, task.external_id) == ("open", hit_id)
    assert plan.tasks == 0


def test_hit_already_exists_is_resolved_to_the_existing_hit(ws, stub, monkeypatch):
    stub.add_response("get_account_balance", {"AvailableBalance": "10000.00"})
    backend = mturk.MTurkBackend(ws)
    # a task as rounds makes it, whose create call went out carrying its token; the reply was lost
    with ws.session() as session:
        task = Task(category_id=1, round=1, batch="r1-mturk-sandbox", backend="mturk", status="new",
                    assignments_wanted=2, test=True)
        session.add(task)
        session.flush()
        for position, sha in enumerate(session.scalars(select(Candidate.image_sha256).order_by(Candidate.id))):
            session.add(TaskItem(task_id=task.id, position=position, image_sha256=sha, cluster_id=position + 1,
                                 kind="candidate"))
        task.publish_token, task.reward_cents = backend.token(task.id), 10
        task_id = task.id
    token = backend.token(task_id)
    stub.add_response("list_hits", {"NumResults": 0, "HITs": []}, {"MaxResults": 100})
    s = MTurkSettings(public_base_url="https://images.example.org/blobs")
    stub.add_response("create_hit_type", {"HITTypeId": HIT_TYPE}, {
        "AutoApprovalDelayInSeconds": 259200, "AssignmentDurationInSeconds": 600, "Reward": "0.10", "Title": s.title,
        "Keywords": s.keywords, "Description": s.description,
        "QualificationRequirements": s.qualification_requirements()})
    stub.add_client_error("create_hit_with_hit_type", service_error_code="RequestError",
                          service_message="The HIT with UniqueRequestToken already exists. (1767614400000)",
                          http_status_code=400, modeled_fields={"TurkErrorCode": "AWS.MechanicalTurk.HitAlreadyExists"},
                          expected_params={"HITTypeId": HIT_TYPE, "MaxAssignments": 2, "LifetimeInSeconds": 259200,
                                           "Question": ANY, "RequesterAnnotation": token,
                                           "UniqueRequestToken": token})
    stub.add_response("list_hits", {"NumResults": 1, "HITs": [hit("3EXISTINGHIT", token, 2)]}, {"MaxResults": 100})
    submitted(ws)
    [task] = tasks(ws)
    assert (task.status, task.external_id) == ("open", "3EXISTINGHIT")


# -- collect and review -------------------------------------------------------------------

def published(ws, stub, votes: int = 2) -> tuple[int, str]:
    """One open HIT with the 4 candidates and 2 controls."""
    [hit_id] = expect_publish(stub, ws, [1], votes)
    submitted(ws)
    return 1, hit_id


def test_collect_pages_assignments_retries_a_throttled_page_and_approves_once(ws, stub):
    task_id, hit_id = published(ws, stub)
    good = positions(ws, task_id, candidates=True, controls="right")
    stub.add_response("list_assignments_for_hit", {"NextToken": "p2", "NumResults": 1, "Assignments": [
        assignment("3ASSIGNMENT0001", "AWORKER1", hit_id, submission(task_id, good))]},
        {"HITId": hit_id, "MaxResults": 100})
    stub.add_client_error("list_assignments_for_hit", service_error_code="ThrottlingException",
                          service_message="Rate exceeded", http_status_code=400,
                          expected_params={"HITId": hit_id, "MaxResults": 100, "NextToken": "p2"})
    stub.add_response("list_assignments_for_hit", {"NumResults": 1, "Assignments": [
        assignment("3ASSIGNMENT0002", "AWORKER2", hit_id, submission(task_id, good))]},
        {"HITId": hit_id, "MaxResults": 100, "NextToken": "p2"})
    stub.add_response("approve_assignment", {}, {"AssignmentId": "3ASSIGNMENT0001"})
    stub.add_response("approve_assignment", {}, {"AssignmentId": "3ASSIGNMENT0002"})
    result = rounds.collect(ws, TESTING)
    assert result["assignments"] == 2 and result["accepted"] == 4
    assert ("slept", 0.5) in stub.made
    with ws.session() as session:
        rows = session.execute(select(Assignment.external_id, Assignment.status).order_by(Assignment.id)).all()
        assert rows == [("3ASSIGNMENT0001", "approved"), ("3ASSIGNMENT0002", "approved")]
        assert session.scalar(select(Task.status)) == "done"
        assert {w.external_id for w in session.scalars(select(Worker))} == {"AWORKER1", "AWORKER2"}
    assert rounds.collect(ws, SETTINGS)["assignments"] == 0  # the task is done: no call, nothing twice


def test_a_crash_after_storing_finishes_the_review_without_paying_twice(ws, stub, monkeypatch):
    task_id, hit_id = published(ws, stub)
    good = submission(task_id, positions(ws, task_id, candidates=True, controls="right"))
    listing = {"NumResults": 2, "Assignments": [assignment("3ASSIGNMENT0001", "AWORKER1", hit_id, good),
                                                assignment("3ASSIGNMENT0002", "AWORKER2", hit_id, good)]}
    stub.add_response("list_assignments_for_hit", listing, {"HITId": hit_id, "MaxResults": 100})
    stub.add_response("approve_assignment", {}, {"AssignmentId": "3ASSIGNMENT0001"})
    from imgnet_build.labeling import mturk_review

    real = mturk_review._review
    calls = []

    def killed_on_second(backend, assignment_id, listed):
        calls.append(assignment_id)
        if len(calls) == 2:
            raise KeyboardInterrupt("killed")
        real(backend, assignment_id, listed)

    monkeypatch.setattr(mturk_review, "_review", killed_on_second)
    with pytest.raises(KeyboardInterrupt):
        rounds.collect(ws, SETTINGS)
    monkeypatch.setattr(mturk_review, "_review", real)
    listing["Assignments"][0]["AssignmentStatus"] = "Approved"
    stub.add_response("list_assignments_for_hit", listing, {"HITId": hit_id, "MaxResults": 100})
    stub.add_response("approve_assignment", {}, {"AssignmentId": "3ASSIGNMENT0002"})
    assert rounds.collect(ws, SETTINGS)["assignments"] == 0  # both were stored by the first run
    with ws.session() as session:
        assert session.scalar(select(Vote.id).where(Vote.control.is_(False)).limit(1)) is not None
        assert [s for (s,) in session.execute(select(Assignment.status).order_by(Assignment.id))] == ["approved"] * 2


HOSTILE = ('<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;">'
           '<!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;">]>' + QFA.format(
               "<Answer><QuestionIdentifier>submission</QuestionIdentifier><FreeText>&lol3;</FreeText></Answer>"))


@pytest.mark.parametrize("answer, reason", [
    ("", "the answer is empty"),
    ("<QuestionFormAnswers><Answer>", "the answer is not XML"),
    (HOSTILE, "the answer XML is refused (EntitiesForbidden)"),
    (answer_xml({"other": "x"}), "the answer has no submission field"),
    (answer_xml({"submission": "{not json"}), "the submission field is not JSON"),
    (answer_xml({"submission": json.dumps({"task": 99, "selected": []})}), "the submission answers task 99"),
    (answer_xml({"submission": json.dumps({"task": 1, "selected": [0, 77]})}),
     "the submission selects images that are not in the task (positions [77])"),
])
def test_unreadable_answers_store_nothing_and_reject_no_one(ws, stub, answer, reason):
    _task_id, hit_id = published(ws, stub)
    stub.add_response("list_assignments_for_hit", {"NumResults": 1, "Assignments": [
        assignment("3ASSIGNMENTBAD1", "AWORKER9", hit_id, answer)]}, {"HITId": hit_id, "MaxResults": 100})
    stub.add_response("get_hit", {"HIT": hit(hit_id, "t", 2, available=1)}, {"HITId": hit_id})
    assert rounds.collect(ws, SETTINGS)["assignments"] == 0  # no approve, no reject queued: none is made
    with ws.session() as session:
        row = session.scalar(select(Assignment))
        assert row.status == "abandoned" and reason in row.feedback
        assert session.scalar(select(Vote.id).limit(1)) is None


def test_parse_answer_reads_mturk_question_form_answers():
    xml = answer_xml({"submission": json.dumps({"task": 3, "selected": [2, 0]})})
    assert parse_answer(xml, 3, {0: 10, 1: 11, 2: 12}) == {10, 12}
    with pytest.raises(AnswerInvalid, match="distinct"):
        parse_answer(answer_xml({"submission": json.dumps({"task": 3, "selected": [1, 1]})}), 3, {1: 11})


def test_worker_below_the_control_threshold_is_rejected_with_feedback_and_discounted(ws, stub):
    task_id, hit_id = published(ws, stub)
    good = submission(task_id, positions(ws, task_id, candidates=True, controls="right"))
    bad = submission(task_id, positions(ws, task_id, candidates=False, controls="wrong"))
    stub.add_response("list_assignments_for_hit", {"NumResults": 2, "Assignments": [
        assignment("3ASSIGNMENT0001", "AGOOD", hit_id, good), assignment("3ASSIGNMENT0002", "ABAD", hit_id, bad)]},
        {"HITId": hit_id, "MaxResults": 100})
    stub.add_response("approve_assignment", {}, {"AssignmentId": "3ASSIGNMENT0001"})
    feedback = ("0 of the 2 images with a known answer in this task were answered correctly (0%); we approve work "
                "from 50% up. Please read the definition and select every image that shows the object.")
    stub.add_response("reject_assignment", {}, {"AssignmentId": "3ASSIGNMENT0002", "RequesterFeedback": feedback})
    result = rounds.collect(ws, TESTING)
    assert result["accepted"] == 0 and result["undecided"] == 4  # the rejected no's do not count
    with ws.session() as session:
        rejected = session.scalar(select(Assignment).where(Assignment.external_id == "3ASSIGNMENT0002"))
        assert (rejected.status, rejected.feedback) == ("rejected", feedback)
        assert rounds._counted_votes(session, 1, include_test=True) == {1: 1, 2: 1, 3: 1, 4: 1}


def test_undecided_pairs_extend_the_hit_with_additional_assignments(ws, stub):
    task_id, hit_id = published(ws, stub)
    yes = submission(task_id, positions(ws, task_id, candidates=True, controls="right"))
    no = submission(task_id, positions(ws, task_id, candidates=False, controls="right"))
    stub.add_response("list_assignments_for_hit", {"NumResults": 2, "Assignments": [
        assignment("3ASSIGNMENT0001", "AYES", hit_id, yes), assignment("3ASSIGNMENT0002", "ANO", hit_id, no)]},
        {"HITId": hit_id, "MaxResults": 100})
    stub.add_response("approve_assignment", {}, {"AssignmentId": "3ASSIGNMENT0001"})
    stub.add_response("approve_assignment", {}, {"AssignmentId": "3ASSIGNMENT0002"})
    assert rounds.collect(ws, TESTING)["undecided"] == 4  # 1 yes, 1 no each
    token = mturk.MTurkBackend(ws).token(task_id) + "-a3"
    stub.add_response("get_account_balance", {"AvailableBalance": "10000.00"})
    stub.add_response("get_hit", {"HIT": hit(hit_id, "t", 2, status="Reviewable", available=0)}, {"HITId": hit_id})
    stub.add_response("create_additional_assignments_for_hit", {},
                      {"HITId": hit_id, "NumberOfAdditionalAssignments": 1, "UniqueRequestToken": token})
    plan, price = submitted(ws)
    assert (plan.votes, str(price.total_usd)) == (4, "0.12")
    [task] = tasks(ws)  # no second task, no second HIT
    assert (task.id, task.assignments_wanted, task.status, task.external_id) == (task_id, 3, "open", hit_id)


def test_label_status_shows_hits_by_state_pending_review_spent_and_committed(ws, stub, runner):
    task_id, _hit_id = published(ws, stub)
    with ws.session() as session:  # a stored assignment whose review has not happened yet
        session.add(Worker(id=50, backend="mturk", external_id="AWORKER1"))
        session.flush()
        session.add(Assignment(task_id=task_id, worker_id=50, external_id="3A1", status="submitted"))
    result = runner.invoke(cli, ["-w", str(ws.root), "label", "status", "--json"])
    assert json.loads(result.output)["mturk"] == {"sandbox": {"hits": {"open": 1}, "pending_review": 1,
                                                              "spent_usd": "0.12", "committed_usd": "0.12"}}
    text = runner.invoke(cli, ["-w", str(ws.root), "label", "status"]).output
    assert "mturk sandbox: HITs open 1; 1 assignments pending review; spent $0.12, committed $0.12" in text


# -- the HTMLQuestion in a real browser -----------------------------------------------------

class _StandIn:
    """A loopback stand-in for MTurk: serves the question's HTML as MTurk frames it (with
    ?assignmentId=…), an image, and records what the form posts to /mturk/externalSubmit."""

    def __init__(self) -> None:
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
        from urllib.parse import parse_qs

        from loopback import jpeg_bytes

        posts = self.posts = []
        image = jpeg_bytes(64, 48)
        stand_in = self
        self.html = ""

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                body, kind = (image, "image/jpeg") if self.path.startswith("/img") else (stand_in.html.encode(), "text/html")
                self.send_response(200)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_POST(self) -> None:
                length = int(self.headers["Content-Length"])
                posts.append((self.path, parse_qs(self.rfile.read(length).decode(), keep_blank_values=True)))
                self.send_response(200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_html_question_renders_in_chromium_and_posts_assignment_id_and_submission(ws):
    playwright = playwright_or_skip()
    with ws.session() as session:  # a task of 6 images, as rounds makes it
        session.add(Task(id=7, category_id=1, round=1, batch="r1-mturk-sandbox", backend="mturk", status="new",
                         assignments_wanted=3))
        session.flush()
        for position, sha in enumerate(session.scalars(select(Image.sha256).order_by(Image.sha256).limit(6))):
            session.add(TaskItem(task_id=7, position=position, image_sha256=sha, kind="candidate"))
    with ws.session() as session:
        view = load_task_view(session, 7)
    stand_in = _StandIn()
    xml = mturk.question_xml(view, stand_in.base + "/mturk/externalSubmit",
                             lambda item: f"{stand_in.base}/img/{item.position}.jpg")
    assert len(xml.encode()) < mturk.QUESTION_LIMIT
    assert xml.startswith('<HTMLQuestion xmlns="http://mechanicalturk.amazonaws.com/')
    stand_in.html = xml.split("<![CDATA[", 1)[1].rsplit("]]></HTMLContent>", 1)[0]
    try:
        with playwright.sync_playwright() as driver:
            browser = driver.chromium.launch(executable_path="/usr/bin/chromium", args=[
                "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                "--no-first-run"])
            try:
                page = browser.new_page()
                errors = []
                page.on("pageerror", lambda error: errors.append(str(error)))
                page.goto(stand_in.base + "/task")  # a preview: no assignment yet
                assert page.locator("#submit").is_disabled()
                page.goto(stand_in.base + "/task?assignmentId=3ASSIGNMENTXYZ&hitId=3HIT&workerId=AW1"
                          "&turkSubmitTo=" + stand_in.base)
                assert page.evaluate("() => Array.from(document.images).every(i => i.complete && i.naturalWidth)")
                page.locator('.item[data-position="0"]').click()
                page.locator('.item[data-position="4"]').click()
                with page.expect_response(stand_in.base + "/mturk/externalSubmit"):  # recorded before it answers
                    page.locator("#submit").click()
                assert errors == []
            finally:
                browser.close()
    finally:
        stand_in.close()
    [(path, fields)] = stand_in.posts
    assert path == "/mturk/externalSubmit"
    assert fields["assignmentId"] == ["3ASSIGNMENTXYZ"]
    assert json.loads(fields["submission"][0]) == {"task": 7, "selected": [0, 4]}
    # MTurk hands every field but assignmentId back as the Answer
    answer = answer_xml({name: values[0] for name, values in fields.items() if name != "assignmentId"})
    by_position = {item.position: item.id for item in items(ws, 7)}
    assert parse_answer(answer, 7, by_position) == {by_position[0], by_position[4]}
