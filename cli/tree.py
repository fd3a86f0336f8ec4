"""`imgnet tree`: build, show and export the category tree."""

from __future__ import annotations

from typing import TextIO

import click

from imgnet_build import taxonomy
from imgnet_build.cli.common import json_option, pass_workspace, print_json
from imgnet_build.workspace import Workspace


@click.group()
def tree() -> None:
    """Build, show and export the category tree."""


@tree.command()
@click.option("--root", "roots", multiple=True, metavar="SYNSET",
              help="Keep only the tree below this synset (wnid or name); repeatable. Default: all of WordNet.")
@click.option("--exclude", "excludes", multiple=True, metavar="SYNSET", help="Leave out this subtree; repeatable.")
@click.option("--max-depth", type=click.IntRange(min=0), help="Keep categories at most N levels below the roots.")
@click.option("--include-people", is_flag=True, help="Put person.n.01 and the people lexicographer file back in.")
@json_option
@pass_workspace
def build(workspace: Workspace, roots: tuple[str, ...], excludes: tuple[str, ...], max_depth: int | None,
          include_people: bool, as_json: bool) -> None:
    """Select the imageable WordNet synsets as categories.

    Rebuilding replaces the selection; categories that already have candidates are kept.

    Example:

    \b
        imgnet tree build --root dog.n.01 --root musical_instrument.n.01
    """
    result = taxonomy.build_tree(workspace, taxonomy.TreeOptions(tuple(roots), tuple(excludes), max_depth,
                                                                 include_people))
    if as_json:
        print_json(result.as_dict())
        return
    for warning in result.warnings():
        click.echo(f"Warning: {warning}", err=True)
    click.echo(result.summary())


@tree.command()
@click.option("--root", metavar="SYNSET", help="Show the tree below this category (default: from the tops).")
@click.option("--depth", type=click.IntRange(min=0), default=2, show_default=True,
              help="Levels to show below the root.")
@json_option
@pass_workspace(read_only=True)
def show(workspace: Workspace, root: str | None, depth: int, as_json: bool) -> None:
    """Print the tree indented: categories below each and, once gathered, images here and in the subtree.

    Example:

    \b
        imgnet tree show --root dog.n.01 --depth 1
    """
    view = taxonomy.show_tree(workspace, root, depth)
    if as_json:
        print_json(view.as_dict())
        return
    for line in view.lines():
        click.echo(line)


@tree.command()
@click.option("--format", "fmt", type=click.Choice(taxonomy.TREE_FORMATS), default="json", show_default=True,
              help="json: [{wnid, name, lemmas, gloss, parents, depth}]; csv: the same columns; "
                   "txt: ILSVRC's LOC_synset_mapping.txt lines.")
@click.option("--json", "fmt", flag_value="json", help="The same as --format json.")
@click.option("-o", "--output", type=click.File("w", encoding="utf-8"), default="-",
              help="Write to this file (default: standard output).")
@pass_workspace(read_only=True)
def export(workspace: Workspace, fmt: str, output: TextIO) -> None:
    """Write the category tree as JSON, CSV or ILSVRC's synset mapping.

    Example:

    \b
        imgnet tree export --format txt -o LOC_synset_mapping.txt
    """
    taxonomy.export_tree(workspace, fmt, output)
