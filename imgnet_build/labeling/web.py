"""The `local` backend's web app: invited workers label images in their browser.

    app = create_app(workspace)               # a Flask app over the workspace database
    serve(workspace, "127.0.0.1", 8000)       # the same app on waitress

A worker opens their invite link once (`/join/<token>`: the token's hash is looked up and
a signed session cookie remembers the worker), then `/task` hands out the next task and
`/submit` stores the answers. Images come from the blob store through
`/t/<task>/img/<position>`, only for a task given to that worker, all in the same way.
The requester's page `/admin` needs the admin token (`IMGNET_ADMIN_TOKEN`, or printed
by `imgnet label serve`).

Measured (benchmarks/bench_label_web.py, 20 workers at once on loopback, 8 waitress
threads, 2 cores shared with a load average of 6-7): 190-240 votes/s on SQLite and 140-170
on PostgreSQL when every page's 48 images are loaded too; 1,170-1,200 and 840-1,050 votes/s
for the task/page/submit requests alone.
A person needs about a minute per 48-image task, so one server carries far more than 20.
"""

from __future__ import annotations

import hmac
import json
import os
import secrets
from collections.abc import Callable

import jsonschema
from flask import Flask, Response, abort, redirect, request
from flask import session as cookie
from PIL import Image as PILImage
from sqlalchemy import func, select
from sqlalchemy.orm import Session
from werkzeug.exceptions import HTTPException

from imgnet_build.errors import DatabaseUnavailable
from imgnet_build.labeling import handout, invites
from imgnet_build.labeling.answers import store_answers
from imgnet_build.labeling.page import content_security_policy, load_task_view, render_page, render_task_page
from imgnet_build.schemas import load_schema
from imgnet_build.store import Assignment, Category, Image, Task, TaskItem, Worker
from imgnet_build.workspace import Workspace

__all__ = ["create_app", "make_server", "serve", "ADMIN_TOKEN_ENV", "MAX_SUBMISSION_BYTES"]

ADMIN_TOKEN_ENV = "IMGNET_ADMIN_TOKEN"
SECRET_KEY_ENV = "IMGNET_SECRET_KEY"  # keeps sessions valid across restarts when set
MAX_SUBMISSION_BYTES = 64 * 1024  # a 48-image answer is well under 1 KB


def _message(title: str, message: str, status: int = 200, link: str | None = None, link_text: str = "") -> Response:
    return Response(render_page("message.html", title=title, message=message, link=link, link_text=link_text),
                    status=status, mimetype="text/html")


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


def _parse_submission() -> dict:
    try:
        document = json.loads(request.form.get("submission", ""))
        jsonschema.validate(document, load_schema("submission"))
    except (ValueError, jsonschema.ValidationError) as exc:
        reason = exc.message if isinstance(exc, jsonschema.ValidationError) else "not JSON"
        abort(_message("Submission not understood", f"The answer sent is not a valid submission ({reason}); reload the "
                       "task and submit again.", 400, "/task", "Reload the task"))
    return document


def _image_response(workspace: Workspace, task_id: int, position: int) -> Response:
    with workspace.session() as session:  # one transaction: who asks, and what they may see
        worker_id = _signed_in_worker(session).id
        row = session.execute(
            select(Image.blob_key, Image.format).join(TaskItem, TaskItem.image_sha256 == Image.sha256)
            .join(Assignment, Assignment.task_id == TaskItem.task_id)
            .where(TaskItem.task_id == task_id, TaskItem.position == position, Assignment.worker_id == worker_id,
                   Assignment.status == "given")).first()
    if row is None:
        abort(404)
    data = workspace.blob_store.get(row.blob_key)
    return Response(data, mimetype=PILImage.MIME.get(row.format.upper(), "application/octet-stream"),
                    headers={"Cache-Control": "private, max-age=3600"})


def _requester_overview(workspace: Workspace) -> dict:
    """`imgnet label status`'s report, with each category's name and its tasks by status."""
    from imgnet_build.labeling.status import label_status

    report = label_status(workspace)
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
    admin_token = admin_token or os.environ.get(ADMIN_TOKEN_ENV) or None
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
        if task_id is None:
            return _message("No tasks right now", "There is nothing left for you to label. Thank you!")
        return redirect(f"/t/{task_id}", 303)

    @app.get("/t/<int:task_id>")
    def task_page(task_id: int):
        worker = _current_worker(workspace)
        with workspace.session() as session:
            status = session.scalar(select(Assignment.status).where(Assignment.task_id == task_id,
                                                                    Assignment.worker_id == worker.id))
            view = load_task_view(session, task_id) if status == "given" else None
        if view is None:
            return redirect("/task", 303)
        image_url: Callable = lambda item: f"/t/{task_id}/img/{item.position}"  # noqa: E731
        return render_task_page(view, "/submit", {"csrf_token": cookie["csrf"]}, image_url)

    @app.get("/t/<int:task_id>/img/<int:position>")
    def task_image(task_id: int, position: int):
        return _image_response(workspace, task_id, position)

    @app.post("/submit")
    def submit():
        worker = _current_worker(workspace)
        _check_csrf()
        document = _parse_submission()
        try:
            with workspace.session() as session:
                handout.lock_for_writing(session, worker.id)
                assignment, selected = handout.check_submission(session, worker.id, document)
                store_answers(session, assignment, selected)  # False: already stored, nothing written
        except handout.NotYourTask as exc:
            return _message("Not your task", str(exc), 403, "/task", "Go to your next task")
        except handout.SubmissionRejected as exc:
            return _message("Submission not understood", str(exc), 400, "/task", "Reload the task")
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
                threads: int = 8):
    """A waitress server for the app, bound and not yet running (`.run()`, `.close()`;
    `.effective_port` when `port` is 0)."""
    from waitress import create_server

    return create_server(create_app(workspace, admin_token), host=host, port=port, threads=threads,
                         ident="imgnet", clear_untrusted_proxy_headers=True)


def serve(workspace: Workspace, host: str = "127.0.0.1", port: int = 8000, admin_token: str | None = None,
          threads: int = 8) -> None:
    """Run the app on waitress until interrupted."""
    make_server(workspace, host, port, admin_token, threads).run()
