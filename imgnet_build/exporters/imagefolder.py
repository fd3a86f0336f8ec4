"""`imagefolder`: `train/<wnid>/<sha256>.<ext>` and `val/<wnid>/…`, as torchvision's
`ImageFolder` reads it (class index = position of the wnid among the sorted folders).

Only the extensions torchvision takes are written: GIF and AVIF files are re-encoded
(PNG, or JPEG with --jpeg).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from imgnet_build.exporters import ClassInfo, Item, register
from imgnet_build.exporters.files import FileWriter


@register
class ImageFolder:
    name = "imagefolder"
    formats = frozenset({"JPEG", "MPO", "PNG", "WEBP", "BMP", "TIFF"})  # torchvision IMG_EXTENSIONS
    fallback = "PNG"

    def write(self, items: Sequence[Item], classes: Sequence[ClassInfo], out: Path, writer: FileWriter) -> list[str]:
        files = [f"{item.split}/{item.wnid}/{item.sha256}.{writer.extension(item)}" for item in items]
        for folder in sorted({os.path.dirname(file) for file in files}):
            (out / folder).mkdir(parents=True)
        root = str(out)
        writer.place_all((item, os.path.join(root, file)) for item, file in zip(items, files, strict=True))
        return files
