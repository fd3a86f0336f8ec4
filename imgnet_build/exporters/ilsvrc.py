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

import os
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

from imgnet_build.exporters import ClassInfo, Item, register
from imgnet_build.exporters.files import FileWriter

GROUND_TRUTH = "ILSVRC2012_validation_ground_truth.txt"
SYNSET_MAPPING = "LOC_synset_mapping.txt"


@register
class Ilsvrc:
    name = "ilsvrc"
    formats = frozenset({"JPEG", "MPO"})
    fallback = "JPEG"

    def write(self, items: Sequence[Item], classes: Sequence[ClassInfo], out: Path, writer: FileWriter) -> list[str]:
        files: list[str] = [""] * len(items)
        train: dict[str, list[int]] = defaultdict(list)
        val: list[int] = []
        for position, item in enumerate(items):
            (train[item.wnid] if item.split == "train" else val).append(position)
        for wnid, positions in train.items():
            (out / "train" / wnid).mkdir(parents=True)
            for n, position in enumerate(sorted(positions, key=lambda p: items[p].sha256), start=1):
                files[position] = f"train/{wnid}/{wnid}_{n}.JPEG"
        val.sort(key=lambda p: (items[p].sha256, items[p].wnid))
        (out / "val").mkdir()
        class_id = {info.wnid: info.index + 1 for info in classes}
        for n, position in enumerate(val, start=1):
            files[position] = f"val/ILSVRC2012_val_{n:08d}.JPEG"
        (out / GROUND_TRUTH).write_text("".join(f"{class_id[items[p].wnid]}\n" for p in val))
        (out / SYNSET_MAPPING).write_text("".join(f"{info.wnid} {', '.join(info.lemmas) or info.name}\n" for info in classes))
        root = str(out)
        writer.place_all((item, os.path.join(root, file)) for item, file in zip(items, files, strict=True))
        return files
