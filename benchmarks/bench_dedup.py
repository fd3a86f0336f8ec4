"""Dedup measured against its peers, in one run (not a test; prints a report).

    python benchmarks/bench_dedup.py [--photos 300] [--groups 60] [--hashes 1000000]

1. Hashing throughput on generated JPEG photos of 1-2 megapixels: ours (draft decode,
   pHash + dHash) against imagehash.phash on fully decoded images, and imagededup's PHash
   when it is installed (it depends on torch, so it usually is not).
2. Precision and recall of duplicate pairs on generated photos with known relations:
   imagehash pHash at imagededup's default threshold (10) against `dedup.run` at several
   thresholds, with recall per kind of edit; this is where the default threshold comes from.
3. Near-duplicate search over a million random 64-bit hashes with planted near pairs:
   our multi-index search against brute force (numpy popcount) on a 100,000 subset.
4. --only simulate --simulate N: clusters of N simulated images, connected components against
   dedup's own rule (`simulate`); --only estimate --estimate N: the search's CPU at N hashes
   from a sample of its tables.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import os
import resource
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from itertools import combinations
from math import comb
from pathlib import Path

import imagehash
import numpy as np
from PIL import Image as PILImage

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
import imagegen as gen

from imgnet_build import dedup
from imgnet_build.blobs import blob_key
from imgnet_build.hamming import HammingIndex
from imgnet_build.store import Candidate, Category, Image
from imgnet_build.workspace import Workspace

EDITS = {  # name -> (edit of a decoded photo and its JPEG bytes, inside the default's scope)
    "jpeg q50": (lambda image, data: gen.reencode(data, 50), True),
    "jpeg q30": (lambda image, data: gen.reencode(data, 30), True),
    "resize 1/2": (lambda image, data: gen.jpeg(gen.resize(image, 0.5)), True),
    "resize 1/4": (lambda image, data: gen.jpeg(gen.resize(image, 0.25)), True),
    "crop 5%": (lambda image, data: gen.jpeg(gen.crop(image, 0.05)), True),
    "brightness +20%": (lambda image, data: gen.jpeg(gen.brightness(image, 1.2)), True),
    "brightness -20%": (lambda image, data: gen.jpeg(gen.brightness(image, 0.8)), True),
    "watermark": (lambda image, data: gen.jpeg(gen.watermark(image)), True),
    "png copy": (lambda image, data: gen.png(gen.decode(data)), True),
    "crop 10%": (lambda image, data: gen.jpeg(gen.crop(image, 0.10)), False),
    "crop 20%": (lambda image, data: gen.jpeg(gen.crop(image, 0.20)), False),
    "mirror": (lambda image, data: gen.jpeg(gen.flip(image)), False),
}


def throughput(count: int) -> None:
    print(f"\n== Hashing throughput: {count} JPEG photos of 1.1-1.9 megapixels, quality 90 ==")
    folder = Path(tempfile.mkdtemp(prefix="bench-dedup-"))
    sizes = [(1200, 900), (1600, 1200), (1280, 1024)]
    paths = []
    for i in range(count):
        path = folder / f"{i}.jpg"
        path.write_bytes(gen.jpeg(gen.photo(i, size=sizes[i % 3]), 90))
        paths.append(path)

    def imagehash_full(path: Path) -> None:
        with PILImage.open(path) as image:
            imagehash.phash(image)

    rows = [("imagehash.phash, full decode, 1 thread", lambda: [imagehash_full(p) for p in paths])]
    rows.append(("ours (draft, pHash+dHash), 1 thread", lambda: [dedup.hash_image(p) for p in paths]))
    rows.append(("ours, 2 threads (as dedup.run)", lambda: list(ThreadPoolExecutor(2).map(dedup.hash_image, paths))))
    try:
        from imagededup.methods import PHash

        rows.append(("imagededup PHash.encode_images", lambda: PHash(verbose=False).encode_images(str(folder))))
    except Exception as exc:  # not installed, or torch missing
        print(f"imagededup: skipped ({type(exc).__name__}: {exc}); it requires torch and torchvision")
    best = {name: 0.0 for name, _ in rows}
    for _ in range(3):  # interleaved, best of three: other load on the machine skews single runs
        for name, work in rows:
            start = time.perf_counter()
            work()
            best[name] = max(best[name], count / (time.perf_counter() - start))
    baseline = best[rows[0][0]]
    for name, rate in best.items():
        print(f"{name:<42} {rate:8.1f} images/s   {rate / baseline:5.2f}x")


def add_image(workspace: Workspace, data: bytes, category_id: int, rank: int) -> str:
    sha = hashlib.sha256(data).hexdigest()
    with PILImage.open(io.BytesIO(data)) as image:
        width, height, kind = image.width, image.height, image.format
    key = blob_key(sha, kind.lower())
    workspace.blob_store.put(key, data)
    with workspace.session() as session:
        if session.get(Image, sha) is None:
            session.add(Image(sha256=sha, width=width, height=height, format=kind, bytes=len(data), blob_key=key))
            session.flush()
        session.add(Candidate(category_id=category_id, source="bench", url=f"https://example.org/{sha}.jpg",
                              rank=rank, status="ok", image_sha256=sha))
    return sha


def quality(groups: int) -> None:
    print(f"\n== Duplicate pairs: {groups} photos (800x600) x {len(EDITS)} edits, plus {groups} look-alikes "
          "(same colour layout, other content) ==")
    workspace = Workspace.init(Path(tempfile.mkdtemp(prefix="bench-dedup-ws-")) / "ws")
    with workspace.session() as session:
        category = Category(wnid="n00000001", synset="x.n.01", name="x", lemmas=["x"], gloss="", lexname="noun.tops",
                            depth=0)
        session.add(category)
        session.flush()
        category_id = category.id
    group_of, edit_of, full_phash = {}, {}, {}
    for g in range(groups):
        image = gen.photo(g, size=(800, 600))
        data = gen.jpeg(image, 90)
        versions = {"original": data, **{name: edit(image, data) for name, (edit, _) in EDITS.items()}}
        versions["look-alike"] = gen.jpeg(gen.photo(5000 + g, size=(800, 600), layout=g), 90)
        for name, blob in versions.items():
            sha = add_image(workspace, blob, category_id, rank=0 if name == "original" else 1)
            group_of[sha] = (g, "look-alike") if name == "look-alike" else (g, "same")
            edit_of[sha] = name
            full_phash[sha] = int(str(imagehash.phash(gen.decode(blob))), 16)
    shas = sorted(group_of)
    truth = {pair for pair in combinations(shas, 2) if group_of[pair[0]] == group_of[pair[1]]}
    in_scope = {pair for pair in truth if all(edit_of[s] == "original" or EDITS.get(edit_of[s], (0, True))[1]
                                              for s in pair)}

    def score(name: str, found: set[tuple[str, str]]) -> None:
        true_positives = len(found & truth)
        precision = true_positives / len(found) if found else 1.0
        by_edit = []
        for edit in EDITS:
            wanted = {p for p in truth if {edit_of[p[0]], edit_of[p[1]]} == {"original", edit}}
            by_edit.append(f"{len(found & wanted) / len(wanted):.2f}")
        print(f"{name:<30} {precision:9.3f} {len(found & truth) / len(truth):7.3f} "
              f"{len(found & in_scope) / len(in_scope):8.3f}  " + " ".join(f"{r:>5}" for r in by_edit))

    print(f"{'method':<30} {'precision':>9} {'recall':>7} {'in-scope':>8}  recall vs original for: "
          + ", ".join(EDITS))
    for threshold in (6, 8, 10, 12):
        found = {pair for pair in combinations(shas, 2)
                 if (full_phash[pair[0]] ^ full_phash[pair[1]]).bit_count() <= threshold}
        score(f"imagehash phash <= {threshold}" + (" (usual)" if threshold == 10 else ""), found)
    for threshold in (6, 8, 10, 12):
        dedup.run(workspace, threshold)
        with workspace.session() as session:
            cluster = dedup.cluster_of(session)
        same_cluster = {p for p in combinations(shas, 2) if cluster[p[0]] == cluster[p[1]]}
        score(f"dedup.run --threshold {threshold}", same_cluster)
    with workspace.session() as session:
        stored = {image.sha256: (image.phash, image.dhash) for image in session.query(Image)}
    for rule, test in (("ours pHash <= 10, pairs only", lambda p, d: p <= 10),
                       ("ours pHash<=10 and dHash<=12", lambda p, d: p <= 10 and d <= 12),
                       ("ours dHash <= 10", lambda p, d: d <= 10)):
        found = set()
        for a, b in combinations(shas, 2):
            p = ((stored[a][0] ^ stored[b][0]) & (2**64 - 1)).bit_count()
            d = ((stored[a][1] ^ stored[b][1]) & (2**64 - 1)).bit_count()
            if test(p, d):
                found.add((a, b))
        score(rule, found)
    different = [(a, b) for a, b in combinations(shas, 2) if (a, b) not in truth]
    closest = min((full_phash[a] ^ full_phash[b]).bit_count() for a, b in different)
    closest_d = min(((stored[a][1] ^ stored[b][1]) & (2**64 - 1)).bit_count() for a, b in different)
    print(f"closest pair of different photos: {closest} bits of pHash, {closest_d} bits of dHash")
    print("(dedup.run rows count pairs in one cluster, so an edit can be caught through another copy)")
    workspace.close()


def search(count: int, planted: int, threshold: int, subset: int) -> None:
    print(f"\n== Near-duplicate search: {count:,} random 64-bit hashes, {planted:,} planted pairs at "
          f"1..{threshold} bits, threshold {threshold} ==")
    rng = np.random.default_rng(7)
    hashes = rng.integers(0, 2**64 - 1, count, dtype=np.uint64, endpoint=True)
    sources = rng.choice(count, planted * 2, replace=False)
    pairs = set()
    for source, target in zip(sources[:planted], sources[planted:], strict=True):
        bits = rng.choice(64, size=int(rng.integers(1, threshold + 1)), replace=False)
        hashes[target] = hashes[source] ^ np.uint64(sum(1 << int(bit) for bit in bits))
        pairs.add((min(int(source), int(target)), max(int(source), int(target))))
    start = time.perf_counter()
    found = HammingIndex(threshold).add(hashes)
    ours = time.perf_counter() - start
    got = {(int(a), int(b)) for a, b, _ in found}
    print(f"multi-index (ours), {count:,} hashes:        {ours:7.1f} s; {len(found):,} pairs within {threshold} bits, "
          f"planted found: {len(pairs & got):,}/{len(pairs):,}")

    sample = hashes[:subset]
    start = time.perf_counter()
    ours_subset = len(HammingIndex(threshold).add(sample))
    ours_small = time.perf_counter() - start
    start = time.perf_counter()
    brute = 0
    for i in range(len(sample) - 1):
        brute += int((np.bitwise_count(sample[i + 1:] ^ sample[i]) <= threshold).sum())
    brute_time = time.perf_counter() - start
    factor = (count / subset) ** 2
    print(f"multi-index (ours), {subset:,} hashes:          {ours_small:7.1f} s; {ours_subset} pairs")
    print(f"brute force numpy popcount, {subset:,} hashes: {brute_time:7.1f} s; {brute} pairs; "
          f"x{factor:.0f} for {count:,}: ~{brute_time * factor / 60:.0f} min ({brute_time * factor / ours:.0f}x ours)")


# measured on bench edits in scope (pHash bits of a copy from its original, dHash bits at that pHash)
_COPY_PHASH_BITS = [0] * 30 + [2] * 40 + [4] * 12 + [6] * 6 + [8] * 8 + [10] * 4
_FLAT_PATTERNS = 8  # near-constant pictures: flat or smooth gradients give a handful of exact pHashes


def simulate(count: int, threshold: int, seed: int = 11) -> None:
    """Uniform random pHash/dHash pairs for `count` images, planted duplicate families (2% of
    the images head one, with 1-4 copies at the measured edit distances, no larger than the
    original) and 1% near-constant
    pictures (one of a few exact pHashes, every one a different picture). Clusters by
    connected components of "pHash within the threshold" (what dedup did) against what dedup does
    now: its own search and grouping (`dedup.group_hashes`: `same_picture` with representatives
    only), so the simulation cannot drift from the library."""
    print(f"\n== Clusters at scale: {count:,} simulated images (uniform hashes, planted families), "
          f"threshold {threshold} ==")
    rng = np.random.default_rng(seed)
    phash = rng.integers(0, 2**64 - 1, count, dtype=np.uint64, endpoint=True)
    dhash = rng.integers(0, 2**64 - 1, count, dtype=np.uint64, endpoint=True)
    family = np.arange(count)
    area = rng.integers(10_000, 4_000_000, count)
    flat = np.zeros(count, dtype=bool)
    order = rng.permutation(count)
    heads = order[: count // 50]
    copies_per = rng.integers(1, 5, len(heads))
    copies = order[count // 50: count // 50 + int(copies_per.sum())]
    head_of = np.repeat(heads, copies_per)
    flips = lambda bits: np.array([sum(1 << int(b) for b in rng.choice(64, k, replace=False)) for k in bits],  # noqa: E731
                                  dtype=np.uint64)
    pbits = rng.choice(_COPY_PHASH_BITS, len(copies))
    phash[copies] = phash[head_of] ^ flips(pbits)
    dhash[copies] = dhash[head_of] ^ flips(np.minimum(rng.integers(0, 10, len(copies)), pbits + 2))
    family[copies] = family[head_of]
    area[copies] = area[head_of] * rng.uniform(0.25, 1.0, len(copies))  # copies are resized or cropped, not larger
    flats = order[len(heads) + len(copies): len(heads) + len(copies) + count // 100]
    phash[flats] = rng.integers(0, 2**64 - 1, _FLAT_PATTERNS, dtype=np.uint64, endpoint=True)[
        rng.integers(0, _FLAT_PATTERNS, len(flats))]
    flat[flats] = True
    planted = np.stack([head_of, copies], axis=1)

    uptime = Path("/proc/loadavg").read_text().split()[:3] if Path("/proc/loadavg").exists() else ["?"]
    print(f"load average before the search: {' '.join(uptime)} ({os.cpu_count()} cores)")
    clock, cpu = time.perf_counter(), _cpu()
    near = dedup._Near.search(np.empty(0, dtype=np.uint64), phash, threshold)  # the search `dedup.run` does
    pairs, values = near.pairs, near.values
    search_time, search_cpu = time.perf_counter() - clock, _cpu() - cpu
    chance = count * (count - 1) / 2 * sum(comb(64, k) for k in range(threshold + 1)) / 2**64
    print(f"search: {search_time:.1f} s ({search_cpu:.1f} s CPU, this process and its workers) for "
          f"{len(values):,} distinct pHashes, {len(pairs):,} value pairs within {threshold} bits (uniform chance "
          f"expects {chance:,.0f} among {count:,} images); peak RSS {_peak()}")

    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    start = time.perf_counter()  # before: connected components (same value: joined to its first image)
    inverse = np.searchsorted(values, phash)
    first = np.full(len(values), -1)
    first[inverse[::-1]] = np.arange(count)[::-1]
    edges = np.concatenate([np.stack([np.arange(count), first[inverse]], axis=1), first[pairs[:, :2]]])
    _, components = connected_components(coo_matrix((np.ones(len(edges)), (edges[:, 0], edges[:, 1])),
                                                    shape=(count, count)), directed=False)
    del edges, first, inverse
    report("connected components (before)", components, family, planted, time.perf_counter() - start)
    del components

    clock, cpu = time.perf_counter(), _cpu()  # now: the library's own grouping (representatives, dHash, flat)
    label = dedup.group_hashes(phash, dhash, area, flat, threshold, near=near)
    report("representatives + dHash + flat (now)", label, family, planted, time.perf_counter() - clock,
           _cpu() - cpu)
    print(f"peak RSS: {_peak()}; load average now: {' '.join(Path('/proc/loadavg').read_text().split()[:3])}")


def _cpu() -> float:
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def _peak() -> str:
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    worker = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return f"{own:,.0f} MB (this process), {worker:,.0f} MB (largest search worker)"


def estimate(count: int, threshold: int, tables: int) -> None:
    """The CPU of the whole near-duplicate search over `count` uniform hashes, from a few of its
    tables run in this process (one band group's blocking, then `tables` tables): for sizes whose
    full search takes longer than one wants to wait (14 million: the full run is --only simulate)."""
    from imgnet_build import hamming

    hashes = np.unique(np.random.default_rng(11).integers(0, 2**64 - 1, count, dtype=np.uint64, endpoint=True))
    j = hamming.choose_j(threshold, len(hashes))
    every = hamming._tables(threshold, j)
    groups: dict = {}
    for table in every:
        groups.setdefault(table[0], []).append(table)
    band, group = max(groups.items(), key=lambda item: len(item[1]))
    empty = np.empty(0, dtype=np.uint64)
    cpu = _cpu()
    hamming._block_pairs(band, group[:1], threshold, empty, hashes)
    one = _cpu() - cpu
    cpu = _cpu()
    hamming._block_pairs(band, group[:1 + tables], threshold, empty, hashes)
    per_table = (_cpu() - cpu - one) / tables
    total = len(groups) * (one - per_table) + len(every) * per_table
    print(f"\n== Search estimate: {len(hashes):,} uniform hashes, threshold {threshold}, j = {j}: {len(every):,} tables "
          f"in {len(groups)} band groups ==\nper table {per_table:.2f} s CPU, per group {one - per_table:.1f} s CPU "
          f"(measured on {tables} tables) -> the whole search ~{total:,.0f} s CPU ({total / 60:.0f} min); "
          f"peak RSS {_peak()}; load average {' '.join(Path('/proc/loadavg').read_text().split()[:3])}")


def report(name: str, labels: np.ndarray, family: np.ndarray, planted: np.ndarray, seconds: float,
           cpu: float | None = None) -> None:
    """False merges (images in a cluster with another picture), recall of planted pairs, biggest cluster."""
    count = len(labels)
    order = np.lexsort((family, labels))
    lab, fam = labels[order], family[order]
    starts = np.r_[True, lab[1:] != lab[:-1]]
    new_family = np.r_[True, (lab[1:] != lab[:-1]) | (fam[1:] != fam[:-1])]
    families_in = np.add.reduceat(new_family.astype(np.int64), np.flatnonzero(starts))
    sizes = np.diff(np.r_[np.flatnonzero(starts), count])
    wrong = int(sizes[families_in > 1].sum())
    recall = float(np.mean(labels[planted[:, 0]] == labels[planted[:, 1]]))
    print(f"{name:38} {wrong / count * 1e6:10.1f} images per million in a cluster with another picture; "
          f"planted pairs recalled {recall:.4f}; biggest cluster {int(sizes.max()):,}; grouping {seconds:.1f} s"
          + (f" ({cpu:.1f} s CPU)" if cpu is not None else ""))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=int, default=300, help="photos for the throughput run")
    parser.add_argument("--groups", type=int, default=60, help="photos with edits for precision/recall")
    parser.add_argument("--hashes", type=int, default=1_000_000)
    parser.add_argument("--planted", type=int, default=3000)
    parser.add_argument("--subset", type=int, default=100_000)
    parser.add_argument("--threshold", type=int, default=dedup.DEFAULT_THRESHOLD)
    parser.add_argument("--only", choices=["throughput", "quality", "search", "simulate", "estimate"])
    parser.add_argument("--estimate", type=int, default=14_000_000, metavar="N",
                        help="hashes for --only estimate: the search's CPU from a sample of its tables")
    parser.add_argument("--tables", type=int, default=8, help="tables measured by --only estimate")
    parser.add_argument("--simulate", type=int, default=1_000_000, metavar="N",
                        help="simulated images for the cluster-quality run (14,000,000 for ImageNet-21k)")
    args = parser.parse_args()
    if args.only in (None, "throughput"):
        throughput(args.photos)
    if args.only in (None, "quality"):
        quality(args.groups)
    if args.only in (None, "search"):
        search(args.hashes, args.planted, args.threshold, args.subset)
    if args.only in (None, "simulate"):
        simulate(args.simulate, args.threshold)
    if args.only == "estimate":
        estimate(args.estimate, args.threshold, args.tables)


if __name__ == "__main__":
    main()
