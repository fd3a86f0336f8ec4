"""`hf`: the Hugging Face `imagefolder` layout, `train/<wnid>/<sha256>.<ext>` and
`validation/<wnid>/…`, each split with a `metadata.jsonl` (`file_name`, `label` = wnid,
and the image's provenance). The dataset card (README.md) opens with the YAML that
`datasets` reads: the splits' files and the features, `label` a `ClassLabel` whose names
are the wnids in class-index order. So `load_dataset(OUT)` gives the splits `train` and
`validation`, int labels and `features["label"].names`; the columns `image`, `label`,
`sha256`, `source_url`, `license`, `attribution`. (`load_dataset("imagefolder",
data_dir=OUT)` ignores the card: its labels are the wnid strings.)
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import IO

from imgnet_build.exporters import ClassInfo, Item, register
from imgnet_build.exporters.files import FileWriter

SPLIT_FOLDERS = {"train": "train", "val": "validation"}  # the split names `datasets` recognises
PROVENANCE = ("sha256", "source_url", "license", "attribution")


@register
class HuggingFace:
    name = "hf"
    formats = frozenset({"JPEG", "MPO", "PNG", "WEBP", "BMP", "TIFF", "GIF"})
    fallback = "PNG"
    sha256_order: frozenset[str] = frozenset()

    def write(self, items: Iterable[Item], classes: Sequence[ClassInfo], out: Path,
              writer: FileWriter) -> Iterator[tuple[Item, str]]:
        metadata: dict[str, IO[str]] = {}
        made: set[str] = set()

        def files() -> Iterator[tuple[Item, str]]:
            for item in items:
                folder = f"{SPLIT_FOLDERS[item.split]}/{item.wnid}"
                if folder not in made:
                    writer.folder(folder)
                    made.add(folder)
                yield item, f"{folder}/{item.sha256}.{writer.extension(item)}"

        try:
            for item, file in writer.place_all(files()):
                split_folder, name = file.split("/", 1)
                if split_folder not in metadata:
                    metadata[split_folder] = open(writer.path(f"{split_folder}/metadata.jsonl"), "w", encoding="utf-8")
                try:
                    metadata[split_folder].write(json.dumps(_metadata(item, name), sort_keys=True) + "\n")
                except OSError as exc:
                    raise writer.failed(f"{split_folder}/metadata.jsonl", exc) from exc
                yield item, file
        finally:
            for handle in metadata.values():
                handle.close()

    @staticmethod
    def card_header(classes: Sequence[ClassInfo], splits: Iterable[str]) -> str:
        """The dataset card's YAML front matter: the files of `splits` (those with images) and the
        features (label: ClassLabel)."""
        names = "".join(f"          '{info.index}': {info.wnid}\n" for info in classes)
        columns = "".join(f"  - name: {column}\n    dtype: string\n" for column in PROVENANCE)
        files = "".join(f"  - split: {SPLIT_FOLDERS[split]}\n    path: {SPLIT_FOLDERS[split]}/**\n" for split in splits)
        return ("---\nconfigs:\n- config_name: default\n  data_files:\n" + files +
                "  features:\n  - name: image\n    dtype: image\n  - name: label\n    dtype:\n      class_label:\n"
                "        names:\n" + names + columns + "---\n")


def _metadata(item: Item, name: str) -> dict:
    return {"file_name": name, "label": item.wnid, "sha256": item.sha256, "source_url": item.source_url,
            "license": item.license, "attribution": item.attribution}
