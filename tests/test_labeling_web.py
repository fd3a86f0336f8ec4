"""The local backend's web app on a real waitress server on loopback: invites, tasks,
submissions, images, the requester page, bad input, concurrency, and a real browser."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import re
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
from headless import playwright_or_skip
from loopback import jpeg_bytes
from sqlalchemy import func, select, update
from webcrowd import HttpWorker, add_image, make_cardigan, make_category, make_tasks, parse_task_page, running_app

from imgnet_build.labeling.invites import hash_token, invite, revoke
from imgnet_build.labeling.page import ItemView, TaskView, render_task_page
from imgnet_build.store import Assignment, Category, Image, TaskItem, Vote, Worker


def votes(ws) -> list[tuple]:
    with ws.session() as session:
        return session.execute(select(Vote.worker_id, Vote.task_item_id, Vote.answer, Vote.control)
                               .order_by(Vote.worker_id, Vote.task_item_id)).all()


def assignment_status(ws, task_id: int, name: str) -> str | None:
    with ws.session() as session:
        return session.scalar(select(Assignment.status).join(Worker, Worker.id == Assignment.worker_id)
                              .where(Assignment.task_id == task_id, Worker.external_id == name))


def items_by_position(ws, task_id: int) -> dict[int, TaskItem]:
    with ws.session() as session:
        return {item.position: item for item in session.scalars(select(TaskItem).where(TaskItem.task_id == task_id))}


# --- invites and sessions --------------------------------------------------------------

def test_invite_stores_only_the_tokens_hash(workspace):
    link = invite(workspace, "alice")
    with workspace.session() as session:
        worker = session.scalar(select(Worker).where(Worker.external_id == "alice"))
    assert (worker.backend, worker.name, worker.token_hash) == ("local", "alice", hash_token(link.token))
    assert link.token not in repr(worker.__dict__) and len(link.token) >= 40
    assert link.url("http://host:8000/") == f"http://host:8000/join/{link.token}"


def test_invite_link_opens_the_next_task_page(workspace):
    [task_id] = make_tasks(workspace, items=8)
    with running_app(workspace) as base_url:
        worker = HttpWorker(base_url, invite(workspace, "alice").path)
        assert worker.last.status_code == 200 and worker.last.url == f"{base_url}/t/{task_id}"  # the token left the URL
        page = parse_task_page(worker.last.text)
        headers = worker.last.headers
        image = worker.get(f"/t/{task_id}/img/{page.positions[0]}")
    html = page.html
    assert page.task_id == task_id and page.positions == list(range(8))
    assert "at least one <em>Ibizan hound</em>" in html and "Ibizan Podenco" in html
    assert "a slender hound with large erect ears" in html
    assert "https://en.wikipedia.org/w/index.php?search=Ibizan%20hound" in html
    assert "regardless of occlusion, other objects, clutter or text" in html and "Photographs only" in html
    assert "script-src 'sha256-" in headers["Content-Security-Policy"] and "unsafe-inline" not in headers["Content-Security-Policy"]
    assert headers["Cache-Control"] == "no-store"
    with workspace.session() as session:
        shas = set(session.scalars(select(TaskItem.image_sha256)))
    assert not any(sha in html for sha in shas)  # nothing names an image
    assert image.status_code == 200 and image.headers["Content-Type"] == "image/jpeg" and image.content[:2] == b"\xff\xd8"


def test_forged_token_is_refused(workspace):
    make_tasks(workspace)
    invite(workspace, "alice")
    with running_app(workspace) as base_url:
        worker = HttpWorker(base_url, "/join/" + "A" * 43)
        assert worker.last.status_code == 403 and "not valid" in worker.last.text
        assert worker.get("/task").status_code == 401
    assert votes(workspace) == []


def test_missing_token_gets_no_task(workspace):
    [task_id] = make_tasks(workspace)
    with running_app(workspace) as base_url:
        worker = HttpWorker(base_url)
        assert worker.get("/task").status_code == 401
        assert worker.get(f"/t/{task_id}").status_code == 401
        assert worker.get(f"/t/{task_id}/img/0").status_code == 401
        assert worker.post_submission(json.dumps({"task": task_id, "selected": []}), "x").status_code == 401
        assert worker.get("/join/").status_code == 404
    assert votes(workspace) == []


def test_revoked_worker_loses_link_and_session(workspace):
    [_task_id] = make_tasks(workspace)
    link = invite(workspace, "alice")
    with running_app(workspace) as base_url:
        worker = HttpWorker(base_url, link.path)
        page = parse_task_page(worker.last.text)
        revoke(workspace, "alice")
        assert worker.submit(page, [0]).status_code == 403
        assert worker.get("/task").status_code == 401  # the session was dropped
        again = HttpWorker(base_url, link.path)
        assert again.last.status_code == 403
    assert votes(workspace) == []


def test_new_invite_replaces_the_old_link(workspace):
    make_tasks(workspace)
    old = invite(workspace, "alice")
    new = invite(workspace, "alice")
    assert new.renewed and not old.renewed
    with running_app(workspace) as base_url:
        assert HttpWorker(base_url, old.path).last.status_code == 403
        assert HttpWorker(base_url, new.path).last.status_code == 200


def test_blocked_worker_gets_a_page_not_tasks(workspace):
    make_tasks(workspace)
    link = invite(workspace, "alice")
    with workspace.session() as session:
        session.execute(update(Worker).values(blocked=True))
    with running_app(workspace) as base_url:
        worker = HttpWorker(base_url, link.path)
    assert worker.last.status_code == 403 and "no more tasks are given to you" in worker.last.text
    with workspace.session() as session:
        assert session.scalar(select(func.count()).select_from(Assignment)) == 0


# --- handing out work ------------------------------------------------------------------

def test_tasks_go_to_workers_until_each_has_enough(workspace):
    [first, second] = make_tasks(workspace, tasks=2, assignments_wanted=2)
    with running_app(workspace) as base_url:
        alice, bob, carol = (HttpWorker(base_url, invite(workspace, name).path) for name in ("alice", "bob", "carol"))
        assert [parse_task_page(w.last.text).task_id for w in (alice, bob, carol)] == [first, first, second]
        assert alice.next_task().task_id == first  # a reload keeps the task given
        alice.submit(alice.next_task(), [])
        assert alice.next_task().task_id == second
        alice.submit(alice.next_task(), [])
        assert alice.next_task() is None and "nothing left for you" in alice.last.text
        assert carol.next_task().task_id == second


def test_a_worker_never_gets_a_pair_they_voted_on(workspace):
    [first, second] = make_tasks(workspace, tasks=2, assignments_wanted=3)
    with workspace.session() as session:  # the second task shows one of the first task's images
        shared = session.scalar(select(TaskItem.image_sha256).where(TaskItem.task_id == first, TaskItem.position == 3))
        session.execute(update(TaskItem).where(TaskItem.task_id == second, TaskItem.position == 0)
                        .values(image_sha256=shared))
    with running_app(workspace) as base_url:
        alice = HttpWorker(base_url, invite(workspace, "alice").path)
        alice.submit(parse_task_page(alice.last.text), [3])
        assert alice.next_task() is None
        bob = HttpWorker(base_url, invite(workspace, "bob").path)
        assert parse_task_page(bob.last.text).task_id == first


def test_an_abandoned_task_frees_its_slot(workspace):
    [task_id] = make_tasks(workspace, assignments_wanted=1)
    with running_app(workspace) as base_url:
        alice = HttpWorker(base_url, invite(workspace, "alice").path)
        bob = HttpWorker(base_url, invite(workspace, "bob").path)
        assert bob.next_task() is None
        with workspace.session() as session:
            session.execute(update(Assignment).values(given_at=dt.datetime.now(dt.UTC) - dt.timedelta(hours=2)))
        assert bob.next_task().task_id == task_id
        assert alice.next_task().task_id == task_id  # alice may still finish what she holds


def test_a_late_submission_for_a_freed_slot_gets_a_clear_refusal(any_workspace):
    """Alice held the task over an hour, so her place went to Bob, who submitted: her answers are refused
    with a page that says so, and the task keeps the one answer it wanted."""
    ws = any_workspace
    [task_id] = make_tasks(ws, assignments_wanted=1)
    with running_app(ws) as base_url:
        alice = HttpWorker(base_url, invite(ws, "alice").path)
        page = parse_task_page(alice.last.text)
        with ws.session() as session:
            session.execute(update(Assignment).values(given_at=dt.datetime.now(dt.UTC) - dt.timedelta(hours=2)))
        bob = HttpWorker(base_url, invite(ws, "bob").path)
        assert bob.submit(parse_task_page(bob.last.text), [0]).status_code == 200
        response = alice.submit(page, [1, 2])
        assert response.status_code == 409 and "<h1>Task closed</h1>" in response.text
        assert f"task {task_id}" in response.text.lower() and "another worker" in response.text
        assert "these answers were not stored" in response.text and 'href="/task"' in response.text
        assert alice.submit(page, [1, 2]).status_code in (403, 409)  # and again: still refused
    with ws.session() as session:
        submitted = session.scalars(select(Worker.external_id).join(Assignment, Assignment.worker_id == Worker.id)
                                    .where(Assignment.status == "submitted")).all()
        voters = set(session.scalars(select(Worker.external_id).join(Vote, Vote.worker_id == Worker.id)))
    assert submitted == ["bob"] and voters == {"bob"}


@pytest.mark.parametrize("workers", [20])
def test_workers_racing_for_the_last_slots(any_workspace, workers):
    ws = any_workspace
    [task_id] = make_tasks(ws, assignments_wanted=3)
    links = [invite(ws, f"w{i}").path for i in range(workers)]
    with running_app(ws, threads=workers) as base_url:
        clients = [HttpWorker(base_url) for _ in links]
        barrier = threading.Barrier(workers)

        def join(pair):
            client, link = pair
            barrier.wait()
            return client.get(link).url.endswith(f"/t/{task_id}")

        with ThreadPoolExecutor(workers) as pool:
            got = list(pool.map(join, zip(clients, links, strict=True)))
    assert sum(got) == 3
    with ws.session() as session:
        assert session.scalar(select(func.count()).select_from(Assignment)) == 3


# --- submissions -----------------------------------------------------------------------

def test_a_submission_stores_one_vote_per_image(workspace):
    [task_id] = make_tasks(workspace, items=8, controls=2)
    with running_app(workspace) as base_url:
        alice = HttpWorker(base_url, invite(workspace, "alice").path)
        response = alice.submit(parse_task_page(alice.last.text), [1, 5])
    assert response.status_code == 200 and "nothing left for you" in response.text
    items = items_by_position(workspace, task_id)
    stored = {item_id: (answer, control) for _, item_id, answer, control in votes(workspace)}
    assert stored == {item.id: (item.position in (1, 5), item.kind != "candidate") for item in items.values()}
    assert assignment_status(workspace, task_id, "alice") == "submitted"


def test_the_same_submission_twice_is_stored_once(workspace):
    [_task_id] = make_tasks(workspace, tasks=1)
    with running_app(workspace) as base_url:
        alice = HttpWorker(base_url, invite(workspace, "alice").path)
        page = parse_task_page(alice.last.text)
        assert alice.submit(page, [0]).status_code == 200
        assert alice.submit(page, [0, 1, 2]).status_code == 200  # a retry or a second tab: no change
    assert len(votes(workspace)) == 8 and sum(answer for _, _, answer, _ in votes(workspace)) == 1
    with workspace.session() as session:
        worker = session.scalar(select(Worker))
    assert worker.control_answers == 2


def test_a_submission_for_a_task_not_given_to_the_worker_is_refused(workspace):
    [first, second] = make_tasks(workspace, tasks=2, assignments_wanted=1)
    with running_app(workspace) as base_url:
        _alice = HttpWorker(base_url, invite(workspace, "alice").path)
        bob = HttpWorker(base_url, invite(workspace, "bob").path)
        page = parse_task_page(bob.last.text)
        assert page.task_id == second
        response = bob.submit(page, [0], task_id=first)
        assert response.status_code == 403 and f"task {first} was not given to you" in response.text
        assert bob.submit(page, [0], task_id=999).status_code == 403
    assert votes(workspace) == []
    assert assignment_status(workspace, first, "alice") == "given"


def test_positions_not_in_the_task_are_refused(workspace):
    [task_id] = make_tasks(workspace, items=8)
    with running_app(workspace) as base_url:
        alice = HttpWorker(base_url, invite(workspace, "alice").path)
        response = alice.submit(parse_task_page(alice.last.text), [2, 8, 40])
    assert response.status_code == 400 and f"task {task_id} has no image at position(s) 8, 40" in response.text
    assert votes(workspace) == [] and assignment_status(workspace, task_id, "alice") == "given"


@pytest.mark.parametrize("body", ["", "{", "[1, 2]", '{"task": 1}', '{"task": "1", "selected": []}',
                                  '{"task": 1, "selected": [-1]}', '{"task": 1, "selected": [1, 1]}',
                                  '{"task": 1, "selected": [], "extra": true}', '{"task": 1, "selected": [1.5]}',
                                  "NaN", '{"task": 1e400, "selected": []}'])
def test_malformed_submissions_are_refused(workspace, body):
    make_tasks(workspace)
    with running_app(workspace) as base_url:
        alice = HttpWorker(base_url, invite(workspace, "alice").path)
        response = alice.post_submission(body, parse_task_page(alice.last.text).csrf_token)
    assert response.status_code == 400 and "not a valid submission" in response.text
    assert votes(workspace) == []


def test_an_oversized_submission_is_refused_with_413(workspace):
    make_tasks(workspace)
    with running_app(workspace) as base_url:
        alice = HttpWorker(base_url, invite(workspace, "alice").path)
        body = json.dumps({"task": 1, "selected": list(range(20_000))})
        response = alice.post_submission(body, parse_task_page(alice.last.text).csrf_token)
    assert response.status_code == 413
    assert votes(workspace) == []


def test_a_submission_without_the_sessions_csrf_token_is_refused(workspace):
    [task_id] = make_tasks(workspace)
    with running_app(workspace) as base_url:
        alice = HttpWorker(base_url, invite(workspace, "alice").path)
        body = json.dumps({"task": task_id, "selected": [0]})
        assert alice.post_submission(body, "forged").status_code == 403
        assert alice.post_submission(body, "").status_code == 403
        origin = HttpWorker(base_url, invite(workspace, "alice").path)  # a new session has a new token
        assert alice.post_submission(body, parse_task_page(origin.last.text).csrf_token).status_code == 403
    assert votes(workspace) == []


def test_twenty_workers_submitting_at_once(workspace):
    workers, items = 20, 8
    task_ids = make_tasks(workspace, tasks=10, items=items, assignments_wanted=2)
    links = [invite(workspace, f"w{i}").path for i in range(workers)]
    with running_app(workspace, threads=workers) as base_url:
        clients = [HttpWorker(base_url, link) for link in links]
        pages = [parse_task_page(client.last.text) for client in clients]
        barrier = threading.Barrier(workers)

        def submit(pair):
            client, page = pair
            barrier.wait()
            return client.submit(page, page.positions[::3]).status_code

        with ThreadPoolExecutor(workers) as pool:
            statuses = list(pool.map(submit, zip(clients, pages, strict=True)))
    assert statuses == [200] * workers
    assert sorted(page.task_id for page in pages) == sorted(task_ids * 2)
    stored = votes(workspace)
    assert len(stored) == workers * items == len({(worker, item) for worker, item, _, _ in stored})
    with workspace.session() as session:
        assert session.scalar(select(func.count()).where(Assignment.status == "submitted")) == workers


@pytest.mark.postgres
def test_a_lost_database_gives_a_503_page(tmp_path, postgres_url):
    from sqlalchemy import create_engine, text

    from imgnet_build.workspace import Workspace

    ws = Workspace.init(tmp_path / "ws", database=postgres_url)
    make_tasks(ws)
    with running_app(ws) as base_url:
        alice = HttpWorker(base_url, invite(ws, "alice").path)
        page = parse_task_page(alice.last.text)
        admin = create_engine(postgres_url.rsplit("/", 1)[0] + "/postgres", isolation_level="AUTOCOMMIT")
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE "{postgres_url.rsplit("/", 1)[1]}" WITH (FORCE)'))
        admin.dispose()
        response = alice.submit(page, [0])
    ws.close()
    assert response.status_code == 503 and "nothing was stored" in response.text


# --- images ----------------------------------------------------------------------------

def test_images_are_served_only_for_a_task_given_to_the_worker(workspace):
    [first, second] = make_tasks(workspace, tasks=2, assignments_wanted=1)
    with running_app(workspace) as base_url:
        alice = HttpWorker(base_url, invite(workspace, "alice").path)
        responses = [alice.get(f"/t/{first}/img/{position}") for position in range(8)]
        assert alice.get(f"/t/{second}/img/0").status_code == 404  # not given to alice
        assert alice.get(f"/t/{first}/img/8").status_code == 404
        assert alice.get("/blobs/").status_code == 404
        alice.submit(parse_task_page(alice.get(f"/t/{first}").text), [])
        assert alice.get(f"/t/{first}/img/0").status_code == 404  # done with it
    kinds = {position: item.kind for position, item in items_by_position(workspace, first).items()}
    assert {"candidate", "positive", "negative"} == set(kinds.values())
    header_sets = {tuple(sorted((k, v) for k, v in r.headers.items() if k not in ("Date", "Content-Length")))
                   for r in responses}
    assert len(header_sets) == 1 and "ETag" not in responses[0].headers  # controls look like candidates


# --- escaping and the template ---------------------------------------------------------

def test_a_script_in_a_gloss_or_lemma_is_rendered_inert(workspace):
    evil = '<script>alert("x")</script><img src=x onerror=alert(1)>'
    category_id = make_category(workspace, name=f"dog{evil}", lemmas=(f"hound{evil}",), gloss=f"a dog {evil}")
    make_tasks(workspace, category_id=category_id)
    with running_app(workspace, admin_token="secret") as base_url:
        alice = HttpWorker(base_url, invite(workspace, f"alice{evil}").path)
        admin = HttpWorker(base_url, "/admin?token=secret")
    for html in (alice.last.text, admin.last.text):
        assert "<script>alert" not in html and "<img src=x" not in html
        assert html.count("<script") <= 1
    assert '&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;' in alice.last.text
    assert "search=dog%3Cscript%3Ealert" in alice.last.text


def test_the_template_renders_for_another_backends_form():
    view = TaskView(task_id=7, wnid="n1", name="cat", lemmas=("cat",), gloss="g",
                    items=(ItemView(0, 10, "a" * 64), ItemView(1, 11, "b" * 64)))
    html = render_task_page(view, "https://www.mturk.com/mturk/externalSubmit", {"assignmentId": 'A"1'},
                            lambda item: f"https://img.example/{item.position}?sig=1&x=2")
    assert 'action="https://www.mturk.com/mturk/externalSubmit"' in html
    assert 'name="assignmentId" value="A&#34;1"' in html
    assert 'src="https://img.example/1?sig=1&amp;x=2"' in html


# --- the requester's page --------------------------------------------------------------

def test_the_requester_page_needs_the_admin_token(workspace):
    from labelkit import build_world

    from imgnet_build.labeling import rounds
    from imgnet_build.labeling.rounds import LabelSettings

    build_world(workspace, categories=1, images=6)
    rounds.submit(workspace, "local", LabelSettings(method="majority", images_per_task=6, controls=0, seed_images=0))
    with running_app(workspace, admin_token="s3cret") as base_url:
        alice = HttpWorker(base_url, invite(workspace, "alice").path)
        alice.submit(parse_task_page(alice.last.text), [0, 1])
        assert HttpWorker(base_url, "/admin").last.status_code == 403
        assert HttpWorker(base_url, "/admin?token=wrong").last.status_code == 403
        assert alice.get("/admin").status_code == 403  # a worker's session is not the requester's
        admin = HttpWorker(base_url, "/admin?token=s3cret")
    assert admin.last.status_code == 200 and admin.last.url == f"{base_url}/admin"
    row = re.search(r"<tr><td>n00000001 thing 1</td>(.*?)</tr>", admin.last.text).group(1)
    # pairs, tasks open and done, accepted, rejected, undecided, not voted yet, votes waiting, per pair, controls
    assert re.findall(r"<td>([^<]*)</td>", row) == ["6", "1", "0", "0", "0", "0", "6", "6", "–", "–"]  # noqa: RUF001  (the page shows an en dash)
    assert "6 votes arrived and wait to be decided" in admin.last.text
    assert re.search(r"<tr><td>alice</td><td>local</td><td>6</td><td>–</td><td>–</td><td>0/0</td><td>0/0</td>"  # noqa: RUF001
                     r"<td>active</td>", admin.last.text)
    assert re.search(r"<tr><td>local</td><td>1</td><td>1</td><td>\$0.00</td><td>\$0.00</td>", admin.last.text)


def test_the_requester_page_shows_each_workers_estimate_interval_and_evidence_in_chromium(workspace, tmp_path):
    """The estimate, its 95% interval and the control evidence on positives and on negatives, as
    `label status --all` prints them; looked at in a real browser (screenshot)."""
    from labelkit import build_world

    from imgnet_build.labeling import rounds
    from imgnet_build.labeling.rounds import LabelSettings
    from imgnet_build.labeling.status import label_status

    playwright = playwright_or_skip()
    build_world(workspace, categories=2, images=16)
    rounds.run(workspace, "simulated", LabelSettings(seed_images=4), options={"sim_seed": 3, "sim_workers": 8})
    report = label_status(workspace).as_dict()
    with running_app(workspace, admin_token="s3cret") as base_url, playwright.sync_playwright() as p:
        browser = _chromium(p)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.goto(base_url + "/admin?token=s3cret")
            rows = page.eval_on_selector_all("#workers tbody tr", "rows => rows.map(r => Array.from(r.cells, c => c.innerText))")
            _screenshot(page, tmp_path, "label-requester-desktop.png")
        finally:
            browser.close()
    assert len(rows) == len(report["workers"]) == 8
    for cells, worker in zip(rows, report["workers"], strict=True):
        low, high = worker["interval"]
        assert cells[0] == worker["name"] and cells[3] == f"{worker['accuracy']:.2f}"
        assert cells[4] == f"{low:.2f}–{high:.2f}"  # noqa: RUF001
        assert cells[5:7] == ["{}/{}".format(*worker["controls"]["positive"]), "{}/{}".format(*worker["controls"]["negative"])]
    assert any(worker["controls"]["positive"][1] for worker in report["workers"])


def test_no_admin_token_keeps_the_requester_page_closed(workspace, monkeypatch):
    monkeypatch.delenv("IMGNET_ADMIN_TOKEN", raising=False)
    with running_app(workspace) as base_url:
        assert HttpWorker(base_url, "/admin?token=").last.status_code == 403
        assert HttpWorker(base_url, "/admin?token=None").last.status_code == 403


# --- the commands ----------------------------------------------------------------------

def test_invite_and_revoke_commands(workspace, runner):
    from imgnet_build.cli.main import cli

    ws = ["-w", str(workspace.root), "label"]
    result = runner.invoke(cli, [*ws, "invite", "alice", "--base-url", "http://lab:9000"])
    assert result.exit_code == 0 and result.output.startswith("Invite link for alice:\nhttp://lab:9000/join/")
    token = result.output.strip().rsplit("/", 1)[1]
    data = json.loads(runner.invoke(cli, [*ws, "invite", "alice", "--json"]).output)
    assert data["renewed"] and data["url"] == f"http://127.0.0.1:8000/join/{data['token']}" and data["token"] != token
    assert runner.invoke(cli, [*ws, "revoke", "alice"]).output == "Revoked alice's invite link\n"
    result = runner.invoke(cli, [*ws, "revoke", "bob"])
    assert result.exit_code == 1
    assert result.output == "Error: no invited worker named 'bob'; invite one with: imgnet label invite NAME\n"
    result = runner.invoke(cli, [*ws, "invite", " "])
    assert result.exit_code == 1 and result.output == "Error: worker name '' must be 1-255 printable characters\n"
    for command in ("invite", "revoke", "serve"):
        assert "Example:" in runner.invoke(cli, ["label", command, "--help"]).output


def test_label_serve_runs_the_app_on_waitress(workspace):
    make_tasks(workspace)
    link = invite(workspace, "alice")
    env = {**os.environ, "IMGNET_WORKSPACE": str(workspace.root), "PYTHONUNBUFFERED": "1"}
    env.pop("IMGNET_ADMIN_TOKEN", None)
    command = [sys.executable, "-c", "from imgnet_build.cli.main import main; main()", "label", "serve", "--port", "0"]
    # cwd outside the checkout: the installed package is imported, not the source folder
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, text=True, cwd=workspace.root)
    try:
        first, second = process.stdout.readline(), process.stdout.readline()
        base_url = re.search(r"(http://127\.0\.0\.1:\d+)", first).group(1)
        admin_path = re.search(r"(/admin\?token=\S+)", second).group(1)
        worker = HttpWorker(base_url, link.path)
        assert worker.last.status_code == 200 and worker.last.headers["Server"] == "imgnet"
        assert parse_task_page(worker.last.text).positions
        assert HttpWorker(base_url, admin_path).last.status_code == 200
    finally:
        process.terminate()
        process.wait(timeout=10)


# --- the page names the sense ----------------------------------------------------------

def add_gold_examples(ws, category_id: int, task_id: int, count: int = 2) -> list[str]:
    """Gold "yes" images of the category outside the task, and a gold "yes" that is one of the task's images."""
    from imgnet_build.store import Gold

    with ws.session() as session:
        shas = [add_image(ws, session, jpeg_bytes(640, 480, seed=900 + n)) for n in range(count)]
        in_task = session.scalar(select(TaskItem.image_sha256).where(TaskItem.task_id == task_id).limit(1))
        session.add_all([Gold(image_sha256=sha, category_id=category_id, answer=True) for sha in [*shas, in_task]])
        session.add(Gold(image_sha256=add_image(ws, session, jpeg_bytes(64, 48, seed=999)), category_id=category_id,
                         answer=False))
    return shas


def test_the_page_names_the_sense_not_the_word(workspace):
    cardigan = make_cardigan(workspace)
    [task_id] = make_tasks(workspace, category_id=cardigan)
    examples = add_gold_examples(workspace, cardigan, task_id)
    with running_app(workspace) as base_url:
        alice = HttpWorker(base_url, invite(workspace, "alice").path)
        html = alice.last.text
        pictures = [alice.get(f"/t/{task_id}/example/{n}") for n in range(3)]
    assert '<h1 id="sense">Cardigan — a corgi, a kind of dog</h1>' in html
    assert "at least one <em>Cardigan</em> (the corgi)" in html
    assert '<dd id="lemmas">Cardigan Welsh corgi</dd>' in html
    assert 'href="https://en.wikipedia.org/w/index.php?search=Cardigan%20corgi"' in html
    assert html.count(f'src="/t/{task_id}/example/') == 2  # the gold image inside the task is not an example
    assert [p.status_code for p in pictures] == [200, 200, 404]
    sent = {hashlib.sha256(p.content).hexdigest() for p in pictures[:2]}
    assert sent == set(examples)


def test_a_category_at_the_top_of_the_tree_takes_its_wordnet_parents(workspace):
    """No parent in the workspace's tree: the hypernyms come from WordNet's data (kettle the drum, not the pot)."""
    kettle = make_category(workspace, "n03612965", "kettle", ("kettle", "kettledrum", "tympanum", "tympani", "timpani"),
                           "a large hemispherical brass or copper percussion instrument with a drumhead")
    [task_id] = make_tasks(workspace, category_id=kettle)
    with running_app(workspace) as base_url:
        html = HttpWorker(base_url, invite(workspace, "alice").path).last.text
    assert f'data-task="{task_id}"' in html
    assert '<h1 id="sense">Kettle — a percussion instrument, a kind of musical instrument</h1>' in html
    assert "search=kettle%20instrument" in html and "kettledrum, tympanum" in html


def test_the_mturk_question_with_examples_stays_under_the_limit(workspace):
    """48 images and 3 examples behind 700-character presigned URLs, a long gloss: under 65,535 bytes."""
    from imgnet_build.labeling.mturk import QUESTION_LIMIT, question_xml
    from imgnet_build.labeling.page import load_task_view

    cardigan = make_cardigan(workspace)
    with workspace.session() as session:
        session.execute(update(Category).where(Category.id == cardigan).values(gloss="slightly bowlegged " * 40))
    [task_id] = make_tasks(workspace, category_id=cardigan, items=48, controls=6)
    add_gold_examples(workspace, cardigan, task_id, count=3)
    with workspace.session() as session:
        view = load_task_view(session, task_id)
    url = "https://imgs.s3.amazonaws.com/ab/{}.jpg?X-Amz-Signature=" + "f" * 640
    xml = question_xml(view, "https://www.mturk.com/mturk/externalSubmit", lambda item: url.format(item.position),
                       lambda example: url.format(f"example{example.index}"))
    assert len(view.examples) == 3 and xml.count("example") >= 3 and 'id="lightbox"' in xml
    assert len(xml.encode()) < QUESTION_LIMIT


# --- a real browser --------------------------------------------------------------------

CHROMIUM = "/usr/bin/chromium"


def test_a_person_labels_in_a_browser(workspace):
    playwright = playwright_or_skip()
    [task_id] = make_tasks(workspace, items=8, controls=2)
    with workspace.session() as session:
        session.execute(update(Category).values(gloss="a slender hound <script>window.pwned = 1</script>"))
    link = invite(workspace, "alice")
    problems: list[str] = []
    with running_app(workspace) as base_url, playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
            "--no-first-run"])
        try:
            page = browser.new_page(viewport={"width": 900, "height": 900})
            page.on("console", lambda message: message.type in ("error", "warning") and problems.append(message.text))
            page.on("pageerror", lambda error: problems.append(str(error)))
            page.on("dialog", lambda dialog: problems.append(f"dialog {dialog.message}"))
            page.goto(base_url + link.path)
            assert page.url == f"{base_url}/t/{task_id}"
            page.wait_for_function("Array.from(document.images).every(i => i.complete && i.naturalWidth > 0)")
            assert page.evaluate("window.pwned") is None
            items = page.locator(".item")
            items.nth(1).click()  # mouse
            items.nth(6).click()
            items.nth(6).click()  # and off again
            assert page.inner_text("#selected-count") == "1"
            items.nth(0).focus()  # keyboard: move, select
            columns = page.evaluate("(() => { const xs = Array.from(document.querySelectorAll('.item'))"
                                    ".map(e => e.offsetTop); return xs.filter(y => y === xs[0]).length; })()")
            assert 1 < columns <= 5  # the grid wraps, so ArrowDown moves a row (positions 2 -> 2 + columns)
            page.keyboard.press("ArrowRight")
            page.keyboard.press("ArrowRight")
            page.keyboard.press("Space")  # position 2
            page.keyboard.press("ArrowDown")
            page.keyboard.press("Space")  # position 2 + columns
            page.keyboard.press("ArrowLeft")
            assert page.evaluate("document.activeElement.dataset.position") == str(1 + columns)
            assert page.inner_text("#selected-count") == "3"
            with page.expect_navigation():
                page.keyboard.press("Enter")
            assert "nothing left for you" in page.inner_text("body")
        finally:
            browser.close()
    assert problems == []
    selected = {1, 2, 2 + columns}
    items_at = items_by_position(workspace, task_id)
    stored = {item_id: answer for _, item_id, answer, _ in votes(workspace)}
    assert stored == {item.id: position in selected for position, item in items_at.items()}


# --- with the labeling rounds ----------------------------------------------------------

def test_answers_given_in_the_app_become_labels(workspace):
    from labelkit import build_world

    from imgnet_build.labeling import rounds
    from imgnet_build.labeling.rounds import LabelSettings
    from imgnet_build.store import Cluster, Label

    truth = build_world(workspace, categories=1, images=6, positives=0.5, seed=3)["n00000001"]
    settings = LabelSettings(method="majority", votes=3, images_per_task=6, controls=0, seed_images=0)
    rounds.submit(workspace, "local", settings)
    with running_app(workspace) as base_url:
        for name in ("ann", "ben", "cy"):
            worker = HttpWorker(base_url, invite(workspace, name).path)
            page = parse_task_page(worker.last.text)
            items = items_by_position(workspace, page.task_id)
            assert worker.submit(page, [p for p, item in items.items() if truth[item.image_sha256]]).status_code == 200
            assert worker.next_task() is None
    rounds.collect(workspace, settings)
    with workspace.session() as session:
        labels = dict(session.execute(select(Cluster.representative, Label.status)
                                      .join(Label, Label.cluster_id == Cluster.id)).all())
    assert labels == {sha: "accepted" if good else "rejected" for sha, good in truth.items()}


# --- odd input: a 4xx, never a 500 -----------------------------------------------------

@pytest.mark.parametrize("body", ["[" * 5000, '{"task": 1, "selected": ' + "[" * 3000 + "]" * 3000 + "}",
                                  '{"task": ' + "{" * 10 + "}" * 10 + ', "selected": []}'])
def test_deeply_nested_json_is_refused_before_parsing(workspace, body):
    make_tasks(workspace)
    with running_app(workspace) as base_url:
        alice = HttpWorker(base_url, invite(workspace, "alice").path)
        response = alice.post_submission(body, parse_task_page(alice.last.text).csrf_token)
    assert response.status_code == 400 and "not a valid submission (nested more than 8 deep)" in response.text
    assert votes(workspace) == []


def test_ids_beyond_the_databases_integers_are_a_4xx(any_workspace):
    [task_id] = make_tasks(any_workspace)
    huge = [2**31, 2**63 - 1, 2**63, 2**64, 10**30]
    with running_app(any_workspace) as base_url:
        alice = HttpWorker(base_url, invite(any_workspace, "alice").path)
        csrf = parse_task_page(alice.last.text).csrf_token
        statuses = {}
        for number in huge:
            statuses[f"task {number}"] = alice.post_submission(json.dumps({"task": number, "selected": []}), csrf)
            statuses[f"position {number}"] = alice.post_submission(
                json.dumps({"task": task_id, "selected": [number]}), csrf)
            statuses[f"/t/{number}"] = alice.get(f"/t/{number}")
            statuses[f"/t/{number}/img/0"] = alice.get(f"/t/{number}/img/0")
            statuses[f"/t/{task_id}/img/{number}"] = alice.get(f"/t/{task_id}/img/{number}")
        assert alice.get(f"/t/{task_id}/img/0").status_code == 200  # the server still works
    codes = {what: response.status_code for what, response in statuses.items()}
    assert all(code < 500 for code in codes.values()), codes
    assert codes[f"task {2**63}"] == 400 and "greater than the maximum of 9223372036854775807" in statuses[f"task {2**63}"].text
    assert codes[f"task {2**63 - 1}"] == 403  # in range: simply not this worker's task
    assert codes[f"/t/{2**63}"] == codes[f"/t/{task_id}/img/{2**31}"] == 404
    assert votes(any_workspace) == []


def test_a_missing_blob_is_a_404_logged_once(workspace, caplog):
    [task_id] = make_tasks(workspace)
    with workspace.session() as session:
        key = session.scalar(select(Image.blob_key).join(TaskItem, TaskItem.image_sha256 == Image.sha256)
                             .where(TaskItem.task_id == task_id, TaskItem.position == 3))
    (workspace.blob_store.root / key).unlink()
    with running_app(workspace) as base_url, caplog.at_level("ERROR"):
        alice = HttpWorker(base_url, invite(workspace, "alice").path)
        codes = [alice.get(f"/t/{task_id}/img/{position}").status_code for position in (3, 3, 2, 3)]
    assert codes == [404, 404, 200, 404]
    logged = [record.getMessage() for record in caplog.records if key in record.getMessage()]
    assert len(logged) == 1 and "missing from the blob store" in logged[0]


def test_slow_connections_do_not_lock_workers_out(workspace):
    """105 connections that never finish a request (waitress' old limit was 100): a worker still gets a page."""
    import socket

    make_tasks(workspace)
    link = invite(workspace, "alice")
    with running_app(workspace) as base_url:
        port = int(base_url.rsplit(":", 1)[1])
        slow = []
        try:
            for i in range(105):
                connection = socket.create_connection(("127.0.0.1", port), timeout=10)
                if i % 2:  # half say nothing, half stop in the middle of their headers
                    connection.sendall(b"GET /task HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
                slow.append(connection)
            worker = HttpWorker(base_url, link.path)  # gives up after 30 s; the old server answered after ~120
            assert worker.last.status_code == 200 and parse_task_page(worker.last.text).positions
        finally:
            for connection in slow:
                connection.close()


def test_the_servers_connection_limits(workspace):
    from imgnet_build.labeling.web import ServerLimits, _open_file_budget, make_server

    server = make_server(workspace, "127.0.0.1", 0)
    limit = min(1000, _open_file_budget())  # 1000 unless `ulimit -n` is lower
    assert (server.adj.connection_limit, server.adj.channel_timeout, server.adj.asyncore_use_poll) == (limit, 30, True)
    assert (server.adj.max_request_body_size, server.adj.max_request_header_size) == (1024 * 1024, 32 * 1024)
    server.close()
    server = make_server(workspace, "127.0.0.1", 0, limits=ServerLimits(connection_limit=200, channel_timeout=60))
    assert (server.adj.connection_limit, server.adj.channel_timeout) == (min(200, limit), 60)
    server.close()


def test_an_empty_admin_token_is_refused_at_start(workspace):
    env = {**os.environ, "IMGNET_WORKSPACE": str(workspace.root), "IMGNET_ADMIN_TOKEN": ""}
    command = [sys.executable, "-c", "from imgnet_build.cli.main import main; main()", "label", "serve", "--port", "0"]
    try:
        result = subprocess.run(command, env=env, capture_output=True, text=True, cwd=workspace.root, timeout=60)
    except subprocess.TimeoutExpired as exc:  # the old command served with a token nobody knew
        pytest.fail(f"label serve started with an empty IMGNET_ADMIN_TOKEN: {exc.stdout!r}")
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr == ("Error: IMGNET_ADMIN_TOKEN is set but empty: set it to a long random string, or unset it "
                             "and imgnet label serve prints a new token\n")


def _chromium(p):
    return p.chromium.launch(executable_path=CHROMIUM, args=[
        "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--no-first-run"])


def _watch(page, problems: list[str]) -> None:
    page.on("console", lambda message: message.type in ("error", "warning") and problems.append(message.text))
    page.on("pageerror", lambda error: problems.append(str(error)))


def _screenshot(page, tmp_path, name: str) -> None:
    """Into tmp_path, and into $IMGNET_SCREENSHOTS when set (for a person to look at)."""
    page.screenshot(path=str(tmp_path / name))
    if os.environ.get("IMGNET_SCREENSHOTS"):
        page.screenshot(path=os.path.join(os.environ["IMGNET_SCREENSHOTS"], name))


def _active_position(page) -> str | None:
    return page.evaluate("document.activeElement.classList.contains('item') ? document.activeElement.dataset.position"
                         " : null")


def test_the_task_page_by_keyboard_in_chromium(workspace, tmp_path):
    """Desktop (1280x800), keyboard only: focus on load, Space, Z enlarges, Enter from anywhere, and the next
    page says the answers were saved and how many tasks are done."""
    playwright = playwright_or_skip()
    cardigan = make_cardigan(workspace)
    first, second = make_tasks(workspace, category_id=cardigan, tasks=2, items=12, controls=2, image_size=(640, 480))
    add_gold_examples(workspace, cardigan, first)
    link = invite(workspace, "alice")
    problems: list[str] = []
    with running_app(workspace) as base_url, playwright.sync_playwright() as p:
        browser = _chromium(p)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 800})
            _watch(page, problems)
            page.goto(base_url + link.path)
            assert page.url == f"{base_url}/t/{first}"
            page.wait_for_function("() => Array.from(document.images).every(i => i.complete && i.naturalWidth > 0)")
            assert page.inner_text("h1") == "Cardigan — a corgi, a kind of dog"
            assert page.locator(".examples img").count() == 2
            order = page.evaluate("Array.from(document.querySelectorAll('.item'), e => e.dataset.position)")
            assert _active_position(page) == order[0]  # focus on load, nothing clicked
            tile = page.locator(".item").nth(0).bounding_box()
            assert tile["width"] > 177 and tile["height"] > 133  # larger than the old 177x133 tiles
            _screenshot(page, tmp_path, "label-task-desktop.png")
            page.keyboard.press("Space")
            page.keyboard.press("ArrowRight")
            page.keyboard.press("z")  # enlarge the second image
            lightbox = page.locator("#lightbox")
            assert lightbox.is_visible()
            page.wait_for_function("() => document.getElementById('lightbox-image').naturalWidth > 0")
            large = page.locator("#lightbox-image").bounding_box()
            assert large["width"] > 2 * tile["width"] and large["height"] > 2 * tile["height"]
            page.keyboard.press("Space")  # select it from the lightbox
            assert page.inner_text("#lightbox-state") == "selected"
            _screenshot(page, tmp_path, "label-lightbox-desktop.png")
            page.keyboard.press("ArrowRight")
            assert page.inner_text("#lightbox-caption") == "Image 3 of 12"
            page.keyboard.press("Escape")
            assert not lightbox.is_visible() and _active_position(page) == order[2]
            page.keyboard.press("Space")
            page.keyboard.press("z")
            page.keyboard.press("z")  # Z closes it too
            assert not lightbox.is_visible() and _active_position(page) == order[2]
            # Z, Z, Z in one task: the late "close" event of the second must not close what the third opened
            page.evaluate("""() => { for (let n = 0; n < 3; n++) { document.activeElement.dispatchEvent(
                new KeyboardEvent("keydown", {key: "z", bubbles: true})); } }""")
            page.evaluate("() => new Promise(resolve => setTimeout(resolve, 100))")
            assert lightbox.is_visible()
            page.keyboard.press("z")
            assert not lightbox.is_visible() and _active_position(page) == order[2]
            assert page.inner_text("#selected-count") == "3"
            page.evaluate("document.activeElement.blur()")  # focus on the page itself, not in the grid
            with page.expect_navigation():
                page.keyboard.press("Enter")
            assert page.url == f"{base_url}/t/{second}"
            assert page.inner_text("#notice") == f"Saved: your answers to task {first} are stored. You have done 1 task."
            page.wait_for_function("() => Array.from(document.images).every(i => i.complete && i.naturalWidth > 0)")
            assert _active_position(page) is not None
            _screenshot(page, tmp_path, "label-saved-desktop.png")
            with page.expect_navigation():
                page.keyboard.press("Enter")  # nothing selected: all no
            assert "nothing left for you" in page.inner_text("body")
            assert page.inner_text("#notice") == f"Saved: your answers to task {second} are stored. You have done 2 tasks."
        finally:
            browser.close()
    assert problems == []
    items_at = items_by_position(workspace, first)
    stored = {item_id: answer for _, item_id, answer, _ in votes(workspace) if item_id in
              {item.id for item in items_at.values()}}
    assert stored == {item.id: str(position) in order[:3] for position, item in items_at.items()}


def test_the_task_page_on_a_phone_in_chromium(workspace, tmp_path):
    """390x844: two columns, no sideways scrolling, a tap on a magnifier shows the image large."""
    playwright = playwright_or_skip()
    cardigan = make_cardigan(workspace)
    [task_id] = make_tasks(workspace, category_id=cardigan, items=12, controls=2, image_size=(640, 480))
    add_gold_examples(workspace, cardigan, task_id)
    link = invite(workspace, "alice")
    problems: list[str] = []
    with running_app(workspace) as base_url, playwright.sync_playwright() as p:
        browser = _chromium(p)
        try:
            page = browser.new_page(viewport={"width": 390, "height": 844}, device_scale_factor=2, is_mobile=True,
                                    has_touch=True)
            _watch(page, problems)
            page.goto(base_url + link.path)
            page.wait_for_function("() => Array.from(document.images).every(i => i.complete && i.naturalWidth > 0)")
            assert page.evaluate("document.documentElement.scrollWidth") <= 390
            columns = page.evaluate("(() => { const xs = Array.from(document.querySelectorAll('.item'))"
                                    ".map(e => e.offsetTop); return xs.filter(y => y === xs[0]).length; })()")
            assert columns == 2
            _screenshot(page, tmp_path, "label-task-phone.png")
            page.locator(".item .zoom").nth(3).tap()
            assert page.locator("#lightbox").is_visible() and page.inner_text("#lightbox-caption") == "Image 4 of 12"
            page.wait_for_function("() => document.getElementById('lightbox-image').naturalWidth > 0")
            assert page.locator("#lightbox-image").bounding_box()["width"] > 300
            page.locator("#lightbox-toggle").tap()
            _screenshot(page, tmp_path, "label-lightbox-phone.png")
            page.locator("#lightbox-close").tap()
            assert not page.locator("#lightbox").is_visible()
            assert page.inner_text("#selected-count") == "1"
            assert page.locator(".item").nth(3).get_attribute("aria-checked") == "true"
        finally:
            browser.close()
    assert problems == []
