"""Amazon Mechanical Turk: tasks become HITs, assignments come back as votes.

    imgnet label submit --backend mturk --dry-run             # plan and price, no call
    imgnet label submit --backend mturk                       # the sandbox
    imgnet label submit --backend mturk --live --max-cost 25  # real money, capped
    imgnet label collect [--live]                             # store, approve or reject
    imgnet label expire [--batch B] [--live]

Safety: the sandbox is the default; the live endpoint is used only with `live=True`, and a
live submit needs a cost cap, which counts what the workspace already spent and committed.
Credentials come from boto3's usual chain and are never stored in the workspace.

Exactly once: each HIT's UniqueRequestToken is derived from the task and written to the
task (`publish_token`) before `create_hit_with_hit_type` is called; the HIT id is stored
(`external_id`) the moment the call returns. A rerun after a crash in between looks the HIT up by its
RequesterAnnotation (the token) before creating anything, and a HitAlreadyExists answer
is resolved the same way.

More votes: when a new task asks about exactly the candidates of an existing HIT of the
same HIT type, that HIT gets `create_additional_assignments_for_hit` instead of a new
HIT (MTurk keeps a worker from taking a HIT twice, so the extra votes come from new
workers); the new task is dropped. Otherwise a new HIT is made. MTurk refuses to take a
HIT from under 10 assignments to 10 or more, so such a task also gets a new HIT.

Review (`collect`): an assignment whose own controls are answered worse than
`reject_below` (with at least `reject_min_controls` controls) is rejected with written
feedback and its votes stop counting; every other is approved. No control evidence, no
rejection. An answer that cannot be read is kept as `abandoned` with the reason and left
to MTurk's auto-approval.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import time
from decimal import Decimal
from typing import TYPE_CHECKING, cast

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from imgnet_build.errors import BadInput, ImgnetError, MissingCredentials
from imgnet_build.labeling.backends import register
from imgnet_build.labeling.mturk_settings import PRESIGNED_URL_MAX, MTurkSettings, Price, price
from imgnet_build.stage import Progress
from imgnet_build.store import Assignment, Image, Task, TaskItem
from imgnet_build.workspace import Workspace

if TYPE_CHECKING:
    from imgnet_build.blobs import S3BlobStore
    from imgnet_build.labeling.rounds import LabelSettings, Plan

__all__ = ["MTurkBackend", "MTurkError", "CostCapExceeded", "submit", "expire", "workspace_cost", "question_xml",
           "make_client", "SANDBOX_ENDPOINT", "LIVE_ENDPOINT", "SANDBOX_SUBMIT", "LIVE_SUBMIT"]

SANDBOX_ENDPOINT = "https://mturk-requester-sandbox.us-east-1.amazonaws.com"
LIVE_ENDPOINT = "https://mturk-requester.us-east-1.amazonaws.com"
SANDBOX_SUBMIT = "https://workersandbox.mturk.com/mturk/externalSubmit"
LIVE_SUBMIT = "https://www.mturk.com/mturk/externalSubmit"
QUESTION_LIMIT = 65_535
RETRYABLE = {"ThrottlingException", "ServiceUnavailable", "ServiceUnavailableException", "TooManyRequestsException"}
RETRIES = 6
HTML_QUESTION = ('<HTMLQuestion xmlns="http://mechanicalturk.amazonaws.com/AWSMechanicalTurkDataSchemas/2011-11-11/'
                 'HTMLQuestion.xsd"><HTMLContent><![CDATA[{html}]]></HTMLContent><FrameHeight>0</FrameHeight>'
                 '</HTMLQuestion>')
# MTurk opens the page with ?assignmentId=…; in a preview it is ASSIGNMENT_ID_NOT_AVAILABLE.
ASSIGNMENT_SCRIPT = """<script>
(function () {
  var id = new URLSearchParams(window.location.search).get("assignmentId") || "ASSIGNMENT_ID_NOT_AVAILABLE";
  document.querySelector('input[name="assignmentId"]').value = id;
  if (id === "ASSIGNMENT_ID_NOT_AVAILABLE") {
    var button = document.getElementById("submit");
    button.disabled = true;
    button.textContent = "Accept the HIT to answer";
  }
})();
</script>
"""
_sleep = time.sleep  # tests replace it


class MTurkError(ImgnetError):
    "Mechanical Turk refused a request"

    def __init__(self, message: str, code: str = "", turk_code: str = "") -> None:
        super().__init__(message)
        self.code, self.turk_code = code, turk_code

    @property
    def hit_exists(self) -> bool:
        return "HitAlreadyExists" in self.turk_code or "HitAlreadyExists" in str(self)


class CostCapExceeded(BadInput):
    "A submit would take the workspace's MTurk spending over --max-cost"


def make_client(live: bool):
    """A boto3 `mturk` client for the sandbox, or for the live marketplace when `live`."""
    from imgnet_build.blobs import import_boto3

    boto3 = import_boto3("the mturk backend", "mturk")
    from botocore.config import Config

    return boto3.client("mturk", region_name="us-east-1", endpoint_url=LIVE_ENDPOINT if live else SANDBOX_ENDPOINT,
                        config=Config(retries={"max_attempts": 1, "mode": "standard"}))


def call(client, operation: str, **params) -> dict:
    """One MTurk request; throttling and unavailability are retried with exponential backoff."""
    from botocore.exceptions import ClientError, NoCredentialsError

    for attempt in range(RETRIES):
        try:
            return getattr(client, operation)(**params)
        except NoCredentialsError:
            raise MissingCredentials("no AWS credentials for Mechanical Turk: set AWS_PROFILE, or "
                                     "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (never stored in the workspace)") from None
        except ClientError as exc:
            error = exc.response.get("Error", {})
            code = error.get("Code", "")
            if code in RETRYABLE and attempt < RETRIES - 1:
                _sleep(min(30.0, 0.5 * 2 ** attempt))
                continue
            raise MTurkError(f"MTurk {operation}: {code}: {error.get('Message', '')}".rstrip(": "), code,
                             str(exc.response.get("TurkErrorCode", ""))) from exc
    raise AssertionError("unreachable")


def _credentials_configured() -> bool:
    """Whether boto3's chain has somewhere to look (environment, profile, credentials file), without asking."""
    import os
    from pathlib import Path

    env = os.environ
    if (env.get("AWS_ACCESS_KEY_ID") and env.get("AWS_SECRET_ACCESS_KEY")) or env.get("AWS_PROFILE") \
            or env.get("AWS_WEB_IDENTITY_TOKEN_FILE") or env.get("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI"):
        return True
    shared = env.get("AWS_SHARED_CREDENTIALS_FILE") or str(Path.home() / ".aws" / "credentials")
    return Path(shared).is_file()


def workspace_cost(session: Session, live: bool, exclude: tuple[int, ...] = (), *,
                   reward: Decimal = MTurkSettings().reward_usd, only: tuple[int, ...] | None = None) -> dict[str, Price]:
    """{"spent": work submitted or approved, "committed": assignments HITs may still bring}
    on one endpoint, rewards and fees included; tasks in `exclude` are left out (with `only`,
    every other task is), tasks not yet published are priced at `reward`."""
    used = (select(Assignment.task_id, func.count().label("used"),
                   func.sum(func.cast(Assignment.status.in_(("submitted", "approved")), _int())).label("paid"))
            .where(Assignment.status != "given").group_by(Assignment.task_id).subquery())
    rows = session.execute(select(Task.id, Task.status, Task.reward_cents, Task.assignments_wanted,
                                  func.coalesce(used.c.used, 0), func.coalesce(used.c.paid, 0))
                           .outerjoin(used, used.c.task_id == Task.id)
                           .where(Task.backend == MTurkBackend.name, Task.live.is_(live)))
    spent, committed = Price(), Price()
    for task_id, status, cents, wanted, used_count, paid in rows:
        if task_id in exclude or (only is not None and task_id not in only):
            continue
        task_reward = reward if cents is None else Decimal(cents) / 100
        spent += price(task_reward, wanted, int(paid), tasks=1)
        if status in ("new", "open"):
            committed += price(task_reward, wanted, max(0, wanted - int(used_count)), tasks=1)
    return {"spent": spent, "committed": committed}


def _int():
    from sqlalchemy import Integer

    return Integer


@dataclasses.dataclass
class _Work:
    """What publishing one task takes: a new HIT, or more assignments on an existing one."""

    task_id: int
    wanted: int
    token: str
    question: str | None = None
    pending: bool = False
    extend_task_id: int | None = None
    extend_hit: str | None = None
    extend_size: int = 0  # the HIT's assignments before the extension


class MTurkBackend:
    """Tasks as HITs on Mechanical Turk (the sandbox unless `live`)."""

    name = "mturk"
    simulated = False
    answers_itself = False
    costs_money = True
    publish_in_transaction = False  # HITs are made after the tasks are committed, one by one

    def __init__(self, workspace: Workspace, options: dict | None = None) -> None:
        options = options or {}
        self.workspace = workspace
        self.settings: MTurkSettings = getattr(workspace.settings, "mturk", None) or MTurkSettings()
        self.live = bool(options.get("live"))
        self.max_cost = None if options.get("max_cost") is None else Decimal(str(options["max_cost"]))
        self.dry_run = bool(options.get("dry_run"))  # pricing only: what is not ready yet is listed, not refused
        self._client = None
        self._hit_type: str | None = None

    @classmethod
    def spend(cls, session: Session, workspace: Workspace) -> list:
        """Per marketplace with tasks: the live one in real money, the sandbox in its free test money."""
        from imgnet_build.labeling.backends import Spend

        reward = (getattr(workspace.settings, "mturk", None) or MTurkSettings()).reward_usd
        spends = []
        endpoints = set(session.scalars(select(Task.live).where(Task.backend == cls.name).distinct()))
        for live in (True, False):
            if live not in endpoints:
                continue
            cost = workspace_cost(session, live, reward=reward)
            spent = cost["spent"]
            spends.append(Spend("mturk live" if live else "mturk sandbox", paid=live, tasks=spent.tasks,
                                assignments=spent.assignments, reward_usd=spent.reward_usd, fee_usd=spent.fee_usd,
                                committed_usd=cost["committed"].total_usd))
        return spends

    @property
    def test(self) -> bool:
        """Sandbox answers are a test of the task, not evidence."""
        return not self.live

    def reserve(self, session: Session, tasks: list) -> None:
        """Refuse (CostCapExceeded) tasks that would take spending past --max-cost. Runs in the
        transaction that made them (flushed, not committed), under the labeling lock: the tasks
        themselves are the reservation, so concurrent submits share one cap."""
        if self.max_cost is None or not tasks:
            return
        cost = workspace_cost(session, self.live, reward=self.settings.reward_usd)
        total = cost["spent"].total_usd + cost["committed"].total_usd
        if total > self.max_cost:
            mine = workspace_cost(session, self.live, reward=self.settings.reward_usd,
                                  only=tuple(task.id for task in tasks))["committed"].total_usd
            raise CostCapExceeded(f"these tasks cost ${mine}; with what is already spent and committed the workspace "
                                  f"would reach ${total}, over --max-cost ${self.max_cost}; raise the cap or submit "
                                  f"fewer tasks (--category)")

    @property
    def client(self):
        if self._client is None:
            self._client = make_client(self.live)
        return self._client

    @property
    def submit_url(self) -> str:
        return LIVE_SUBMIT if self.live else SANDBOX_SUBMIT

    def batch_suffix(self) -> str:
        return "-mturk-live" if self.live else "-mturk-sandbox"

    def task_columns(self) -> dict:
        return {"live": self.live}

    def token(self, task_id: int) -> str:
        digest = hashlib.sha256(f"{self.workspace.root.resolve()}|{self.workspace.database_url}".encode()).hexdigest()
        return f"imgnet-{digest[:16]}-{task_id}"

    def check_pairs(self, session: Session, pairs: list[tuple[int, int]]) -> None:
        if not self.dry_run:
            self._check_ready()

    def needs(self) -> list[str]:
        """What a real submit still needs that this workspace and command line lack (no network call)."""
        missing = []
        if self.live and self.max_cost is None:
            missing.append("--max-cost USD together with --live")
        if self.settings.public_base_url is None and not hasattr(self.workspace.blob_store, "bucket"):
            missing.append("public_base_url in the [mturk] table of imgnet.toml (a https:// folder that mirrors the "
                           "blob store), or an s3:// blob store")
        elif self.settings.public_base_url is None and \
                self.settings.lifetime + self.settings.assignment_duration > PRESIGNED_URL_MAX:
            missing.append("[mturk] lifetime + assignment_duration of at most 7 days (presigned S3 URLs), or "
                           "public_base_url")
        if not _credentials_configured():
            missing.append("AWS credentials: AWS_PROFILE, or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY")
        return missing

    def _check_ready(self) -> None:
        if self.live and self.max_cost is None:
            raise BadInput("the live marketplace costs money: give --max-cost USD together with --live")
        store = self.workspace.blob_store
        if self.settings.public_base_url is None and not hasattr(store, "bucket"):
            raise BadInput("MTurk workers must be able to load the images: set public_base_url in the [mturk] "
                           "table of imgnet.toml (a https:// folder that mirrors the blob store), or keep the "
                           "images in an s3:// blob store (presigned URLs)")
        if self.settings.public_base_url is None and \
                self.settings.lifetime + self.settings.assignment_duration > PRESIGNED_URL_MAX:
            raise BadInput("presigned S3 URLs live at most 7 days: lower [mturk] lifetime + assignment_duration, "
                           "or set public_base_url")

    # -- publish -------------------------------------------------------------------------

    def publish(self, session: Session, tasks: list[Task]) -> None:
        """Make a HIT (or extend one) per task; each HIT id is committed as soon as it exists.
        The tasks must be committed already (rounds.submit publishes in a fresh session)."""
        if not tasks:
            return
        self._check_ready()
        ids = tuple(task.id for task in tasks)
        with self.workspace.session() as own:
            prepared = [self._prepare(own, task_id) for task_id in ids]
            work = [item for item in prepared if item is not None]
            cost = sum((self._price(item) for item in work), Price())
            self._check_cap(own, cost, exclude=ids)
        if not work:
            return
        balance = Decimal(call(self.client, "get_account_balance")["AvailableBalance"])
        if balance < cost.total_usd:
            raise CostCapExceeded(f"the MTurk account balance (${balance}) is below what this submit costs "
                                  f"(${cost.total_usd}); add funds or submit fewer tasks")
        for item in work:
            if item.extend_hit:
                self._extend(item)
            else:
                self._create(item)

    def _price(self, item: _Work) -> Price:
        size = item.extend_size + item.wanted if item.extend_hit else item.wanted
        return price(self.settings.reward_usd, size, item.wanted, tasks=0 if item.extend_hit else 1)

    def _check_cap(self, session: Session, cost: Price, exclude: tuple[int, ...]) -> None:
        if self.max_cost is None:
            return
        before = workspace_cost(session, self.live, exclude, reward=self.settings.reward_usd)
        total = before["spent"].total_usd + before["committed"].total_usd + cost.total_usd
        if total > self.max_cost:
            raise CostCapExceeded(f"this submit costs ${cost.total_usd}; with ${before['spent'].total_usd} spent and "
                                  f"${before['committed'].total_usd} committed it would reach ${total}, over "
                                  f"--max-cost ${self.max_cost}; raise the cap or submit fewer tasks")

    def _prepare(self, session: Session, task_id: int) -> _Work | None:
        task = session.get(Task, task_id)
        if task is None or task.status != "new" or task.test != self.test:
            return None  # published meanwhile, or made for the other marketplace
        if task.publish_token and task.external_id is None:  # an earlier run began to publish it
            return _Work(task_id, task.assignments_wanted, task.publish_token, self._question(session, task),
                         pending=True)
        extendable = self._extendable(session, task)
        if extendable is not None:
            old, hit = extendable
            return _Work(task_id, task.assignments_wanted, f"{self.token(old.id)}-a{old.assignments_wanted + task.assignments_wanted}",
                         extend_task_id=old.id, extend_hit=hit, extend_size=old.assignments_wanted)
        return _Work(task_id, task.assignments_wanted, self.token(task_id), self._question(session, task))

    def _extendable(self, session: Session, task: Task) -> tuple[Task, str] | None:
        """An existing HIT of the same HIT type that asks about exactly this task's candidates."""
        def candidates(task_id: int) -> frozenset:
            return frozenset(session.scalars(select(TaskItem.cluster_id).where(TaskItem.task_id == task_id,
                                                                               TaskItem.kind == "candidate")))
        wanted = candidates(task.id)
        olds = session.scalars(select(Task).where(
            Task.backend == self.name, Task.category_id == task.category_id, Task.id != task.id,
            Task.status.in_(("open", "done")), Task.reward_cents == self.settings.reward_cents,
            Task.external_id.is_not(None), Task.live.is_(self.live)).order_by(Task.id.desc()))
        for old in olds:
            total = old.assignments_wanted + task.assignments_wanted
            if old.assignments_wanted < 10 <= total:
                continue
            if candidates(old.id) == wanted and old.external_id is not None:  # never None: the query says so
                return old, old.external_id
        return None

    def _question(self, session: Session, task: Task) -> str:
        from imgnet_build.labeling.page import load_task_view

        view = load_task_view(session, task.id)
        keys = dict(session.execute(select(Image.sha256, Image.blob_key).join(
            TaskItem, TaskItem.image_sha256 == Image.sha256).where(TaskItem.task_id == task.id)).all())
        return question_xml(view, self.submit_url, lambda item: self._image_url(keys[item.image_sha256]),
                            lambda example: self._image_url(example.blob_key))

    def _image_url(self, key: str) -> str:
        if self.settings.public_base_url:
            return f"{self.settings.public_base_url.rstrip('/')}/{key}"
        store = cast("S3BlobStore", self.workspace.blob_store)  # _check_ready refused a store without a bucket
        return store.client.generate_presigned_url(
            "get_object", Params={"Bucket": store.bucket, "Key": store._key(key)},
            ExpiresIn=min(PRESIGNED_URL_MAX, self.settings.lifetime + self.settings.assignment_duration))

    def hit_type(self) -> str:
        if self._hit_type is None:
            s = self.settings
            self._hit_type = call(self.client, "create_hit_type", AutoApprovalDelayInSeconds=s.auto_approval_delay,
                                  AssignmentDurationInSeconds=s.assignment_duration, Reward=s.reward, Title=s.title,
                                  Keywords=s.keywords, Description=s.description,
                                  QualificationRequirements=s.qualification_requirements())["HITTypeId"]
        return self._hit_type

    def _create(self, item: _Work) -> None:
        with self.workspace.session() as session:  # the token is on record before the HIT can exist
            task = session.get_one(Task, item.task_id)
            task.publish_token, task.reward_cents = item.token, self.settings.reward_cents
        hit_id = self.find_hit(item.token) if item.pending else None
        if hit_id is None:
            try:
                hit_id = call(self.client, "create_hit_with_hit_type", HITTypeId=self.hit_type(),
                              MaxAssignments=item.wanted, LifetimeInSeconds=self.settings.lifetime,
                              Question=item.question, RequesterAnnotation=item.token,
                              UniqueRequestToken=item.token)["HIT"]["HITId"]
            except MTurkError as exc:
                if not exc.hit_exists:
                    raise
                hit_id = self.find_hit(item.token)
                if hit_id is None:
                    raise MTurkError(f"MTurk says the HIT of task {item.task_id} exists, but no HIT carries its "
                                     f"token {item.token}; run the submit again in a minute") from exc
        self._store_hit(item.task_id, hit_id)

    def _store_hit(self, task_id: int, hit_id: str) -> None:
        with self.workspace.session() as session:
            task = session.get_one(Task, task_id)
            task.external_id, task.status = hit_id, "open"

    def find_hit(self, token: str) -> str | None:
        """The HIT whose RequesterAnnotation is `token`, paging through the account's HITs."""
        params: dict = {"MaxResults": 100}
        while True:
            page = call(self.client, "list_hits", **params)
            for hit in page.get("HITs", []):
                if hit.get("RequesterAnnotation") == token:
                    return hit["HITId"]
            if not page.get("NextToken") or not page.get("HITs"):
                return None
            params["NextToken"] = page["NextToken"]

    def _extend(self, item: _Work) -> None:
        hit = call(self.client, "get_hit", HITId=item.extend_hit)["HIT"]
        target = item.extend_size + item.wanted
        if hit["MaxAssignments"] < target:  # not extended by an earlier, interrupted run
            call(self.client, "create_additional_assignments_for_hit", HITId=item.extend_hit,
                 NumberOfAdditionalAssignments=target - hit["MaxAssignments"], UniqueRequestToken=item.token)
        with self.workspace.session() as session:
            old = session.get_one(Task, item.extend_task_id)
            old.assignments_wanted, old.status = target, "open"
            session.execute(delete(TaskItem).where(TaskItem.task_id == item.task_id))
            session.execute(delete(Task).where(Task.id == item.task_id))

    # -- collect -------------------------------------------------------------------------

    def collect(self, workspace: Workspace) -> int:
        from imgnet_build.labeling.mturk_review import collect_hits

        return collect_hits(self)


def question_xml(task_view, submit_url: str, image_url, example_url=None) -> str:
    """The HTMLQuestion of one task: the shared task page, posting to `submit_url` with the
    worker's assignmentId (with the category's example images when they fit). BadInput when
    it exceeds MTurk's 65,535 bytes."""
    from imgnet_build.labeling.page import render_task_page

    for examples_url in ((example_url, None) if example_url is not None else (None,)):
        html = render_task_page(task_view, submit_url, {"assignmentId": "ASSIGNMENT_ID_NOT_AVAILABLE"}, image_url,
                                examples_url)
        html = html.replace("</body>", ASSIGNMENT_SCRIPT + "</body>", 1).replace("]]>", "]]]]><![CDATA[>")
        xml = HTML_QUESTION.format(html=html)
        size = len(xml.encode("utf-8"))
        if size <= QUESTION_LIMIT:
            break
    if size > QUESTION_LIMIT:
        raise BadInput(f"the HTMLQuestion of task {task_view.task_id} is {size} bytes, over MTurk's {QUESTION_LIMIT}; "
                       f"use fewer --images-per-task or a shorter public_base_url")
    return xml


def submit(workspace: Workspace, settings: LabelSettings, *, live: bool = False, max_cost: Decimal | None = None,
           dry_run: bool = False, progress: Progress | None = None) -> tuple[Plan, Price]:
    """Plan, price and (unless `dry_run`) submit to MTurk. Returns (plan, price of the plan).

    The dry run makes no MTurk call. A real submit checks the cost cap against the plan and
    what the workspace already spent or committed before any task is made."""
    from imgnet_build.labeling import rounds

    if live and max_cost is None and not dry_run:
        raise BadInput("the live marketplace costs money: give --max-cost USD together with --live")
    options = {"live": live, "max_cost": max_cost}
    plan = rounds.issue(workspace, MTurkBackend.name, settings, dry_run=True, options={**options, "dry_run": True})
    plan.needs = MTurkBackend(workspace, options).needs()
    reward = (getattr(workspace.settings, "mturk", None) or MTurkSettings()).reward_usd
    planned = sum((price(reward, size, size * count, tasks=count) for size, count in plan.task_sizes.items()), Price())
    if max_cost is not None and not dry_run:
        with workspace.session() as session:
            before = workspace_cost(session, live, reward=reward)  # unpublished tasks of an earlier run included
        total = before["spent"].total_usd + before["committed"].total_usd + planned.total_usd
        if total > max_cost:
            raise CostCapExceeded(f"this submit costs ${planned.total_usd}; with ${before['spent'].total_usd} spent "
                                  f"and ${before['committed'].total_usd} committed it would reach ${total}, over "
                                  f"--max-cost ${max_cost}; raise the cap or submit fewer tasks (--category)")
    if dry_run:
        return plan, planned
    return rounds.issue(workspace, MTurkBackend.name, settings, options=options, progress=progress), planned


def expire(workspace: Workspace, batch: str | None = None, *, live: bool = False) -> dict:
    """Stop a batch: answers already submitted are collected first, then its HITs expire
    (ExpireAt in the past) and its tasks become `expired`. Returns counts."""
    backend = MTurkBackend(workspace, {"live": live})
    collected = backend.collect(workspace)
    suffix = backend.batch_suffix()
    with workspace.session() as session:
        query = select(Task.id, Task.external_id, Task.publish_token).where(
            Task.backend == MTurkBackend.name, Task.status.in_(("new", "open")), Task.live.is_(live))
        if batch:
            query = query.where(Task.batch.in_((batch, batch + suffix)))
        tasks = session.execute(query.order_by(Task.id)).all()
    expired = 0
    for task_id, external_id, token in tasks:
        hit_id = external_id
        if hit_id is None and token:  # publishing began: the HIT may exist
            hit_id = backend.find_hit(token)
        if hit_id:
            call(backend.client, "update_expiration_for_hit", HITId=hit_id,
                 ExpireAt=dt.datetime(2015, 1, 1, tzinfo=dt.UTC))
            expired += 1
        with workspace.session() as session:
            task = session.get_one(Task, task_id)
            task.status = "expired"
            if hit_id:
                task.external_id = hit_id
    return {"tasks": len(tasks), "hits_expired": expired, "assignments_collected": collected}


register(MTurkBackend)
