"""What the commands share: the workspace option, error handling, output helpers."""

from __future__ import annotations

import json
import os
import sys
from functools import update_wrapper

import click

from imgnet_build.errors import ImgnetError
from imgnet_build.workspace import Workspace

WORKSPACE_ENV = "IMGNET_WORKSPACE"


class ImgnetGroup(click.Group):
    """A group whose commands turn library errors into `Error: …` and exit code 1."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except ImgnetError as exc:
            raise click.ClickException(str(exc)) from exc


def pass_workspace(command):
    """Open the workspace named by -w/--workspace (or IMGNET_WORKSPACE, or the current folder)."""

    @click.pass_context
    def wrapper(ctx: click.Context, *args, **kwargs):
        root = ctx.find_root().params.get("workspace") or os.environ.get(WORKSPACE_ENV) or "."
        try:
            workspace = Workspace.open(root)
            ctx.call_on_close(workspace.close)
            return ctx.invoke(command, workspace, *args, **kwargs)
        except ImgnetError as exc:
            raise click.ClickException(str(exc)) from exc

    return update_wrapper(wrapper, command)


json_option = click.option("--json", "as_json", is_flag=True, help="Print a JSON document instead of text.")


def print_json(data: object) -> None:
    click.echo(json.dumps(data, indent=2, default=str))


def show_progress() -> bool:
    """Progress bars only on a terminal; pipes and CI stay quiet."""
    return sys.stderr.isatty()
