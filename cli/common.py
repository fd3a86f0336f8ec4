"""What the commands share: the workspace option, error handling, output helpers."""

from __future__ import annotations

import contextlib
import json
import os
import sys
from collections.abc import Callable
from functools import update_wrapper
from typing import Any

import click

from imgnet_build.errors import ImgnetError

# The workspace (and with it SQLAlchemy) is imported where a command opens one: `imgnet --help` needs neither.

SIGPIPE_EXIT = 141  # what a shell reports for a program a closed pipe ended (128 + SIGPIPE)


class ImgnetGroup(click.Group):
    """A group whose commands turn library errors into `Error: …` and exit code 1.

    A mistake on the command line itself (an unknown option, a bad value) is click's usage
    error: the usage line, a hint and `Error: …`, exit code 2. A closed pipe (`imgnet tree
    show | head`) ends the command quietly with exit code 141, as it ends `cat`."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except BrokenPipeError as exc:
            if _stdout_closed():
                raise SystemExit(SIGPIPE_EXIT) from exc
            raise click.ClickException(f"{exc.strerror or exc}") from exc
        except ImgnetError as exc:
            raise click.ClickException(str(exc)) from exc
        except OSError as exc:  # an output file that cannot be written (/dev/full, a read-only folder)
            where = f" ({exc.filename})" if exc.filename else ""
            raise click.ClickException(f"{exc.strerror or exc}{where}") from exc
        except Exception as exc:  # a database failure outside a workspace session
            database = sys.modules.get("sqlalchemy.exc")  # not loaded yet: no database was touched
            if database is None or not isinstance(exc, database.OperationalError):
                raise
            from imgnet_build.store import database_reason

            raise click.ClickException(f"database error: {database_reason(exc)}") from exc


class LazyGroup(ImgnetGroup):
    """An ImgnetGroup whose commands in `lazy` (name -> (module, command in it, the first line of
    its help)) are imported when they run, not when the group is made: `imgnet status` does not
    load what `imgnet label` needs (numpy, scipy, ...), and `imgnet --help` lists them from the
    lines given (tests/test_cli.py checks each against its command's help)."""

    def __init__(self, *args: Any, lazy: dict[str, tuple[str, str, str]] | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.lazy = dict(lazy or {})

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*self.commands, *self.lazy})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.commands and cmd_name in self.lazy:
            from importlib import import_module

            module, attribute, _ = self.lazy[cmd_name]
            self.add_command(getattr(import_module(module), attribute), cmd_name)
        return self.commands.get(cmd_name)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """click's list of commands, with each lazy command's help line taken from `lazy`."""
        names = [name for name in self.list_commands(ctx) if name in self.lazy or not self.commands[name].hidden]
        if not names:
            return
        limit = formatter.width - 6 - max(len(name) for name in names)
        rows = [(name, (self.commands[name] if name in self.commands else click.Command(name, help=self.lazy[name][2]))
                 .get_short_help_str(limit)) for name in names]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


def _stdout_closed() -> bool:
    """True when standard output is a pipe whose reader has gone (the write end then polls POLLERR).

    Standard output is pointed at /dev/null then, so that Python's flush at exit stays quiet too."""
    import select

    try:
        fd = sys.stdout.fileno()
        poller = select.poll()
        poller.register(fd, select.POLLERR)
        closed = any(event & select.POLLERR for _, event in poller.poll(0))
    except (OSError, ValueError, AttributeError):  # no real file behind stdout (a test's capture)
        return False
    if closed:
        with contextlib.suppress(OSError):
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, fd)
            os.close(devnull)
    return closed


def pass_workspace(command: Callable[..., Any] | None = None, *, read_only: bool = False) -> Any:
    """Open the workspace named by -w/--workspace (or IMGNET_WORKSPACE, or the current folder).

    `@pass_workspace(read_only=True)` marks a command that only reads: its workspace opens
    even when the folder is read-only."""
    if command is None:
        return lambda command: pass_workspace(command, read_only=read_only)

    @click.pass_context
    def wrapper(ctx: click.Context, *args: Any, **kwargs: Any) -> Any:
        from imgnet_build.workspace import WORKSPACE_ENV, Workspace

        root = ctx.find_root().params.get("workspace") or os.environ.get(WORKSPACE_ENV) or "."
        workspace = Workspace.open(root, read_only=read_only)  # its errors reach ImgnetGroup like every other
        ctx.call_on_close(workspace.close)
        return ctx.invoke(command, workspace, *args, **kwargs)

    return update_wrapper(wrapper, command)


def setting_help(stage: str, name: str, text: str) -> str:
    """`text` and where the option's default comes from: imgnet.toml's [stage] table, else the
    settings dataclass (its default, written once there, is shown)."""
    from imgnet_build.settings import StageSettings

    default = StageSettings().default(stage, name)
    shown = "none" if default is None else str(default).lower() if isinstance(default, bool) else str(default)
    return f"{text}  [default: imgnet.toml [{stage}] {name}, else {shown}]"


def given(values: dict, names: tuple[str, ...] | set[str] | None = None) -> dict:
    """The options of `values` the user gave (not None), limited to `names`."""
    return {key: value for key, value in values.items() if value is not None and (names is None or key in names)}


json_option = click.option("--json", "as_json", is_flag=True, help="Print a JSON document instead of text.")


def print_json(data: object) -> None:
    click.echo(json.dumps(data, indent=2, default=str))


def show_progress() -> bool:
    """Progress bars only on a terminal; pipes and CI stay quiet."""
    return sys.stderr.isatty()


class ProgressBar:
    """A click progress bar on stderr, made once the total is known; call it with (done, total)."""

    def __init__(self, label: str, close_when_done: bool = False) -> None:
        self.label = label
        self.close_when_done = close_when_done
        self.finished = False
        self.bar: Any = None  # click's progress bar, made at the first call
        self.shown = 0

    def __call__(self, done: int, total: int) -> None:
        if self.finished:
            return
        if self.bar is None:
            stderr = click.get_text_stream("stderr")  # type: ignore[operator]  # click 8.5 types it as an object
            self.bar = click.progressbar(length=total, label=self.label, file=stderr)
            self.bar.__enter__()
        self.bar.update(done - self.shown)
        self.shown = done
        if done >= total and self.close_when_done:
            self.close()  # the next phase's bar starts on a line of its own
            self.finished = True

    def close(self) -> None:
        if self.bar is not None:
            self.bar.__exit__(None, None, None)
            self.bar = None
