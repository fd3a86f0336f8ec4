"""The `local` backend's web app: invited workers label images in their browser.

    app = create_app(workspace)               # a Flask app over the workspace database
    serve(workspace, "127.0.0.1", 8000)       # the same app on waitress

A worker opens their invite link once (`/join/<token>`: the token's hash is looked up and
a signed session cookie remembers the worker), then `/task` hands out the next task and
`/submit` stores the answers (the next page says so, with the worker's count of tasks
done; a late answer whose place went to another worker gets a "Task closed" page). Images
come from the blob store through `/t/<task>/img/<position>` and the category's examples
through `/t/<task>/example/<n>`, only for a task given to that worker, all in the same way.
The requester's page `/admin` needs the admin token (`IMGNET_ADMIN_TOKEN`, or printed
by `imgnet label serve`; set but empty is refused). Odd input is a 4xx: ids are range-checked
and JSON depth-checked before any database call (`ServerLimits` bounds the connections).

Measured (benchmarks/bench_label_web.py, 20 workers at once on loopback, 8 waitress
threads, 2 cores shared with a load average of 6-7): 190-240 votes/s on SQLite and 140-170
on PostgreSQL when every page's 48 images are loaded too; 1,170-1,200 and 840-1,050 votes/s
for the task/page/submit requests alone.
A person needs about a minute per 48-image task, so one server carries far more than 20.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hmac
import json
import os
import secrets
import threading
from collections.abc import Callable
from typing import Any, cast

import jsonschema
from flask import Flask, Response, abort, redirect, request
from flask import session as cookie
from PIL import Image as PILImage
from sqlalchemy import and_, func, or_, select
from sqlalchemy.orm import Session
from werkzeug.exceptions import HTTPException

from imgnet_build.errors import BadInput, DatabaseUnavailable
from imgnet_build.labeling import handout, invites
from imgnet_build.labeling.answers import store_answers
from imgnet_build.labeling.page import (
    EXAMPLES,
    content_security_policy,
    load_task_view,
    render_page,
    render_task_page,
    task_examples,
)
from imgnet_build.schemas import load_schema
from imgnet_build.store import Assignment, Category, Image, Task, TaskItem, Worker
from imgnet_build.workspace import Workspace

__all__ = ["create_app", "make_server", "serve", "ServerLimits", "ADMIN_TOKEN_ENV", "MAX_SUBMISSION_BYTES"]

ADMIN_TOKEN_ENV = "IMGNET_ADMIN_TOKEN"
SECRET_KEY_ENV = "IMGNET_SECRET_KEY"  # keeps sessions valid across restarts when set
MAX_SUBMISSION_BYTES = 64 * 1024  # a 48-image answer is well under 1 KB
MAX_JSON_DEPTH = 8  # a submission nests 2 deep; deeper is refused before parsing
# Ids in URLs and submissions must fit the database columns: task ids are 64-bit, positions 32-bit.
ID_MAX = 2**63 - 1
POSITION_MAX = 2**31 - 1
# A late submission whose slot went to another worker (handout.TaskClosed, where the handout has it).
_TASK_CLOSED: type[Exception] = getattr(handout, "TaskClosed", type("_NeverRaised", (Exception,), {}))


@dataclasses.dataclass(frozen=True)
class ServerLimits:
    """How many connections waitress keeps open and how long an idle or slow one may stay.

    Connections that send nothing (or a request byte by byte) cost a slot until
    `channel_timeout` seconds of silence close them; `connection_limit` slots are far more
    than the workers one server carries, so a few hundred such connections do not lock
    real workers out. More than that is a flood: put a reverse proxy in front."""

    connection_limit: int = 1000  # lowered to fit the process' open-file limit
    channel_timeout: int = 30  # seconds a connection may stay silent
    cleanup_interval: int = 5  # how often silent connections are looked for
    max_request_header_size: int = 32 * 1024
    max_request_body_size: int = 1024 * 1024  # the app refuses more than MAX_SUBMISSION_BYTES itself

    def waitress_options(self) -> dict[str, Any]:
        """The settings as waitress.create_server keywords (poll() instead of select(): no 1,024-socket ceiling)."""
        return {"connection_limit": min(self.connection_limit, _open_file_budget()), "channel_timeout":
                self.channel_timeout, "cleanup_interval": self.cleanup_interval, "asyncore_use_poll": True,
                "max_request_header_size": self.max_request_header_size,
                "max_request_body_size": self.max_request_body_size}


def _open_file_budget() -> int:
    """Connections the process can hold open, leaving room for database and blob files."""
    try:
        import resource

        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    except (ImportError, OSError, ValueError):
        return 1000
    return 1_000_000 if soft == resource.RLIM_INFINITY else max(50, soft - 100)


def _message(title: str, message: str, status: int = 200, link: str | None = None, link_text: str = "",
             notice: str | None = None) -> Response:
    return Response(render_page("message.html", title=title, message=message, link=link, link_text=link_text,
                                notice=notice), status=status, mimetype="text/html")


def _current_worker(workspace: Workspace) -> Worker:
    with workspace.session() as session:
        return _signed_in_worker(session)


def _signed_in_worker(session: Session) -> Worker:
    """The signed-in worker; ends the request with a page when there is none or their link was revoked."""
    worker_id, token_hash = cookie.get("worker"), cookie.get("token_hash")
    if worker_id is None:
        abort(_message("Open your invite link", "Open the invite link you were sent to start labeling.", 401))
    worker = session.get(Worker, worker_id)
    if worker is None or worker.revoked or worker.token_hash != token_hash:
        cookie.clear()
        abort(_message("Invite no longer valid", "Your invite link was revoked or replaced; ask the requester for a new one.", 403))
    if worker.blocked:
        abort(_message("Labeling paused", "Your answers on images with known answers disagreed too often, so no "
                       "more tasks are given to you. Please contact the requester.", 403))
    return worker


def _check_csrf() -> None:
    expected, given = cookie.get("csrf", ""), request.form.get("csrf_token", "")
    if not expected or not hmac.compare_digest(expected, given):
        abort(_message("Form expired", "This form is not from your current session; reload the task and submit again.",
                       403, "/task", "Reload the task"))


def json_depth(text: str) -> int:
    """How deeply arrays and objects nest in `text` (strings skipped), without parsing it."""
    depth = deepest = 0
    in_string = escaped = False
    for char in text:
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif char in "]}":
            depth -= 1
    return deepest


def _parse_submission() -> dict:
    """The submission document, schema-valid with ids in the database's ranges; a 400 page otherwise."""
    text = request.form.get("submission", "")
    document, reason = None, None
    if json_depth(text) > MAX_JSON_DEPTH:  # json.loads would recurse until RecursionError
        reason = f"nested more than {MAX_JSON_DEPTH} deep"
    else:
        try:
            document = json.loads(text)
            jsonschema.validate(document, load_schema("submission"))
        except ValueError:
            reason = "not JSON"
        except jsonschema.ValidationError as exc:
            reason = exc.message
    if reason is not None:
        abort(_message("Submission not understood", f"The answer sent is not a valid submission ({reason}); reload the "
                       "task and submit again.", 400, "/task", "Reload the task"))
    return cast(dict, document)  # set: reason is None


class _MissingBlobs:
    """Blob keys found missing, so each is logged once, not on every request for it."""

    def __init__(self) -> None:
        self._seen: set[str] = set()
        self._lock = threading.Lock()

    def first_time(self, key: str) -> bool:
        with self._lock:
            new = key not in self._seen
            self._seen.add(key)
            return new


def _image_response(workspace: Workspace, task_id: int, position: int, missing: _MissingBlobs, logger) -> Response:
    with workspace.session() as session:  # one transaction: who asks, and what they may see
        worker_id = _signed_in_worker(session).id
        row = session.execute(
            select(Image.blob_key, Image.format).join(TaskItem, TaskItem.image_sha256 == Image.sha256)
            .join(Assignment, Assignment.task_id == TaskItem.task_id)
            .where(TaskItem.task_id == task_id, TaskItem.position == position, Assignment.worker_id == worker_id,
                   Assignment.status == "given")).first()
    if row is None:
        abort(404)
    return _blob_response(workspace, row.blob_key, row.format, missing, logger)


def _example_response(workspace: Workspace, task_id: int, index: int, missing: _MissingBlobs, logger) -> Response:
    """Example `index` of the task's category, for a worker who holds the task."""
    with workspace.session() as session:
        worker_id = _signed_in_worker(session).id
        holds = session.scalar(select(Assignment.id).where(Assignment.task_id == task_id,
                                                           Assignment.worker_id == worker_id,
                                                           Assignment.status == "given"))
        examples = task_examples(session, task_id) if holds is not None else ()
        if index >= len(examples):
            abort(404)
        fmt = session.scalar(select(Image.format).where(Image.sha256 == examples[index].image_sha256))
    return _blob_response(workspace, examples[index].blob_key, fmt or "", missing, logger)


def _blob_response(workspace: Workspace, key: str, fmt: str, missing: _MissingBlobs, logger) -> Response:
    """The blob's bytes, every image with the same headers; a missing blob is a 404, logged once."""
    try:
        data = workspace.blob_store.get(key)
    except FileNotFoundError:
        if missing.first_time(key):
            logger.error("image blob %s is missing from the blob store %s; the image is served as 404 until it is "
                         "restored", key, getattr(workspace.blob_store, "location", "?"))
        abort(404)
    return Response(data, mimetype=PILImage.MIME.get(fmt.upper(), "application/octet-stream"),
                    headers={"Cache-Control": "private, max-age=3600"})


def _tasks_done(session: Session, worker_id: int) -> int:
    return session.scalar(select(func.count()).select_from(Assignment).where(
        Assignment.worker_id == worker_id, Assignment.status.in_(("submitted", "approved", "rejected")))) or 0


def _saved_notice(session: Session, worker_id: int) -> str | None:
    """What the page after a submit says about it (once): saved, and how many tasks this worker has done."""
    saved = cookie.pop("saved", None)
    if saved is None:
        return None
    done = _tasks_done(session, worker_id)
    return f"Saved: your answers to task {saved} are stored. You have done {done} task{'s' if done != 1 else ''}."


def _place_taken(session: Session, assignment: Assignment) -> bool:
    """True for a given assignment held past the handout's hour whose task others have filled meanwhile
    (submitted, reviewed, or given within the hour): its answers would over-fill the task. Runs after
    handout.lock_for_writing, so on SQLite nobody can take the place between this check and the store."""
    now = dt.datetime.now(dt.UTC)
    given_at = assignment.given_at if assignment.given_at.tzinfo else assignment.given_at.replace(tzinfo=dt.UTC)
    if assignment.status != "given" or given_at > now - handout.ABANDONED_AFTER:
        return False
    wanted = session.scalar(select(Task.assignments_wanted).where(Task.id == assignment.task_id)) or 0
    others = session.scalar(select(func.count()).select_from(Assignment).where(
        Assignment.task_id == assignment.task_id, Assignment.id != assignment.id,
        or_(Assignment.status.in_(("submitted", "approved")),
            and_(Assignment.status == "given", Assignment.given_at > now - handout.ABANDONED_AFTER))))
    return (others or 0) >= wanted


def _task_closed(task_id: int, why: str | None = None) -> Response:
    """The refusal of a late submission: the worker's place in the task went to someone else, or it was closed."""
    why = why or (f"task {task_id} was given to you more than an hour ago and its place has since gone to another "
                  "worker, so these answers were not stored; open the next task from the start page")
    return _message("Task closed", why[:1].upper() + why[1:] + ". Thank you all the same.", 409, "/task",
                    "Go to your next task")


def _requester_overview(workspace: Workspace) -> dict:
    """`imgnet label status`'s report, with each category's name and its tasks by status."""
    from imgnet_build.labeling.status import label_status

    report = label_status(workspace).as_dict()
    with workspace.session() as session:
        names = dict(session.execute(select(Category.wnid, Category.name)).all())
        tasks: dict[str, dict[str, int]] = {}
        for wnid, status, count in session.execute(select(Category.wnid, Task.status, func.count())
                                                   .join(Task, Task.category_id == Category.id)
                                                   .group_by(Category.wnid, Task.status)):
            tasks.setdefault(wnid, {})[status] = count
    for row in report["categories"]:
        row.update(name=names.get(row["wnid"], ""), tasks=tasks.get(row["wnid"], {}))
    return report


def create_app(workspace: Workspace, admin_token: str | None = None) -> Flask:
    """The labeling app over `workspace`. `admin_token` (default: IMGNET_ADMIN_TOKEN, else none, and
    the requester page stays closed) opens /admin."""
    if admin_token is None:
        admin_token = os.environ.get(ADMIN_TOKEN_ENV)
    if admin_token is not None and not admin_token.strip():
        raise BadInput(f"{ADMIN_TOKEN_ENV} is set but empty: set it to a long random string, or unset it and "
                       "imgnet label serve prints a new token")
    missing_blobs = _MissingBlobs()
    app = Flask(__name__, static_folder=None, template_folder=None)
    app.config.update(SECRET_KEY=os.environ.get(SECRET_KEY_ENV) or secrets.token_bytes(32),
                      MAX_CONTENT_LENGTH=MAX_SUBMISSION_BYTES, SESSION_COOKIE_SAMESITE="Lax",
                      SESSION_COOKIE_HTTPONLY=True)
    csp = content_security_policy()

    @app.after_request
    def security_headers(response: Response) -> Response:
        response.headers["Content-Security-Policy"] = csp
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Referrer-Policy"] = "no-referrer"
        response.headers["X-Frame-Options"] = "DENY"
        response.headers.setdefault("Cache-Control", "no-store")
        return response

    @app.errorhandler(HTTPException)
    def http_error(error: HTTPException):
        if error.response is not None:
            return error.response
        return _message(error.name, error.description or error.name, error.code or 500)

    @app.errorhandler(DatabaseUnavailable)
    def database_unavailable(error: DatabaseUnavailable):
        app.logger.error("%s", error)
        return _message("Try again in a minute", "The labeling server cannot reach its database right now, so nothing "
                        "was stored. Go back and submit again in a minute.", 503)

    @app.get("/")
    def start():
        if cookie.get("worker") is None:
            return _message("imgnet labeling", "Open the invite link you were sent to start labeling.")
        return redirect("/task", 303)

    @app.get("/favicon.ico")
    def favicon():
        return Response(status=204)

    @app.get(invites.JOIN_PATH + "<token>")
    def join(token: str):
        with workspace.session() as session:
            worker = invites.worker_for_token(session, token)
        cookie.clear()
        if worker is None:
            return _message("Invite not valid", "This invite link is not valid (it may have been revoked or replaced); "
                            "ask the requester for a new one.", 403)
        cookie.update(worker=worker.id, token_hash=worker.token_hash, csrf=secrets.token_urlsafe(32))
        return redirect("/task", 303)  # the token leaves the address bar

    @app.get("/task")
    def next_task():
        worker = _current_worker(workspace)
        with workspace.session() as session:
            assignment = handout.next_assignment(session, worker.id)
            task_id = assignment.task_id if assignment else None
            notice = _saved_notice(session, worker.id) if task_id is None else None
        if task_id is None:
            return _message("No tasks right now", "There is nothing left for you to label. Thank you!", notice=notice)
        return redirect(f"/t/{task_id}", 303)

    task_route = f"/t/<int(max={ID_MAX}):task_id>"  # larger ids are a 404, never a database overflow

    @app.get(task_route)
    def task_page(task_id: int):
        worker = _current_worker(workspace)
        with workspace.session() as session:
            status = session.scalar(select(Assignment.status).where(Assignment.task_id == task_id,
                                                                    Assignment.worker_id == worker.id))
            view = load_task_view(session, task_id) if status == "given" else None
            notice = _saved_notice(session, worker.id) if view is not None else None
        if view is None:
            return redirect("/task", 303)
        image_url: Callable = lambda item: f"/t/{task_id}/img/{item.position}"  # noqa: E731
        example_url: Callable = lambda example: f"/t/{task_id}/example/{example.index}"  # noqa: E731
        return render_task_page(view, "/submit", {"csrf_token": cookie["csrf"]}, image_url, example_url, notice)

    @app.get(task_route + f"/img/<int(max={POSITION_MAX}):position>")
    def task_image(task_id: int, position: int):
        return _image_response(workspace, task_id, position, missing_blobs, app.logger)

    @app.get(task_route + f"/example/<int(max={EXAMPLES}):index>")
    def example_image(task_id: int, index: int):
        return _example_response(workspace, task_id, index, missing_blobs, app.logger)

    @app.post("/submit")
    def submit():
        worker = _current_worker(workspace)
        _check_csrf()
        document = _parse_submission()
        task_id = document["task"]
        try:
            with workspace.session() as session:
                handout.lock_for_writing(session, worker.id)
                assignment, selected = handout.check_submission(session, worker.id, document)
                if _place_taken(session, assignment):
                    return _task_closed(task_id)
                store_answers(session, assignment, selected)  # False: stored before, or the slot is gone
                status = session.scalar(select(Assignment.status).where(Assignment.id == assignment.id))
        except _TASK_CLOSED as exc:
            return _task_closed(task_id, str(exc))  # the handout's own words: ran out, or closed by the requester
        except handout.NotYourTask as exc:
            return _message("Not your task", str(exc), 403, "/task", "Go to your next task")
        except handout.SubmissionRejected as exc:
            return _message("Submission not understood", str(exc), 400, "/task", "Reload the task")
        if status == "abandoned":  # too late: the task took its answers from others meanwhile
            return _task_closed(task_id)
        cookie["saved"] = task_id
        return redirect("/task", 303)

    @app.get("/admin")
    def admin():
        given = request.args.get("token")
        if given is not None:
            if admin_token and hmac.compare_digest(given, admin_token):
                cookie.clear()
                cookie["admin"] = True
                return redirect("/admin", 303)
            abort(_message("Not allowed", "That admin token is not valid.", 403))
        if not cookie.get("admin"):
            abort(_message("Not allowed", "Open the requester link that imgnet label serve printed.", 403))
        return render_page("requester.html", **_requester_overview(workspace))

    return app


def make_server(workspace: Workspace, host: str = "127.0.0.1", port: int = 8000, admin_token: str | None = None,
                threads: int = 8, limits: ServerLimits = ServerLimits()):
    """A waitress server for the app, bound and not yet running (`.run()`, `.close()`;
    `.effective_port` when `port` is 0)."""
    from waitress.server import create_server

    return create_server(create_app(workspace, admin_token), host=host, port=port, threads=threads,
                         ident="imgnet", clear_untrusted_proxy_headers=True, **limits.waitress_options())


def serve(workspace: Workspace, host: str = "127.0.0.1", port: int = 8000, admin_token: str | None = None,
          threads: int = 8, limits: ServerLimits = ServerLimits()) -> None:
    """Run the app on waitress until interrupted."""
    make_server(workspace, host, port, admin_token, threads, limits).run()
