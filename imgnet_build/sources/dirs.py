"""`dir:PATH` — images already on disk, one sub-folder per wnid (`PATH/n02091134/*.jpg`).

Yields the absolute path of every file (hidden files skipped) under the folder of each
requested category, sub-folders included, in sorted order; the fetcher reads them without
HTTP. Links to folders are not followed (no loops, nothing outside PATH): each is a failed
row saying so, as is a folder that cannot be read, and the walk goes on. A path that is
not valid UTF-8 is stored as a `file://` URL with its bytes %-escaped (`local_path` reads
it back), so odd names are kept exactly. A sub-folder that names no category gives one `Proposal` with `error` set (recorded,
not fatal); a PATH that is not a folder raises `BadInput`. Loose files directly in PATH are
ignored. `per_category` is not applied: the caller's quota stops a category.
"""

from __future__ import annotations

import os
import urllib.parse
from collections.abc import Iterable, Iterator
from pathlib import Path

from imgnet_build.errors import BadInput
from imgnet_build.sources import CategoryQueries, Proposal, register

__all__ = ["Folder", "file_url", "local_path"]


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
        """Files of each known wnid's folder (rank = sorted position); one error Proposal per stray folder,
        folder link or unreadable folder."""
        wanted = {category.wnid for category in categories}
        try:
            folders = sorted((entry for entry in os.scandir(self.root) if entry.is_dir() and entry.name[0] != "."),
                             key=lambda entry: entry.name)
        except OSError as exc:
            raise BadInput(f"cannot read {self.root}: {exc.strerror or exc}") from exc
        for folder in folders:
            url = file_url(folder.path)
            if folder.name not in wanted:
                yield Proposal(wnid=folder.name, url=url, error=f"folder {_shown(folder.name)} names no category")
            elif folder.is_symlink():
                yield Proposal(wnid=folder.name, url=url, error="a link to a folder (links are not followed)")
            else:
                rank = 0
                for path, error in _files(folder.path):
                    rank += error is None
                    yield Proposal(wnid=folder.name, url=file_url(path), rank=None if error else rank, error=error)


def file_url(path: str) -> str:
    """`path` as stored: itself, or a `file://` URL with its bytes %-escaped when it is not valid UTF-8."""
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        return "file://" + urllib.parse.quote(os.fsencode(path))
    return path


def local_path(url: str) -> str:
    """The file a stored local candidate names (the inverse of `file_url`)."""
    return os.fsdecode(urllib.parse.unquote_to_bytes(url[len("file://"):])) if url.startswith("file://") else url


def _shown(name: str) -> str:
    return name.encode("utf-8", "backslashreplace").decode("utf-8")


def _files(folder: str) -> Iterator[tuple[str, str | None]]:
    """(path, None) for regular, non-hidden files under `folder`, depth first, in sorted order; (path, reason)
    for a link to a folder (not followed: no loops, nothing outside the tree) or a folder that cannot be read."""
    try:
        entries = sorted(os.scandir(folder), key=lambda entry: entry.name)
    except OSError as exc:
        yield folder, f"cannot read {_shown(folder)}: {exc.strerror or exc}"
        return
    for entry in entries:
        if entry.name.startswith("."):
            continue
        try:
            if entry.is_dir(follow_symlinks=False):
                yield from _files(entry.path)
            elif entry.is_symlink() and entry.is_dir():
                yield entry.path, "a link to a folder (links are not followed)"
            elif entry.is_file():
                yield entry.path, None
        except OSError as exc:
            yield entry.path, f"cannot read {_shown(entry.path)}: {exc.strerror or exc}"
