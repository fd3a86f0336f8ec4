"""Gather throughput by executor and by workspace size, the per-item costs, and a cluster estimate.

A loopback HTTP server (bench_gather's asyncio server, its own process) serves `--images`
small generated JPEGs (about 5% broken). For each workspace size (rows already there,
written through the library as a gather writes them: ok candidates and their images)
and each executor (`local`, `dask-local:1`, `dask-local:2`), a fresh workspace gets
the new URLs and `fetch_pending` fetches them; the fetch stage is timed (a Dask
executor's cluster is started before the clock starts), and the CPU time of this whole
process per item (all its threads; what decides images/s on a busy machine). Politeness is off
(`host_rate 0`, `per_host` 64) as everything is one host; the defaults for real hosts
are unchanged. Then the per-item costs, measured one by one in this process: an HTTP
GET through the downloader, decode + checks, SHA-256, a blob write, and the coordinator's
database work per result (claim + write, in a workspace of the largest size). From those, an estimate of a 10-machine cluster on 100 million URLs.

    python benchmarks/bench_gather_executors.py [--images 5000] [--sizes 0,10000,100000]
        [--executors local,dask-local:1,dask-local:2] [--repeat 2] [--database postgresql+psycopg://...]

With `--database` (a server URL whose database may be dropped and made again per run:
give a database name of its own) the workspaces are on PostgreSQL. Nothing leaves
127.0.0.1. Figures on the shared 2-core machine are ranges over the repeats.
"""

from __future__ import annotations

import argparse
import hashlib
import multiprocessing
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from bench_gather import make_files, serve

from imgnet_build.fetch import FetchSettings, fetch_pending
from imgnet_build.store import Candidate, Category, Image, url_hash
from imgnet_build.workspace import Workspace

CATEGORIES = 100


def fresh_database(url: str | None) -> str | None:
    if not url:
        return None
    from sqlalchemy import create_engine, text

    base, name = url.rsplit("/", 1)
    admin = create_engine(base + "/postgres", isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    return url


def populate(workspace: Workspace, existing: int, new_urls: list[str]) -> None:
    """`existing` ok candidates with their image rows (as a gather leaves them), then the new pending URLs."""
    with workspace.session() as session:
        session.add_all(Category(wnid=f"n{9_000_000 + i:08d}", synset=f"c{i}.n.01", name=f"c{i}", lemmas=[],
                                 gloss="", lexname="noun.animal", depth=1) for i in range(CATEGORIES))
    with workspace.engine.begin() as connection:
        ids = [row[0] for row in connection.exec_driver_sql("SELECT id FROM category ORDER BY id")]
        for start in range(0, existing, 20_000):
            chunk = range(start, min(existing, start + 20_000))
            shas = [hashlib.sha256(b"old%d" % i).hexdigest() for i in chunk]
            connection.execute(Image.__table__.insert(), [
                {"sha256": sha, "width": 400, "height": 300, "format": "JPEG", "bytes": 20_000,
                 "blob_key": f"{sha[:2]}/{sha[2:4]}/{sha}.jpg"} for sha in shas])
            connection.execute(Candidate.__table__.insert(), [
                {"category_id": ids[i % CATEGORIES], "source": "urls", "url": f"http://old.example/{i}.jpg",
                 "url_hash": url_hash(f"http://old.example/{i}.jpg"), "rank": i // CATEGORIES, "status": "ok",
                 "attempts": 1, "image_sha256": sha} for i, sha in zip(chunk, shas, strict=True)])
        rows = [{"category_id": ids[i % CATEGORIES], "source": "urls", "url": url, "url_hash": url_hash(url),
                 "rank": existing + i, "status": "pending"} for i, url in enumerate(new_urls)]
        for start in range(0, len(rows), 20_000):
            connection.execute(Candidate.__table__.insert(), rows[start:start + 20_000])
        if workspace.engine.dialect.name == "postgresql":
            connection.exec_driver_sql("ANALYZE")


def one_run(root: Path, database: str | None, existing: int, urls: list[str], executor, settings) -> dict:
    workspace = Workspace.init(root, database=fresh_database(database))
    populate(workspace, existing, urls)
    cpu = time.process_time()
    summary = fetch_pending(workspace, settings, executor=executor)
    cpu = time.process_time() - cpu  # every thread of this process (a Dask executor's workers are not in it)
    workspace.close()
    shutil.rmtree(root, ignore_errors=True)
    items = summary.ok + summary.failed + summary.skipped
    return {"ok": summary.ok, "failed": summary.failed, "seconds": summary.seconds,
            "rate": summary.ok / summary.seconds, "cpu_ms": cpu / max(1, items) * 1e3}


def per_item_costs(bodies: dict[str, bytes], port: int, root: Path) -> dict[str, float]:
    """CPU seconds per item for each step, one item at a time in this thread (CPU time rather than wall time,
    so that other load on a shared machine inflates it less)."""
    from imgnet_build.blobs import LocalBlobStore, blob_key
    from imgnet_build.download import Downloader
    from imgnet_build.validate import check_image

    good = [(path, body) for path, body in bodies.items() if body[:2] == b"\xff\xd8" and len(body) > 5000][:400]
    settings = FetchSettings(allow_loopback=True, host_rate=0, per_host=64)
    downloader = Downloader(settings)
    costs = {}
    started = time.thread_time()
    for path, _ in good:
        downloader.get(f"http://127.0.0.1:{port}{path}")
    costs["HTTP GET (downloader, keep-alive)"] = (time.thread_time() - started) / len(good)
    started = time.thread_time()
    for _, body in good:
        check_image(body)
    costs["decode + checks"] = (time.thread_time() - started) / len(good)
    started = time.thread_time()
    for _, body in good:
        hashlib.sha256(body).hexdigest()
    costs["SHA-256"] = (time.thread_time() - started) / len(good)
    blobs = LocalBlobStore(root / "blobs")
    started = time.thread_time()
    for _, body in good:
        blobs.put(blob_key(hashlib.sha256(body).hexdigest(), "jpg"), body)
    costs["blob write (folder)"] = (time.thread_time() - started) / len(good)
    return costs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=5000)
    parser.add_argument("--sizes", default="0,10000,100000", help="rows already in the workspace, comma-separated")
    parser.add_argument("--executors", default="local,dask-local:1,dask-local:2")
    parser.add_argument("--workers", type=int, default=32, help="download threads (per Dask worker)")
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--database", help="a PostgreSQL URL (its database is dropped and made again per run)")
    args = parser.parse_args()
    from imgnet_build.executor import open_executor

    print(f"generating {args.images} JPEGs...", flush=True)
    bodies, statuses, valid = make_files(args.images, 0.05)
    ports: multiprocessing.Queue = multiprocessing.Queue()
    server = multiprocessing.Process(target=serve, args=(bodies, statuses, ports), daemon=True)
    server.start()
    port = ports.get(timeout=60)
    urls = [f"http://127.0.0.1:{port}{path}" for path in bodies]
    settings = FetchSettings(workers=args.workers, per_host=64, host_rate=0, allow_loopback=True)
    root = Path(tempfile.mkdtemp(prefix="bench-executors-"))
    sizes = [int(size) for size in args.sizes.split(",")]
    print(f"{len(urls)} URLs ({valid} valid) on {os.cpu_count()} cores, "
          f"{'PostgreSQL' if args.database else 'SQLite'}\n", flush=True)
    table: dict[tuple[int, str], list[dict]] = {}
    try:
        for name in args.executors.split(","):
            executor = open_executor(name)
            try:
                for size in sizes:
                    for round_ in range(args.repeat):
                        run = one_run(root / f"ws-{round_}", args.database, size, urls, executor, settings)
                        table.setdefault((size, name), []).append(run)
                        print(f"  {name:<14} workspace {size:>7}: {run['ok']} ok in {run['seconds']:.1f} s "
                              f"= {run['rate']:.0f} images/s; process CPU {run['cpu_ms']:.2f} ms per item "
                              f"(load average {os.getloadavg()[0]:.1f})", flush=True)
            finally:
                executor.close()
        costs = per_item_costs(bodies, port, root)
        coordinator = coordinator_cost(root, args.database, max(sizes))
    finally:
        server.terminate()
        shutil.rmtree(root, ignore_errors=True)

    print(f"\n{'executor':<16} {'rows before':>11} {'images/s median (min-max)':>28} {'CPU ms/item (min-max)':>24}")
    medians = {}
    for (size, name), runs in table.items():
        rates, cpus = [run["rate"] for run in runs], [run["cpu_ms"] for run in runs]
        medians[size, name] = statistics.median(rates)
        print(f"{name:<16} {size:>11} {medians[size, name]:>14.0f} ({min(rates):.0f}-{max(rates):.0f})"
              f"{statistics.median(cpus):>15.2f} ({min(cpus):.2f}-{max(cpus):.2f})")
    for size in sizes:
        one, two = medians.get((size, "dask-local:1")), medians.get((size, "dask-local:2"))
        if one and two:
            print(f"dask 2 workers / 1 worker at {size} rows: {two / one:.2f}x (target 1.6x)")

    print("\nper item, CPU time, one at a time in one thread:")
    for step, seconds in costs.items():
        print(f"  {step:<36} {seconds * 1e6:>7.0f} us")
    estimate(costs, coordinator, medians)


def coordinator_cost(root: Path, database: str | None, existing: int) -> float:
    """CPU seconds of the coordinator's database work per result: claiming rows and writing their results,
    256 at a time, in a workspace of `existing` rows (what one coordinator can commit at most)."""
    import datetime as dt

    from imgnet_build.claims import Claims, Result

    workspace = Workspace.init(root / "coordinator", database=fresh_database(database))
    populate(workspace, existing, [f"http://new.example/{i}.jpg" for i in range(256 * 12)])
    claims, started = Claims(workspace), time.thread_time()
    for _ in range(12):
        claimed = claims.claim(256)
        images = [{"sha256": hashlib.sha256(item.url.encode()).hexdigest(), "width": 400, "height": 300,
                   "format": "JPEG", "bytes": 20_000, "blob_key": "k"} for item in claimed.items]
        claims.write([Result(item.id, "ok", None, 1, image["sha256"], dt.datetime.now(dt.UTC))
                      for item, image in zip(claimed.items, images, strict=True)], images)
    seconds = (time.thread_time() - started) / (256 * 12)
    workspace.close()
    return seconds


def estimate(costs: dict[str, float], coordinator: float, medians: dict) -> None:
    """What 10 machines do on 100M URLs, from the measured per-item costs, naming the bottleneck."""
    per_core = 1 / sum(costs.values())  # the GET's share is CPU on loopback; on the web it is mostly waiting
    two = max((rate for (_, name), rate in medians.items() if name == "dask-local:2"), default=0.0)
    machines, cores, urls = 10, 16, 100e6
    workers = per_core * cores * machines
    commits = 1 / coordinator
    rate = min(workers, commits)
    print(f"\nestimate: {machines} machines x {cores} cores, {urls / 1e6:.0f}M URLs, S3 blobs, one coordinator")
    print(f"  workers: {per_core:.0f} items/s per core from the per-item costs above "
          f"(2 Dask workers on this machine's 2 shared cores measured {two:.0f}/s) "
          f"-> {workers:,.0f} items/s on {machines * cores} cores")
    print(f"  coordinator: {coordinator * 1e6:.0f} us of database work per result (claim + write) "
          f"-> at most {commits:,.0f} results/s")
    bottleneck = "the coordinator's database writes" if commits < workers else "the workers' CPU (decode, HTTP)"
    print(f"  bottleneck: {bottleneck}; {urls / rate / 3600:.1f} h for {urls / 1e6:.0f}M URLs at {rate:,.0f}/s")
    print("  past it: several coordinators (one `imgnet gather` per machine on one PostgreSQL workspace claim "
          "disjoint rows); on the real web, per-host politeness (50 requests/s per host by default) and "
          "bandwidth (100M x ~100 KB = 10 TB) decide the rest")


if __name__ == "__main__":
    main()
