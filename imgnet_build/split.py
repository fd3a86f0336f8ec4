"""The train/val split and `export`: which labeled images leave the workspace, and where.

    from imgnet_build.split import ExportOptions, export
    result = export(workspace, "out", ExportOptions(format="imagefolder", val_per_class=50))
    print(result.summary())                      # or result.as_dict()

What is exported. Every accepted Label (simulated ones only with `include_simulated`) of
a live cluster; a merged cluster's labels and images live on under its survivor. One
image per (cluster, category), since ImageNet removes duplicates: the cluster's
representative when it has an ok candidate for that category, otherwise the member that
has one with the most pixels (then the smallest sha256). The other members are not
exported. Source URL, licence and attribution come from that image's best-ranked ok
candidate for the category. A cluster accepted for two categories is exported under both
(one file per class folder), always in one split. Nothing to export (no accepted label,
or all of them simulated, or all filtered out) is an error that says why.

Filters, in this order: `licenses` (codes from `imgnet_build.licenses`; an unknown code is
refused with the known ones; images whose source gave no licence are counted, and left
out when a filter is given), then `min_per_class` (default 2, one image for each split:
categories with fewer images are left out and listed), then `max_per_class` (keeps the
clusters with the smallest draw of hash("keep", seed, key), a draw independent of the
split one).

The split. Every cluster draws u = hash(seed, cluster key) in [0, 1) (SHA-256, 64 bits).
The key is the sha256 of the image that founded the cluster and never changes, so a new
representative never moves a cluster.

- `val_fraction` F (default 0.1): val when u < F, with one image of each class in each
  split: a category of two or more clusters that are all under F keeps its largest draw
  in train, and one with none under F puts its smallest draw in val (ILSVRC has 50 per
  class; a class missing from val/ makes torchvision's ImageFolder number val's classes
  differently from train's). Labeling more images moves a cluster only in a class that
  had fewer than two clusters or all of them on one side of F (or that shares a cluster
  with such a class): its minimum (or keeper) goes back when a new cluster takes that role.
- `val_per_class` N: per category, the N clusters with the smallest u go to val (but at
  most all except one, so a category keeps a train image); a cluster that any of its
  categories puts in val is in val for all of them, so a category that shares clusters
  may hold more than N. The promise: once a category has more than N clusters, adding
  clusters never moves one from train to val; a val cluster moves to train only when a
  new cluster of its category draws a smaller u (k new clusters joining n displace about
  N*k/(n+k)). A cluster newly accepted for another category may move to val.
- Unless val is empty on purpose (F = 0 or N = 0), every exported class has images in
  both splits; a class that cannot (its clusters are all shared with classes that put
  them in val, or `min_per_class` 1 let a single image in) is refused by name. One class
  index serves both splits and every layout: the position of the wnid among the sorted
  wnids, in dataset.json and classes.txt.
- Merges: when dedup merges two clusters, the survivor's key decides for all their
  images (leakage wins over stability); the merged cluster's images move if it sat in the
  other split.

Every export compares with the split each cluster had in the previous export
(`Cluster.split`), reports what moved (`ExportResult.moved`, the first MOVED_LISTED by
cluster key, and `moved_count`) and records the new one. It writes into a hidden folder
next to OUT (`.OUT.partial-<pid>-…`), checks what it wrote (no image and no cluster in
both splits, every file there, every class in both splits, counts as in dataset.json),
then records the export and renames the folder to OUT as one step: the database rows are
written first, the rename happens while they are uncommitted, and a failure of either
undoes both, so there is never an OUT without its record nor a record without its OUT.
Hidden folders that a killed export left beside OUT are removed by the next export to it
(when the process that made them is gone) and reported. The manifest has no timestamps:
the same workspace, seed and options give a byte-identical `manifest.jsonl`.

Memory. Nothing holds a row per image as a Python object: the first pass over the
accepted pairs keeps a few numbers per pair in numpy arrays (about 90 bytes per pair: ids,
draws, a licence code, a sha256 prefix), the split and the filters are computed on those
arrays, and the items are then read back from the database in chunks of EXPORT_CHUNK, in
the order they are written, and streamed through the layout's writer, the manifest and
the tally of dataset.json. The check afterwards reads the manifest line by line (16 bytes
per image). benchmarks/bench_export_memory.py measures the peak RSS.

Speed (benchmarks/bench_export.py, 10,000 JPEGs of 61 KB in 100 classes, 2 shared cores
under load from other work): the whole export call, database read and verification
included, against shutil.copyfile of the same files: imagefolder with hard links 4.4x
the copy, ilsvrc 4.0x, hf 3.1x, webdataset 1.5x (faster than the copy: one tar per 1000
files), imagefolder --copy 0.65x. A hard link costs the same whatever the file's size,
so the ratio grows with larger images.
"""

from __future__ import annotations

import dataclasses
import hashlib
import heapq
import json
import os
import re
import shutil
import tempfile
from array import array
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import cast

import numpy as np
from numpy.typing import DTypeLike
from sqlalchemy import and_, case, select, update

from imgnet_build.arrays import find_sorted
from imgnet_build.dbutil import batched
from imgnet_build.errors import BadInput, DatabaseUnavailable, ExportFailed, ExportTargetExists
from imgnet_build.exporters import ClassInfo, Item, exporter_names, get_exporter
from imgnet_build.exporters.card import Tally, classes_text, dataset_document, manifest_row, render_card
from imgnet_build.exporters.files import FileWriter
from imgnet_build.exporters.webdataset import DEFAULT_SHARD_SIZE
from imgnet_build.licenses import UNKNOWN, license_code, parse_license_spec
from imgnet_build.store import Candidate, Category, Cluster, Export, Image, Label
from imgnet_build.workspace import Workspace

__all__ = ["ExportOptions", "ExportResult", "export", "split_draw", "choose_val", "cap_per_class", "verify_export",
           "DEFAULT_VAL_FRACTION", "DEFAULT_MIN_PER_CLASS", "KNOWN_LICENSES"]

DEFAULT_VAL_FRACTION = 0.1
DEFAULT_MIN_PER_CLASS = 2  # one image for train, one for val
KNOWN_LICENSES = ("cc-by", "cc-by-nc", "cc-by-nc-nd", "cc-by-nc-sa", "cc-by-nd", "cc-by-sa", "cc0", "pdm", UNKNOWN)
EXPORT_CHUNK = 2000  # items read from the database at a time
MOVED_LISTED = 1000  # moves listed in ExportResult.moved (all are counted)
WNID = re.compile(r"n[0-9]{8}")
SHA256 = re.compile(r"[0-9a-f]{64}")


@dataclasses.dataclass(frozen=True)
class ExportOptions:
    """How to export; `licenses` takes codes or a "cc0,cc-by" string (see imgnet_build.licenses)."""

    format: str = "imagefolder"
    val_fraction: float | None = None  # default DEFAULT_VAL_FRACTION unless val_per_class is given
    val_per_class: int | None = None
    seed: int = 0
    min_per_class: int = DEFAULT_MIN_PER_CLASS
    max_per_class: int | None = None
    licenses: tuple[str, ...] | str = ()
    include_simulated: bool = False
    overwrite: bool = False
    resize: int | None = None  # short side in pixels; larger images are scaled down and re-encoded
    jpeg: bool = False  # re-encode every non-JPEG image as JPEG
    copy: bool = False  # copy files even where a hard link from the blob store is possible
    shard_size: int = DEFAULT_SHARD_SIZE  # webdataset samples per tar

    def __post_init__(self) -> None:
        if self.format not in exporter_names():
            raise BadInput(f"unknown export format {self.format!r}; use one of {', '.join(exporter_names())}")
        if self.val_fraction is not None and self.val_per_class is not None:
            raise BadInput("give --val-fraction or --val-per-class, not both")
        if self.val_fraction is not None and not 0 <= self.val_fraction < 1:
            raise BadInput(f"--val-fraction {self.val_fraction} is not in [0, 1)")
        for name, least in (("val_per_class", 0), ("min_per_class", 1), ("max_per_class", 1), ("resize", 1),
                            ("shard_size", 1)):
            value = getattr(self, name)
            if value is not None and value < least:
                raise BadInput(f"--{name.replace('_', '-')} {value} is below {least}")
        if self.max_per_class is not None and self.max_per_class < self.min_per_class:
            raise BadInput(f"--max-per-class {self.max_per_class} is below --min-per-class {self.min_per_class}")
        licenses = parse_license_spec(self.licenses) if isinstance(self.licenses, str) else \
            tuple(sorted({code for code in map(license_code, self.licenses) if code}))
        object.__setattr__(self, "licenses", licenses)
        if self.val_fraction is None and self.val_per_class is None:
            object.__setattr__(self, "val_fraction", DEFAULT_VAL_FRACTION)

    @property
    def has_val(self) -> bool:
        """False when val is empty on purpose (--val-fraction 0 or --val-per-class 0)."""
        return bool(self.val_per_class) if self.val_per_class is not None else bool(self.val_fraction)

    def parameters(self) -> dict:
        """The options that shape the dataset (what dataset.json records)."""
        return {key: value for key, value in dataclasses.asdict(self).items() if key != "overwrite"} | \
            {"licenses": list(self.licenses)}


@dataclasses.dataclass(frozen=True)
class ExportResult:
    """What an export wrote and left out. `moved`: clusters whose split changed since the last export
    (the first MOVED_LISTED by cluster key; `moved_count` counts them all)."""

    out: str
    format: str
    splits: dict[str, int]
    classes: dict[str, dict[str, int]]  # wnid -> {"train": n, "val": n}
    left_out_categories: dict[str, int]  # wnid -> images it had, under min_per_class
    license_unknown: int  # images whose source gave no licence (left out when filtering by licence)
    license_mismatch: int  # images left out by the licence filter (unknown ones included)
    simulated_left_out: int  # accepted labels from the simulated crowd, without include_simulated
    capped: int  # images left out by max_per_class
    moved: list[dict]  # {"cluster", "from", "to", "merged_into"}
    moved_count: int
    files: dict[str, int]  # linked, copied, reencoded
    manifest_sha256: str
    leftovers_removed: list[str]  # hidden folders of killed exports to the same OUT, removed
    leftovers_kept: list[str]  # ... and those whose process still runs, left alone

    @property
    def images(self) -> int:
        return sum(self.splits.values())

    def summary(self) -> str:
        text = (f"exported: {self.images} images ({self.splits['train']} train, {self.splits['val']} val) "
                f"in {len(self.classes)} classes as {self.format} to {self.out}")
        notes = [f"{len(self.left_out_categories)} categories under --min-per-class left out"] if self.left_out_categories else []
        notes += [f"{self.license_unknown} without a known licence"] if self.license_unknown else []
        notes += [f"{self.license_mismatch} left out by --license"] if self.license_mismatch else []
        notes += [f"{self.simulated_left_out} simulated labels left out (--include-simulated)"] if self.simulated_left_out else []
        notes += [f"{self.capped} over --max-per-class"] if self.capped else []
        notes += [f"{self.moved_count} clusters changed split"] if self.moved_count else []
        notes += [f"removed {len(self.leftovers_removed)} unfinished exports left beside it by killed runs"] \
            if self.leftovers_removed else []
        notes += [f"left {', '.join(self.leftovers_kept)} alone: its export is still running"] if self.leftovers_kept else []
        return "; ".join([text, *notes])

    def details(self, shown: int = 10) -> list[str]:
        """The lines `imgnet export` prints under the summary: the first `shown` clusters that changed
        split, and the categories left out under --min-per-class."""
        lines = []
        for move in self.moved[:shown]:
            how = f" (merged into {move['merged_into'][:12]})" if move["merged_into"] else ""
            lines.append(f"moved: cluster {move['cluster'][:12]} {move['from']} -> {move['to']}{how}")
        if self.moved_count > shown:
            lines.append(f"moved: … and {self.moved_count - shown} more (--json lists the first {len(self.moved)})")
        if self.left_out_categories:
            lines.append("left out (under --min-per-class): " + ", ".join(
                f"{wnid} ({n})" for wnid, n in self.left_out_categories.items()))
        return lines

    def as_dict(self) -> dict:
        return dataclasses.asdict(self) | {"images": self.images}


def split_draw(seed: int, key: str, purpose: str = "split") -> float:
    """The cluster's uniform draw in [0, 1) for `purpose` ("split" or "keep")."""
    return _draw(seed, key, purpose) / 2**64


def _draw(seed: int, key: str, purpose: str = "split") -> int:
    """The 64 bits behind split_draw."""
    return int.from_bytes(hashlib.sha256(f"imgnet-{purpose}:{seed}:{key}".encode()).digest()[:8], "big")


def choose_val(members: Mapping[str, Iterable[str]], seed: int, *, val_fraction: float | None = None,
               val_per_class: int | None = None) -> set[str]:
    """The cluster keys that go to val, given each category's cluster keys (rules: module docstring)."""
    keys = sorted({key for cluster_keys in members.values() for key in cluster_keys})
    number = {key: n for n, key in enumerate(keys)}
    cluster, category = _pair_arrays(members, number)
    draws = np.array([_draw(seed, key) for key in keys], dtype=np.uint64)
    val = _val_clusters(cluster, category, draws[cluster], val_fraction, val_per_class)
    return {keys[n] for n in np.flatnonzero(val)}


def cap_per_class(members: Mapping[str, Iterable[str]], seed: int, limit: int | None) -> dict[str, set[str]]:
    """Each category's clusters, at most `limit` of them: those with the smallest "keep" draw."""
    keys = sorted({key for cluster_keys in members.values() for key in cluster_keys})
    number = {key: n for n, key in enumerate(keys)}
    cluster, category = _pair_arrays(members, number)
    draws = np.array([_draw(seed, key, "keep") for key in keys], dtype=np.uint64)
    kept = _cap(cluster, category, draws[cluster], limit)
    wnids = list(members)
    found: dict[str, set[str]] = {wnid: set() for wnid in wnids}
    for n in np.flatnonzero(kept):
        found[wnids[category[n]]].add(keys[cluster[n]])
    return found


def _pair_arrays(members: Mapping[str, Iterable[str]], number: dict[str, int]) -> tuple[np.ndarray, np.ndarray]:
    pairs = sorted({(number[key], index) for index, keys in enumerate(members.values()) for key in keys})
    return (np.array([c for c, _ in pairs], dtype=np.int64), np.array([k for _, k in pairs], dtype=np.int64))


def _rank_in_category(category: np.ndarray, draw: np.ndarray, cluster: np.ndarray) -> np.ndarray:
    """Each pair's 0-based rank among its category's pairs, by (draw, cluster)."""
    order = np.lexsort((cluster, draw, category))
    sorted_category = category[order]
    starts = np.flatnonzero(np.r_[True, sorted_category[1:] != sorted_category[:-1]])
    first = np.repeat(starts, np.diff(np.r_[starts, len(order)]))
    rank = np.empty(len(order), dtype=np.int64)
    rank[order] = np.arange(len(order)) - first
    return rank


def _cap(cluster: np.ndarray, category: np.ndarray, keep_draw: np.ndarray, limit: int | None) -> np.ndarray:
    """Which pairs max_per_class keeps (a boolean per pair)."""
    if limit is None or not len(cluster):
        return np.ones(len(cluster), dtype=bool)
    return _rank_in_category(category, keep_draw, cluster) < limit


def _val_clusters(cluster: np.ndarray, category: np.ndarray, draw: np.ndarray, val_fraction: float | None,
                  val_per_class: int | None) -> np.ndarray:
    """A boolean per cluster number (0 .. cluster.max()): in val. Pairs are (cluster, category) numbers."""
    val = np.zeros(int(cluster.max()) + 1 if len(cluster) else 0, dtype=bool)
    if not len(cluster):
        return val
    sizes = np.bincount(category)
    rank = _rank_in_category(category, draw, cluster)
    if val_per_class is not None:
        val[cluster[rank < np.minimum(val_per_class, sizes[category] - 1)]] = True
        return val
    fraction = DEFAULT_VAL_FRACTION if val_fraction is None else val_fraction
    val[cluster[draw.astype(np.float64) / 2**64 < fraction]] = True
    if val_fraction:
        # a category with two or more clusters, all under F, keeps its largest draw in train...
        all_val = np.bincount(category, weights=val[cluster], minlength=len(sizes)) == sizes
        keeper = np.zeros(len(val), dtype=bool)
        keeper[cluster[(rank == sizes[category] - 1) & all_val[category] & (sizes[category] > 1)]] = True
        val &= ~keeper
        # ...and one with none in val puts its smallest draw (not kept for another's train) there
        has_val = np.zeros(len(sizes), dtype=bool)
        has_val[category[val[cluster]]] = True
        open_rank = _rank_in_category(category, np.where(keeper[cluster], np.iinfo(np.uint64).max, draw), cluster)
        wanting = (open_rank == 0) & ~has_val[category] & (sizes[category] > 1) & ~keeper[cluster]
        val[cluster[wanting]] = True
    return val


@dataclasses.dataclass
class _Pairs:
    """The accepted (cluster, category) pairs: one entry per pair in each array, in (cluster, category) order."""

    cluster: np.ndarray  # cluster id
    category: np.ndarray  # category id
    candidate: np.ndarray  # the chosen image's best-ranked ok candidate for the category
    code: np.ndarray  # licence code, an index into `codes`
    simulated: np.ndarray
    draw: np.ndarray  # uint64: split draw of the cluster key
    keep: np.ndarray  # uint64: keep draw (max_per_class)
    sha: np.ndarray  # uint64: the chosen image's sha256, first 8 bytes (order only)
    codes: list[str]
    digest: str


def export(workspace: Workspace, out: str | os.PathLike, options: ExportOptions = ExportOptions()) -> ExportResult:
    """Write the accepted images to `out` in `options.format`; see the module docstring."""
    out = Path(out)
    _check_target(workspace, out, options.overwrite)
    pairs = _read(workspace, options.seed)
    _check_licenses(options, pairs.codes)
    kept, counts = _select(pairs, options)
    if not kept.any():
        raise BadInput(_nothing(pairs, counts, options))
    wnids = _wnids(workspace, np.unique(pairs.category[kept]))
    left_out = _wnids(workspace, counts["left_out_ids"], check=False)
    counts["left_out"] = dict(sorted((left_out[c], n) for c, n in counts["left_out_ids"].items()))
    cluster, category = pairs.cluster[kept], pairs.category[kept]
    cluster_ids, cluster_number = np.unique(cluster, return_inverse=True)
    category_ids, category_number = np.unique(category, return_inverse=True)
    val = _val_clusters(cluster_number, category_number, pairs.draw[kept],
                        options.val_fraction if options.val_per_class is None else None, options.val_per_class)
    in_val = val[cluster_number]
    classes = _classes(workspace, sorted(wnids.values()))
    if options.has_val:
        _check_both_splits(category_number, in_val, [wnids[int(c)] for c in category_ids], classes)
    exporter = get_exporter(options.format, shard_size=options.shard_size)
    index = {info.wnid: info.index for info in classes}
    class_rank = np.array([index[wnids[int(c)]] for c in category_ids], dtype=np.int64)[category_number]
    by_sha = np.array([split in exporter.sha256_order for split in ("train", "val")])[in_val.astype(np.int64)]
    order = np.lexsort((class_rank, pairs.sha[kept], np.where(by_sha, 0, class_rank), in_val))
    out.parent.mkdir(parents=True, exist_ok=True)
    removed, running = _remove_leftovers(out)
    partial = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-{os.getpid()}-", dir=out.parent))
    try:
        os.chmod(partial, 0o755)
        writer = FileWriter(workspace.blob_store, exporter.formats, exporter.fallback, root=partial, shown=out,
                            resize=options.resize, jpeg=options.jpeg, copy=options.copy)
        candidates = pairs.candidate[kept][order]
        splits = np.where(in_val[order], "val", "train")
        del order, class_rank, by_sha
        items = _items(workspace, candidates, splits, wnids)
        tally, manifest_sha256 = _write_items(exporter.write(items, classes, partial, writer), classes, partial, writer)
        document = dataset_document(tally, len(cluster_ids), classes, options.parameters(), pairs.digest,
                                    manifest_sha256, counts["left_out"], counts["unknown"], counts["mismatch"],
                                    counts["simulated"])
        header = getattr(exporter, "card_header", None)
        writer.write_text("dataset.json", json.dumps(document, indent=2, sort_keys=True, ensure_ascii=False) + "\n")
        writer.write_text("classes.txt", classes_text(classes))
        writer.write_text("README.md", render_card(document, header(classes, [s for s in ("train", "val")
                                                                                 if tally.splits[s]]) if header else ""))
        verify_export(partial)
        moved, moved_count, changes = _moves(workspace, cluster_ids, val)
        _record_and_put_in_place(workspace, partial, out, options, changes, document)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    return ExportResult(out=str(out), format=options.format, splits=document["counts"]["splits"],
                        classes={c["wnid"]: {"train": c["train"], "val": c["val"]} for c in document["classes"]},
                        left_out_categories=counts["left_out"], license_unknown=counts["unknown"],
                        license_mismatch=counts["mismatch"], simulated_left_out=counts["simulated"],
                        capped=counts["capped"], moved=moved, moved_count=moved_count, files=dict(writer.counts),
                        manifest_sha256=document["manifest_sha256"], leftovers_removed=removed,
                        leftovers_kept=running)


def _check_target(workspace: Workspace, out: Path, overwrite: bool) -> None:
    """Refuse an OUT that is, holds or lies inside what the workspace keeps, or `/`; and a full OUT."""
    resolved = out.resolve()
    if resolved == Path(resolved.anchor):
        raise BadInput(f"{out} is the root of the filesystem; export to a new folder")
    for what, path in _protected(workspace):
        if resolved == path or resolved in path.parents or path in resolved.parents:
            relation = "is" if resolved == path else "holds" if resolved in path.parents else "is inside"
            if relation != "is inside" or what != "folder":
                raise BadInput(f"{out} {relation} the workspace's {what} ({path}); export to another folder")
    root = workspace.root.resolve()
    if root in resolved.parents:  # after the loop: inside the blob store, say so rather than this
        raise BadInput(f"{out} is inside the workspace's folder ({root}); export to a folder outside the workspace")
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not overwrite:
        raise ExportTargetExists(f"{out} exists and is not empty; choose another folder or add --overwrite")


def _protected(workspace: Workspace) -> list[tuple[str, Path]]:
    """What an export must never replace or write into: the workspace folder, its settings, its
    database file and its blob store (each may lie outside the workspace folder)."""
    root = workspace.root.resolve()
    found = [("folder", root), ("settings", (root / "imgnet.toml").resolve())]
    database = workspace._sqlite_path()
    if database is not None:
        database = database.resolve()
        found += [("database", database)] + [("database", database.with_name(database.name + suffix))
                                             for suffix in ("-wal", "-shm", "-journal")]
    local_blobs = workspace.blob_store.local_path("")
    if local_blobs is not None:
        found.append(("blob store", local_blobs.resolve()))
    return found


def _read(workspace: Workspace, seed: int) -> _Pairs:
    """The accepted (cluster, category) pairs, each with its chosen image, as arrays; one pass, streamed."""
    preference = (case((Image.sha256 == Cluster.representative, 0), else_=1), (Image.width * Image.height).desc(),
                  Image.sha256, case((Candidate.rank.is_(None), 1), else_=0), Candidate.rank, Candidate.id)
    query = (select(Label.cluster_id, Label.category_id, Label.confidence, Label.yes_votes, Label.no_votes,
                    Label.method, Label.simulated, Cluster.key, Image.sha256, Candidate.id.label("candidate_id"),
                    Candidate.url, Candidate.license)
             .join(Cluster, Cluster.id == Label.cluster_id)
             .join(Image, Image.cluster_id == Label.cluster_id)
             .join(Candidate, and_(Candidate.image_sha256 == Image.sha256, Candidate.category_id == Label.category_id,
                                   Candidate.status == "ok"))
             .where(Label.status == "accepted", Cluster.merged_into.is_(None))
             .order_by(Label.cluster_id, Label.category_id, *preference))
    signed = {name: array("q") for name in ("cluster", "category", "candidate", "code")}
    unsigned = {name: array("Q") for name in ("draw", "keep", "sha")}
    simulated = array("b")
    codes: dict[str, int] = {}
    digest = hashlib.sha256()
    last = None
    with workspace.session() as session:
        for row in session.execute(query).yield_per(5000):
            pair = (row.cluster_id, row.category_id)
            if pair == last:
                continue  # a less preferred image or candidate of the same pair
            last = pair
            digest.update("\t".join(map(repr, (row.key, row.category_id, row.sha256, row.method, row.confidence,
                                               row.yes_votes, row.no_votes, row.simulated, row.url,
                                               row.license))).encode() + b"\n")
            signed["cluster"].append(row.cluster_id)
            signed["category"].append(row.category_id)
            signed["candidate"].append(row.candidate_id)
            signed["code"].append(codes.setdefault(license_code(row.license) or UNKNOWN, len(codes)))
            unsigned["draw"].append(_draw(seed, row.key))
            unsigned["keep"].append(_draw(seed, row.key, "keep"))
            unsigned["sha"].append(int(row.sha256[:16], 16) if SHA256.fullmatch(row.sha256) else 0)
            simulated.append(bool(row.simulated))
    return _Pairs(cluster=_numbers(signed["cluster"]), category=_numbers(signed["category"]),
                  candidate=_numbers(signed["candidate"]), code=_numbers(signed["code"]),
                  simulated=np.frombuffer(simulated, dtype=np.int8).astype(bool) if simulated else np.zeros(0, bool),
                  draw=_numbers(unsigned["draw"], np.uint64), keep=_numbers(unsigned["keep"], np.uint64),
                  sha=_numbers(unsigned["sha"], np.uint64), codes=list(codes), digest=digest.hexdigest())


def _numbers(values: array, dtype: DTypeLike = np.int64) -> np.ndarray:
    return np.frombuffer(values, dtype=dtype) if len(values) else np.zeros(0, dtype=dtype)


def _check_licenses(options: ExportOptions, present: list[str]) -> None:
    """Refuse --license codes that are neither standard nor found among the accepted images."""
    unknown = [code for code in options.licenses if code not in KNOWN_LICENSES and code not in present]
    if unknown:
        here = sorted(set(present) - set(KNOWN_LICENSES))
        raise BadInput(f"--license {','.join(unknown)}: unknown licence code; known codes: {', '.join(KNOWN_LICENSES)}"
                       + (f"; also in this workspace: {', '.join(here)}" if here else ""))


def _select(pairs: _Pairs, options: ExportOptions) -> tuple[np.ndarray, dict]:
    """Which pairs the filters keep (a boolean per pair), and what each filter left out."""
    kept = pairs.simulated == 0 if not options.include_simulated else np.ones(len(pairs.cluster), dtype=bool)
    counts: dict = {"accepted": len(pairs.cluster), "simulated": int((~kept).sum())}
    unknown_code = pairs.codes.index(UNKNOWN) if UNKNOWN in pairs.codes else -1
    counts["unknown"] = int((kept & (pairs.code == unknown_code)).sum())
    counts["mismatch"] = 0
    if options.licenses:
        allowed = np.array([code in options.licenses for code in pairs.codes] or [False])
        licensed = kept & allowed[pairs.code]
        counts["mismatch"], kept = int(kept.sum() - licensed.sum()), licensed
    counts["filtered"] = int(kept.sum())
    sizes = np.bincount(pairs.category[kept], minlength=int(pairs.category.max()) + 1 if len(pairs.category) else 0)
    small = (sizes > 0) & (sizes < options.min_per_class)
    counts["left_out_ids"] = {int(category): int(sizes[category]) for category in np.flatnonzero(small)}
    kept &= ~small[pairs.category] if len(pairs.category) else kept
    before = int(kept.sum())
    if options.max_per_class is not None and before:
        capped = np.zeros(len(kept), dtype=bool)
        where = np.flatnonzero(kept)
        capped[where] = _cap(pairs.cluster[where], pairs.category[where], pairs.keep[where], options.max_per_class)
        kept = capped
    counts["capped"] = before - int(kept.sum())
    return kept, counts


def _wnids(workspace: Workspace, category_ids: Iterable, check: bool = True) -> dict[int, str]:
    """{category id: wnid}; with `check`, ExportFailed for a wnid that is not a WordNet id (it names
    folders and files: `../x` would write outside OUT)."""
    ids = [int(c) for c in category_ids]
    found: dict[int, str] = {}
    with workspace.session() as session:
        for chunk in batched(ids, 2000):
            found.update(dict(session.execute(select(Category.id, Category.wnid).where(Category.id.in_(chunk))).all()))
    for category_id, wnid in sorted(found.items()):
        if check and not WNID.fullmatch(wnid or ""):
            raise ExportFailed(f"category {category_id} has the wnid {wnid!r}, which is not a WordNet id "
                               "(n and 8 digits); nothing was exported")
    return found


def _nothing(pairs: _Pairs, counts: dict, options: ExportOptions) -> str:
    """Why an export would hold no image, and what to do about it."""
    if not counts["accepted"]:
        return ("nothing to export: no image has an accepted label yet; label them first (imgnet label submit, "
                "then imgnet label collect; imgnet label status shows where they are)")
    if counts["simulated"] == counts["accepted"]:
        return (f"nothing to export: all {counts['accepted']} accepted labels come from the simulated crowd; "
                "add --include-simulated to export them (the dataset card says so)")
    if options.licenses and not counts["filtered"]:
        present = sorted(set(pairs.codes))
        return (f"nothing to export: --license {','.join(options.licenses)} keeps none of the "
                f"{counts['accepted'] - counts['simulated']} accepted images (their licences: {', '.join(present)})")
    return (f"nothing to export: every class has fewer than --min-per-class {options.min_per_class} images "
            f"({len(counts['left_out_ids'])} classes; a class needs one image in train and one in val)")


def _check_both_splits(category_number: np.ndarray, in_val: np.ndarray, wnids: list[str],
                       classes: list[ClassInfo]) -> None:
    """Every class has images in train and in val, or the export is refused naming the classes that cannot."""
    val = np.bincount(category_number, weights=in_val, minlength=len(wnids))
    total = np.bincount(category_number, minlength=len(wnids))
    missing = [(wnids[n], int(total[n]), int(val[n])) for n in np.flatnonzero((val == 0) | (val == total))]
    if missing:
        names = {info.wnid: info.name for info in classes}
        listed = ", ".join(f"{wnid} ({names[wnid]}: {n} images, {'none' if v == 0 else 'all'} in val)"
                           for wnid, n, v in missing[:10])
        more = f" and {len(missing) - 10} more" if len(missing) > 10 else ""
        raise BadInput(f"cannot place {len(missing)} classes in both train and val: {listed}{more}; a class needs "
                       "two duplicate clusters not shared with other classes' val images: leave them out with "
                       "--min-per-class, or label more images")


def _classes(workspace: Workspace, wnids: list[str]) -> list[ClassInfo]:
    rows = {}
    with workspace.session() as session:
        for chunk in batched(wnids, 2000):
            rows.update({row.wnid: row for row in session.execute(select(Category.wnid, Category.name, Category.lemmas)
                                                                  .where(Category.wnid.in_(chunk)))})
    return [ClassInfo(wnid, rows[wnid].name, tuple(lemma.replace("_", " ") for lemma in rows[wnid].lemmas or ()), index)
            for index, wnid in enumerate(wnids)]


def _items(workspace: Workspace, candidates: np.ndarray, splits: np.ndarray, wnids: dict[int, str]) -> Iterator[Item]:
    """The items to write, in order, read from the database EXPORT_CHUNK at a time."""
    query = (select(Candidate.id, Candidate.category_id, Candidate.url, Candidate.license, Candidate.attribution,
                    Image.sha256, Image.width, Image.height, Image.format, Image.blob_key, Cluster.key,
                    Label.confidence, Label.yes_votes, Label.no_votes, Label.method, Label.simulated)
             .join(Image, Image.sha256 == Candidate.image_sha256)
             .join(Cluster, Cluster.id == Image.cluster_id)
             .join(Label, and_(Label.cluster_id == Image.cluster_id, Label.category_id == Candidate.category_id)))
    for start in range(0, len(candidates), EXPORT_CHUNK):
        chunk = [int(c) for c in candidates[start:start + EXPORT_CHUNK]]
        with workspace.session() as session:
            rows = {row.id: row for row in session.execute(query.where(Candidate.id.in_(chunk),
                                                                       Label.status == "accepted"))}
        for candidate_id, split in zip(chunk, splits[start:start + EXPORT_CHUNK], strict=True):
            row = rows.get(candidate_id)
            if row is None:
                raise ExportFailed("the workspace changed while it was exported (a label or an image went away); "
                                   "nothing was exported: run the export again")
            if not SHA256.fullmatch(row.sha256):
                raise ExportFailed(f"image {row.sha256!r} has no valid sha256 name; nothing was exported")
            yield Item(sha256=row.sha256, cluster=row.key, split=str(split), wnid=wnids[row.category_id],
                       blob_key=row.blob_key, format=row.format, width=row.width, height=row.height,
                       source_url=row.url, license=row.license, attribution=row.attribution, method=row.method,
                       confidence=row.confidence, yes_votes=row.yes_votes, no_votes=row.no_votes,
                       simulated=row.simulated)


def _write_items(written: Iterator[tuple[Item, str]], classes: list[ClassInfo], partial: Path,
                 writer: FileWriter) -> tuple[Tally, str]:
    """Drain the layout's writer into manifest.jsonl and the tally; returns them with the manifest's sha256."""
    tally, digest = Tally(), hashlib.sha256()
    try:
        with open(writer.path("manifest.jsonl"), "wb") as manifest:
            for item, file in written:
                line = (json.dumps(manifest_row(item, file), sort_keys=True, ensure_ascii=False) + "\n").encode()
                manifest.write(line)
                digest.update(line)
                tally.add(item)
    except OSError as exc:
        raise writer.failed("manifest.jsonl", exc) from exc
    return tally, digest.hexdigest()


def _moves(workspace: Workspace, cluster_ids: np.ndarray, val: np.ndarray) -> tuple[list[dict], int, dict[str, np.ndarray]]:
    """What moved since the last export (the first MOVED_LISTED by key, and the count), and the Cluster.split
    updates to record: {"train": ids, "val": ids}. `cluster_ids` (sorted) are the exported live clusters,
    `val` their split."""
    with workspace.session() as session:
        ids, before, merged_into = array("q"), array("b"), array("q")
        for row in session.execute(select(Cluster.id, Cluster.split, Cluster.merged_into)
                                   .where(Cluster.split.is_not(None) | Cluster.merged_into.is_not(None))
                                   .order_by(Cluster.id)).yield_per(20000):
            ids.append(row.id)
            before.append({None: -1, "train": 0, "val": 1}[row.split])
            merged_into.append(row.merged_into if row.merged_into is not None else -1)
    known, was, target = _numbers(ids), np.frombuffer(before, dtype=np.int8) if before else np.zeros(0, np.int8), \
        _numbers(merged_into)
    final = np.where(target >= 0, target, known)
    for _ in range(64):  # merges can chain: follow them to the live cluster
        at, step = find_sorted(known, final)
        nxt = np.where(step, target[at], -1)
        if not (nxt >= 0).any():
            break
        final = np.where(nxt >= 0, nxt, final)
    at, exported = find_sorted(cluster_ids, final)
    now = np.where(exported, val[at].astype(np.int8), -1)
    moved = (was >= 0) & (now >= 0) & (now != was)
    changes = {"val": np.union1d(known[(now == 1) & (was != 1)], np.setdiff1d(cluster_ids[val], known)),
               "train": np.union1d(known[(now == 0) & (was != 0)], np.setdiff1d(cluster_ids[~val], known))}
    listed = _listed_moves(workspace, known[moved], was[moved], now[moved], np.where(final != known, final, -1)[moved])
    return listed, int(moved.sum()), changes


def _listed_moves(workspace: Workspace, ids: np.ndarray, was: np.ndarray, now: np.ndarray, survivor: np.ndarray) -> list[dict]:
    """The first MOVED_LISTED moves by cluster key, with the key of the cluster each was merged into."""
    names = ("train", "val")
    smallest: list[tuple[_Reverse, int]] = []
    with workspace.session() as session:
        for chunk in batched(range(len(ids)), 2000):
            keys = dict(session.execute(select(Cluster.id, Cluster.key)
                                        .where(Cluster.id.in_([int(ids[n]) for n in chunk]))).all())
            for n in chunk:
                entry = (keys[int(ids[n])], n)
                if len(smallest) < MOVED_LISTED:
                    heapq.heappush(smallest, (_Reverse(entry[0]), n))
                elif entry[0] < smallest[0][0].key:
                    heapq.heapreplace(smallest, (_Reverse(entry[0]), n))
        chosen = sorted((reverse.key, n) for reverse, n in smallest)
        survivors = [int(survivor[n]) for _, n in chosen if survivor[n] >= 0]
        survivor_keys = dict(session.execute(select(Cluster.id, Cluster.key).where(Cluster.id.in_(survivors))).all()) \
            if survivors else {}
    return [{"cluster": key, "from": names[was[n]], "to": names[now[n]],
             "merged_into": survivor_keys.get(int(survivor[n])) if survivor[n] >= 0 else None} for key, n in chosen]


@dataclasses.dataclass(frozen=True)
class _Reverse:
    """A key ordered backwards, so heapq (a min-heap) keeps the smallest keys."""

    key: str

    def __lt__(self, other: _Reverse) -> bool:
        return self.key > other.key


def verify_export(folder: str | os.PathLike) -> None:
    """Check a written export: no image or cluster in both splits, every file there, every class in both
    splits (unless val is empty), counts and class index as declared. Reads the manifest line by line,
    keeping 16 bytes per image."""
    import tarfile

    folder = Path(folder)
    prefixes = {(field, split): array("Q") for field in ("sha256", "cluster") for split in ("train", "val")}
    shard_names: tuple[str, set[str]] = ("", set())
    rows = 0
    with open(folder / "manifest.jsonl", encoding="utf-8") as manifest:
        for line in manifest:
            row = json.loads(line)
            rows += 1
            for field in ("sha256", "cluster"):
                prefixes[field, row["split"]].append(int(row[field][:16], 16))
            shard, _, key = row["file"].partition("#")
            if key:
                if shard != shard_names[0]:
                    with tarfile.open(folder / shard) as tar:
                        shard_names = (shard, {name.split(".", 1)[0] for name in tar.getnames()})
                present = key in shard_names[1]
            else:
                present = os.path.isfile(folder / shard)
            if not present:
                raise ExportFailed(f"{row['file']} is in the manifest but was not written; nothing was exported")
    for field in ("sha256", "cluster"):
        both = np.intersect1d(_numbers(prefixes[field, "train"], np.uint64), _numbers(prefixes[field, "val"], np.uint64))
        leaked = _leaked(folder, field, set(int(value) for value in both)) if len(both) else []
        if leaked:
            raise ExportFailed(f"{len(leaked)} {'images' if field == 'sha256' else 'clusters'} are in both train and val "
                               f"(first: {leaked[0]}); nothing was exported")
    document = json.loads((folder / "dataset.json").read_text())
    if document["counts"]["images"] != rows:
        raise ExportFailed(f"dataset.json counts {document['counts']['images']} images, the manifest {rows}; "
                           "nothing was exported")
    if document["counts"]["splits"]["val"]:
        lacking = [c["wnid"] for c in document["classes"] if not c["train"] or not c["val"]]
        if lacking:
            raise ExportFailed(f"{len(lacking)} classes are missing from train or val (first: {lacking[0]}); "
                               "nothing was exported")
    classes_file = folder / "classes.txt"
    if classes_file.exists() and classes_file.read_text().split() != [c["wnid"] for c in
                                                                     sorted(document["classes"], key=lambda c: c["index"])]:
        raise ExportFailed("classes.txt and dataset.json disagree on the class index; nothing was exported")


def _leaked(folder: Path, field: str, prefixes: set[int]) -> list[str]:
    """The values of `field` whose 64-bit prefix is on both sides, checked in full (a rare second read)."""
    sides: dict[str, set[str]] = {}
    with open(folder / "manifest.jsonl", encoding="utf-8") as manifest:
        for line in manifest:
            row = json.loads(line)
            if int(row[field][:16], 16) in prefixes:
                sides.setdefault(row[field], set()).add(row["split"])
    return sorted(value for value, where in sides.items() if len(where) > 1)


def _remove_leftovers(out: Path) -> tuple[list[str], list[str]]:
    """Remove the hidden folders that killed exports to `out` left beside it, when their process is gone;
    returns (removed, kept because their process still runs)."""
    removed, kept = [], []
    pattern = re.compile(rf"\.{re.escape(out.name)}\.(?:partial|old)-(?:(\d+)-)?[^/]*")
    for entry in sorted(os.scandir(out.parent), key=lambda entry: entry.name):
        match = pattern.fullmatch(entry.name)
        if not match or not entry.is_dir(follow_symlinks=False):
            continue
        if match[1] and _running(int(match[1])):
            kept.append(entry.name)
            continue
        shutil.rmtree(entry.path, ignore_errors=True)
        removed.append(entry.name)
    return removed, kept


def _running(pid: int) -> bool:
    if pid == os.getpid():
        return False  # this process: an export of it that failed earlier left it (or its pid was reused)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _record_and_put_in_place(workspace: Workspace, partial: Path, out: Path, options: ExportOptions,
                             changes: dict[str, np.ndarray], document: dict) -> None:
    """Record each cluster's split and the export, and rename `partial` to `out`, as one step: the rows are
    written (taking the database's write lock) before the rename, committed after it, and a failure of
    either puts everything back as it was."""
    swapped: Path | bool | None = False
    try:
        with workspace.session() as session:
            for split, ids in changes.items():
                for chunk in batched((int(cluster_id) for cluster_id in ids), 2000):
                    session.execute(update(Cluster).where(Cluster.id.in_(chunk)).values(split=split))
            session.add(Export(path=str(out.resolve()), format=options.format, parameters=options.parameters(),
                               manifest={"manifest_sha256": document["manifest_sha256"],
                                         "splits": document["counts"]["splits"],
                                         "classes": document["counts"]["classes"]}))
            session.flush()
            swapped = _swap_in(partial, out)
    except DatabaseUnavailable as exc:
        if swapped is not False:
            _swap_back(partial, out, cast(Path | None, swapped))
        raise ExportFailed(f"the export could not be recorded ({exc}); nothing was exported and {out} is as it "
                           "was: run it again") from exc
    except BaseException:
        if swapped is not False:
            _swap_back(partial, out, cast(Path | None, swapped))
        raise
    if isinstance(swapped, Path):
        shutil.rmtree(swapped) if swapped.is_dir() and not swapped.is_symlink() else swapped.unlink()


def _swap_in(partial: Path, out: Path) -> Path | None:
    """Rename `partial` to `out`; returns where the previous OUT went (to delete, or to restore), or None."""
    if out.is_dir() and not out.is_symlink() and not any(out.iterdir()):
        out.rmdir()
    if out.exists() or out.is_symlink():
        old = partial.with_name(partial.name.replace(".partial-", ".old-"))
        os.replace(out, old)
        try:
            os.replace(partial, out)
        except BaseException:
            os.replace(old, out)
            raise
        return old
    os.replace(partial, out)
    return None


def _swap_back(partial: Path, out: Path, old: Path | None) -> None:
    """Undo `_swap_in`: the new export goes back to its hidden name, the previous OUT (if any) returns."""
    os.replace(out, partial)
    if old is not None:
        os.replace(old, out)
