"""The HTML report: its figures from a workspace built row by row, and the page in headless chromium."""

from __future__ import annotations

import base64
import hashlib
import html
import io
import json
import os
import re
import shutil
from decimal import Decimal
from pathlib import Path

import imagegen
import pytest
from headless import playwright_or_skip
from labelkit import build_world
from sqlalchemy import select

from imgnet_build.blobs import blob_key
from imgnet_build.cli.main import cli
from imgnet_build.labeling import rounds
from imgnet_build.labeling.rounds import LabelSettings
from imgnet_build.report import ReportOptions, write_report
from imgnet_build.report.facts import gather_facts
from imgnet_build.schemas import validate
from imgnet_build.split import ExportOptions, export
from imgnet_build.store import (
    Assignment,
    Candidate,
    Category,
    CategoryConsensus,
    CategoryEdge,
    Cluster,
    Image,
    Label,
    Task,
    TaskItem,
    Vote,
    Worker,
)

CHROMIUM = "/usr/bin/chromium"
EVIL_GLOSS = "a dog <script>alert('gloss')</script> & friends"
EVIL_URL = "http://bad.example/<script>alert(1)</script>.jpg?a=1&b=\"2\""


def _image(session, workspace, seed: int, size=(320, 240)) -> Image:
    data = imagegen.jpeg(imagegen.photo(seed, size=size), quality=80)
    sha = hashlib.sha256(data).hexdigest()
    key = blob_key(sha, "jpg")
    workspace.blob_store.put(key, data)
    image = Image(sha256=sha, width=size[0], height=size[1], format="JPEG", bytes=len(data), blob_key=key)
    session.add(image)
    session.flush()
    cluster = Cluster(key=sha, representative=sha)
    session.add(cluster)
    session.flush()
    image.cluster_id = cluster.id
    return image


def build_workspace(workspace) -> dict:
    """Two breeds below dog (a hard category); returns their wnids.

    whippet: labels 4 right accepts, 1 wrong accept (truth no), 1 right reject, 1 wrong
    reject (truth yes), and a rejected picture whose blob is gone (truth yes). poodle: 4
    accepted (truth yes), 1 undecided (truth yes). One poodle picture was also gathered
    for whippet (a conflict) and has a near-duplicate copy. Workers vote on every item of
    their tasks; one mturk task has a positive and a negative control.
    """
    with workspace.session() as s:
        dog = Category(wnid="n02084071", synset="dog.n.01", name="dog", lemmas=["dog"], gloss=EVIL_GLOSS,
                       lexname="noun.animal", depth=0)
        whippet = Category(wnid="n02091134", synset="whippet.n.01", name="whippet", lemmas=["whippet"],
                           gloss="a small slender dog", lexname="noun.animal", depth=1)
        poodle = Category(wnid="n02113978", synset="poodle.n.01", name="poodle", lemmas=["poodle"],
                          gloss="an intelligent dog with a curly coat", lexname="noun.animal", depth=1)
        pug = Category(wnid="n02110958", synset="pug.n.01", name="pug", lemmas=["pug"], gloss="a small dog",
                       lexname="noun.animal", depth=1)  # nothing gathered
        s.add_all([dog, whippet, poodle, pug])
        s.flush()
        s.add_all([CategoryEdge(parent_id=dog.id, child_id=whippet.id),
                   CategoryEdge(parent_id=dog.id, child_id=poodle.id),
                   CategoryEdge(parent_id=dog.id, child_id=pug.id),
                   CategoryConsensus(category_id=dog.id, hard=True, seed_images=10, prior=0.4)])

        def candidate(category, image, truth, url=None, source="urls"):
            url = url or f"http://127.0.0.1/{image.sha256[:12]}.jpg"
            row = Candidate(category_id=category.id, source=source, url=url,
                            status="ok", truth=truth, image_sha256=image.sha256, license="CC0")
            s.add(row)
            return row

        pairs = []  # (category, image, truth, label status)
        whippet_plan = [(True, "accepted")] * 4 + [(False, "accepted"), (False, "rejected"), (True, "rejected")]
        for number, (truth, status) in enumerate(whippet_plan):
            image = _image(s, workspace, seed=100 + number)
            candidate(whippet, image, truth)
            pairs.append((whippet, image, truth, status))
        poodle_plan = [(True, "accepted")] * 4 + [(True, "undecided")]
        for number, (truth, status) in enumerate(poodle_plan):
            image = _image(s, workspace, seed=200 + number)
            candidate(poodle, image, truth, url=EVIL_URL if number == 0 else None)
            pairs.append((poodle, image, truth, status))
        shared = pairs[7][1]  # the first poodle picture, also gathered for whippet: a conflict
        candidate(whippet, shared, None, url="http://127.0.0.1/shared.jpg", source="wikimedia")
        copy = _image(s, workspace, seed=200, size=(160, 120))  # the same picture, smaller: a near duplicate
        copy.cluster_id = shared.cluster_id
        candidate(poodle, copy, True, url="http://127.0.0.1/copy.jpg")
        broken = Image(sha256="f" * 64, width=10, height=10, format="JPEG", bytes=10,
                       blob_key=blob_key("f" * 64, "jpg"))
        s.add(broken)  # its blob is gone: the contact sheet leaves it out and counts it
        s.flush()
        broken_cluster = Cluster(key=broken.sha256, representative=broken.sha256)
        s.add(broken_cluster)
        s.flush()
        broken.cluster_id = broken_cluster.id
        candidate(whippet, broken, True, url="http://127.0.0.1/broken.jpg")
        s.add(Label(cluster_id=broken_cluster.id, category_id=whippet.id, status="rejected", confidence=0.3,
                    yes_votes=1, no_votes=2, method="dynamic", round=1))
        for _number, (url, status, error, source) in enumerate([
                ("http://127.0.0.1/a.jpg", "failed", "HTTP 404 Not Found", "urls"),
                ("http://127.0.0.1/b.jpg", "failed", "HTTP 404 Not Found", "urls"),
                ("http://127.0.0.1/c.jpg", "failed", "not an image: cannot identify image file", "urls"),
                (EVIL_URL + "x", "failed", "not an image: <script>alert(2)</script>", "wikimedia"),
                ("http://127.0.0.1/d.jpg", "skipped", "quota reached", "urls"),
                ("http://127.0.0.1/e.jpg", "pending", None, "urls")]):
            s.add(Candidate(category_id=whippet.id, source=source, url=url, status=status, error=error))

        workers = [Worker(backend="mturk", external_id="A1WORKER", accuracy=0.95, control_answers=4, control_correct=4),
                   Worker(backend="mturk", external_id="A2WORKER", accuracy=0.55, control_answers=4, control_correct=2,
                          blocked=True),
                   Worker(backend="simulated", external_id="sim-1", accuracy=0.9, simulated=True)]
        s.add_all(workers)
        s.flush()
        mturk = Task(category_id=whippet.id, round=1, batch="r1-mturk-live", backend="mturk", status="done",
                     assignments_wanted=3, reward_cents=10, live=True)
        mturk_big = Task(category_id=poodle.id, round=1, batch="r1-mturk-live", backend="mturk", status="done",
                         assignments_wanted=10, reward_cents=25, live=True)
        simulated = Task(category_id=poodle.id, round=1, batch="r1-simulated", backend="simulated", status="done",
                         assignments_wanted=1, reward_cents=10)
        sandbox = Task(category_id=poodle.id, round=1, batch="r1-mturk", backend="mturk", status="done",
                       assignments_wanted=3, reward_cents=10, test=True)
        s.add_all([mturk, mturk_big, simulated, sandbox])
        s.flush()
        items = {mturk.id: [], mturk_big.id: [], simulated.id: [], sandbox.id: []}
        for position, (category, image, _truth, _status) in enumerate(pairs):
            task = mturk if category is whippet else mturk_big
            items[task.id].append(TaskItem(task_id=task.id, position=position, image_sha256=image.sha256,
                                           cluster_id=image.cluster_id, kind="candidate"))
        known = _image(s, workspace, seed=300)  # a known whippet, shown only as a control
        controls = [TaskItem(task_id=mturk.id, position=100, image_sha256=known.sha256, kind="positive", expected=True),
                    TaskItem(task_id=mturk.id, position=101, image_sha256=pairs[7][1].sha256, kind="negative",
                             expected=False)]
        items[mturk.id] += controls
        items[simulated.id].append(TaskItem(task_id=simulated.id, position=0, image_sha256=pairs[8][1].sha256,
                                            cluster_id=pairs[8][1].cluster_id, kind="candidate"))
        s.add_all([item for task_items in items.values() for item in task_items])
        s.flush()
        assignments = [Assignment(task_id=mturk.id, worker_id=workers[0].id, status="approved"),
                       Assignment(task_id=mturk.id, worker_id=workers[1].id, status="rejected"),
                       Assignment(task_id=mturk_big.id, worker_id=workers[0].id, status="submitted"),
                       Assignment(task_id=mturk_big.id, worker_id=workers[1].id, status="approved"),
                       Assignment(task_id=simulated.id, worker_id=workers[2].id, status="approved", simulated=True),
                       Assignment(task_id=sandbox.id, worker_id=workers[0].id, status="approved")]
        s.add_all(assignments)
        s.flush()
        for assignment in assignments:
            worker = next(w for w in workers if w.id == assignment.worker_id)
            for item in items[assignment.task_id]:
                category = whippet if assignment.task_id == mturk.id else poodle
                # the good worker answers controls right; the blocked one says yes to everything
                answer = item.expected if (item.kind != "candidate" and worker is workers[0]) else True
                s.add(Vote(assignment_id=assignment.id, worker_id=worker.id, task_item_id=item.id,
                           image_sha256=item.image_sha256, category_id=category.id, answer=answer,
                           control=item.kind != "candidate", simulated=worker.simulated))
        for _number, (category, image, _truth, status) in enumerate(pairs):
            confidence = {"accepted": 0.97, "rejected": 0.05, "undecided": 0.6}[status]
            s.add(Label(cluster_id=image.cluster_id, category_id=category.id, status=status, confidence=confidence,
                        yes_votes=2 if status != "rejected" else 0, no_votes=0 if status != "rejected" else 2,
                        method="dynamic", round=1, simulated=category is poodle))
        for number, (_category, image, _truth, _status) in enumerate(p for p in pairs if p[3] == "accepted"):
            s.get(Cluster, image.cluster_id).split = "val" if number % 4 == 3 else "train"
    return {"whippet": whippet.wnid, "poodle": poodle.wnid, "dog": dog.wnid}


@pytest.fixture
def built(any_workspace):
    return any_workspace, build_workspace(any_workspace)


def test_figures(built, tmp_path):
    workspace, _ = built
    summary = write_report(workspace, tmp_path / "report.html")
    assert (summary.accepted, summary.rejected, summary.undecided) == (9, 3, 1)
    assert summary.truth_labels == 13  # the broken image's label counts too: its candidate says yes
    assert summary.precision == pytest.approx(8 / 9)  # one whippet accepted with truth no
    assert summary.recall == pytest.approx(8 / 11)  # truth yes: 8 accepted, 2 rejected, 1 undecided
    # controls: the good worker right on 2 of 2 (in one assignment), the blocked one says yes to both
    assert summary.control_accuracy == pytest.approx(3 / 4)
    # live mturk: task 1 (3 wanted): 1 approved x 0.10 + 20%; task 2 (10 wanted): 2 paid x 0.25 + 40%;
    # the sandbox and the simulated crowd are free
    assert Decimal(summary.cost) == Decimal("0.10") * Decimal("1.2") + Decimal("0.50") * Decimal("1.4")
    assert summary.thumbnails == 5 + 2 + 4  # whippet accepted and rejected, poodle accepted (undecided not shown)
    assert summary.unreadable_images == 1  # the broken image, rejected for whippet
    assert summary.bytes == (tmp_path / "report.html").stat().st_size
    cost = html.unescape((tmp_path / "report.html").read_text()).split('id="cost"')[1].split("</table>")[0]
    assert "<td>mturk sandbox</td><td class=\"n\">1</td><td class=\"n\">1</td><td class=\"n\">$0.00</td>" in cost
    assert summary.summary().startswith(f"report: {tmp_path / 'report.html'} (")


def test_the_report_and_label_status_show_one_cost(built, tmp_path):
    """One computation of cost, by marketplace: a live HIT whose reward was not recorded is priced
    the way the cost cap prices it (the settings' reward), in the report as in `label status`."""
    from imgnet_build.labeling.status import label_status

    workspace, _ = built
    with workspace.session() as s:
        task = Task(category_id=s.scalars(select(Category.id)).first(), round=2, batch="r2-mturk-live",
                    backend="mturk", status="done", assignments_wanted=3, reward_cents=None, live=True)
        s.add(task)
        s.flush()
        s.add(Assignment(task_id=task.id, worker_id=s.scalars(select(Worker.id)).first(), status="approved"))
    status = label_status(workspace).as_dict()["cost"]
    summary = write_report(workspace, tmp_path / "report.html")
    assert Decimal(summary.cost) == Decimal(status["spent_usd"]) > Decimal("0.82")
    table = html.unescape((tmp_path / "report.html").read_text()).split('id="cost"')[1].split("</table>")[0]
    for market in status["marketplaces"]:
        shown = market["spent_usd"] if market["paid"] else "0.00"
        assert (f"<td>{market['marketplace']}</td><td class=\"n\">{market['tasks']}</td>"
                f"<td class=\"n\">{market['assignments']}</td>") in table
        assert f"<td class=\"n\">${shown}</td></tr>" in table


def test_figures_of_a_simulated_crowd_match_the_truth(workspace, tmp_path):
    """Labels written by the labeling engine itself; precision recomputed here from the world's truth."""
    world = build_world(workspace, categories=3, images=24)
    rounds.run(workspace, "simulated", LabelSettings(seed_images=4), options={"sim_seed": 5})
    truth = {sha: value for images in world.values() for sha, value in images.items()}
    with workspace.session() as session:
        labels = session.execute(select(Cluster.representative, Label.status)
                                 .join(Label, Label.cluster_id == Cluster.id)).all()
    accepted = [sha for sha, status in labels if status == "accepted"]
    summary = write_report(workspace, tmp_path / "report.html")
    assert summary.accepted == len(accepted) and summary.truth_labels == len(labels)
    assert summary.precision == pytest.approx(sum(truth[sha] for sha in accepted) / len(accepted))
    assert summary.recall == pytest.approx(sum(truth[sha] for sha in accepted) / sum(truth[sha] for sha, _ in labels))
    assert summary.cost == "0.00" and summary.control_accuracy is not None
    assert summary.thumbnails > 0 and summary.unreadable_images == 0


def test_split_counts_are_the_exports(workspace, tmp_path):
    build_world(workspace, categories=3, images=24)
    rounds.run(workspace, "simulated", LabelSettings(seed_images=4), options={"sim_seed": 5})
    empty = gather_facts_of(workspace)
    assert empty.splits == {"train": 0, "val": 0}
    result = export(workspace, tmp_path / "out", ExportOptions(include_simulated=True, val_fraction=0.3, seed=1))
    facts = gather_facts_of(workspace)
    assert {wnid: {"train": row.train, "val": row.val} for wnid, row in facts.categories.items() if row.accepted} \
        == result.classes
    assert facts.splits == result.splits
    write_report(workspace, tmp_path / "report.html")
    assert (f"The last export put {result.splits['train']} accepted clusters in train and {result.splits['val']} in val"
            in (tmp_path / "report.html").read_text())


def gather_facts_of(workspace):
    with workspace.session() as session:
        return gather_facts(session, workspace)


def test_escapes_everything_from_the_data(built, tmp_path):
    workspace, _ = built
    write_report(workspace, tmp_path / "report.html")
    page = (tmp_path / "report.html").read_text()
    assert "<script" not in page.lower()
    shown = html.unescape(page)  # the text is there, as text
    assert EVIL_GLOSS in shown  # the category's title attribute
    assert EVIL_URL in shown  # a thumbnail's title
    assert re.findall(r'(?:src|href)="(?!data:|#)', page) == []  # nothing to fetch
    assert ("2 duplicates in 1 clusters, as <code>imgnet dedup</code> and <code>imgnet status</code> count them: "
            "1 candidates fetched a file another candidate fetched") in page  # the poodle copy, also gathered for whippet


def test_cli_writes_into_the_workspace_by_default(built, runner):
    workspace, _ = built
    result = runner.invoke(cli, ["-w", str(workspace.root), "report"])
    assert result.exit_code == 0, result.output
    assert result.output.startswith(f"report: {workspace.root / 'report.html'} (")
    result = runner.invoke(cli, ["-w", str(workspace.root), "report", "--json", "-o", str(workspace.root / "r.html")])
    document = json.loads(result.output)
    validate(document, "report")
    assert document["path"] == str(workspace.root / "r.html") and document["cost"] == "0.82"
    result = runner.invoke(cli, ["-w", str(workspace.root), "report", "-o", str(workspace.root / "nope" / "r.html")])
    assert result.exit_code == 1
    folder = workspace.root / "nope"
    assert result.output == f"Error: cannot write {folder / 'r.html'}: folder {folder} does not exist\n"


def test_an_empty_workspace_gives_a_page_too(workspace, tmp_path):
    summary = write_report(workspace, tmp_path / "empty.html")
    page = (tmp_path / "empty.html").read_text()
    assert f"<h1>imgnet report: {workspace.root.resolve().name}</h1>" in page
    assert "The tree is empty" in page and summary.thumbnails == 0 and summary.precision is None


def test_the_tree_lists_the_branches_with_candidates(built, tmp_path):
    workspace, _ = built
    write_report(workspace, tmp_path / "report.html")
    tree = (tmp_path / "report.html").read_text().split('<table class="tree">')[1].split("</table>")[0]
    listed = re.findall(r"<span class=\"muted\">(n\d{8})</span>", tree)
    assert listed == ["n02084071", "n02091134", "n02113978"]  # dog, whippet, poodle: not pug
    assert "1 more categories are not listed: those with no candidates in or below them." in html.unescape(
        (tmp_path / "report.html").read_text())


def test_the_title_names_the_tree_and_the_folder(built, tmp_path):
    workspace, _ = built
    write_report(workspace, tmp_path / "report.html")
    page = (tmp_path / "report.html").read_text()
    title = f"imgnet report: dog ({workspace.root.resolve().name})"
    assert f"<title>{title}</title>" in page and f"<h1>{title}</h1>" in page


def test_thumbnails_are_capped(built, tmp_path):
    workspace, _ = built
    options = ReportOptions(sheet_categories=1, thumbnails_per_side=2, thumbnail_size=48)
    summary = write_report(workspace, tmp_path / "small.html", options)
    assert summary.thumbnails == 4  # whippet: 2 accepted + 2 rejected; poodle left out
    assert "1 more categories with images are not shown" in (tmp_path / "small.html").read_text()


def test_page_in_headless_chromium(workspace, tmp_path):
    playwright = playwright_or_skip()
    build_workspace(workspace)
    path = tmp_path / "report.html"
    write_report(workspace, path)
    problems, requests = [], []
    with playwright.sync_playwright() as driver:
        browser = driver.chromium.launch(executable_path=CHROMIUM, args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
            "--no-first-run"])
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.on("console", lambda message: message.type in ("error", "warning") and problems.append(message.text))
            page.on("pageerror", lambda error: problems.append(str(error)))
            page.on("request", lambda request: requests.append(request.url))
            page.goto(path.as_uri(), wait_until="load")
            images = page.evaluate("""() => Array.from(document.images, image =>
                ({src: image.src.slice(0, 30), complete: image.complete, width: image.naturalWidth}))""")
            scripts = page.evaluate("() => document.querySelectorAll('script').length")
            page.screenshot(path=str(tmp_path / "report.png"), full_page=True)
        finally:
            browser.close()
    if os.environ.get("IMGNET_TEST_ARTIFACTS"):
        folder = Path(os.environ["IMGNET_TEST_ARTIFACTS"])
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copy(tmp_path / "report.png", folder / "report.png")
        shutil.copy(path, folder / "report.html")
    assert problems == []
    assert [url for url in requests if not url.startswith("data:")] == [path.as_uri()]
    assert scripts == 0
    assert len(images) == 11 + 4  # thumbnails and charts
    assert [image for image in images if not image["complete"] or image["width"] == 0] == []
    assert (tmp_path / "report.png").stat().st_size > 10_000


def test_thumbnails_are_upright():
    """A portrait photo stored sideways with EXIF orientation 6 (turn 90 degrees clockwise)."""
    from PIL import Image as PILImage

    from imgnet_build.report.thumbnails import make_thumbnail

    upright = imagegen.photo(7, size=(240, 320))
    sideways = upright.transpose(PILImage.Transpose.ROTATE_90)  # what the camera stored
    exif = PILImage.Exif()
    exif[0x0112] = 6
    buffer = io.BytesIO()
    sideways.save(buffer, "JPEG", quality=90, exif=exif)
    src, width, height = make_thumbnail(buffer.getvalue(), 96)
    assert (width, height) == (72, 96)
    shown = PILImage.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1]))).convert("RGB")
    expected = upright.resize((72, 96))
    difference = sum(abs(a - b) for a, b in zip(shown.tobytes(), expected.tobytes(), strict=True)) / (72 * 96 * 3)
    assert difference < 20  # mean per channel; turned the wrong way it is about 70
