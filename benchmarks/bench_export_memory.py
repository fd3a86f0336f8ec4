"""Peak memory of `export` as the workspace grows: flat, or growing with the images?

    python benchmarks/bench_export_memory.py [--sizes 10000,100000] [--format imagefolder] [--keep DIR]

For each size, a workspace of that many accepted images in 1,000 classes, populated
through the library (ORM bulk inserts of the rows a gather, dedup and label run write;
blobs are tiny distinct JPEGs, 1 kB, so the disk is not the subject), then one
`imgnet_build.split.export` in a fresh child process, whose peak RSS (VmHWM) and time
are printed. `--keep DIR` keeps the workspaces there and reuses them on the next run, so
two versions of the code can be measured on the same data (run it with PYTHONPATH set to
the other checkout).

Measured on the shared 2-core machine under heavy load from other test runs (times are
noisy; RSS is not), imagefolder with hard links:

    images   before (split._read kept a row object per pair)   after (streaming)
    10,000   8.6 s, 119 MB peak RSS                             27.4 s*, 90 MB
    100,000  489 s, 603 MB                                      426 s, 116 MB

(* a busier moment: a profile of the same call shows no step out of proportion.) Before,
the export held every pair as a Python object, every Item, the whole manifest as one
string and its parsed rows again for the check: RSS grew about 5 kB per image (4.0 GB at
742k in issue 16). After, it holds numpy arrays of about 90 bytes per pair and 16 bytes
per image for the check: +26 MB from 10k to 100k, about 0.3 kB per image, so roughly
330 MB at 1M. Measured again on a lightly loaded machine (load 1-6, 2026-11-26), after:

    images   seconds  peak RSS
    10,000     1.2      91 MB
    100,000    9.5     112 MB
    1,000,000  192     283 MB    (populating it took 386 s)
"""

from __future__ import annotations

import argparse
import hashlib
import io
import multiprocessing
import shutil
import sys
import tempfile
import time
from pathlib import Path

from PIL import Image as PILImage
from sqlalchemy import insert

CLASSES = 1000


def _blob(n: int) -> bytes:
    buffer = io.BytesIO()
    PILImage.new("RGB", (40, 32), (n % 251, n // 251 % 251, n // 63001 % 251)).save(buffer, "JPEG", quality=80,
                                                                                     comment=f"image {n}".encode())
    return buffer.getvalue()


def populate(root: Path, images: int) -> None:
    """A workspace at `root` with `images` accepted labels (skipped when it is already there)."""
    from imgnet_build.blobs import blob_key
    from imgnet_build.store import Candidate, Category, Cluster, Image, Label
    from imgnet_build.workspace import Workspace

    if (root / "populated").exists():
        return
    shutil.rmtree(root, ignore_errors=True)
    workspace = Workspace.init(root)
    with workspace.session() as session:
        session.execute(insert(Category), [{"id": n + 1, "wnid": f"n{n + 1:08d}", "synset": f"c{n}.n.01",
                                            "name": f"class {n}", "lemmas": [f"class_{n}"], "gloss": "",
                                            "lexname": "noun.artifact", "depth": 1} for n in range(CLASSES)])
    for start in range(0, images, 20000):
        rows = []
        for n in range(start, min(images, start + 20000)):
            data = _blob(n)
            sha = hashlib.sha256(data).hexdigest()
            key = blob_key(sha, "jpg")
            workspace.blob_store.put(key, data)
            rows.append((n, sha, key, len(data)))
        with workspace.session() as session:
            session.execute(insert(Cluster), [{"id": n + 1, "key": sha, "representative": sha} for n, sha, _, _ in rows])
            session.execute(insert(Image), [{"sha256": sha, "width": 40, "height": 32, "format": "JPEG", "bytes": size,
                                             "blob_key": key, "cluster_id": n + 1} for n, sha, key, size in rows])
            session.execute(insert(Candidate), [
                {"category_id": n % CLASSES + 1, "source": "urls", "url": f"https://example.org/{n}.jpg", "rank": 1,
                 "license": "CC BY 4.0", "attribution": f"author {n}", "status": "ok", "image_sha256": sha}
                for n, sha, _, _ in rows])
            session.execute(insert(Label), [
                {"cluster_id": n + 1, "category_id": n % CLASSES + 1, "status": "accepted", "confidence": 0.99,
                 "yes_votes": 3, "no_votes": 0, "method": "dynamic", "round": 1, "simulated": False}
                for n, _, _, _ in rows])
    workspace.close()
    (root / "populated").write_text(str(images))


def _export(root: str, out: str, format_: str, queue) -> None:
    from imgnet_build.split import ExportOptions, export
    from imgnet_build.workspace import Workspace

    workspace = Workspace.open(root)
    start = time.perf_counter()
    result = export(workspace, out, ExportOptions(format=format_, overwrite=True))
    queue.put((time.perf_counter() - start, result.images,
               _own_peak_mb()))


def _own_peak_mb() -> float:
    """This process's peak RSS (VmHWM); ru_maxrss would count the parent's RSS at the fork too."""
    return int(Path("/proc/self/status").read_text().split("VmHWM:")[1].split()[0]) / 1024


def measure(root: Path, out: Path, format_: str) -> tuple[float, int, float]:
    """(seconds, images exported, peak RSS in MB) of one export in a new process."""
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    child = context.Process(target=_export, args=(str(root), str(out), format_, queue))
    child.start()
    child.join()
    if child.exitcode != 0:
        raise SystemExit(f"the export failed (exit code {child.exitcode})")
    return queue.get()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,100000")
    parser.add_argument("--format", default="imagefolder")
    parser.add_argument("--keep", type=Path, help="keep (and reuse) the workspaces in this folder")
    args = parser.parse_args()
    base = args.keep or Path(tempfile.mkdtemp(prefix="bench-export-memory-", dir=Path.cwd()))
    base.mkdir(parents=True, exist_ok=True)
    import imgnet_build

    print(f"imgnet_build from {Path(imgnet_build.__file__).parent}; {args.format}; {CLASSES} classes")
    print(f"{'images':>9} {'seconds':>8} {'peak RSS MB':>12}")
    try:
        for size in (int(part) for part in args.sizes.split(",")):
            root = base / f"ws-{size}"
            start = time.perf_counter()
            populate(root, size)
            built = time.perf_counter() - start
            seconds, exported, peak = measure(root, base / f"out-{size}", args.format)
            shutil.rmtree(base / f"out-{size}", ignore_errors=True)
            print(f"{exported:9d} {seconds:8.1f} {peak:12.0f}" + (f"   (populated in {built:.0f} s)" if built > 1 else ""))
            sys.stdout.flush()
    finally:
        if args.keep is None:
            shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
