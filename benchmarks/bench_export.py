"""Export throughput per format against a plain copy of the same bytes, in one run.

    python benchmarks/bench_export.py [--images 10000] [--classes 100] [--rounds 3]

A workspace of `--images` accepted images (generated JPEG photos, 500x375 at quality 90,
made distinct by a JPEG comment) in `--classes` categories, labels and clusters written
through the ORM. Then, on the same filesystem, in turns: the limit (every blob copied
with shutil.copyfile into a folder per class) and `imgnet_build.split.export` in each
format, the whole call (database read, split, files, manifest, dataset card,
verification). Medians of `--rounds`; the ratio is export speed / copy speed.
Targets: imagefolder with hard links >= 5x the copy; webdataset >= 1/1.5 of it.
"""

from __future__ import annotations

import argparse
import hashlib
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from sqlalchemy import insert

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
import imagegen as gen

from imgnet_build.blobs import blob_key
from imgnet_build.split import ExportOptions, export
from imgnet_build.store import Candidate, Category, Cluster, Image, Label
from imgnet_build.workspace import Workspace

FORMATS = {  # name -> options
    "imagefolder (hard links)": ExportOptions(format="imagefolder"),
    "imagefolder --copy": ExportOptions(format="imagefolder", copy=True),
    "ilsvrc (hard links)": ExportOptions(format="ilsvrc"),
    "hf (hard links)": ExportOptions(format="hf"),
    "webdataset (tar shards)": ExportOptions(format="webdataset"),
}


def build(root: Path, images: int, classes: int) -> tuple[Workspace, list[tuple[str, Path]]]:
    workspace = Workspace.init(root / "ws")
    bases = [gen.jpeg(gen.photo(seed, size=(500, 375))) for seed in range(50)]
    categories = [{"id": n + 1, "wnid": f"n{n + 1:08d}", "synset": f"c{n}.n.01", "name": f"class {n}",
                   "lemmas": [f"class_{n}"], "gloss": "", "lexname": "noun.artifact", "depth": 1} for n in range(classes)]
    rows, files = [], []
    for n in range(images):
        data = gen.with_comment(bases[n % len(bases)], f"image {n}")
        sha = hashlib.sha256(data).hexdigest()
        key = blob_key(sha, "jpg")
        workspace.blob_store.put(key, data)
        rows.append((n, sha, key, len(data)))
        files.append((categories[n % classes]["wnid"], workspace.blob_store.local_path(key)))
    with workspace.session() as session:
        session.execute(insert(Category), categories)
        session.execute(insert(Cluster), [{"id": n + 1, "key": sha, "representative": sha} for n, sha, _, _ in rows])
        session.execute(insert(Image), [{"sha256": sha, "width": 500, "height": 375, "format": "JPEG", "bytes": size,
                                         "blob_key": key, "cluster_id": n + 1} for n, sha, key, size in rows])
        session.execute(insert(Candidate), [
            {"category_id": n % classes + 1, "source": "urls", "url": f"https://example.org/{n}.jpg", "rank": 1,
             "license": "CC BY 4.0", "attribution": f"author {n}", "status": "ok", "image_sha256": sha}
            for n, sha, _, _ in rows])
        session.execute(insert(Label), [
            {"cluster_id": n + 1, "category_id": n % classes + 1, "status": "accepted", "confidence": 0.99,
             "yes_votes": 3, "no_votes": 0, "method": "dynamic", "round": 1, "simulated": False} for n, _, _, _ in rows])
    return workspace, files


def plain_copy(files: list[tuple[str, Path]], out: Path) -> None:
    for wnid in sorted({wnid for wnid, _ in files}):
        (out / wnid).mkdir(parents=True)
    for wnid, path in files:
        shutil.copyfile(path, out / wnid / path.name)


def timed(work, out: Path) -> float:
    start = time.perf_counter()
    work(out)
    seconds = time.perf_counter() - start
    shutil.rmtree(out)
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=10000)
    parser.add_argument("--classes", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="bench-export-", dir=Path.cwd()))
    try:
        start = time.perf_counter()
        workspace, files = build(root, args.images, args.classes)
        megabytes = sum(path.stat().st_size for _, path in files) / 1e6
        print(f"{args.images} images ({megabytes:.0f} MB) in {args.classes} classes, built in "
              f"{time.perf_counter() - start:.0f} s; medians of {args.rounds} rounds, in turns")
        jobs = {"plain copy (the limit)": lambda out: plain_copy(files, out)}
        jobs |= {name: (lambda out, options=options: export(workspace, out, options)) for name, options in FORMATS.items()}
        times: dict[str, list[float]] = {name: [] for name in jobs}
        for round_ in range(args.rounds):
            for name, job in jobs.items():
                times[name].append(timed(job, root / f"out-{round_}"))
        copy = statistics.median(times["plain copy (the limit)"])
        print(f"\n{'':28} {'seconds':>8} {'images/s':>9} {'MB/s':>7} {'vs copy':>8}")
        for name, values in times.items():
            seconds = statistics.median(values)
            print(f"{name:28} {seconds:8.2f} {args.images / seconds:9.0f} {megabytes / seconds:7.0f} {copy / seconds:7.2f}x")
        print("\ntargets: imagefolder (hard links) >= 5x the copy; webdataset >= 0.67x the copy (within 1.5x)")
        workspace.close()
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
