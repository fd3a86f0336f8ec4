"""`imgnet export OUT`: the accepted images as a train/val dataset in a layout training code reads."""

from __future__ import annotations

import click

from imgnet_build.cli.common import json_option, pass_workspace, print_json, setting_help
from imgnet_build.exporters import exporter_names
from imgnet_build.split import DEFAULT_VAL_FRACTION, ExportOptions
from imgnet_build.split import export as run_export
from imgnet_build.workspace import Workspace


@click.command()
@click.argument("out", type=click.Path(file_okay=False))
@click.option("--format", "format_", type=click.Choice(exporter_names()),
              help=setting_help("export", "format", "Layout: imagefolder (torchvision), ilsvrc, webdataset (tar "
                                "shards), hf (Hugging Face imagefolder)."))
@click.option("--val-fraction", type=float, metavar="F",
              help=f"Put clusters whose hash falls under F in val, and at least one per class (default "
                   f"{DEFAULT_VAL_FRACTION}; 0: no val).")
@click.option("--val-per-class", type=int, metavar="N", help="Put the N clusters per class with the smallest hash in val.")
@click.option("--seed", type=int, help=setting_help("export", "seed", "Key of the split hash."))
@click.option("--min-per-class", type=int, metavar="N",
              help=setting_help("export", "min_per_class", "Leave out (and list) categories with fewer images (a "
                                "class needs one for train and one for val)."))
@click.option("--max-per-class", type=int, metavar="N", help="Keep at most N images per category.")
@click.option("--license", "license_spec", metavar="SPEC",
              help="Keep only these licence codes, e.g. cc0,cc-by,cc-by-sa (also: cc-by-nc, cc-by-nd, cc-by-nc-sa, "
                   "cc-by-nc-nd, pdm, unknown).")
@click.option("--include-simulated", is_flag=True, default=None, help="Also export labels decided by the simulated crowd.")
@click.option("--overwrite", is_flag=True, help="Replace OUT when it is not empty.")
@click.option("--resize", type=int, metavar="SHORT_SIDE", help="Scale larger images down to this short side (re-encodes).")
@click.option("--jpeg", is_flag=True, default=None, help="Re-encode every non-JPEG image as JPEG.")
@click.option("--copy", is_flag=True, default=None, help="Copy files instead of hard-linking them from the blob store.")
@click.option("--shard-size", type=int, metavar="N",
              help=setting_help("export", "shard_size", "webdataset: samples per tar."))
@json_option
@pass_workspace
def export(workspace: Workspace, out: str, format_: str, val_fraction: float | None, val_per_class: int | None,
           seed: int, min_per_class: int, max_per_class: int | None, license_spec: str | None,
           include_simulated: bool, overwrite: bool, resize: int | None, jpeg: bool, copy: bool, shard_size: int,
           as_json: bool) -> None:
    """Write the accepted images as a train/val split, with a manifest and a dataset card.

    A whole duplicate cluster goes to one split, by a keyed hash of its identity, so
    labeling more images later does not move the images already placed; every class has
    images in both splits, and classes.txt holds the one class index. OUT is written under
    a temporary name, checked, and renamed when complete, together with its record in the
    workspace.

    Example:

    \b
        imgnet export dataset --format imagefolder --val-per-class 50 --license cc0,cc-by,cc-by-sa
    """
    options: ExportOptions = workspace.settings.stages.make(  # flags over imgnet.toml's [export] over defaults
        "export", replaces={"val_fraction": ("val_per_class",), "val_per_class": ("val_fraction",)},
        format=format_, val_fraction=val_fraction, val_per_class=val_per_class, seed=seed,
        min_per_class=min_per_class, max_per_class=max_per_class, licenses=license_spec, include_simulated=include_simulated,
        overwrite=overwrite, resize=resize, jpeg=jpeg, copy=copy, shard_size=shard_size)
    result = run_export(workspace, out, options)
    if as_json:
        print_json(result.as_dict())
        return
    for line in [result.summary(), *result.details()]:
        click.echo(line)
