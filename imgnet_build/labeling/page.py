"""The task page: one Jinja template for every backend that shows tasks to people.

    view = load_task_view(session, task_id)
    html = render_task_page(view, "/submit", {"csrf_token": token}, lambda item: f"/t/{view.task_id}/img/{item.position}",
                            example_url=lambda example: f"/t/{view.task_id}/example/{example.index}")

The heading names the sense, not the bare word ("Cardigan — a corgi, a kind of dog",
`sense.py`), with the gloss, the other names, a Wikipedia search for the name with its
parent word, and up to three example images of the category (gold or accepted by people,
never one of this task's images). The first tile has focus on load; Enter submits from
anywhere but a link; Z or a tile's magnifier opens the image large.

The page carries its script and style inline and unchanged, so a Content-Security-Policy
can allow exactly them by hash (`content_security_policy`) and nothing else; everything
that comes from data goes through Jinja's autoescaping. Items are identified by their
position only: nothing in the page tells a control from a candidate.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
from collections.abc import Callable, Mapping
from functools import cache
from importlib import resources

from jinja2 import Environment, PackageLoader, StrictUndefined
from markupsafe import Markup
from sqlalchemy import select
from sqlalchemy.orm import Session

from imgnet_build.labeling.sense import Sense, category_sense
from imgnet_build.store import Category, Cluster, Gold, Image, Label, Task, TaskItem

__all__ = ["ItemView", "ExampleView", "TaskView", "load_task_view", "task_examples", "render_task_page", "render_page",
           "content_security_policy", "EXAMPLES"]

EXAMPLES = 3  # example images above the grid (each is one more URL in an MTurk question)


@dataclasses.dataclass(frozen=True)
class ItemView:
    """One image of a task as a backend needs it; the template shows only its position."""

    position: int
    task_item_id: int
    image_sha256: str


@dataclasses.dataclass(frozen=True)
class ExampleView:
    """An example image of the category, shown above the grid; `index` orders them."""

    index: int
    image_sha256: str
    blob_key: str


@dataclasses.dataclass(frozen=True)
class TaskView:
    """What a task page shows: the category (its sense when known), the task's items in position
    order, and example images of the category."""

    task_id: int
    wnid: str
    name: str
    lemmas: tuple[str, ...]
    gloss: str
    items: tuple[ItemView, ...]
    sense: Sense | None = None
    examples: tuple[ExampleView, ...] = ()

    @property
    def shown_sense(self) -> Sense:
        """The sense, or one made of the name, other names and gloss alone."""
        return self.sense or Sense(self.name, (), tuple(lemma for lemma in self.lemmas if lemma != self.name), self.gloss)


def load_task_view(session: Session, task_id: int) -> TaskView | None:
    """The view of task `task_id`, or None when there is no such task."""
    task = session.get(Task, task_id)
    if task is None:
        return None
    category = session.get(Category, task.category_id)
    items = session.execute(select(TaskItem.position, TaskItem.id, TaskItem.image_sha256)
                            .where(TaskItem.task_id == task_id).order_by(TaskItem.position)).all()
    return TaskView(task_id=task.id, wnid=category.wnid, name=category.name, lemmas=tuple(category.lemmas or ()),
                    gloss=category.gloss, items=tuple(ItemView(*item) for item in items),
                    sense=category_sense(session, category), examples=task_examples(session, task_id))


def task_examples(session: Session, task_id: int, limit: int = EXAMPLES) -> tuple[ExampleView, ...]:
    """Up to `limit` images of the task's category that people said show it: gold yes first, then
    the most confidently accepted (not simulated). None is an image, or in a cluster, of this task."""
    category_id = select(Task.category_id).where(Task.id == task_id).scalar_subquery()
    shas = select(TaskItem.image_sha256).where(TaskItem.task_id == task_id)
    clusters = (select(Image.cluster_id).join(TaskItem, TaskItem.image_sha256 == Image.sha256)
                .where(TaskItem.task_id == task_id, Image.cluster_id.is_not(None)))
    not_in_task = (Image.sha256.not_in(shas), (Image.cluster_id.is_(None)) | Image.cluster_id.not_in(clusters))
    gold = session.execute(select(Image.sha256, Image.blob_key).join(Gold, Gold.image_sha256 == Image.sha256)
                           .where(Gold.category_id == category_id, Gold.answer.is_(True), *not_in_task)
                           .order_by(Image.sha256).limit(limit)).all()
    accepted = session.execute(select(Image.sha256, Image.blob_key)
                               .join(Cluster, Cluster.representative == Image.sha256)
                               .join(Label, Label.cluster_id == Cluster.id)
                               .where(Label.category_id == category_id, Label.status == "accepted",
                                      Label.simulated.is_(False), *not_in_task)
                               .order_by(Label.confidence.desc(), Image.sha256).limit(limit)).all()
    chosen = list(dict.fromkeys(gold + accepted))[:limit]
    return tuple(ExampleView(index, sha, key) for index, (sha, key) in enumerate(chosen))


@cache
def _environment() -> Environment:
    return Environment(loader=PackageLoader("imgnet_build.labeling", "templates"), autoescape=True,
                       undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True)


@cache
def _asset(name: str) -> str:
    return resources.files("imgnet_build.labeling").joinpath("static", name).read_text(encoding="utf-8")


def _csp_hash(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"


def content_security_policy(img_src: str = "'self'", form_action: str = "'self'") -> str:
    """The policy for pages rendered here: only their own inline script and style run."""
    return (f"default-src 'none'; script-src {_csp_hash(_asset('task.js'))}; style-src {_csp_hash(_asset('page.css'))}; "
            f"img-src {img_src}; form-action {form_action}; base-uri 'none'; frame-ancestors 'none'")


def render_page(template: str, **context: object) -> str:
    """Render one of the package's templates with the shared style (for the app's other pages)."""
    return _environment().get_template(template).render(style=Markup(_asset("page.css")), **context)


def render_task_page(task_view: TaskView, form_action: str, hidden_fields: Mapping[str, str],
                     image_url: Callable[[ItemView], str], example_url: Callable[[ExampleView], str] | None = None,
                     notice: str | None = None) -> str:
    """The HTML page of one task. The form posts `hidden_fields` and `submission`, a JSON
    document (schemas/submission.schema.json) with the positions the worker selected.
    Examples are shown when `example_url` is given; `notice` (e.g. "Saved …") is announced above."""
    examples = task_view.examples if example_url is not None else ()
    return render_page("task.html", task=task_view, sense=task_view.shown_sense, form_action=form_action,
                       hidden_fields=dict(hidden_fields), image_url=image_url, examples=examples,
                       example_url=example_url, notice=notice, script=Markup(_asset("task.js")))
