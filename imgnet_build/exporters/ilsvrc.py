"""`ilsvrc`: the ILSVRC-2012 layout.

    train/<wnid>/<wnid>_<n>.JPEG                 n = 1, 2, … per class, in sha256 order
    val/ILSVRC2012_val_<8 digits>.JPEG           numbered from 1, in sha256 order
    ILSVRC2012_validation_ground_truth.txt       one 1-based class id per val file, in filename order
    LOC_synset_mapping.txt                       "<wnid> <lemmas, comma separated>", line n = class id n

Class ids are line numbers of LOC_synset_mapping.txt (wnids sorted), as in the Kaggle
release of ILSVRC; the original devkit numbered classes in its own meta.mat order.
Every file is JPEG: other formats are re-encoded.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import ClassVar

from imgnet_build.exporters import ClassInfo, Item, register
from imgnet_build.exporters.files import FileWriter

GROUND_TRUTH = "ILSVRC2012_validation_ground_truth.txt"
SYNSET_MAPPING = "LOC_synset_mapping.txt"


@register
class Ilsvrc:
    name: ClassVar[str] = "ilsvrc"
    formats: ClassVar[frozenset[str]] = frozenset({"JPEG", "MPO"})
    fallback: ClassVar[str] = "JPEG"
    sha256_order: ClassVar[frozenset[str]] = frozenset({"val"})  # train comes class by class, in sha256 order within each

    def write(self, items: Iterable[Item], classes: Sequence[ClassInfo], out: Path,
              writer: FileWriter) -> Iterator[tuple[Item, str]]:
        class_id = {info.wnid: info.index + 1 for info in classes}
        writer.write_text(SYNSET_MAPPING,
                    "".join(f"{info.wnid} {', '.join(info.lemmas) or info.name}\n" for info in classes))
        writer.folder("val")
        with open(writer.path(GROUND_TRUTH), "w", encoding="utf-8") as truth:
            for item, file in writer.place_all(_files(items, writer)):
                if item.split == "val":
                    try:
                        truth.write(f"{class_id[item.wnid]}\n")
                    except OSError as exc:
                        raise writer.failed(GROUND_TRUTH, exc) from exc
                yield item, file


def _files(items: Iterable[Item], writer: FileWriter) -> Iterator[tuple[Item, str]]:
    per_class: dict[str, int] = {}
    val = 0
    for item in items:
        if item.split == "train":
            if item.wnid not in per_class:
                writer.folder(f"train/{item.wnid}")
            per_class[item.wnid] = n = per_class.get(item.wnid, 0) + 1
            yield item, f"train/{item.wnid}/{item.wnid}_{n}.JPEG"
        else:
            val += 1
            yield item, f"val/ILSVRC2012_val_{val:08d}.JPEG"
