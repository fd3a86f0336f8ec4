"""`imgnet report`: one self-contained HTML page about the workspace."""

from __future__ import annotations

import click

from imgnet_build.cli.common import json_option, pass_workspace, print_json
from imgnet_build.workspace import Workspace


@click.command()
@click.option("-o", "--output", type=click.Path(dir_okay=False), metavar="FILE.html",
              help="Where to write the page (default: report.html in the workspace folder).")
@json_option
@pass_workspace(read_only=True)
def report(workspace: Workspace, output: str | None, as_json: bool) -> None:
    """Write an HTML report: tree, sources, duplicates, votes, label quality, cost, thumbnails.

    One file with its charts and thumbnails inside; it loads nothing from the network, so
    it can be mailed or archived as it is. Writing it again replaces it. With --json the
    summary follows schemas/report.schema.json.

    Example:

    \b
        imgnet -w ws report -o report.html
    """
    from imgnet_build.report import write_report

    summary = write_report(workspace, output or workspace.root / "report.html",
                           workspace.settings.stages.make("report"))  # imgnet.toml's [report] table
    if as_json:
        print_json(summary.as_dict())
    else:
        click.echo(summary.summary())
