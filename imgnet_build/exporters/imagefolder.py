"""`imagefolder`: `train/<wnid>/<sha256>.<ext>` and `val/<wnid>/…`, as torchvision's
`ImageFolder` reads it (class index = position of the wnid among the sorted folders: every
exported class has images in both splits, so train and val number the classes alike, and
`classes.txt` lists them in that order).

Only the extensions torchvision takes are written: GIF and AVIF files are re-encoded
(PNG, or JPEG with --jpeg).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

from imgnet_build.exporters import ClassInfo, Item, register
from imgnet_build.exporters.files import FileWriter


@register
class ImageFolder:
    name = "imagefolder"
    formats = frozenset({"JPEG", "MPO", "PNG", "WEBP", "BMP", "TIFF"})  # torchvision IMG_EXTENSIONS
    fallback = "PNG"
    sha256_order: frozenset[str] = frozenset()

    def write(self, items: Iterable[Item], classes: Sequence[ClassInfo], out: Path,
              writer: FileWriter) -> Iterator[tuple[Item, str]]:
        return writer.place_all(_files(items, writer))


def _files(items: Iterable[Item], writer: FileWriter) -> Iterator[tuple[Item, str]]:
    made: set[str] = set()
    for item in items:
        file = f"{item.split}/{item.wnid}/{item.sha256}.{writer.extension(item)}"
        folder = os.path.dirname(file)
        if folder not in made:
            writer.folder(folder)
            made.add(folder)
        yield item, file
