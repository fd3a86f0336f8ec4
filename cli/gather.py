"""`imgnet gather`: propose candidates from a source and download them."""

from __future__ import annotations

from typing import Any

import click

from imgnet_build.cli.common import ProgressBar, json_option, pass_workspace, print_json, setting_help, show_progress
from imgnet_build.fetch import MAX_HOST_RATE
from imgnet_build.gather import gather as run_gather
from imgnet_build.workspace import Workspace


@click.command()
@click.option("--source", "source_spec", required=True, metavar="SPEC",
              help="urls:FILE (CSV/TSV/JSONL with url and wnid), dir:PATH (one folder per wnid), "
                   "wikimedia, openverse or flickr.")
@click.option("--category", "categories", multiple=True, metavar="SYNSET",
              help="Only this category and the categories below it (wnid or nltk name); repeatable.")
@click.option("--per-category", type=click.IntRange(min=1), metavar="N",
              help="Stop a category once it has N valid images (default: no quota).")
@click.option("--languages", default="en", show_default=True, metavar="LANGS",
              help="Query languages, comma-separated (en,zh,es,nl,it as ImageNet).")
@click.option("--workers", type=click.IntRange(1, 1024), help=setting_help("fetch", "workers", "Concurrent downloads."))
@click.option("--per-host", type=click.IntRange(min=1),
              help=setting_help("fetch", "per_host", "Concurrent requests per host."))
@click.option("--host-rate", type=click.FloatRange(0, MAX_HOST_RATE),
              help=setting_help("fetch", "host_rate", "Requests per second per host (0: no cap)."))
@click.option("--retry-failed", is_flag=True, default=None,
              help="Download failed candidates again (after a network outage).")
@click.option("--allow-loopback", is_flag=True, default=None,
              help="Allow URLs on this machine (127.0.0.1, localhost): tests and local mirrors.")
@click.option("--executor", metavar="EXECUTOR",
              help="Where downloads run: local (threads here), dask-local:N (N worker processes) or "
                   "dask://HOST:PORT (a Dask cluster). Default: IMGNET_EXECUTOR, then imgnet.toml, then local.")
@json_option
@pass_workspace
def gather(workspace: Workspace, source_spec: str, categories: tuple[str, ...], per_category: int | None,
           languages: str, as_json: bool, **flags: Any) -> None:
    """Propose candidate images for every category and download the valid ones.

    Each candidate ends ok, failed or skipped with a reason (imgnet status groups the
    failures by reason, imgnet candidates lists them); running the same command again
    continues where it stopped, and does not ask a search API again for the queries it
    already answered. A search API that cannot be reached stops the command at once.

    Example:

    \b
        imgnet gather --source urls:candidates.csv --per-category 200
        imgnet gather --source wikimedia --category toy_poodle.n.01 --per-category 50
    """
    settings = workspace.settings.stages.make("fetch", **flags)
    searching = ProgressBar("searching", close_when_done=True) if show_progress() and not as_json else None
    progress = ProgressBar("fetching") if show_progress() and not as_json else None
    try:
        summary = run_gather(workspace, source_spec, per_category=per_category,
                             languages=[code for code in languages.split(",") if code.strip()],
                             settings=settings, progress=progress, categories=categories,
                             search_progress=searching)
    finally:
        for bar in (searching, progress):
            if bar:
                bar.close()
    if as_json:
        print_json(summary.as_dict())
        return
    for warning in summary.warnings():
        click.echo(f"warning: {warning}", err=True)
    click.echo(summary.summary())
