"""`dir:PATH` — images already on disk, one sub-folder per wnid (`PATH/n02091134/*.jpg`).

Yields the absolute path of every file (hidden files skipped) under the folder of each
requested category, sub-folders included, in sorted order; the fetcher reads them without
HTTP. A sub-folder that names no category gives one `Proposal` with `error` set (recorded,
not fatal); a PATH that is not a folder raises `BadInput`. Loose files directly in PATH are
ignored. `per_category` is not applied: the caller's quota stops a category.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from pathlib import Path

from imgnet_build.errors import BadInput
from imgnet_build.sources import CategoryQueries, Proposal, register

__all__ = ["Folder"]


@register("dir")
class Folder:
    """Local image folders named by wnid; yields `Proposal(wnid, url=<absolute path>, rank=n)`."""

    name = "dir"
    local = True
    searches = False

    def __init__(self, argument: str, **settings: object):
        if not argument:
            raise BadInput("the dir source needs a folder: --source dir:PATH (one sub-folder per wnid)")
        self.root = Path(argument).expanduser().resolve()
        if not self.root.is_dir():
            what = "is not a folder" if self.root.exists() else "does not exist"
            raise BadInput(f"{self.root} {what}; dir:PATH needs a folder with one sub-folder per wnid")

    def propose(self, categories: Iterable[CategoryQueries], per_category: int = 0) -> Iterator[Proposal]:
        """Files of each known wnid's folder (rank = sorted position); one error Proposal per stray folder."""
        wanted = {category.wnid for category in categories}
        try:
            folders = sorted((entry for entry in os.scandir(self.root) if entry.is_dir() and entry.name[0] != "."),
                             key=lambda entry: entry.name)
        except OSError as exc:
            raise BadInput(f"cannot read {self.root}: {exc.strerror or exc}") from exc
        for folder in folders:
            if folder.name not in wanted:
                yield Proposal(wnid=folder.name, url=folder.path, error=f"folder {folder.name} names no category")
                continue
            try:
                for rank, path in enumerate(_files(Path(folder.path)), 1):
                    yield Proposal(wnid=folder.name, url=str(path), rank=rank)
            except OSError as exc:
                yield Proposal(wnid=folder.name, url=folder.path, error=f"cannot read {folder.path}: {exc.strerror or exc}")


def _files(folder: Path) -> Iterator[Path]:
    """Regular, non-hidden files under `folder`, depth first, in sorted order."""
    for entry in sorted(os.scandir(folder), key=lambda entry: entry.name):
        if entry.name.startswith("."):
            continue
        if entry.is_dir():
            yield from _files(Path(entry.path))
        elif entry.is_file():
            yield Path(entry.path)
