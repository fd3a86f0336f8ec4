"""Putting one image file in an export: hard link, copy or re-encode, and reading its bytes.

A file is hard-linked from the local blob store when the export is on the same
filesystem and `copy` was not asked for; it is copied otherwise, and streamed from the
store when the store has no local path (S3). It is re-encoded only when asked
(`resize` to a short side, `jpeg`) or when the layout cannot hold its format; then EXIF
orientation is applied to the pixels, since the metadata does not survive.

Hard links share their bytes with the blob store: edit exported files by writing new
ones (as image tools do), never in place.

Every path written under the export folder goes through `FileWriter.path`, which refuses
a component that is empty, `.`, `..`, absolute or holds a separator, so no name taken from
the database can place a file outside it. A write that fails (a full disk, a quota) is an
`ExportFailed` naming the file in OUT that could not be written, not the blob it came from.
"""

from __future__ import annotations

import errno
import io
import os
import shutil
import threading
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from PIL import Image as PILImage
from PIL import ImageOps

from imgnet_build.dbutil import batched
from imgnet_build.errors import ExportFailed
from imgnet_build.exporters import Item

__all__ = ["FileWriter", "EXTENSIONS", "JPEG_QUALITY"]

EXTENSIONS = {"JPEG": "jpg", "MPO": "jpg", "PNG": "png", "GIF": "gif", "WEBP": "webp", "BMP": "bmp",
              "TIFF": "tif", "AVIF": "avif"}
JPEG_QUALITY = 90
DESTINATION_ERRORS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS})  # always the written side


class FileWriter:
    """Places and reads items' files for one export; counts how each one was made."""

    def __init__(self, blob_store, formats: frozenset[str], fallback: str, *, root: str | os.PathLike,
                 shown: str | os.PathLike | None = None, resize: int | None = None, jpeg: bool = False,
                 copy: bool = False, workers: int = 4):
        """`root`: the folder being written; `shown`: what to call it in messages (OUT, not its temporary name)."""
        self.root, self.shown = str(root), Path(shown if shown is not None else root)
        self.blob_store = blob_store
        self.formats, self.fallback = formats, fallback
        self.resize, self.jpeg, self.copy = resize, jpeg, copy
        self.workers = workers
        self.counts = {"linked": 0, "copied": 0, "reencoded": 0}
        local_root = blob_store.local_path("")  # content-addressed: a blob's path is root/key
        self.local_root = str(local_root) if local_root is not None else None
        self._lock = threading.Lock()

    def target_format(self, item: Item) -> str | None:
        """The format to re-encode `item` to, or None when its bytes go out as they are."""
        stored = "JPEG" if item.format == "MPO" else item.format
        wanted = "JPEG" if self.jpeg else stored
        if wanted not in self.formats:
            wanted = self.fallback
        too_big = self.resize is not None and min(item.width, item.height) > self.resize
        return wanted if wanted != stored or too_big or item.format not in self.formats else None

    def extension(self, item: Item) -> str:
        return EXTENSIONS[self.target_format(item) or item.format]

    def path(self, relative: str) -> str:
        """The absolute path of `relative` under the export folder; ExportFailed for a name that would leave it."""
        parts = relative.split("/")
        if any(part in ("", ".", "..") or "\\" in part or "\0" in part for part in parts):
            raise ExportFailed(f"refusing to write {relative!r}: not a plain path inside {self.shown}; nothing was exported")
        return os.path.join(self.root, *parts)

    def folder(self, relative: str) -> None:
        """Make the folder `relative` (and its parents) under the export folder."""
        try:
            os.makedirs(self.path(relative), exist_ok=True)
        except OSError as exc:
            raise self.failed(relative, exc) from exc

    def write_text(self, relative: str, text: str) -> None:
        """Write a small UTF-8 text file under OUT; a failure names it."""
        try:
            with open(self.path(relative), "w", encoding="utf-8") as handle:
                handle.write(text)
        except OSError as exc:
            raise self.failed(relative, exc) from exc

    def failed(self, relative: str, exc: OSError) -> ExportFailed:
        """The error for a file of the export that could not be written."""
        return ExportFailed(f"cannot write {self.shown / relative}: {exc.strerror or exc}; nothing was exported")

    def place(self, item: Item, relative: str) -> None:
        """Write `item`'s file at `relative` (its folder exists)."""
        destination = self.path(relative)
        try:
            self._place(item, destination)
        except OSError as exc:
            if exc.errno in DESTINATION_ERRORS or destination in (exc.filename, exc.filename2):
                Path(destination).unlink(missing_ok=True)
                raise self.failed(relative, exc) from exc
            raise

    def _place(self, item: Item, destination: str) -> None:
        target = self.target_format(item)
        if target is not None:
            data = self._encode(self.blob_store.get(item.blob_key), target)
            with open(destination, "wb") as handle:
                handle.write(data)
            self._count("reencoded")
            return
        local = os.path.join(self.local_root, item.blob_key) if self.local_root is not None else None
        if local is None:
            data = self.blob_store.get(item.blob_key)
            with open(destination, "wb") as handle:
                handle.write(data)
        elif not self.copy:
            try:
                os.link(local, destination)
                self._count("linked")
                return
            except OSError as exc:  # another filesystem, or one without hard links
                if exc.errno == errno.ENOENT:
                    raise
                shutil.copyfile(local, destination)
        else:
            shutil.copyfile(local, destination)
        self._count("copied")

    def read(self, item: Item) -> bytes:
        """`item`'s bytes as the export holds them (for layouts that stream into archives)."""
        data = self.blob_store.get(item.blob_key)
        target = self.target_format(item)
        if target is None:
            self._count("copied")
            return data
        self._count("reencoded")
        return self._encode(data, target)

    def place_all(self, pairs: Iterable[tuple[Item, str]]) -> Iterator[tuple[Item, str]]:
        """Place each (item, relative file) and yield it once written, in order."""
        if self.resize is None and not self.jpeg and self.local_root is not None:
            for item, relative in pairs:  # links and copies: threads would cost more than they save
                self.place(item, relative)
                yield item, relative
            return
        with ThreadPoolExecutor(self.workers) as pool:
            for chunk in batched(pairs, 8 * self.workers):
                list(pool.map(lambda pair: self.place(*pair), chunk))
                yield from chunk

    def read_all(self, items: Iterable[Item]) -> Iterator[tuple[Item, bytes]]:
        """Each item with its bytes, in order, read ahead on a few threads (an S3 store has latency)."""
        with ThreadPoolExecutor(self.workers) as pool:
            for chunk in batched(items, 8 * self.workers):
                yield from zip(chunk, pool.map(self.read, chunk), strict=True)

    def _count(self, how: str) -> None:
        with self._lock:
            self.counts[how] += 1

    def _encode(self, data: bytes, target: str) -> bytes:
        with PILImage.open(io.BytesIO(data)) as opened:
            image = ImageOps.exif_transpose(opened)
            if self.resize is not None and min(image.size) > self.resize:
                scale = self.resize / min(image.size)
                size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
                image = image.resize(size, PILImage.Resampling.LANCZOS)
            if target == "JPEG" and image.mode != "RGB":
                image = image.convert("RGB")
            elif target != "JPEG" and image.mode not in ("RGB", "RGBA", "L", "LA"):
                image = image.convert("RGBA" if "A" in image.getbands() or "transparency" in image.info else "RGB")
            buffer = io.BytesIO()
            image.save(buffer, target, **({"quality": JPEG_QUALITY} if target in ("JPEG", "WEBP") else {}))
        return buffer.getvalue()
