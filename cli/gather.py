"""`imgnet gather`: propose candidates from a source and download them."""

from __future__ import annotations

import click

from imgnet_build.cli.common import ProgressBar, json_option, pass_workspace, print_json, show_progress
from imgnet_build.fetch import MAX_HOST_RATE, FetchSettings
from imgnet_build.gather import gather as run_gather
from imgnet_build.workspace import Workspace

DEFAULTS = FetchSettings()


@click.command()
@click.option("--source", "source_spec", required=True, metavar="SPEC",
              help="urls:FILE (CSV/TSV/JSONL with url and wnid), dir:PATH (one folder per wnid), "
                   "wikimedia, openverse or flickr.")
@click.option("--per-category", type=click.IntRange(min=1), metavar="N",
              help="Stop a category once it has N valid images (default: no quota).")
@click.option("--languages", default="en", show_default=True, metavar="LANGS",
              help="Query languages, comma-separated (en,zh,es,nl,it as ImageNet).")
@click.option("--workers", type=click.IntRange(1, 1024), default=DEFAULTS.workers, show_default=True,
              help="Concurrent downloads.")
@click.option("--per-host", type=click.IntRange(min=1), default=DEFAULTS.per_host, show_default=True,
              help="Concurrent requests per host.")
@click.option("--host-rate", type=click.FloatRange(0, MAX_HOST_RATE), default=DEFAULTS.host_rate, show_default=True,
              help="Requests per second per host (0: no cap).")
@click.option("--retry-failed", is_flag=True, help="Download failed candidates again (after a network outage).")
@click.option("--allow-loopback", is_flag=True,
              help="Allow URLs on this machine (127.0.0.1, localhost): tests and local mirrors.")
@click.option("--executor", metavar="EXECUTOR",
              help="Where downloads run: local (threads here), dask-local:N (N worker processes) or "
                   "dask://HOST:PORT (a Dask cluster). Default: IMGNET_EXECUTOR, then imgnet.toml, then local.")
@json_option
@pass_workspace
def gather(workspace: Workspace, source_spec: str, per_category: int | None, languages: str, workers: int,
           per_host: int, host_rate: float, retry_failed: bool, allow_loopback: bool, executor: str | None,
           as_json: bool) -> None:
    """Propose candidate images for every category and download the valid ones.

    Each candidate ends ok, failed or skipped with a reason (imgnet status groups the
    failures by reason, imgnet candidates lists them); running the same command again
    continues where it stopped.

    Example:

    \b
        imgnet gather --source urls:candidates.csv --per-category 200
    """
    settings = FetchSettings(workers=workers, per_host=per_host, host_rate=host_rate, allow_loopback=allow_loopback,
                             retry_failed=retry_failed, executor=executor)
    progress = ProgressBar("fetching") if show_progress() and not as_json else None
    try:
        summary = run_gather(workspace, source_spec, per_category=per_category,
                             languages=[code for code in languages.split(",") if code.strip()],
                             settings=settings, progress=progress)
    finally:
        if progress:
            progress.close()
    if as_json:
        print_json(summary.to_dict())
        return
    for warning in summary.warnings():
        click.echo(f"warning: {warning}", err=True)
    click.echo(summary.line())
