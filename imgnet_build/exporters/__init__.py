"""The layouts an export is written in: one small class each, found in one registry.

    exporter = get_exporter("webdataset")
    for item, file in exporter.write(items, classes, out_folder, writer):   # file: relative to out_folder
        ...

An exporter only lays files out. What is exported, in which split, the manifest,
`dataset.json` and the dataset card are decided and written by `imgnet_build.split`, the
same for every layout. `writer` (`exporters.files.FileWriter`) places or reads each image:
a hard link from the local blob store, a copy, or a re-encoding when asked for or when the
layout cannot hold the image's format (`formats`; the others become `fallback`).

Items stream: `items` is an iterator (train first, then val), never a list, and `write`
yields each item with its file once it is written, so an export of a million images holds
a chunk of them at a time. Within a split the items come in class order (wnid, then
sha256), or in sha256 order (then wnid) for the splits named in `sha256_order`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar, Protocol

from imgnet_build.errors import BadInput

if TYPE_CHECKING:
    from imgnet_build.exporters.files import FileWriter

__all__ = ["Item", "ClassInfo", "Exporter", "register", "get_exporter", "exporter_names"]


@dataclasses.dataclass(frozen=True)
class Item:
    """One image to export under one category, with its provenance and its label."""

    sha256: str
    cluster: str  # the cluster's stable key
    split: str  # train or val
    wnid: str
    blob_key: str
    format: str  # Pillow format name of the stored file
    width: int
    height: int
    source_url: str
    license: str | None
    attribution: str | None
    method: str
    confidence: float
    yes_votes: int
    no_votes: int
    simulated: bool


@dataclasses.dataclass(frozen=True)
class ClassInfo:
    """One exported category; `index` is its 0-based position among the wnids, sorted."""

    wnid: str
    name: str
    lemmas: tuple[str, ...]
    index: int


class Exporter(Protocol):
    name: ClassVar[str]
    formats: ClassVar[frozenset[str]]  # Pillow formats written as they are stored
    fallback: ClassVar[str]  # what other formats are re-encoded to
    sha256_order: ClassVar[frozenset[str]]  # splits whose items come in sha256 order (the others: class order)

    def write(self, items: Iterable[Item], classes: Sequence[ClassInfo], out: Path,
              writer: FileWriter) -> Iterator[tuple[Item, str]]:
        """Write every item under `out`; yield each item with its file (relative to `out`), in order."""
        ...


_REGISTRY: dict[str, type] = {}


def register(cls: type) -> type:
    _REGISTRY[cls.name] = cls
    return cls


def exporter_names() -> list[str]:
    _load()
    return sorted(_REGISTRY)


def get_exporter(name: str, **settings) -> Exporter:
    """The exporter called `name`, given those `settings` it has (e.g. webdataset's shard_size)."""
    _load()
    if name not in _REGISTRY:
        raise BadInput(f"unknown export format {name!r}; use one of {', '.join(sorted(_REGISTRY))}")
    cls = _REGISTRY[name]
    fields = {field.name for field in dataclasses.fields(cls)} if dataclasses.is_dataclass(cls) else set()
    return cls(**{key: value for key, value in settings.items() if key in fields})


def _load() -> None:
    from imgnet_build.exporters import hf, ilsvrc, imagefolder, webdataset  # noqa: F401  (they register)
