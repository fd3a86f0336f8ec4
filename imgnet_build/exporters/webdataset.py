"""`webdataset`: tar shards `train-000000.tar`, `val-000000.tar`, … of `shard_size` samples.

A sample is `<key>.<ext>` (the image; `jpg` for JPEG), `<key>.cls` (the 0-based class
index, wnids sorted, as in classes.txt) and `<key>.json` (wnid, sha256, cluster, source
URL, licence, attribution), with key `<wnid>_<sha256>`. Samples are in sha256 order,
which mixes the classes in every shard. Shards are streamed from the blob store (an S3
store needs no local copy) and are byte-for-byte reproducible (fixed mtime, owner and
mode). The manifest's `file` is `<shard>#<key>`.
"""

from __future__ import annotations

import dataclasses
import io
import json
import tarfile
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import ClassVar

from imgnet_build.exporters import ClassInfo, Item, register
from imgnet_build.exporters.files import FileWriter

DEFAULT_SHARD_SIZE = 1000


@register
@dataclasses.dataclass(frozen=True)
class WebDataset:
    name: ClassVar[str] = "webdataset"
    formats: ClassVar[frozenset[str]] = frozenset({"JPEG", "MPO", "PNG", "WEBP"})
    fallback: ClassVar[str] = "PNG"
    sha256_order: ClassVar[frozenset[str]] = frozenset({"train", "val"})
    shard_size: int = DEFAULT_SHARD_SIZE

    def write(self, items: Iterable[Item], classes: Sequence[ClassInfo], out: Path,
              writer: FileWriter) -> Iterator[tuple[Item, str]]:
        index = {info.wnid: info.index for info in classes}
        tar, shard, count, split = None, "", 0, None
        try:
            for item, data in writer.read_all(items):
                if item.split != split:
                    split, count = item.split, 0
                if count % self.shard_size == 0:
                    if tar is not None:
                        _close(tar, writer, shard)
                    shard = f"{split}-{count // self.shard_size:06d}.tar"
                    tar = _open(writer, shard)
                count += 1
                key = f"{item.wnid}_{item.sha256}"
                try:
                    _add(tar, f"{key}.{writer.extension(item)}", data)
                    _add(tar, f"{key}.cls", str(index[item.wnid]).encode())
                    _add(tar, f"{key}.json", json.dumps(_metadata(item), sort_keys=True).encode())
                except OSError as exc:
                    raise writer.failed(shard, exc) from exc
                yield item, f"{shard}#{key}"
            if tar is not None:
                _close(tar, writer, shard)
                tar = None
        finally:
            if tar is not None:
                tar.fileobj.close() if tar.fileobj is not None else None


def _open(writer: FileWriter, shard: str) -> tarfile.TarFile:
    try:
        return tarfile.open(writer.path(shard), "w", format=tarfile.PAX_FORMAT)
    except OSError as exc:
        raise writer.failed(shard, exc) from exc


def _close(tar: tarfile.TarFile, writer: FileWriter, shard: str) -> None:
    try:
        tar.close()
    except OSError as exc:
        raise writer.failed(shard, exc) from exc


def _add(tar, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = len(data), 0, 0o644
    tar.addfile(info, io.BytesIO(data))


def _metadata(item: Item) -> dict:
    return {"wnid": item.wnid, "sha256": item.sha256, "cluster": item.cluster, "source_url": item.source_url,
            "license": item.license, "attribution": item.attribution}
