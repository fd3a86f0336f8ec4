"""Exact and near duplicates: hashes, clusters, one representative per cluster.

    report = dedup.run(workspace)            # or: imgnet dedup [--threshold 10]
    print(report.summary())
    groups = dedup.cluster_of(session)       # {sha256: representative sha256}

What it does, in order:

1. Hashes every image once (rows with `phash IS NULL`, a partial index; `batch_size` at a
   time in sha256 order): a 64-bit pHash and a 64-bit dHash (imagehash), stored as signed
   int64, and the image's `detail` (grey-level spread of the 32x32 thumbnail). JPEGs are
   decoded with Pillow's `draft()` DCT scaling at 1/2..1/8 of their size, luminance only,
   since the hash needs 32x32 pixels. Hashing is 2.6x faster than imagehash on a fully
   decoded 1-2 megapixel JPEG on one thread (entropy decoding remains), 4.9x with the two
   threads `run` uses on a 2-core machine; the pHash differs from the full-decode one by 0
   bits (about half the images) or 2 bits (the rest) (benchmarks/bench_dedup.py). Hashes
   are committed every `batch_size` images, so a killed run loses at most one batch.
2. Reads only what changed since the last run: each image records the threshold of the run
   that grouped it (`dedup_threshold`, indexed). With no new image at the same threshold a
   rerun does no search and loads no row; the counts come from SQL aggregates. Otherwise
   the new images are searched against the old ones with multi-index hashing
   (`imgnet_build.hamming`, no all-pairs loop), once per run: the old and the new distinct
   pHashes are loaded (8 bytes each, `_Near`), and for each chunk of new images only the old
   images whose pHash is near one of them are read back. A run at another threshold groups
   every image again.
3. Exact duplicates: two candidates that fetched the same bytes already share one image
   row (the SHA-256 is its key). Identical pixels under other bytes (metadata changed,
   PNG copy of a JPEG) are found by `pixel_sha256` (SHA-256 of the size and the decoded
   RGB pixels), computed only for images with a neighbour of the same width and height
   within 4 bits of pHash (identical pixels differ by at most 2 bits, from the draft decode).
4. Groups do not chain. New images are taken best first (largest resolution, then best
   source rank, then smallest sha256); each joins the cluster of an image with the same
   pixels, else of the nearest *representative* it is the same picture as
   (`same_picture`), else founds a cluster of its own. Same picture: pHash within the
   threshold and, past ALONE_RADIUS (4) bits, dHash within SECOND_RADIUS (16) bits too (a
   second, independent hash agrees). A near-constant image (detail under LOW_DETAIL) is a
   duplicate only of the same pixels: flat pictures of any colour share one pHash. So a
   member is never joined through another member, and uniformly spread chance pairs
   (n^2/2 * 1e-8 at 10 bits: about a million among 14M images) no longer merge into giant
   clusters (benchmarks/bench_dedup.py --simulate). A new image better than an old
   cluster's representative replaces it when it is the same picture as every member.
   Old clusters never merge or split on a rerun at the same threshold; nothing is deleted.
   Every image belongs to a `store.Cluster` row whose identity outlives a change of
   representative (labels and the split follow it; `assign_clusters`): the cluster is the
   only grouping, every reader asks it. The clusters and the marks of the new images are
   written in one transaction per chunk:
   a run killed before its commit leaves the previous clusters and marks.
5. A cluster whose candidates come from more than one category is a *conflict*: it is
   flagged, and every (representative, category) pair stays a labeling candidate
   (`candidacy`); the export must keep a whole cluster in one split (`cluster_of`).
   `duplicate_counts` is the one definition of the counts dedup, status and the report print.

The default threshold, 10 bits of 64 (imagededup's default too), is the smallest at which
every edit below was caught in benchmarks/bench_dedup.py (60 generated photos x 12 edits,
precision 1.0 at 6 to 12 bits): re-encodes down to JPEG quality 30 (0-2 bits), resizes to
a quarter (0-2), brightness +-20% (0-4), a text watermark (0-4), PNG copies (0-2) and 5%
crops (2.5% a side; typically 6 bits, up to 12: 98% of them directly, the rest through
another copy in the same cluster). At 8 bits 5% crops fall to 87-93%. It misses crops of
10% (about half are caught) and 20% (almost none), mirror images and rotations (about 32
bits apart, like unrelated photos) and heavy edits (collages, large overlays, strong colour
grading). Different photos with the same colour layout stayed at least 16 bits apart; real
photos with plain backgrounds can come closer, so review the clusters file (--clusters).
dHash as a second opinion: on those edits, true pairs 5-10 pHash bits apart were at most 9
dHash bits apart, while different photos of one colour layout were 20 or more apart
(SECOND_RADIUS = 16).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import io
import json
import os
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from sqlalchemy import Select, bindparam, delete, func, insert, or_, select, update
from sqlalchemy.orm import Session, aliased

from imgnet_build.dbutil import batched
from imgnet_build.errors import BadInput
from imgnet_build.stage import Progress
from imgnet_build.store import (
    Candidate,
    CandidateStatus,
    Category,
    DedupSummary,
    Image,
    Label,
    analyze,
    analyze_if_grown,
)
from imgnet_build.store import Cluster as StoredCluster
from imgnet_build.workspace import Workspace

if TYPE_CHECKING:
    import numpy as np
    from sqlalchemy import Table

    from imgnet_build.executor import Executor

# numpy, Pillow, imagehash and the Hamming index are imported in the functions that hash and group:
# a rerun with nothing new, and `imgnet status` (duplicate_counts), load none of them.

__all__ = ["DEFAULT_THRESHOLD", "PIXEL_RADIUS", "ALONE_RADIUS", "SECOND_RADIUS", "LOW_DETAIL", "DedupReport",
           "DuplicateCounts", "Hashes", "Member", "Cluster", "hash_image", "pixel_digest", "run", "same_picture",
           "duplicate_counts", "assign_clusters", "group_hashes", "clusters", "cluster_of", "candidacy", "write_clusters", "check_writable"]

DEFAULT_THRESHOLD = 10
MAX_THRESHOLD = 20
PIXEL_RADIUS = 4  # identical pixels: pHash within this many bits (draft decode differs by <= 2)
ALONE_RADIUS = 4  # pHash alone decides up to here (chance pairs: 4e-14 per pair, ~4 among 14M images)
SECOND_RADIUS = 16  # past ALONE_RADIUS, dHash must agree within this too (edits measured: <= 9)
LOW_DETAIL = 4.0  # grey-level standard deviation under which a picture is near-constant
GROUP_CHUNK = 50_000  # new images grouped and committed at a time (memory: about 1 KB per image of one chunk)
_UINT64 = 2**64 - 1
_NO_RANK = 2**62  # sorts after every rank, as an image without a ranked candidate does
ANALYZE_AFTER = 10_000  # images grouped in a run after which the planner's statistics are refreshed
_DRAFT_SIZE = (64, 64)
_UNREADABLE = (OSError, ValueError, SyntaxError)  # and Pillow's DecompressionBombError (_unreadable)

class Hashes(tuple):
    """(pHash, dHash) as unsigned 64-bit integers, and `detail`: the standard deviation of
    the grey levels of the 32x32 thumbnail pHash sees (under LOW_DETAIL: near-constant)."""

    detail: float | None

    def __new__(cls, phash: int, dhash: int, detail: float | None = None) -> Hashes:
        hashes = super().__new__(cls, (phash, dhash))
        hashes.detail = detail
        return hashes

    def __getnewargs__(self) -> tuple[int, int, float | None]:  # pickled to and from Dask workers
        return self[0], self[1], self.detail


def hash_image(source: bytes | Path) -> Hashes:
    """(pHash, dHash) of an image file or its bytes, with its `detail`."""
    import imagehash
    import numpy as np
    from PIL import Image as PILImage
    from PIL import ImageOps

    with PILImage.open(io.BytesIO(source) if isinstance(source, bytes) else source) as image:
        image.draft("L", _DRAFT_SIZE)  # JPEG: DCT-domain downscale; other formats: no-op
        gray = ImageOps.exif_transpose(image).convert("L")  # hash the picture as it is shown
    detail = float(np.asarray(gray.resize((32, 32), PILImage.Resampling.LANCZOS), dtype=np.float32).std())
    return Hashes(int(str(imagehash.phash(gray)), 16), int(str(imagehash.dhash(gray)), 16), detail)


def pixel_digest(source: bytes | Path) -> str:
    """SHA-256 of the size and the fully decoded RGB pixels: equal for the same picture
    saved with other metadata or in a lossless format."""
    from PIL import Image as PILImage
    from PIL import ImageOps

    with PILImage.open(io.BytesIO(source) if isinstance(source, bytes) else source) as image:
        rgb = ImageOps.exif_transpose(image).convert("RGB")
    return hashlib.sha256(f"{rgb.width}x{rgb.height}:".encode() + rgb.tobytes()).hexdigest()


@dataclasses.dataclass(frozen=True)
class Member:
    """One image of a cluster; `relation` is representative, pixels (identical pixels to
    another member) or near; `distance` is its pHash distance to the representative."""

    sha256: str
    width: int
    height: int
    relation: str
    distance: int | None
    candidates: list[dict]  # {"url", "wnid", "source", "rank"}


@dataclasses.dataclass(frozen=True)
class Cluster:
    """Images that show the same picture (or one image fetched by several candidates)."""

    representative: str
    members: list[Member]
    categories: list[str]  # wnids of all members' candidates
    conflict: bool  # gathered for more than one category


@dataclasses.dataclass
class DedupReport:
    """The counts of one `run`; `summary()` is the line `imgnet dedup` prints."""

    threshold: int
    images: int = 0
    hashed: int = 0  # hashed in this run
    unreadable: int = 0  # could not be decoded; stay unhashed, retried next run
    exact_files: int = 0  # extra candidates that fetched bytes already seen
    exact_pixels: int = 0  # images with the same pixels as another
    near: int = 0  # other duplicate images
    clusters: int = 0
    conflicts: int = 0

    def summary(self) -> str:
        text = (f"dedup: {self.images} images, {self.exact_files + self.exact_pixels} exact, {self.near} near "
                f"duplicates in {self.clusters} clusters ({self.conflicts} cross-category conflicts)")
        return text + (f"; {self.unreadable} unreadable" if self.unreadable else "")

    def as_dict(self) -> dict[str, int]:
        return dataclasses.asdict(self)


def run(workspace: Workspace, threshold: int = DEFAULT_THRESHOLD, *, batch_size: int = 200,
        workers: int | None = None, clusters_path: str | os.PathLike | None = None,
        progress: Progress | None = None) -> DedupReport:
    """Hash new images, find duplicates, store clusters; returns the counts. `clusters_path`: also
    write every cluster there (`write_clusters`), checked writable before anything is committed."""
    if clusters_path is not None:
        check_writable(clusters_path)
    if not 0 <= threshold <= MAX_THRESHOLD:
        raise BadInput(f"--threshold must be between 0 and {MAX_THRESHOLD} bits, not {threshold}; "
                       f"the default is {DEFAULT_THRESHOLD}")
    report = DedupReport(threshold)
    workers = workers or os.cpu_count() or 1
    report.hashed, report.unreadable = _hash_new(workspace, batch_size, workers, progress)
    with workspace.session() as session:  # two index lookups: what changed since the last run
        other = or_(Image.dedup_threshold < threshold, Image.dedup_threshold > threshold)  # two ranges; != walks all
        full = session.scalar(select(Image.sha256).where(other).limit(1)) is not None
        new = session.scalar(select(Image.sha256).where(Image.dedup_threshold.is_(None),
                                                        Image.phash.is_not(None)).limit(1)) is not None
    if full or new:
        written = _group_new(workspace, threshold, full, batch_size, workers)
        if written >= ANALYZE_AFTER:
            analyze(workspace.engine)
    with workspace.session() as session:
        counts = duplicate_counts(session, remember=True)
    for field in dataclasses.fields(counts):
        setattr(report, field.name, getattr(counts, field.name))
    if clusters_path is not None:
        write_clusters(workspace, clusters_path, report)
    return report


_COLUMNS = (Image.sha256, Image.phash, Image.dhash, Image.width, Image.height, Image.pixel_sha256, Image.detail,
            Image.cluster_id)


class _Rows:
    """Images as columns: the new images of a run first, then the old ones near them."""

    def __init__(self) -> None:
        import numpy as np

        self.sha: list[str] = []
        self.phash = np.empty(0, dtype=np.uint64)
        self.dhash = np.empty(0, dtype=np.uint64)
        self.area: list[int] = []
        self.size: list[tuple[int, int]] = []
        self.pixel: list[str | None] = []
        self.flat: list[bool] = []
        self.cluster: list[int | None] = []
        self.heads: list[bool] = []  # represents its (old) cluster

    def extend(self, rows) -> None:
        import numpy as np

        from imgnet_build.hamming import to_unsigned

        rows = list(rows)
        self.sha += [row.sha256 for row in rows]
        self.phash = np.concatenate([self.phash, to_unsigned([row.phash for row in rows])])
        self.dhash = np.concatenate([self.dhash, to_unsigned([row.dhash or 0 for row in rows])])
        self.area += [row.width * row.height for row in rows]
        self.size += [(row.width, row.height) for row in rows]
        self.pixel += [row.pixel_sha256 for row in rows]
        self.flat += [row.detail is not None and row.detail < LOW_DETAIL for row in rows]
        self.cluster += [row.cluster_id for row in rows]
        self.heads += [bool(getattr(row, "head", False)) for row in rows]

    def __len__(self) -> int:
        return len(self.sha)


def _group_new(workspace: Workspace, threshold: int, full: bool, batch_size: int, workers: int) -> int:
    """Group the new images (every image when `full`) and store the groups; returns how many
    images were grouped.

    The near pairs are searched once per run (`_Near`): the distinct pHashes of the images
    grouped before (8 bytes each) and of the new ones (8 bytes each), the pairs that involve
    a new one. A run that is not `full` then reads the new images best first (largest, best
    rank, smallest sha256) in one streamed query and groups and commits them GROUP_CHUNK at a
    time, each chunk against every image grouped before it: it holds one chunk, the hashes,
    the pairs (24 bytes each), and the old images whose pHash is near a new one. Taken in that
    order, the chunks give the groups one pass over all of them would give (a later image is
    never better than an earlier one), and a killed run keeps the chunks it committed."""
    import numpy as np

    from imgnet_build.hamming import to_unsigned

    if full:
        with workspace.session() as session:
            rows = session.execute(select(*_COLUMNS).where(Image.phash.is_not(None)).order_by(Image.sha256)).all()
        near = _Near.search(np.empty(0, dtype=np.uint64), to_unsigned([row.phash for row in rows]), threshold)
        return _group(workspace, threshold, rows, None, True, batch_size, workers, set(), near)
    with workspace.session() as session:
        old = session.execute(select(Image.phash).where(Image.dedup_threshold == threshold),
                              execution_options={"yield_per": 100_000}).scalars()
        old_values = np.fromiter(old, dtype=np.int64).view(np.uint64)
        new = session.execute(select(Image.phash).where(Image.dedup_threshold.is_(None), Image.phash.is_not(None)),
                              execution_options={"yield_per": 100_000}).scalars()
        new_values = np.fromiter(new, dtype=np.int64).view(np.uint64)
        before = session.scalar(select(func.max(StoredCluster.id))) or 0
    near = _Near.search(old_values, new_values, threshold)
    del old_values, new_values
    rank = (select(func.min(Candidate.rank)).where(Candidate.image_sha256 == Image.sha256,
                                                   Candidate.status == CandidateStatus.OK).scalar_subquery())
    query = (select(*_COLUMNS, rank.label("rank")).where(Image.dedup_threshold.is_(None), Image.phash.is_not(None))
             .order_by((Image.width * Image.height).desc(), func.coalesce(rank, _NO_RANK), Image.sha256))
    settled: set[int] = set()  # old clusters a chunk of this run joined: a later chunk cannot beat their representative
    grouped = unanalyzed = 0
    with workspace.engine.connect() as reader:
        result = reader.execution_options(stream_results=True, yield_per=GROUP_CHUNK).execute(query)
        for chunk in result.partitions():
            ranks = {row.sha256: row.rank for row in chunk}
            done = _group(workspace, threshold, chunk, ranks, False, batch_size, workers, settled, near, before)
            grouped += done
            unanalyzed += done
            # The next chunks look up the images grouped so far (`dedup_threshold = threshold AND phash IN`):
            # statistics taken before this run count none, and PostgreSQL then walks every grouped
            # image per lookup (1M images: 4 s a lookup instead of 33 ms; test_dedup).
            if analyze_if_grown(workspace.engine, "image", unanalyzed):
                unanalyzed = 0
    return grouped


class _Near:
    """The near pHash pairs of one run: `values` holds the distinct pHashes grouped before the
    run (sorted), then the distinct new ones (sorted); `pairs` the (position, position, bits)
    rows within max(threshold, PIXEL_RADIUS) bits that involve a new value, each found once by
    `HammingIndex`; `grouped[position]` whether images with that value were grouped before the
    chunk at hand (old ones, and a chunk's once it is stored). Memory: 8 + 1 bytes per distinct
    pHash and 24 bytes per pair, besides the search's own (`imgnet_build.hamming`)."""

    def __init__(self, old: np.ndarray, new: np.ndarray, pairs: np.ndarray) -> None:
        import numpy as np

        self.old_count = len(old)
        self.values = np.concatenate([old, new])
        self.pairs = pairs
        self.grouped = np.zeros(len(self.values), dtype=bool)
        self.grouped[:len(old)] = True

    @classmethod
    def search(cls, old_values: np.ndarray, new_values: np.ndarray, threshold: int) -> _Near:
        import numpy as np

        from imgnet_build.hamming import HammingIndex

        old, new = np.unique(old_values), np.unique(new_values)
        index = HammingIndex(max(threshold, PIXEL_RADIUS))
        index.load(old)
        return cls(old, new, index.add(new))

    def around(self, phash: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """For a chunk's pHashes: (the values near them or equal to them that images grouped
        before have, the pairs that involve the chunk's values, as (value, value, bits))."""
        import numpy as np

        from imgnet_build.arrays import find_sorted

        new = self.values[self.old_count:]
        mine = np.unique(phash)
        at = np.searchsorted(new, mine) + self.old_count  # every chunk value is a new value
        here = np.zeros(len(self.values), dtype=bool)
        here[at] = True
        p, q, bits = self.pairs[:, 0], self.pairs[:, 1], self.pairs[:, 2]
        touching = here[p] | here[q]
        p, q, bits = p[touching], q[touching], bits[touching]
        live = (here[p] | self.grouped[p]) & (here[q] | self.grouped[q])  # not an image of a later chunk
        p, q, bits = p[live], q[live], bits[live]
        old_values = self.values[:self.old_count]
        same, hit = find_sorted(old_values, mine)  # old images with a chunk's value
        ends = np.concatenate([p, q, at, same[hit]])
        wanted = np.unique(self.values[ends[self.grouped[ends]]])
        return wanted, np.stack([self.values[p], self.values[q], bits.astype(np.uint64)], axis=1)

    def done(self, phash: np.ndarray) -> None:
        """The chunk with these pHashes is stored: later chunks read its images back."""
        import numpy as np

        self.grouped[np.searchsorted(self.values[self.old_count:], np.unique(phash)) + self.old_count] = True


def _group(workspace: Workspace, threshold: int, new_rows, ranks: dict[str, int | None] | None, full: bool,
           batch_size: int, workers: int, settled: set[int], found: _Near, before: int = 0) -> int:
    """Group `new_rows` against the images grouped at `threshold` before them (none when
    `full`) and store the groups in one transaction; returns len(new_rows)."""
    import numpy as np

    from imgnet_build.arrays import find_sorted

    rows = _Rows()
    rows.extend(new_rows)
    new_count = len(rows)
    wanted, pairs = found.around(rows.phash)
    if not full:
        with workspace.session() as session:
            head = (StoredCluster.representative == Image.sha256).label("head")
            for chunk in batched(wanted.view(np.int64).tolist(), 500):
                rows.extend(session.execute(select(*_COLUMNS, head).outerjoin(StoredCluster, StoredCluster.id == Image.cluster_id)
                                            .where(Image.phash.in_(chunk), Image.dedup_threshold == threshold)
                                            .order_by(Image.sha256)))
    values = np.unique(rows.phash)
    value_of = np.searchsorted(values, rows.phash).tolist()
    near: dict[int, list[tuple[int, int]]] = defaultdict(list)  # value -> [(value, bits)], itself excluded
    if len(pairs):
        (a, found_a), (b, found_b) = find_sorted(values, pairs[:, 0]), find_sorted(values, pairs[:, 1])
        known = found_a & found_b & (a != b)
        local = np.unique(np.stack([np.minimum(a, b), np.maximum(a, b), pairs[:, 2].astype(np.int64)], axis=1)[known],
                          axis=0)
        for p, q, bits in local.tolist():
            near[p].append((q, bits))
            near[q].append((p, bits))
    _pixel_digests(workspace, rows, value_of, near, new_count, batch_size, workers)
    with workspace.session() as session:
        ranks = _ranks(session, None) if ranks is None else ranks
        groups = _groups(rows, new_count, value_of, near, threshold, ranks)
        _store(session, rows, new_count, groups, full, threshold, batch_size * 10, ranks, settled, before)
    found.done(rows.phash[:new_count])
    return new_count


def group_hashes(phash: np.ndarray, dhash: np.ndarray, area: np.ndarray, flat: np.ndarray,
                 threshold: int = DEFAULT_THRESHOLD, near: _Near | None = None) -> np.ndarray:
    """The group of each image given as arrays (uint64 pHash and dHash, width x height, near-constant),
    as the row number of its representative: what a first `run` over them groups, with the same search
    (`_Near`) and the same rule (`_groups`), without a database or files. Every image is taken to have
    pixels of its own and no rank; ties go to the lower row. For benchmarks/bench_dedup.py --simulate;
    `near` is that search when the caller timed it apart."""
    import numpy as np

    near = near or _Near.search(np.empty(0, dtype=np.uint64), phash, threshold)
    label = np.arange(len(phash))
    inverse = np.searchsorted(near.values, phash)
    involved = np.bincount(inverse, minlength=len(near.values)) > 1  # only these can join or be joined
    involved[near.pairs[:, :2].ravel()] = True
    members = np.flatnonzero(involved[inverse])
    rows = _Rows()
    width = len(str(len(phash)))
    rows.sha = [f"{row:0{width}d}" for row in members.tolist()]  # sorts as the rows do
    rows.phash, rows.dhash = phash[members], dhash[members]
    rows.area = area[members].tolist()
    rows.size = [(0, 0)] * len(members)
    rows.pixel = [None] * len(members)
    rows.flat = flat[members].tolist()
    rows.cluster = [None] * len(members)
    rows.heads = [False] * len(members)
    near_of: dict[int, list[tuple[int, int]]] = defaultdict(list)
    for p, q, bits in near.pairs.tolist():
        near_of[p].append((q, bits))
        near_of[q].append((p, bits))
    groups = _groups(rows, len(members), inverse[members].tolist(), near_of, threshold, {})
    for group, grouped in groups.items():
        label[members[grouped]] = members[-1 - group]
    return label


def same_picture(rows: _Rows, a: int, b: int, bits: int, threshold: int) -> bool:
    """Whether two images show one picture: the same pixels; or, both with detail (not
    near-constant), pHash within `threshold` bits and, past ALONE_RADIUS bits, dHash
    within SECOND_RADIUS bits too (a second, independent hash agrees)."""
    if rows.pixel[a] is not None and rows.pixel[a] == rows.pixel[b]:
        return True
    if rows.flat[a] or rows.flat[b] or bits > threshold:
        return False
    return bits <= ALONE_RADIUS or int(rows.dhash[a] ^ rows.dhash[b]).bit_count() <= SECOND_RADIUS


def _groups(rows: _Rows, new_count: int, value_of: list[int], near: dict[int, list[tuple[int, int]]],
            threshold: int, ranks: dict[str, int | None]) -> dict[int, list[int]]:
    """{group: its new rows}: a group is an old cluster id (> 0) or -1 - the row of the new
    image that represents a new group; the first row of a new group represents it.

    New images are taken best first (largest, best rank, smallest sha256). Each joins the
    group of an image with the same pixels, else of the nearest representative it is
    `same_picture` with (an old cluster's, or a new image taken before it), else founds a
    group of its own. So a group never grows through a chain of members: every member is
    the same picture as its representative.
    """
    key = {row: rows.cluster[row] for row in range(new_count, len(rows))}
    heads: dict[int, list[int]] = defaultdict(list)  # value -> rows that represent a group
    by_pixels: dict[str, int] = {}
    for row in range(new_count, len(rows)):
        if rows.heads[row] and not rows.flat[row]:
            heads[value_of[row]].append(row)
        pixel, cluster = rows.pixel[row], rows.cluster[row]
        if pixel is not None and cluster is not None:
            by_pixels.setdefault(pixel, cluster)
    groups: dict[int, list[int]] = defaultdict(list)
    order = sorted(range(new_count), key=lambda row: (-rows.area[row], _rank(ranks.get(rows.sha[row])), rows.sha[row]))
    for row in order:
        pixel = rows.pixel[row]
        group = by_pixels.get(pixel) if pixel is not None else None
        if group is None and not rows.flat[row]:
            value = value_of[row]
            choices = [(bits, head) for other, bits in [(value, 0), *near.get(value, ())] for head in heads.get(other, ())
                       if same_picture(rows, row, head, bits, threshold)]
            if choices:  # the nearest representative; at equal distance the smallest sha256, whatever the load order
                group = key[min(choices, key=lambda choice: (choice[0], rows.sha[choice[1]]))[1]]
        if group is None:
            group = -1 - row
            if not rows.flat[row]:
                heads[value_of[row]].append(row)
        key[row] = group
        groups[group].append(row)
        if pixel is not None:
            by_pixels.setdefault(pixel, group)
    return groups


def _ranks(session: Session, shas: list[str] | None) -> dict[str, int | None]:
    """{sha256: best (lowest) rank of its ok candidates}, for `shas` or for every image."""
    query = (select(Candidate.image_sha256, func.min(Candidate.rank)).where(Candidate.status == CandidateStatus.OK)
             .group_by(Candidate.image_sha256))
    ranks: dict[str, int | None] = {}
    for chunk in [None] if shas is None else batched(shas, 500):
        chosen = query if chunk is None else query.where(Candidate.image_sha256.in_(chunk))
        ranks.update((sha, rank) for sha, rank in session.execute(chosen) if sha is not None)
    return ranks


@dataclasses.dataclass(frozen=True)
class _Row:
    sha256: str
    cluster_id: int | None


def _store(session: Session, rows: _Rows, new_count: int, groups: dict[int, list[int]], full: bool,
           threshold: int, batch_size: int, ranks: dict[str, int | None], settled: set[int], before: int) -> None:
    """Write the groups as clusters, then the marks, in the caller's transaction.
    An old cluster's representative is reconsidered unless this run made it (id > `before`)
    or already reconsidered it (`settled`): later chunks hold no better image."""
    session.execute(delete(DedupSummary))  # it counted the clusters changed here
    if full:  # every image was grouped again: keep the clusters' identities (assign_clusters)
        wanted = {rows.sha[row]: rows.sha[members[0]] for members in groups.values() for row in members[1:]}
        assign_clusters(session, [_Row(rows.sha[row], rows.cluster[row]) for row in range(new_count)], wanted,
                        batch_size)
    else:
        ids = {group: group for group in groups if group > 0}
        founded = [group for group in groups if group < 0]
        for chunk in batched(founded, batch_size):
            made = session.scalars(insert(StoredCluster).returning(StoredCluster.id, sort_by_parameter_order=True),
                                   [{"key": rows.sha[-1 - group], "representative": rows.sha[-1 - group]}
                                    for group in chunk]).all()
            ids.update(zip(chunk, made, strict=True))
        _mark_clustered(session, [(rows.sha[row], ids[group]) for group, members in groups.items() for row in members],
                        threshold, batch_size)
        for group in [group for group in groups if 0 < group <= before and group not in settled]:
            _reconsider_representative(session, rows, group, groups[group][0], threshold, ranks)  # reads the members
            settled.add(group)
        return
    _mark_clustered(session, [(sha, None) for sha in rows.sha[:new_count]], threshold, batch_size)


def _reconsider_representative(session: Session, rows: _Rows, cluster_id: int, best: int, threshold: int,
                               ranks: dict[str, int | None]) -> None:
    """Make `best`, the best new member of an old cluster, its representative when it is
    better than the current one (larger, then better rank, then smaller sha256) and the
    same picture as every member, so that no member is further than that from it."""
    current = session.execute(select(Image.sha256, Image.width, Image.height).join(
        StoredCluster, StoredCluster.representative == Image.sha256).where(StoredCluster.id == cluster_id)).first()
    if current is not None:
        rank = _ranks(session, [current.sha256]).get(current.sha256)
        if (-current.width * current.height, _rank(rank), current.sha256) <= \
                (-rows.area[best], _rank(ranks.get(rows.sha[best])), rows.sha[best]):
            return
    members = _Rows()
    members.extend(session.execute(select(*_COLUMNS).where(Image.cluster_id == cluster_id, Image.sha256 != rows.sha[best])))
    members.extend(session.execute(select(*_COLUMNS).where(Image.sha256 == rows.sha[best])))
    me = len(members) - 1
    for other in range(me):
        bits = int(members.phash[me] ^ members.phash[other]).bit_count()
        if not same_picture(members, me, other, bits, threshold):
            return
    session.execute(update(StoredCluster).where(StoredCluster.id == cluster_id).values(representative=rows.sha[best]))


def _pixel_digests(workspace: Workspace, rows: _Rows, value_of: list[int], near: dict[int, list[tuple[int, int]]],
                   new_count: int, batch_size: int, workers: int) -> None:
    """Fill `rows.pixel` (and store it) for the images that may hide identical pixels: a
    neighbour within PIXEL_RADIUS bits (or the same pHash) of the same width and height,
    one of the two new."""
    by_value: dict[int, list[int]] = defaultdict(list)
    for row, value in enumerate(value_of):
        by_value[value].append(row)
    needed: set[int] = set()
    for value in {value_of[row] for row in range(new_count)}:
        around = [row for other, bits in [(value, 0), *near.get(value, ())] if bits <= PIXEL_RADIUS
                  for row in by_value.get(other, ())]
        sizes: dict[tuple[int, int], list[int]] = defaultdict(list)
        for row in around:
            sizes[rows.size[row]].append(row)
        for group in sizes.values():
            if len(group) > 1 and any(row < new_count for row in group):
                needed.update(row for row in group if rows.pixel[row] is None)
    todo = sorted(needed)
    keys: dict[str, str] = {}
    with workspace.session() as session:
        for chunk in batched([rows.sha[row] for row in todo], 500):
            keys.update(session.execute(select(Image.sha256, Image.blob_key).where(Image.sha256.in_(chunk))).all())
    with ThreadPoolExecutor(workers) as pool:
        for batch in batched(todo, batch_size):
            results = list(pool.map(lambda row: _try(pixel_digest, workspace, keys[rows.sha[row]]), batch))
            values = []
            for row, digest in zip(batch, results, strict=True):
                rows.pixel[row] = digest
                if digest is not None:
                    values.append({"sha256": rows.sha[row], "pixel_sha256": digest})
            if values:
                with workspace.session() as session:
                    session.execute(update(Image), values)


@dataclasses.dataclass
class DuplicateCounts:
    """The one definition of the duplicate counts that `dedup`, `status` and the report print.

    A *duplicate* is an ok candidate whose picture another candidate already shows: the
    same file fetched again (`exact_files`), an image with the same pixels as another
    member of its cluster (`exact_pixels`), or a near copy (`near`). A *cluster* (duplicate
    cluster) is a group of candidates that show one picture, two or more; a *conflict* is a
    cluster gathered for more than one category."""

    images: int = 0
    exact_files: int = 0
    exact_pixels: int = 0
    near: int = 0
    clusters: int = 0
    conflicts: int = 0

    @property
    def duplicates(self) -> int:
        return self.exact_files + self.exact_pixels + self.near


def duplicate_counts(session: Session, *, remember: bool = False) -> DuplicateCounts:
    """The counts of the stored clusters. While no image and no ok candidate was added since the
    last `imgnet dedup` counted them, they are read from its `DedupSummary` (two counts over
    indexes); otherwise computed in SQL (aggregates, no rows loaded) and, with `remember`,
    stored there."""
    images, ok_candidates = _inputs(session)
    stored = session.get(DedupSummary, 1)
    if stored is not None and (stored.images, stored.ok_candidates) == (images, ok_candidates):
        return DuplicateCounts(**{field.name: getattr(stored, field.name) for field in dataclasses.fields(DuplicateCounts)})
    counts = _count(session, images)
    if remember:
        session.merge(DedupSummary(id=1, ok_candidates=ok_candidates, counted_at=dt.datetime.now(dt.UTC),
                                   **dataclasses.asdict(counts)))
    return counts


def _inputs(session: Session) -> tuple[int, int]:
    """What the counts are counted from: (image rows, ok candidate rows). Candidates only ever
    become ok, and only a dedup run changes the clusters (it removes the summary), so equal
    numbers mean equal counts."""
    images = session.scalar(select(func.count()).select_from(Image)) or 0
    ok = session.scalar(select(func.count()).select_from(Candidate).where(Candidate.status == CandidateStatus.OK))
    return images, ok or 0


def _count(session: Session, images: int) -> DuplicateCounts:
    """The counts in one statement: the images fetched by several ok candidates (`shared`) and the
    clusters of two or more images (`grouped`) are each aggregated once, as common table
    expressions (before: five statements, `shared` grouped again in three of them, and the
    conflicts read through a MULTI-INDEX OR; 22 s for `imgnet status` at a million images)."""
    ok = Candidate.status == CandidateStatus.OK
    shared = (select(Candidate.image_sha256.label("sha256"), func.count().label("files"))
              .where(ok, Candidate.image_sha256.is_not(None)).group_by(Candidate.image_sha256)
              .having(func.count() > 1).cte("shared"))
    grouped = (select(Image.cluster_id.label("id"), func.count().label("images")).where(Image.cluster_id.is_not(None))
               .group_by(Image.cluster_id).having(func.count() > 1).cte("grouped"))  # ix_image_cluster alone
    owner = aliased(Image)
    alone = (select(owner.sha256.label("sha256"), owner.cluster_id.label("cluster_id")).join(shared, shared.c.sha256 == owner.sha256)
             .where(owner.cluster_id.is_(None) | owner.cluster_id.not_in(select(grouped.c.id))).cte("alone"))  # one image, many files
    in_play = select(grouped.c.id).union(select(alone.c.cluster_id).where(alone.c.cluster_id.is_not(None)))
    spread = (select(Image.cluster_id).join(Candidate, Candidate.image_sha256 == Image.sha256)
              .where(ok, Image.cluster_id.in_(in_play))  # an IN list: SQLite reads ix_image_cluster per cluster
              .group_by(Image.cluster_id).having(func.count(func.distinct(Candidate.category_id)) > 1).subquery())
    row = session.execute(select(
        select(func.coalesce(func.sum(shared.c.files - 1), 0)).scalar_subquery(),
        select(func.count()).select_from(grouped).scalar_subquery(),
        select(func.coalesce(func.sum(grouped.c.images - 1), 0)).scalar_subquery(),  # one representative each
        select(func.count()).select_from(alone).scalar_subquery(),
        select(func.count()).select_from(spread).scalar_subquery(),
        exact_pixel_duplicates().scalar_subquery())).one()
    exact_files, clusters, duplicates, alone_count, conflicts, exact_pixels = (int(value or 0) for value in row)
    return DuplicateCounts(images=images, exact_files=exact_files, exact_pixels=exact_pixels,
                           near=duplicates - exact_pixels, clusters=clusters + alone_count, conflicts=conflicts)


def assign_clusters(session: Session, rows, wanted: dict[str, str], batch_size: int = 2000) -> None:
    """Give every image of `rows` (sha256, cluster_id) the stable cluster of its group.

    A group keeps the cluster its members already had. When new images join two clusters,
    the older one (lowest id) lives on and the other is marked `merged_into` it; its labels
    move to the survivor unless the survivor has its own for that category (the next
    `label collect` decides again from all the votes of both). A group whose clusters were
    all taken by other groups (a split after a threshold change), or that had none, founds
    a new cluster keyed by its representative's sha256.
    """
    groups: dict[str, list] = defaultdict(list)
    for row in rows:
        groups[wanted.get(row.sha256, row.sha256)].append(row)
    live = dict(session.execute(select(StoredCluster.id, StoredCluster.representative).where(StoredCluster.merged_into.is_(None))).all())
    oldest = lambda members: min((r.cluster_id for r in members if r.cluster_id in live), default=float("inf"))  # noqa: E731
    claimed: set[int] = set()
    moves: list[dict[str, Any]] = []
    founders = []
    for representative, members in sorted(groups.items(), key=lambda item: (oldest(item[1]), item[0])):
        ids = sorted({r.cluster_id for r in members if r.cluster_id in live} - claimed)
        if not ids:
            founders.append((representative, members))
            continue
        keep = ids[0]
        claimed.add(keep)
        if live[keep] != representative:
            session.execute(update(StoredCluster).where(StoredCluster.id == keep).values(representative=representative))
        for merged in ids[1:]:
            session.execute(update(StoredCluster).where(StoredCluster.id == merged).values(merged_into=keep))
            _move_labels(session, merged, keep)
        moves += [{"sha256": r.sha256, "cluster_id": keep} for r in members if r.cluster_id != keep]
    for chunk in batched(founders, batch_size):
        made = session.scalars(insert(StoredCluster).returning(StoredCluster.id, sort_by_parameter_order=True),
                               [{"key": rep, "representative": rep} for rep, _ in chunk]).all()
        moves += [{"sha256": r.sha256, "cluster_id": id_} for id_, (_, members) in zip(made, chunk, strict=True)
                  for r in members]
    for chunk in batched(moves, batch_size):
        session.execute(update(Image), chunk)


def _move_labels(session: Session, merged: int, survivor: int) -> None:
    taken = select(Label.category_id).where(Label.cluster_id == survivor).scalar_subquery()
    session.execute(update(Label).where(Label.cluster_id == merged, Label.category_id.not_in(taken))
                    .values(cluster_id=survivor))
    session.execute(delete(Label).where(Label.cluster_id == merged))


def _mark_clustered(session: Session, marks: list[tuple[str, int | None]], threshold: int, batch_size: int) -> None:
    """Record that the images' pairs at `threshold` are in their stored clusters: (sha256, its
    cluster id, or None when `assign_clusters` wrote it), one UPDATE per image in sha256 order
    (before: one for the cluster and one for the mark, in grouping order, a random walk of the
    image table and its indexes twice)."""
    marks = sorted(marks)
    table = cast("Table", Image.__table__)
    for with_cluster in (True, False):
        statement = update(table).where(table.c.sha256 == bindparam("b_sha256")).values(dedup_threshold=threshold)
        if with_cluster:
            statement = statement.values(cluster_id=bindparam("b_cluster_id"))
        for chunk in batched((mark for mark in marks if (mark[1] is not None) == with_cluster), batch_size):
            session.execute(statement, [{"b_sha256": sha, "b_cluster_id": cluster_id} if with_cluster else
                                        {"b_sha256": sha} for sha, cluster_id in chunk])


def _hash_new(workspace: Workspace, batch_size: int, workers: int, progress: Progress | None) -> tuple[int, int]:
    """Hash the images without a pHash, `batch_size` at a time in sha256 order (a partial
    index holds exactly those rows); returns (hashed, unreadable)."""
    with workspace.session() as session:
        total = session.scalar(select(func.count()).select_from(Image).where(Image.phash.is_(None))) or 0
    hashed = unreadable = 0
    after = ""
    with ThreadPoolExecutor(workers) as pool, _Hasher(workspace, pool) as hasher:
        while True:
            with workspace.session() as session:
                batch = session.execute(select(Image.sha256, Image.blob_key).where(Image.phash.is_(None),
                                                                                    Image.sha256 > after)
                                        .order_by(Image.sha256).limit(batch_size)).all()
            if not batch:
                break
            after = batch[-1].sha256
            results = hasher(batch)
            from imgnet_build.hamming import to_signed

            values = [{"sha256": row.sha256, "phash": to_signed(result[0]), "dhash": to_signed(result[1]),
                       "detail": getattr(result, "detail", None)}
                      for row, result in zip(batch, results, strict=True) if result is not None]
            if values:
                with workspace.session() as session:
                    session.execute(update(Image), values)
            hashed += len(values)
            unreadable += len(batch) - len(values)
            if progress:
                progress(hashed + unreadable, max(total, hashed + unreadable))
    return hashed, unreadable


class _Hasher:
    """Hashes of a batch of image rows: in this process's threads, or in shards on the Dask workers when the
    workspace's executor says so (started at the first batch, so a rerun with nothing to hash starts nothing)."""

    def __init__(self, workspace: Workspace, pool: ThreadPoolExecutor) -> None:
        self.workspace, self.pool = workspace, pool
        self.executor: Executor | None = None

    def __call__(self, batch) -> list:
        if self.workspace.executor == "local":
            return list(self.pool.map(lambda row: _try(hash_image, self.workspace, row.blob_key), batch))
        if self.executor is None:
            from imgnet_build.executor import open_executor

            self.executor = open_executor(self.workspace.executor)
        return self.executor.on_blobs(hash_blob, self.workspace.blob_store, [row.blob_key for row in batch])

    def __enter__(self) -> _Hasher:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.executor is not None:
            self.executor.close()


def hash_blob(blobs, blob_key: str):
    """`hash_image` of a stored blob; None when it is missing or not a decodable image (runs on Dask workers)."""
    try:
        path = blobs.local_path(blob_key)
        return hash_image(path if path is not None else blobs.get(blob_key))
    except _unreadable():
        return None


def _try(function, workspace: Workspace, blob_key: str):
    """`function` on a blob; None when the blob is missing or not a decodable image."""
    blobs = workspace.blob_store
    try:
        path = blobs.local_path(blob_key)
        return function(path if path is not None else blobs.get(blob_key))
    except _unreadable():
        return None


def _unreadable() -> tuple[type[Exception], ...]:
    """What a missing or undecodable blob raises."""
    from PIL import Image as PILImage

    return (*_UNREADABLE, PILImage.DecompressionBombError)


def _rank(rank: int | None) -> float:
    return float("inf") if rank is None else rank


def cluster_of(session: Session) -> dict[str, str]:
    """{sha256: its cluster's representative sha256} for every image (a representative or
    unique image maps to itself). The split stage groups images by this value and puts each
    group in one split, so no picture is both in train and in val."""
    rows = session.execute(select(Image.sha256, func.coalesce(StoredCluster.representative, Image.sha256))
                           .outerjoin(StoredCluster, StoredCluster.id == Image.cluster_id)).all()
    return dict(rows)


def exact_pixel_duplicates() -> Select[int]:
    """The count of images that share their cluster and their pixels with another image and do not
    represent it: read on ix_image_pixel, partial (pixel_sha256 IS NOT NULL) since a plain index
    on the mostly-NULL column left SQLite scanning the image table."""
    twin = aliased(Image)
    return select(func.count()).select_from(Image).join(StoredCluster, StoredCluster.id == Image.cluster_id).where(
        Image.pixel_sha256.is_not(None), StoredCluster.representative != Image.sha256,
        select(twin.sha256).where(twin.cluster_id == Image.cluster_id, twin.pixel_sha256 == Image.pixel_sha256,
                                  twin.sha256 != Image.sha256).exists())


def candidacy(session: Session) -> dict[str, set[int]]:
    """{representative sha256: category ids} from every ok candidate of the cluster's
    members: the (image, category) pairs still to label once duplicates are merged."""
    rows = session.execute(select(func.coalesce(StoredCluster.representative, Image.sha256), Candidate.category_id)
                           .select_from(Image).join(Candidate, Candidate.image_sha256 == Image.sha256)
                           .outerjoin(StoredCluster, StoredCluster.id == Image.cluster_id)
                           .where(Candidate.status == CandidateStatus.OK).distinct()).all()
    pairs: dict[str, set[int]] = defaultdict(set)
    for representative, category_id in rows:
        pairs[representative].add(category_id)
    return dict(pairs)


def clusters(session: Session) -> list[Cluster]:
    """Every cluster with more than one image or more than one candidate, as stored by the
    last run, sorted by representative."""
    links = session.execute(select(Image.sha256, StoredCluster.representative).join(
        StoredCluster, StoredCluster.id == Image.cluster_id).where(StoredCluster.representative != Image.sha256)).all()
    shared = session.scalars(select(Candidate.image_sha256).where(Candidate.status == CandidateStatus.OK)
                             .group_by(Candidate.image_sha256).having(func.count() > 1)).all()
    groups: dict[str, set[str]] = defaultdict(set)
    for sha, representative in links:
        if representative is not None:
            groups[representative].update((sha, representative))
    for owner in shared:
        if owner is not None:
            groups[owner].add(owner)
    wanted = sorted({sha for group in groups.values() for sha in group})
    images: dict[str, Image] = {}
    candidates: dict[str, list[Any]] = defaultdict(list)
    for chunk in batched(wanted, 500):
        images.update((row.sha256, row) for row in session.scalars(select(Image).where(Image.sha256.in_(chunk))))
        for row in session.execute(select(Candidate.image_sha256, Candidate.url, Candidate.source, Candidate.rank,
                                          Category.wnid).join(Category, Category.id == Candidate.category_id)
                                   .where(Candidate.image_sha256.in_(chunk), Candidate.status == CandidateStatus.OK)
                                   .order_by(Candidate.id)):
            candidates[row.image_sha256].append({"url": row.url, "wnid": row.wnid, "source": row.source,
                                                 "rank": row.rank})
    return [_cluster(representative, sorted(group), images, candidates)
            for representative, group in sorted(groups.items())]


def _cluster(representative: str, shas: list[str], images: dict, candidates: dict) -> Cluster:
    lead = images[representative]
    pixels = [images[sha].pixel_sha256 for sha in shas]
    members = []
    for sha in [representative] + [sha for sha in shas if sha != representative]:
        image = images[sha]
        if sha == representative:
            relation = "representative"
        else:
            relation = "pixels" if image.pixel_sha256 and pixels.count(image.pixel_sha256) > 1 else "near"
        distance = None
        if image.phash is not None and lead.phash is not None:
            distance = ((image.phash ^ lead.phash) & _UINT64).bit_count()  # stored signed: its 64 bits
        members.append(Member(sha, image.width, image.height, relation, distance, candidates.get(sha, [])))
    categories = sorted({candidate["wnid"] for member in members for candidate in member.candidates})
    return Cluster(representative, members, categories, len(categories) > 1)


def write_clusters(workspace: Workspace, path: str | os.PathLike, report: DedupReport) -> int:
    """Write the clusters file (schemas/clusters.schema.json); returns the number of clusters."""
    path = Path(path)
    if not path.parent.is_dir():
        raise BadInput(f"cannot write {path}: folder {path.parent} does not exist")
    with workspace.session() as session:
        found = clusters(session)
    document = {"version": 1, "threshold": report.threshold, "summary": report.as_dict(),
                "clusters": [dataclasses.asdict(cluster) for cluster in found]}
    path.write_text(json.dumps(document, indent=2) + "\n")
    return len(found)


def check_writable(path: str | os.PathLike) -> None:
    """BadInput now when `path` could not be written later (the file is left as it was)."""
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(parent):
        raise BadInput(f"cannot write {path}: folder {parent} does not exist")
    existed = os.path.lexists(path)
    try:
        with open(path, "a"):
            pass
    except OSError as exc:
        raise BadInput(f"cannot write {path}: {exc.strerror or exc}") from exc
    if not existed:
        os.unlink(path)
