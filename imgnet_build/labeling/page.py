"""The task page: one Jinja template for every backend that shows tasks to people.

    view = load_task_view(session, task_id)
    html = render_task_page(view, "/submit", {"csrf_token": token}, lambda item: f"/t/{view.task_id}/img/{item.position}")

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

from imgnet_build.store import Category, Task, TaskItem

__all__ = ["ItemView", "TaskView", "load_task_view", "render_task_page", "render_page", "content_security_policy"]


@dataclasses.dataclass(frozen=True)
class ItemView:
    """One image of a task as a backend needs it; the template shows only its position."""

    position: int
    task_item_id: int
    image_sha256: str


@dataclasses.dataclass(frozen=True)
class TaskView:
    """What a task page shows: the category and the task's items in position order."""

    task_id: int
    wnid: str
    name: str
    lemmas: tuple[str, ...]
    gloss: str
    items: tuple[ItemView, ...]


def load_task_view(session: Session, task_id: int) -> TaskView | None:
    """The view of task `task_id`, or None when there is no such task."""
    row = session.execute(select(Task.id, Category.wnid, Category.name, Category.lemmas, Category.gloss)
                          .join(Category, Category.id == Task.category_id).where(Task.id == task_id)).first()
    if row is None:
        return None
    items = session.execute(select(TaskItem.position, TaskItem.id, TaskItem.image_sha256)
                            .where(TaskItem.task_id == task_id).order_by(TaskItem.position)).all()
    return TaskView(task_id=row.id, wnid=row.wnid, name=row.name, lemmas=tuple(row.lemmas or ()), gloss=row.gloss,
                    items=tuple(ItemView(*item) for item in items))


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
                     image_url: Callable[[ItemView], str]) -> str:
    """The HTML page of one task. The form posts `hidden_fields` and `submission`, a JSON
    document (schemas/submission.schema.json) with the positions the worker selected."""
    return render_page("task.html", task=task_view, form_action=form_action, hidden_fields=dict(hidden_fields),
                       image_url=image_url, script=Markup(_asset("task.js")))
