"""`imgnet dedup`: exact and near duplicates, clusters and cross-category conflicts."""

from __future__ import annotations

import click

from imgnet_build import dedup as library
from imgnet_build.cli.common import ProgressBar, json_option, pass_workspace, print_json, show_progress
from imgnet_build.workspace import Workspace


@click.command()
@click.option("--threshold", type=int, default=library.DEFAULT_THRESHOLD, show_default=True, metavar="BITS",
              help="Near duplicates: pHash Hamming distance, in bits of 64.")
@click.option("--clusters", "clusters_path", type=click.Path(dir_okay=False), metavar="FILE.json",
              help="Also write every cluster with its members' URLs and categories (schemas/clusters.schema.json).")
@json_option
@pass_workspace
def dedup(workspace: Workspace, threshold: int, clusters_path: str | None, as_json: bool) -> None:
    """Find exact and near duplicate images and keep one per cluster.

    Images are hashed once; duplicates point to their cluster's representative and
    nothing is deleted. The same picture in two categories is reported as a conflict.
    Running it again after gathering more images takes the new ones in.

    Example:

    \b
        imgnet dedup --threshold 10 --clusters clusters.json
    """
    progress = ProgressBar("hashing") if show_progress() and not as_json else None
    try:
        report = library.run(workspace, threshold, clusters_path=clusters_path or None, progress=progress)
    finally:
        if progress:
            progress.close()
    if as_json:
        print_json(report.as_dict())
    else:
        click.echo(report.summary())
