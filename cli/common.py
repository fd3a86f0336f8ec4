"""What the commands share: the workspace option, error handling, output helpers."""

from __future__ import annotations

import json
import os
import sys
from functools import update_wrapper
from typing import TYPE_CHECKING

import click
from sqlalchemy.exc import OperationalError

from imgnet_build.errors import BadInput, ImgnetError
from imgnet_build.store import database_reason
from imgnet_build.workspace import Workspace

if TYPE_CHECKING:
    from click._termui_impl import ProgressBar as ClickBar

WORKSPACE_ENV = "IMGNET_WORKSPACE"


class ImgnetGroup(click.Group):
    """A group whose commands turn library errors into `Error: …` and exit code 1."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except ImgnetError as exc:
            raise click.ClickException(str(exc)) from exc
        except OSError as exc:  # an output file that cannot be written (/dev/full, a read-only folder)
            where = f" ({exc.filename})" if exc.filename else ""
            raise click.ClickException(f"{exc.strerror or exc}{where}") from exc
        except OperationalError as exc:  # a database failure outside a workspace session
            raise click.ClickException(f"database error: {database_reason(exc)}") from exc


def pass_workspace(command):
    """Open the workspace named by -w/--workspace (or IMGNET_WORKSPACE, or the current folder)."""

    @click.pass_context
    def wrapper(ctx: click.Context, *args, **kwargs):
        root = ctx.find_root().params.get("workspace") or os.environ.get(WORKSPACE_ENV) or "."
        workspace = Workspace.open(root)  # its errors reach ImgnetGroup like every other
        ctx.call_on_close(workspace.close)
        return ctx.invoke(command, workspace, *args, **kwargs)

    return update_wrapper(wrapper, command)


json_option = click.option("--json", "as_json", is_flag=True, help="Print a JSON document instead of text.")


def print_json(data: object) -> None:
    click.echo(json.dumps(data, indent=2, default=str))


def show_progress() -> bool:
    """Progress bars only on a terminal; pipes and CI stay quiet."""
    return sys.stderr.isatty()


class ProgressBar:
    """A click progress bar on stderr, made once the total is known; call it with (done, total)."""

    def __init__(self, label: str) -> None:
        self.label = label
        self.bar: ClickBar[int] | None = None
        self.shown = 0

    def __call__(self, done: int, total: int) -> None:
        if self.bar is None:
            stderr = click.get_text_stream("stderr")  # type: ignore[operator]  # click 8.5 types it as an object
            self.bar = click.progressbar(length=total, label=self.label, file=stderr)
            self.bar.__enter__()
        self.bar.update(done - self.shown)
        self.shown = done

    def close(self) -> None:
        if self.bar is not None:
            self.bar.__exit__(None, None, None)


def check_writable(path: str) -> None:
    """BadInput now when `path` could not be written later (the file is left as it was)."""
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(parent):
        raise BadInput(f"cannot write {path}: folder {parent} does not exist")
    existed = os.path.lexists(path)
    try:
        with open(path, "a"):
            pass
    except OSError as exc:
        raise BadInput(f"cannot write {path}: {exc.strerror or exc}") from exc
    if not existed:
        os.unlink(path)
