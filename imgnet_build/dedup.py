"""Exact and near duplicates: hashes, clusters, one representative per cluster.

    report = dedup.run(workspace)            # or: imgnet dedup [--threshold 10]
    print(report.summary())
    groups = dedup.cluster_of(session)       # {sha256: representative sha256}

What it does, in order:

1. Hashes every image once (rows with `phash IS NULL`): a 64-bit pHash and a 64-bit
   dHash (imagehash), stored as signed int64. JPEGs are decoded with Pillow's `draft()`
   DCT scaling at 1/2..1/8 of their size, luminance only, since the hash needs 32x32
   pixels. Hashing is 2.6x faster than imagehash on a fully decoded 1-2 megapixel JPEG
   on one thread (entropy decoding remains), 4.9x with the two threads `run` uses on a
   2-core machine; the pHash differs from the full-decode one by 0 bits (about half the
   images) or 2 bits (the rest), and duplicate recall and precision are the same
   (benchmarks/bench_dedup.py). Hashes are committed every `batch_size` images, so a
   killed run loses at most one batch and a rerun goes on from there.
2. Finds every pair within `threshold` bits of pHash with multi-index hashing
   (`imgnet_build.hamming`), no all-pairs loop, over the distinct stored hashes. Each image
   records the threshold of the run that clustered it (`dedup_threshold`); pairs among
   those images are already in the stored clusters, so a rerun only searches pairs that
   involve a new hash (`HammingIndex.load` the old ones, `add` the new ones). A run at
   another threshold starts over from all hashes (14-27 s for a million).
3. Exact duplicates: two candidates that fetched the same bytes already share one image
   row (the SHA-256 is its key). Identical pixels under other bytes (metadata changed,
   PNG copy of a JPEG) are found by `pixel_sha256` (SHA-256 of the size and the decoded
   RGB pixels). That needs a full decode, so it is computed only for images that have a
   neighbour of the same width and height within 4 bits of pHash (identical pixels
   differ by at most 2 bits, from the draft decode): a few percent of a web crawl. A
   rerun looks only at images with a new neighbour: twins were found when one was new.
4. Clusters are the connected components of "near or pixel-identical" (union-find).
   Each keeps one representative: the largest resolution, then the best source rank
   (lowest `Candidate.rank`), then the smallest sha256. The others get `duplicate_of`
   = representative; nothing is deleted. A rerun joins the stored clusters (each
   `duplicate_of` is an edge) with the new pairs, chooses every representative again
   (ranks may have changed) and only writes what changed, so it is idempotent and takes
   new images in. Every image also belongs to a `store.Cluster` row whose identity outlives a
   change of representative (labels and the split follow it; `assign_clusters`). The
   changed links, clusters and the marks of this run's new images are written
   in one transaction: a run killed before its commit leaves the previous clusters and
   marks, and the rerun searches the new images' pairs again.
5. A cluster whose candidates come from more than one category is a *conflict*: it is
   flagged, and every (representative, category) pair stays a labeling candidate
   (`candidacy`); the export must keep a whole cluster in one split (`cluster_of`).

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
dHash as a second opinion (pHash <= 10 and dHash <= 12) removed no false positive there and
lost some recall, so it is stored but does not decide.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import os
from collections import defaultdict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import imagehash
import numpy as np
from PIL import Image as PILImage
from PIL import ImageOps
from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.orm import Session

from imgnet_build.dbutil import batched
from imgnet_build.errors import BadInput
from imgnet_build.hamming import HammingIndex, to_signed, to_unsigned
from imgnet_build.store import Candidate, CandidateStatus, Category, Image, Label
from imgnet_build.store import Cluster as StoredCluster
from imgnet_build.workspace import Workspace

__all__ = ["DEFAULT_THRESHOLD", "PIXEL_RADIUS", "DedupReport", "Member", "Cluster", "hash_image",
           "pixel_digest", "run", "assign_clusters", "clusters", "cluster_of", "candidacy", "write_clusters"]

DEFAULT_THRESHOLD = 10
MAX_THRESHOLD = 20
PIXEL_RADIUS = 4  # identical pixels: pHash within this many bits (draft decode differs by <= 2)
_DRAFT_SIZE = (64, 64)
_UNREADABLE = (OSError, ValueError, SyntaxError, PILImage.DecompressionBombError)

Progress = Callable[[int, int], None]  # (images hashed so far, images to hash in all)


def hash_image(source: bytes | Path) -> tuple[int, int]:
    """(pHash, dHash) of an image file or its bytes, as unsigned 64-bit integers."""
    with PILImage.open(io.BytesIO(source) if isinstance(source, bytes) else source) as image:
        image.draft("L", _DRAFT_SIZE)  # JPEG: DCT-domain downscale; other formats: no-op
        gray = ImageOps.exif_transpose(image).convert("L")  # hash the picture as it is shown
    return int(str(imagehash.phash(gray)), 16), int(str(imagehash.dhash(gray)), 16)


def pixel_digest(source: bytes | Path) -> str:
    """SHA-256 of the size and the fully decoded RGB pixels: equal for the same picture
    saved with other metadata or in a lossless format."""
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
        workers: int | None = None, progress: Progress | None = None) -> DedupReport:
    """Hash new images, find duplicates, store clusters; returns the counts."""
    if not 0 <= threshold <= MAX_THRESHOLD:
        raise BadInput(f"--threshold must be between 0 and {MAX_THRESHOLD} bits, not {threshold}; "
                       f"the default is {DEFAULT_THRESHOLD}")
    report = DedupReport(threshold)
    workers = workers or os.cpu_count() or 1
    report.hashed, report.unreadable = _hash_new(workspace, batch_size, workers, progress)
    with workspace.session() as session:
        rows = session.execute(select(Image.sha256, Image.phash, Image.width, Image.height, Image.pixel_sha256,
                                      Image.duplicate_of, Image.dedup_threshold, Image.cluster_id)
                               .where(Image.phash.is_not(None))
                               .order_by(Image.sha256)).all()
    position = {row.sha256: i for i, row in enumerate(rows)}
    # Old rows were clustered at this threshold: their links stand for the pairs among them.
    # Marks of another threshold (or a link to an image not hashed any more): start over.
    full = any(row.dedup_threshold not in (None, threshold) or
               (row.duplicate_of is not None and row.duplicate_of not in position) for row in rows)
    new = np.array([full or row.dedup_threshold is None for row in rows], dtype=bool)
    old_links = [(i, position[row.duplicate_of]) for i, row in enumerate(rows) if not new[i] and row.duplicate_of]
    # Distinct hashes go into the index (a thousand copies of one placeholder image are one
    # entry, not half a million pairs); rows with the same hash are joined to its first row.
    values, first, inverse = np.unique(to_unsigned([row.phash for row in rows]), return_index=True,
                                       return_inverse=True)
    known, fresh = np.zeros(len(values), dtype=bool), np.zeros(len(values), dtype=bool)
    known[inverse[~new]] = True  # values of old rows
    fresh[inverse[new]] = True  # values of new rows
    pairs = _new_pairs(values, known, max(threshold, PIXEL_RADIUS))
    near = pairs[pairs[:, 2] <= threshold]
    close = np.zeros(len(values), dtype=bool)  # values that may hide identical pixels
    close[pairs[pairs[:, 2] <= PIXEL_RADIUS, :2].ravel()] = True
    close[fresh & (np.bincount(inverse, minlength=len(values)) > 1)] = True
    pixels = _pixel_digests(workspace, rows, np.flatnonzero(close[inverse]), batch_size, workers)
    edges = np.concatenate([np.stack([np.arange(len(rows)), first[inverse]], axis=1).reshape(-1, 2),
                            first[near[:, :2]].reshape(-1, 2), _same_digest(pixels),
                            np.array(old_links, dtype=np.int64).reshape(-1, 2)])
    with workspace.session() as session:
        ranks = dict(session.execute(select(Candidate.image_sha256, func.min(Candidate.rank))
                                     .where(Candidate.status == CandidateStatus.OK)
                                     .group_by(Candidate.image_sha256)).all())
    wanted = _representatives(rows, edges, ranks)
    changes = [{"sha256": row.sha256, "duplicate_of": wanted.get(row.sha256)} for row in rows
               if row.duplicate_of != wanted.get(row.sha256)]
    with workspace.session() as session:  # one transaction: the links and the marks that vouch for them
        for chunk in batched(changes, batch_size * 10):
            session.execute(update(Image), chunk)
        assign_clusters(session, rows, wanted, batch_size * 10)
        _mark_clustered(session, [row.sha256 for row in rows if row.dedup_threshold != threshold], threshold,
                        batch_size * 10)
    with workspace.session() as session:
        report.images = session.scalar(select(func.count()).select_from(Image))
        found = clusters(session)
    report.clusters = len(found)
    report.conflicts = sum(cluster.conflict for cluster in found)
    for member in (member for cluster in found for member in cluster.members):
        report.exact_files += max(0, len(member.candidates) - 1)
        report.exact_pixels += member.relation == "pixels"
        report.near += member.relation == "near"
    return report


def _new_pairs(values: np.ndarray, known: np.ndarray, radius: int) -> np.ndarray:
    """(i, j, distance) rows of `values` positions within `radius` bits, for the pairs that
    involve a value not `known`: pairs among known values are not searched."""
    index = HammingIndex(radius)
    index.load(values[known])
    pairs = index.add(values[~known])
    positions = np.concatenate([np.flatnonzero(known), np.flatnonzero(~known)])
    return np.column_stack([positions[pairs[:, :2]], pairs[:, 2]])


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
    moves, founders = [], []
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
        ids = session.scalars(insert(StoredCluster).returning(StoredCluster.id, sort_by_parameter_order=True),
                              [{"key": rep, "representative": rep} for rep, _ in chunk]).all()
        moves += [{"sha256": r.sha256, "cluster_id": id_} for id_, (_, members) in zip(ids, chunk, strict=True) for r in members]
    for chunk in batched(moves, batch_size):
        session.execute(update(Image), chunk)


def _move_labels(session: Session, merged: int, survivor: int) -> None:
    taken = select(Label.category_id).where(Label.cluster_id == survivor).scalar_subquery()
    session.execute(update(Label).where(Label.cluster_id == merged, Label.category_id.not_in(taken))
                    .values(cluster_id=survivor))
    session.execute(delete(Label).where(Label.cluster_id == merged))


def _mark_clustered(session: Session, shas: list[str], threshold: int, batch_size: int) -> None:
    """Record that the images' pairs at `threshold` are in their stored links."""
    for chunk in batched(shas, batch_size):
        session.execute(update(Image), [{"sha256": sha, "dedup_threshold": threshold} for sha in chunk])


def _hash_new(workspace: Workspace, batch_size: int, workers: int, progress: Progress | None) -> tuple[int, int]:
    with workspace.session() as session:
        todo = session.execute(select(Image.sha256, Image.blob_key).where(Image.phash.is_(None))
                               .order_by(Image.sha256)).all()
    hashed = unreadable = 0
    with ThreadPoolExecutor(workers) as pool, _Hasher(workspace, pool) as hasher:
        for batch in batched(todo, batch_size):
            results = hasher(batch)
            values = [{"sha256": row.sha256, "phash": to_signed(result[0]), "dhash": to_signed(result[1])}
                      for row, result in zip(batch, results, strict=True) if result is not None]
            if values:
                with workspace.session() as session:
                    session.execute(update(Image), values)
            hashed += len(values)
            unreadable += len(batch) - len(values)
            if progress:
                progress(hashed + unreadable, len(todo))
    return hashed, unreadable


class _Hasher:
    """Hashes of a batch of image rows: in this process's threads, or in shards on the Dask workers when the
    workspace's executor says so (started at the first batch, so a rerun with nothing to hash starts nothing)."""

    def __init__(self, workspace: Workspace, pool: ThreadPoolExecutor) -> None:
        self.workspace, self.pool, self.executor = workspace, pool, None

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
    except _UNREADABLE:
        return None


def _try(function, workspace: Workspace, blob_key: str):
    """`function` on a blob; None when the blob is missing or not a decodable image."""
    blobs = workspace.blob_store
    try:
        path = blobs.local_path(blob_key)
        return function(path if path is not None else blobs.get(blob_key))
    except _UNREADABLE:
        return None


def _pixel_digests(workspace: Workspace, rows, close: np.ndarray, batch_size: int, workers: int) -> list[str | None]:
    """pixel_sha256 per row, computed (and stored) for the `close` rows (a neighbour within
    PIXEL_RADIUS bits) that share their width and height with another close row."""
    digests = [row.pixel_sha256 for row in rows]
    sizes = defaultdict(list)
    for i in close.tolist():
        sizes[rows[i].width, rows[i].height].append(i)
    needed = sorted(i for group in sizes.values() if len(group) > 1 for i in group if digests[i] is None)
    keys: dict[str, str] = {}
    with workspace.session() as session:
        for chunk in batched([rows[i].sha256 for i in needed], 500):
            keys.update(session.execute(select(Image.sha256, Image.blob_key).where(Image.sha256.in_(chunk))).all())
    with ThreadPoolExecutor(workers) as pool:
        for batch in batched(needed, batch_size):
            results = list(pool.map(lambda i: _try(pixel_digest, workspace, keys[rows[i].sha256]), batch))
            values = []
            for i, digest in zip(batch, results, strict=True):
                digests[i] = digest
                if digest is not None:
                    values.append({"sha256": rows[i].sha256, "pixel_sha256": digest})
            if values:
                with workspace.session() as session:
                    session.execute(update(Image), values)
    return digests


def _same_digest(digests: list[str | None]) -> np.ndarray:
    """Edges joining every row to the first row with the same pixel digest."""
    first: dict[str, int] = {}
    edges = [(i, first.setdefault(digest, i)) for i, digest in enumerate(digests) if digest is not None]
    return np.array(edges, dtype=np.int64).reshape(-1, 2)


def _representatives(rows, edges: np.ndarray, ranks: dict[str, int | None]) -> dict[str, str]:
    """{sha256: representative} for every image that is not its cluster's representative;
    clusters are the connected components of `edges` (row index pairs)."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    if not rows:
        return {}
    n = len(rows)
    _, labels = connected_components(coo_matrix((np.ones(len(edges)), (edges[:, 0], edges[:, 1])), shape=(n, n)),
                                     directed=False)
    members: dict[int, list[int]] = defaultdict(list)
    for node in np.flatnonzero(np.bincount(labels)[labels] > 1).tolist():
        members[int(labels[node])].append(node)
    wanted = {}
    for nodes in members.values():
        best = min(nodes, key=lambda i: (-rows[i].width * rows[i].height, _rank(ranks.get(rows[i].sha256)),
                                         rows[i].sha256))
        wanted.update({rows[i].sha256: rows[best].sha256 for i in nodes if i != best})
    return wanted


def _rank(rank: int | None) -> float:
    return float("inf") if rank is None else rank


def cluster_of(session: Session) -> dict[str, str]:
    """{sha256: its cluster's representative sha256} for every image (a representative or
    unique image maps to itself). The split stage groups images by this value and puts each
    group in one split, so no picture is both in train and in val."""
    rows = session.execute(select(Image.sha256, Image.duplicate_of)).all()
    return {sha: duplicate_of or sha for sha, duplicate_of in rows}


def candidacy(session: Session) -> dict[str, set[int]]:
    """{representative sha256: category ids} from every ok candidate of the cluster's
    members: the (image, category) pairs still to label once duplicates are merged."""
    rows = session.execute(select(func.coalesce(Image.duplicate_of, Image.sha256), Candidate.category_id)
                           .join(Candidate, Candidate.image_sha256 == Image.sha256)
                           .where(Candidate.status == CandidateStatus.OK).distinct()).all()
    pairs: dict[str, set[int]] = defaultdict(set)
    for representative, category_id in rows:
        pairs[representative].add(category_id)
    return dict(pairs)


def clusters(session: Session) -> list[Cluster]:
    """Every cluster with more than one image or more than one candidate, as stored by the
    last run, sorted by representative."""
    links = session.execute(select(Image.sha256, Image.duplicate_of).where(Image.duplicate_of.is_not(None))).all()
    shared = session.scalars(select(Candidate.image_sha256).where(Candidate.status == CandidateStatus.OK)
                             .group_by(Candidate.image_sha256).having(func.count() > 1)).all()
    groups: dict[str, set[str]] = defaultdict(set)
    for sha, representative in links:
        groups[representative].update((sha, representative))
    for sha in shared:
        groups[sha].add(sha)
    wanted = sorted({sha for group in groups.values() for sha in group})
    images, candidates = {}, defaultdict(list)
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
            distance = int(np.bitwise_count(to_unsigned([image.phash ^ lead.phash]))[0])
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
