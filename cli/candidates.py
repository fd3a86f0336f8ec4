"""`imgnet candidates`: list candidates with their status and reason."""

from __future__ import annotations

import csv
import json

import click

from imgnet_build.cli.common import pass_workspace
from imgnet_build.gather import CANDIDATE_FIELDS, list_candidates
from imgnet_build.store import CandidateStatus
from imgnet_build.taxonomy import find_category
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
    with workspace.session() as session:
        wnid = find_category(session, category).wnid if category else None
        rows = list_candidates(session, status, wnid, reason, limit)
        if fmt == "csv":
            writer = csv.DictWriter(_Echo(), CANDIDATE_FIELDS, lineterminator="\n")
            writer.writeheader()
            writer.writerows(rows)
        elif fmt == "json":
            for row in rows:
                click.echo(json.dumps(row, ensure_ascii=False))
        else:
            for row in rows:
                click.echo("\t".join((row["status"], row["wnid"], row["url"], row["reason"] or "")))


class _Echo:
    """A file-like object for csv that writes through click.echo (stdout, as click's tests capture it)."""

    def write(self, text: str) -> None:
        click.echo(text, nl=False)
