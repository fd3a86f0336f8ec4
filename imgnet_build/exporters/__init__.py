"""The layouts an export is written in: one small class each, found in one registry.

    exporter = get_exporter("webdataset")
    files = exporter.write(items, classes, out_folder, writer)   # one relative path per item

An exporter only lays files out. What is exported, in which split, the manifest,
`dataset.json` and the dataset card are decided and written by `imgnet_build.split`, the
same for every layout. `writer` (`exporters.files.FileWriter`) places or reads each image:
a hard link from the local blob store, a copy, or a re-encoding when asked for or when the
layout cannot hold the image's format (`formats`; the others become `fallback`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar, Protocol

from imgnet_build.errors import BadInput
from imgnet_build.registry import Registry

if TYPE_CHECKING:
    from imgnet_build.exporters.files import FileWriter

__all__ = ["Item", "ClassInfo", "Exporter", "EXPORTERS", "register", "get_exporter", "exporter_names"]


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

    def write(self, items: Sequence[Item], classes: Sequence[ClassInfo], out: Path,
              writer: FileWriter) -> list[str]:
        """Write every item under `out`; return each item's file, relative to `out`, in order."""
        ...


EXPORTERS: Registry[type[Exporter]] = Registry(
    "export format", tuple(f"imgnet_build.exporters.{module}" for module in ("hf", "ilsvrc", "imagefolder", "webdataset")))


def register(cls: type[Exporter]) -> type[Exporter]:
    """A class decorator: the exporter called `cls.name`."""
    return EXPORTERS.add(cls)


def exporter_names() -> list[str]:
    return EXPORTERS.names()


def get_exporter(name: str, **settings) -> Exporter:
    """The exporter called `name`, given those `settings` it has (e.g. webdataset's shard_size)."""
    if name not in EXPORTERS.load():
        raise BadInput(f"unknown export format {name!r}; use one of {', '.join(EXPORTERS.names())}")
    cls = EXPORTERS[name]
    fields: set[str] = {field.name for field in dataclasses.fields(cls)} if dataclasses.is_dataclass(cls) else set()
    return cls(**{key: value for key, value in settings.items() if key in fields})

