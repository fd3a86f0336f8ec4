"""The report's time, file size and memory on a labeled workspace (not a test; prints figures).

    python benchmarks/bench_report.py [--categories 60] [--images 40] [--size 480x360]

Builds a workspace of generated JPEG photos with known truth under one parent, clusters
them with the real dedup, labels them with the simulated crowd, then times
`write_report` and prints the file size, its share taken by thumbnails, and the peak
memory Python allocated while writing it (tracemalloc). No peer writes such a report.
"""

from __future__ import annotations

import argparse
import hashlib
import random
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
import imagegen as gen

from imgnet_build import dedup
from imgnet_build.blobs import blob_key
from imgnet_build.labeling import rounds
from imgnet_build.report import write_report
from imgnet_build.store import Candidate, Category, CategoryEdge, Image
from imgnet_build.workspace import Workspace


def build(workspace: Workspace, categories: int, images: int, size: tuple[int, int]) -> None:
    rng = random.Random(0)
    with workspace.session() as session:
        root = Category(wnid="n00000000", synset="root.n.01", name="root", lemmas=["root"], gloss="root",
                        lexname="noun.artifact", depth=0)
        session.add(root)
        session.flush()
        picture = 0
        for number in range(1, categories + 1):
            category = Category(wnid=f"n{number:08d}", synset=f"thing{number}.n.01", name=f"thing {number}",
                                lemmas=[f"thing {number}"], gloss="a thing", lexname="noun.artifact", depth=1)
            session.add(category)
            session.flush()
            session.add(CategoryEdge(parent_id=root.id, child_id=category.id))
            for rank in range(images):
                picture += 1
                data = gen.jpeg(gen.photo(picture, size=size), quality=85)
                sha = hashlib.sha256(data).hexdigest()
                workspace.blob_store.put(blob_key(sha, "jpg"), data)
                session.add(Image(sha256=sha, width=size[0], height=size[1], format="JPEG", bytes=len(data),
                                  blob_key=blob_key(sha, "jpg")))
                session.flush()  # no ORM relationship orders the inserts
                session.add(Candidate(category_id=category.id, source="bench", url=f"https://example.org/{sha}.jpg",
                                      rank=rank, status="ok", image_sha256=sha, truth=rng.random() < 0.6))
    dedup.run(workspace)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--categories", type=int, default=60)
    parser.add_argument("--images", type=int, default=40, help="per category")
    parser.add_argument("--size", default="480x360")
    args = parser.parse_args()
    size = tuple(int(v) for v in args.size.split("x"))
    with tempfile.TemporaryDirectory() as folder:
        workspace = Workspace.init(Path(folder) / "ws")
        started = time.perf_counter()
        build(workspace, args.categories, args.images, size)
        rounds.run(workspace, "simulated", options={"sim_seed": 1})
        print(f"workspace: {args.categories} categories x {args.images} images of {args.size}, "
              f"labeled by the simulated crowd in {time.perf_counter() - started:.0f} s")
        started = time.perf_counter()
        summary = write_report(workspace, Path(folder) / "report.html")
        seconds = time.perf_counter() - started
        tracemalloc.start()  # a second run for memory: tracemalloc slows the first one's clock
        write_report(workspace, Path(folder) / "report.html")
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        page = (Path(folder) / "report.html").read_text()
        thumbnails = sum(len(part.split('"', 1)[0]) for part in page.split('src="data:image/jpeg')[1:])
        print(summary.summary())
        print(f"write_report: {seconds:.1f} s, {summary.bytes / 1e6:.2f} MB "
              f"({thumbnails / summary.bytes:.0%} thumbnails, "
              f"{thumbnails / max(summary.thumbnails, 1) / 1e3:.1f} kB each), peak Python memory {peak / 1e6:.0f} MB")
        workspace.close()


if __name__ == "__main__":
    main()
