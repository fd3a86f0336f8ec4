"""The `imgnet` command: a thin layer over the library."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

from imgnet_build import __version__
from imgnet_build.cli.common import LazyGroup, json_option, pass_workspace, print_json

if TYPE_CHECKING:
    from imgnet_build.workspace import Workspace


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-w", "--workspace", type=click.Path(file_okay=False), envvar="IMGNET_WORKSPACE",
              help="Workspace folder (default: IMGNET_WORKSPACE or the current folder).")
@click.version_option(__version__, prog_name="imgnet")
def cli(workspace: str | None) -> None:
    """Build an ImageNet-style image dataset from WordNet.

    Example:

    \b
        imgnet init ws && imgnet -w ws tree build --root dog.n.01
    """


def _target(directory: str | None, default: str, environment: bool) -> str:
    """The folder a command that makes a workspace works on: DIRECTORY, else -w (or IMGNET_WORKSPACE), else `default`."""
    if directory:
        return directory
    root = click.get_current_context().find_root()
    from_environment = root.get_parameter_source("workspace") == click.core.ParameterSource.ENVIRONMENT
    workspace = root.params.get("workspace")
    return workspace if workspace and (environment or not from_environment) else default


@cli.command()
@click.argument("directory", required=False, type=click.Path(file_okay=False))
@click.option("--database", help="Database URL (default: SQLite imgnet.db in the workspace), "
              "e.g. postgresql+psycopg://user@host/db.")
@click.option("--blobs", help="Blob store: a folder (default: blobs) or s3://bucket/prefix.")
def init(directory: str | None, database: str | None, blobs: str | None) -> None:
    """Create a workspace: imgnet.toml, the database and the blob store.

    DIRECTORY defaults to -w/--workspace (or IMGNET_WORKSPACE), else the current folder.

    Example:

    \b
        imgnet init ws --database postgresql+psycopg://127.0.0.1/imgnet
    """
    from imgnet_build.workspace import Workspace

    directory = _target(directory, ".", environment=True)
    workspace = Workspace.init(directory, database=database, blobs=blobs)
    click.echo(f"Created workspace {directory} (database {workspace.engine.url.render_as_string(hide_password=True)})")
    workspace.close()


@cli.command()
@json_option
@pass_workspace(read_only=True)
def status(workspace: Workspace, as_json: bool) -> None:
    """Print counts per stage, and failed candidates grouped by reason.

    Example:

    \b
        imgnet -w ws status --json
    """
    from imgnet_build.workspace import workspace_status

    report = workspace_status(workspace)
    print_json(report.as_dict()) if as_json else click.echo(report.summary())


@cli.command("wordnet")
def wordnet_command() -> None:
    """Make sure WordNet 3.0 is there for nltk (download it, or build it from Debian's files).

    Example:

    \b
        imgnet wordnet
    """
    from imgnet_build.wordnet import ensure_wordnet, load_wordnet

    origin = ensure_wordnet()
    count = sum(1 for _ in load_wordnet().all_synsets("n"))
    click.echo(f"WordNet 3.0: {count} noun synsets ({origin})")


@cli.command()
@click.argument("directory", required=False, type=click.Path(file_okay=False))
@click.option("--online", is_flag=True, help="Gather from Wikimedia Commons instead of the local generated mirror.")
def demo(directory: str | None, online: bool) -> None:
    """Run the pipeline end to end on a small dog subtree (no internet needed).

    Builds the tree below dog.n.01, gathers candidates for five breeds from a local
    mirror of generated pictures (with broken links, duplicates and off-category
    pictures among them), removes duplicates, labels them with the simulated crowd,
    exports an imagefolder split (simulated labels included, and said) to DIRECTORY/dataset
    and writes DIRECTORY/report.html; the workspace is DIRECTORY/workspace. Running it
    again continues the same workspace. DIRECTORY defaults to -w/--workspace, else
    imgnet-demo; a folder the demo did not make is refused.

    Example:

    \b
        imgnet demo imgnet-demo && imgnet -w imgnet-demo/workspace status
    """
    from imgnet_build.demo import run_demo

    directory = _target(directory, "imgnet-demo", environment=False)
    workspace = run_demo(directory, online=online, say=click.echo)
    counts = workspace.status()
    workspace.close()
    root = Path(directory) / "workspace"
    click.echo(f"demo: done; {counts['images']} images stored in {root}. Next: "
               f"imgnet -w {root} status, imgnet -w {root} tree show --root poodle.n.01")


# name -> (module in cli/, click command in it, the first line of its help); each stage adds its line here.
# A command's module is imported when that command runs (or shows its own help), so a command loads
# only the libraries it needs; `imgnet --help` lists these lines (tests/test_cli.py keeps them equal).
COMMANDS: dict[str, tuple[str, str, str]] = {
    "candidates": ("candidates", "candidates", "List candidates and why each failed or was skipped (status, wnid, "
                   "url, reason)."),
    "dedup": ("dedup", "dedup", "Find exact and near duplicate images and keep one per cluster."),
    "export": ("export", "export", "Write the accepted images as a train/val split, with a manifest and a "
               "dataset card."),
    "gather": ("gather", "gather", "Propose candidate images for every category and download the valid ones."),
    "label": ("label", "label", "Crowd labeling: which of these images show the category?"),
    "report": ("report", "report", "Write an HTML report: tree, sources, duplicates, votes, label quality, cost, "
               "thumbnails."),
    "tree": ("tree", "tree", "Build, show and export the category tree."),
}
cli.lazy.update({name: (f"imgnet_build.cli.{module}", command, line) for name, (module, command, line) in COMMANDS.items()})


def main() -> None:
    cli(prog_name="imgnet")
