"""`imgnet demo`: the pipeline end to end on a small dog subtree, with no internet needed.

Offline, the candidates are generated pictures served by a local mirror on 127.0.0.1 (with
re-encoded copies, a dead link, a truncated file and an HTML page among them), so every
stage runs for real: tree, gather (HTTP, validation, blob store), dedup. With `online=True`
the candidates come from Wikimedia Commons instead.
"""

from __future__ import annotations

import contextlib
import csv
import http.server
import io
import os
import random
import threading
from collections.abc import Iterator
from functools import partial
from pathlib import Path

from PIL import Image, ImageDraw, ImageFilter

from imgnet_build import dedup
from imgnet_build.errors import NotAWorkspace, WorkspaceExists
from imgnet_build.fetch import FetchSettings
from imgnet_build.gather import gather
from imgnet_build.labeling import rounds
from imgnet_build.stage import Say
from imgnet_build.taxonomy import TreeOptions, build_tree
from imgnet_build.wordnet import resolve_synset, wnid
from imgnet_build.workspace import Workspace

__all__ = ["run_demo", "DEMO_ROOT", "DEMO_CATEGORIES"]

DEMO_ROOT = "dog.n.01"
DEMO_MARKER = ".imgnet-demo"  # a folder the demo made (and may rebuild)
DEMO_CATEGORIES = ("pembroke.n.01", "cardigan.n.02", "toy_poodle.n.01", "standard_poodle.n.01", "whippet.n.01")
IMAGES_PER_CATEGORY = 12
DEMO_PORT = 28613  # the local mirror's port when free (see _ports)
OFF_CATEGORY = 4  # pictures of something else in each category's list: the crowd should reject them


def run_demo(directory: str | Path, online: bool = False, say: Say = print) -> Workspace:
    """Build (or continue) the demo in `directory`: the workspace in `directory/workspace`, the
    export in `directory/dataset` (outside the workspace, as every export must be) and the report
    in `directory/report.html`. `say` receives one line per step."""
    directory = Path(directory)
    if (directory / "imgnet.toml").exists():  # a workspace itself: never the demo's folder
        if (directory / DEMO_MARKER).exists():
            raise WorkspaceExists(f"{directory} is a demo workspace of an older imgnet, which kept the dataset "
                                  f"inside the workspace; remove it (rm -r {directory}) or give the demo a new folder")
        raise WorkspaceExists(f"{directory} is a workspace not made by imgnet demo; the demo would replace "
                              "its category tree. Give the demo a new folder: imgnet demo imgnet-demo")
    root = directory / "workspace"
    try:
        workspace = Workspace.open(root)
    except NotAWorkspace:
        if directory.exists() and any(directory.iterdir()) and not (directory / DEMO_MARKER).exists():
            raise WorkspaceExists(f"{directory} is a folder with files not made by imgnet demo; "
                                  "give the demo a new folder: imgnet demo imgnet-demo") from None
        workspace = Workspace.init(root)
        (directory / DEMO_MARKER).write_text("made by imgnet demo; imgnet demo may rebuild what is in here\n")
        say(f"demo: created the workspace {root}")
    else:
        if not (directory / DEMO_MARKER).exists():
            workspace.close()
            raise WorkspaceExists(f"{root} is a workspace not made by imgnet demo; the demo would replace "
                                  "its category tree. Give the demo a new folder: imgnet demo imgnet-demo")
        say(f"demo: continuing the workspace in {root}")
    tree = build_tree(workspace, TreeOptions(roots=(DEMO_ROOT,)))
    say(f"tree: {tree.categories} categories below {DEMO_ROOT}")
    if online:
        summary = gather(workspace, "wikimedia", per_category=IMAGES_PER_CATEGORY)
    else:
        with _local_mirror(directory / "mirror") as url_list:
            settings = FetchSettings(allow_loopback=True)
            summary = gather(workspace, f"urls:{url_list}", settings=settings)
    say(summary.summary())
    say(dedup.run(workspace).summary())
    if not online:
        result = rounds.run(workspace, "simulated")
        say(f"labels (simulated crowd, dynamic consensus, {result['rounds']} rounds): {result['accepted']} accepted, "
            f"{result['rejected']} rejected, {result['undecided']} undecided")
        precision, recall = measured_quality(workspace)
        say(f"labels measured against the truth: precision {precision:.3f}, recall {recall:.3f}")
        from imgnet_build.split import ExportOptions, export

        dataset = export(workspace, directory / "dataset",  # the crowd was simulated: said, and opted in
                         ExportOptions(format="imagefolder", include_simulated=True, overwrite=True))
        say(f"{dataset.summary()} (simulated labels included)")
    from imgnet_build.report import write_report

    say(write_report(workspace, directory / "report.html").summary())
    return workspace


def measured_quality(workspace: Workspace) -> tuple[float, float]:
    """(precision, recall) of the accepted labels against the candidates' truth."""
    from sqlalchemy import select

    from imgnet_build.store import Candidate, Image, Label

    with workspace.session() as session:
        truth = {(cluster, category): bool(value) for cluster, category, value in session.execute(
            select(Image.cluster_id, Candidate.category_id, Candidate.truth)
            .join(Candidate, Candidate.image_sha256 == Image.sha256).where(Candidate.truth.is_not(None)))}
        accepted = {(cluster, category) for cluster, category in session.execute(
            select(Label.cluster_id, Label.category_id).where(Label.status == "accepted"))}
    right = sum(truth.get(pair, False) for pair in accepted)
    return right / max(len(accepted), 1), right / max(sum(truth.values()), 1)


@contextlib.contextmanager
def _local_mirror(folder: Path) -> Iterator[Path]:
    """Serve generated candidates from `folder` on 127.0.0.1; yields the URL list (CSV)."""
    folder.mkdir(parents=True, exist_ok=True)
    handler = partial(_QuietHandler, directory=str(folder))
    port_file = folder / "port"  # a rerun serves the same URLs, so it continues instead of starting over
    server = None
    for port in _ports(port_file):
        try:
            server = http.server.ThreadingHTTPServer(("127.0.0.1", port), handler)
            break
        except OSError:
            continue
    assert server is not None  # port 0 always binds
    port_file.write_text(str(server.server_port))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield _write_candidates(folder, f"http://127.0.0.1:{server.server_port}")
    finally:
        server.shutdown()
        server.server_close()


def _ports(port_file: Path) -> list[int]:
    """Ports to try for the mirror: the one a previous run used, the fixed demo port, then any.

    The port is part of every candidate's URL, and so of the manifest: a fixed port (below
    Linux's ephemeral range, so other programs' port-0 servers never take it) makes two
    demos give byte-identical manifests. `IMGNET_DEMO_PORT` picks another."""
    ports = []
    try:
        ports.append(int(port_file.read_text()))
    except (OSError, ValueError):
        pass
    return [*ports, int(os.environ.get("IMGNET_DEMO_PORT") or DEMO_PORT), 0]


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        return


def _write_candidates(folder: Path, base: str) -> Path:
    rows = []
    for number, name in enumerate(DEMO_CATEGORIES):
        category = wnid(resolve_synset(name))
        for index in range(IMAGES_PER_CATEGORY):
            filename = f"{category}_{index}.jpg"
            if not (folder / filename).exists():
                (folder / filename).write_bytes(_picture(seed=number * 100 + index))
            rows.append((f"{base}/{filename}", category, "CC0", "yes"))
        for index in range(OFF_CATEGORY):  # something else: same kind of picture, wrong subject
            filename = f"{category}_off{index}.jpg"
            if not (folder / filename).exists():
                (folder / filename).write_bytes(_picture(seed=10_000 + number * 100 + index))
            rows.append((f"{base}/{filename}", category, "CC0", "no"))
        original = (folder / f"{category}_0.jpg").read_bytes()
        copy = Image.open(io.BytesIO(original)).resize((480, 360))
        buffer = io.BytesIO()
        copy.save(buffer, "JPEG", quality=70)  # the same picture, smaller and re-encoded: a near duplicate
        (folder / f"{category}_copy.jpg").write_bytes(buffer.getvalue())
        rows.append((f"{base}/{category}_copy.jpg", category, "CC0", "yes"))
        rows.append((f"{base}/{category}_1.jpg?mirror=2", category, "CC0", "yes"))  # the same bytes at another URL
        rows.append((f"{base}/{category}_missing.jpg", category, "CC0", "yes"))  # a dead link: 404
    (folder / "truncated.jpg").write_bytes(_picture(seed=999)[:4000])
    (folder / "page.jpg").write_text("<html><body>not an image</body></html>")
    rows.append((f"{base}/truncated.jpg", category, "", ""))
    rows.append((f"{base}/page.jpg", category, "", ""))
    url_list = folder / "candidates.csv"
    with url_list.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["url", "wnid", "license", "truth"])
        writer.writerows(rows)
    return url_list


def _picture(seed: int, size: tuple[int, int] = (640, 480)) -> bytes:
    """A generated photo-like JPEG: a soft background with a few shapes, different for each seed."""
    rng = random.Random(seed)
    image = Image.new("RGB", size, tuple(rng.randrange(256) for _ in range(3)))
    draw = ImageDraw.Draw(image)
    for _ in range(12):
        x, y = rng.randrange(size[0]), rng.randrange(size[1])
        box = (x, y, x + rng.randrange(40, 260), y + rng.randrange(40, 200))
        shape = draw.ellipse if rng.random() < 0.5 else draw.rectangle
        shape(box, fill=tuple(rng.randrange(256) for _ in range(3)))
    image = image.filter(ImageFilter.GaussianBlur(2))
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=90)
    return buffer.getvalue()
