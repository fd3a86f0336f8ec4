"""The labeling web app for tests and benchmarks: tasks built through the ORM, the app on a
real waitress server on 127.0.0.1 port 0, and a worker that talks HTTP to it.

    ids = make_tasks(ws, tasks=2, items=8)
    with running_app(ws, admin_token="t") as base_url:
        worker = HttpWorker(base_url, invite(ws, "alice").path)
        page = worker.next_task(); worker.submit(page, [0, 3])
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from html import unescape

import requests
from loopback import jpeg_bytes
from PIL import Image as PILImage

from imgnet_build.blobs import blob_key
from imgnet_build.labeling.web import make_server
from imgnet_build.store import Category, CategoryEdge, Image, Task, TaskItem
from imgnet_build.workspace import Workspace


def make_category(ws: Workspace, wnid: str = "n02091244", name: str = "Ibizan hound",
                  lemmas: tuple[str, ...] = ("Ibizan hound", "Ibizan Podenco"),
                  gloss: str = "a slender hound with large erect ears") -> int:
    with ws.session() as session:
        category = Category(wnid=wnid, synset=f"{name.replace(' ', '_').lower()}.n.01", name=name, lemmas=list(lemmas),
                            gloss=gloss, lexname="noun.animal", depth=1)
        session.add(category)
        session.flush()
        return category.id


def make_tasks(ws: Workspace, category_id: int | None = None, tasks: int = 1, items: int = 8, controls: int = 2,
               assignments_wanted: int = 3, seed: int = 0, image_size: tuple[int, int] = (48, 36)) -> list[int]:
    """Open local tasks of `items` images each (the last `controls` of them positive/negative
    controls, at shuffled positions), their images in the blob store. Returns the task ids."""
    width, height = image_size
    category_id = category_id or make_category(ws)
    task_ids = []
    with ws.session() as session:
        for t in range(tasks):
            task = Task(category_id=category_id, round=1, batch="test", backend="local", status="open",
                        assignments_wanted=assignments_wanted)
            session.add(task)
            session.flush()
            positions = list(range(items))
            positions = positions[seed + t:] + positions[:seed + t]  # controls not always last
            for index, position in enumerate(positions):
                sha = add_image(ws, session, jpeg_bytes(width, height, seed=seed * 100_000 + t * 1000 + index))
                control = index - (items - controls)
                kind = "candidate" if control < 0 else ("positive" if control % 2 == 0 else "negative")
                session.add(TaskItem(task_id=task.id, position=position, image_sha256=sha, kind=kind,
                                     expected=None if kind == "candidate" else kind == "positive"))
            task_ids.append(task.id)
    return task_ids


def add_image(ws: Workspace, session, data: bytes) -> str:
    """Store a JPEG's bytes as an image (blob and row) unless it is there; returns its SHA-256."""
    sha = hashlib.sha256(data).hexdigest()
    if session.get(Image, sha) is None:
        ws.blob_store.put(blob_key(sha, "jpg"), data)
        width, height = PILImage.open(io.BytesIO(data)).size
        session.add(Image(sha256=sha, width=width, height=height, format="JPEG", bytes=len(data),
                          blob_key=blob_key(sha, "jpg")))
        session.flush()
    return sha


def make_cardigan(ws: Workspace) -> int:
    """Cardigan (the corgi, n02113186) under corgi under dog, as a tree build makes them; returns its id."""
    ids = [make_category(ws, wnid, name, lemmas, gloss) for wnid, name, lemmas, gloss in (
        ("n02084071", "dog", ("dog", "domestic dog", "Canis familiaris"), "a member of the genus Canis"),
        ("n02112826", "corgi", ("corgi", "Welsh corgi"), "either of two Welsh breeds of long-bodied short-legged dogs"),
        ("n02113186", "Cardigan", ("Cardigan", "Cardigan Welsh corgi"),
         "slightly bowlegged variety of corgi having rounded ears and a long tail"))]
    with ws.session() as session:
        session.add_all([CategoryEdge(parent_id=ids[0], child_id=ids[1]), CategoryEdge(parent_id=ids[1], child_id=ids[2])])
    return ids[2]


@contextlib.contextmanager
def running_app(ws: Workspace, admin_token: str | None = None, threads: int = 8) -> Iterator[str]:
    """The app on a waitress server in a thread; yields its base URL."""
    server = make_server(ws, "127.0.0.1", 0, admin_token=admin_token, threads=threads)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.effective_port}"
    finally:
        server.task_dispatcher.shutdown()  # let requests in flight finish

        def close_everything() -> None:  # the listener, open connections, the trigger: the loop then ends
            for channel in list(server._map.values()):
                channel.close()

        try:
            server.trigger.pull_trigger(close_everything)  # runs in the server's own thread, not under its select()
        except OSError:  # the trigger is closed: the loop has already ended
            pass
        thread.join(timeout=10)


@dataclass
class TaskPage:
    task_id: int
    csrf_token: str
    positions: list[int]
    html: str


def parse_task_page(html: str) -> TaskPage:
    task_id = int(re.search(r'data-task="(\d+)"', html).group(1))
    csrf = unescape(re.search(r'name="csrf_token" value="([^"]*)"', html).group(1))
    positions = [int(p) for p in re.findall(r'data-position="(\d+)"', html)]
    return TaskPage(task_id, csrf, positions, html)


class HttpWorker:
    """One worker's browser, without the browser: a cookie jar and the app's forms."""

    def __init__(self, base_url: str, invite_path: str | None = None):
        self.base_url = base_url
        self.http = requests.Session()
        self.last: requests.Response | None = None
        if invite_path:
            self.last = self.get(invite_path)

    def get(self, path: str, **kwargs) -> requests.Response:
        self.last = self.http.get(self.base_url + path, timeout=30, **kwargs)
        return self.last

    def next_task(self) -> TaskPage | None:
        response = self.get("/task")
        return parse_task_page(response.text) if re.search(r"/t/\d+$", response.url) else None

    def post_submission(self, body: str, csrf_token: str, **kwargs) -> requests.Response:
        self.last = self.http.post(self.base_url + "/submit", data={"csrf_token": csrf_token, "submission": body},
                                   timeout=30, **kwargs)
        return self.last

    def submit(self, page: TaskPage, selected: list[int], task_id: int | None = None) -> requests.Response:
        import json

        document = {"task": page.task_id if task_id is None else task_id, "selected": selected}
        return self.post_submission(json.dumps(document), page.csrf_token)
