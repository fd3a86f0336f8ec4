"""Collecting and reviewing Mechanical Turk assignments (the `collect` of the mturk backend).

Per open HIT: page `list_assignments_for_hit`, read each Answer (QuestionFormAnswers XML,
parsed with defusedxml: no DTDs, no entities), check it names only positions of the task,
store it once through `answers.store_answers`, then approve it or reject it with written
feedback by the controls inside it. Each assignment is stored in its own transaction and
reviewed after it is stored; a rerun finds it stored and only finishes the review (MTurk's
own status says whether the approval already happened), so nothing is paid twice.
"""

from __future__ import annotations

import datetime as dt
import json
from xml.etree.ElementTree import ParseError

from sqlalchemy import case, func, select

from imgnet_build.errors import ItemError
from imgnet_build.labeling.answers import add_workers, store_answers
from imgnet_build.labeling.mturk import MTurkError, call
from imgnet_build.store import Assignment, Task, TaskItem, Vote, Worker

__all__ = ["parse_answer", "AnswerInvalid", "collect_hits"]

MAX_ANSWER_BYTES = 256 * 1024
WORK_DONE = ("submitted", "approved", "rejected", "abandoned")


class AnswerInvalid(ItemError):
    "An assignment's Answer cannot be read as a submission for its task"


def parse_answer(answer: str | None, task_id: int, positions: dict[int, int]) -> set[int]:
    """The task item ids a worker selected, from a QuestionFormAnswers document whose
    `submission` field holds {"task": id, "selected": [positions]}. AnswerInvalid otherwise."""
    import defusedxml.ElementTree as SafeTree
    from defusedxml import DefusedXmlException

    if not answer or not answer.strip():
        raise AnswerInvalid("the answer is empty")
    if len(answer.encode("utf-8")) > MAX_ANSWER_BYTES:
        raise AnswerInvalid(f"the answer is over {MAX_ANSWER_BYTES} bytes")
    try:
        root = SafeTree.fromstring(answer)
    except DefusedXmlException as exc:
        raise AnswerInvalid(f"the answer XML is refused ({type(exc).__name__})") from None
    except ParseError as exc:
        raise AnswerInvalid(f"the answer is not XML ({exc})") from None
    fields = {}
    for element in root:
        if _local(element.tag) != "Answer":
            continue
        parts = {_local(child.tag): (child.text or "") for child in element}
        fields[parts.get("QuestionIdentifier", "").strip()] = parts.get("FreeText", "")
    if "submission" not in fields:
        raise AnswerInvalid("the answer has no submission field")
    try:
        submission = json.loads(fields["submission"])
    except ValueError:
        raise AnswerInvalid("the submission field is not JSON") from None
    except RecursionError:
        raise AnswerInvalid("the submission field is JSON nested too deeply") from None
    if not isinstance(submission, dict) or set(submission) != {"task", "selected"}:
        raise AnswerInvalid("the submission must hold exactly task and selected")
    if submission["task"] != task_id:
        raise AnswerInvalid(f"the submission answers task {submission['task']!r}, not task {task_id}")
    selected = submission["selected"]
    if not isinstance(selected, list) or not all(isinstance(p, int) and not isinstance(p, bool) for p in selected) \
            or len(set(selected)) != len(selected):
        raise AnswerInvalid("selected must be a list of distinct image positions")
    unknown = sorted(set(selected) - set(positions))
    if unknown:
        raise AnswerInvalid(f"the submission selects images that are not in the task (positions {unknown[:10]})")
    return {positions[p] for p in selected}


def _local(tag: object) -> str:
    return tag.rsplit("}", 1)[-1] if isinstance(tag, str) else ""


def collect_hits(backend) -> int:
    """Store and review the assignments of the backend's open HITs; returns assignments stored."""
    workspace = backend.workspace
    with workspace.session() as session:
        tasks = session.execute(select(Task.id, Task.external_id, Task.assignments_wanted).where(
            Task.backend == backend.name, Task.status == "open", Task.live.is_(backend.live),
            Task.external_id.is_not(None)).order_by(Task.id)).all()
    stored = 0
    for task_id, hit_id, wanted in tasks:
        for assignment in _assignments(backend.client, hit_id):
            stored += _take(backend, task_id, assignment)
        _expire_if_exhausted(backend, task_id, hit_id, wanted)
    return stored


def _assignments(client, hit_id: str) -> list[dict]:
    found, params = [], {"HITId": hit_id, "MaxResults": 100}
    while True:
        page = call(client, "list_assignments_for_hit", **params)
        found += page.get("Assignments", [])
        if not page.get("NextToken") or not page.get("Assignments"):
            return found
        params["NextToken"] = page["NextToken"]


def _take(backend, task_id: int, mturk: dict) -> int:
    """Store one assignment (once) and review it; 1 when its votes were stored now."""
    stored = 0
    with backend.workspace.session() as session:
        add_workers(session, backend.name, [(mturk["WorkerId"], mturk["WorkerId"])], simulated=False)
        worker_id = session.scalar(select(Worker.id).where(Worker.backend == backend.name,
                                                           Worker.external_id == mturk["WorkerId"]))
        row = session.scalar(select(Assignment).where(Assignment.task_id == task_id, Assignment.worker_id == worker_id))
        if row is None:
            row = Assignment(task_id=task_id, worker_id=worker_id, external_id=mturk["AssignmentId"], status="given",
                             simulated=False)
            session.add(row)
            session.flush()
            positions = dict(session.execute(select(TaskItem.position, TaskItem.id)
                                             .where(TaskItem.task_id == task_id)).all())
            try:
                selected = parse_answer(mturk.get("Answer"), task_id, positions)
            except Exception as exc:  # one bad answer is recorded with its reason; the collect goes on
                reason = str(exc) if isinstance(exc, AnswerInvalid) else f"{type(exc).__name__}: {exc}"[:500]
                row.status, row.feedback = "abandoned", f"unreadable answer, left to auto-approval: {reason}"
            else:
                stored = int(store_answers(session, row, selected))
        assignment_id, status = row.id, row.status
    if status == "submitted":
        _review(backend, assignment_id, mturk)
    return stored


def _review(backend, assignment_id: int, mturk: dict) -> None:
    now = dt.datetime.now(dt.UTC)
    decided = {"Approved": "approved", "Rejected": "rejected"}.get(mturk.get("AssignmentStatus", ""))
    feedback = None
    if decided is None:
        decided, feedback = _verdict(backend, assignment_id)
        operation = "reject_assignment" if decided == "rejected" else "approve_assignment"
        params = {"AssignmentId": mturk["AssignmentId"]}
        if feedback:
            params["RequesterFeedback"] = feedback
        try:
            call(backend.client, operation, **params)
        except MTurkError:  # reviewed meanwhile (a concurrent collect, the auto-approval): take MTurk's word
            current = call(backend.client, "get_assignment", AssignmentId=mturk["AssignmentId"])["Assignment"]
            decided = {"Approved": "approved", "Rejected": "rejected"}.get(current["AssignmentStatus"])
            if decided is None:
                raise
            feedback = None
    with backend.workspace.session() as session:
        row = session.get(Assignment, assignment_id)
        row.status, row.reviewed_at = decided, now
        if feedback:
            row.feedback = feedback


def _verdict(backend, assignment_id: int) -> tuple[str, str | None]:
    """("approved", None), or ("rejected", feedback) when the assignment's own controls show
    it below the threshold; never a rejection without control evidence."""
    settings = backend.settings
    with backend.workspace.session() as session:
        right, total = session.execute(
            select(func.coalesce(func.sum(case((Vote.answer == TaskItem.expected, 1), else_=0)), 0), func.count())
            .join(TaskItem, TaskItem.id == Vote.task_item_id)
            .where(Vote.assignment_id == assignment_id, Vote.control.is_(True), TaskItem.expected.is_not(None))).one()
    if total >= settings.reject_min_controls and right / total < settings.reject_below:
        return "rejected", (f"{right} of the {total} images with a known answer in this task were answered "
                            f"correctly ({right / total:.0%}); we approve work from {settings.reject_below:.0%} up. "
                            f"Please read the definition and select every image that shows the object.")
    return "approved", None


def _expire_if_exhausted(backend, task_id: int, hit_id: str, wanted: int) -> None:
    """A HIT that can bring no more work (expired, or every slot used) closes its task
    even when some answers were unreadable, so that the next submit asks again."""
    with backend.workspace.session() as session:
        done = session.scalar(select(func.count()).where(Assignment.task_id == task_id,
                                                         Assignment.status.in_(WORK_DONE)))
        counted = session.scalar(select(func.count()).where(Assignment.task_id == task_id,
                                                            Assignment.status.in_(WORK_DONE[:3])))
    if counted >= wanted:
        return  # rounds closes it as done
    hit = call(backend.client, "get_hit", HITId=hit_id)["HIT"]
    expired = hit.get("Expiration") and hit["Expiration"] <= dt.datetime.now(dt.UTC)
    left = hit.get("NumberOfAssignmentsAvailable", 0) + hit.get("NumberOfAssignmentsPending", 0)
    if (expired and hit.get("NumberOfAssignmentsPending", 0) == 0) or (done >= wanted and left == 0):
        with backend.workspace.session() as session:
            session.get(Task, task_id).status = "expired"
