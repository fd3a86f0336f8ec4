"""`imgnet candidates`: list candidates with their status and reason."""

from __future__ import annotations

import click

from imgnet_build.cli.common import pass_workspace
from imgnet_build.gather import list_candidates
from imgnet_build.store import CandidateStatus
from imgnet_build.workspace import Workspace

STATUSES = tuple(str(status) for status in CandidateStatus)  # plain strings: click shows an Enum by its names


@click.command()
@click.option("--status", type=click.Choice(STATUSES), help="Only candidates with this status.")
@click.option("--category", metavar="SYNSET", help="Only this category (wnid or name, e.g. dog.n.01).")
@click.option("--reason", metavar="TEXT", help="Only candidates whose reason contains TEXT (any case).")
@click.option("--limit", type=click.IntRange(min=1), metavar="N", help="At most N candidates.")
@click.option("--json", "fmt", flag_value="json", help="JSON lines, one object per candidate.")
@click.option("--csv", "fmt", flag_value="csv", help="CSV with a header.")
@pass_workspace(read_only=True)
def candidates(workspace: Workspace, status: str | None, category: str | None, reason: str | None,
               limit: int | None, fmt: str | None) -> None:
    """List candidates and why each failed or was skipped (status, wnid, url, reason).

    `imgnet status` shows the failures grouped by reason; this lists them one by one.

    Example:

    \b
        imgnet candidates --status failed --reason "HTTP 404" --csv > dead-links.csv
    """
    for line in list_candidates(workspace, status, category, reason, limit).lines(fmt or "tsv"):
        click.echo(line)
