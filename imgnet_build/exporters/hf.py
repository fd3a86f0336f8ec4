"""`hf`: the Hugging Face `imagefolder` layout, `train/<wnid>/<sha256>.<ext>` and
`validation/<wnid>/…`, each split with a `metadata.jsonl` (`file_name`, `label` = wnid,
and the image's provenance), so `load_dataset("imagefolder", data_dir=OUT)` gives the
splits `train` and `validation` with the columns `image`, `label` and the provenance.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

from imgnet_build.exporters import ClassInfo, Item, register
from imgnet_build.exporters.files import FileWriter

SPLIT_FOLDERS = {"train": "train", "val": "validation"}  # the split names `datasets` recognises


@register
class HuggingFace:
    name = "hf"
    formats = frozenset({"JPEG", "MPO", "PNG", "WEBP", "BMP", "TIFF", "GIF"})
    fallback = "PNG"

    def write(self, items: Sequence[Item], classes: Sequence[ClassInfo], out: Path, writer: FileWriter) -> list[str]:
        names = [f"{item.wnid}/{item.sha256}.{writer.extension(item)}" for item in items]
        files = [f"{SPLIT_FOLDERS[item.split]}/{name}" for item, name in zip(items, names, strict=True)]
        for folder in sorted({os.path.dirname(file) for file in files}):
            (out / folder).mkdir(parents=True)
        root = str(out)
        writer.place_all((item, os.path.join(root, file)) for item, file in zip(items, files, strict=True))
        for split, folder in SPLIT_FOLDERS.items():
            rows = [_metadata(item, name) for item, name in zip(items, names, strict=True) if item.split == split]
            if rows:
                (out / folder / "metadata.jsonl").write_text("".join(json.dumps(row, sort_keys=True) + "\n" for row in rows))
        return files


def _metadata(item: Item, name: str) -> dict:
    return {"file_name": name, "label": item.wnid, "sha256": item.sha256, "source_url": item.source_url,
            "license": item.license, "attribution": item.attribution}
