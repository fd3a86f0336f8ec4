"""The growth table: time and peak RSS of each command at 10k, 100k and 1M images (not a test).

    python benchmarks/bench_scale.py [--sizes 10k,100k,1M] [--databases sqlite,postgresql]
                                     [--commands dedup,dedup-rerun,status,...] [--keep DIR]

Each workspace is populated **through the library, not by a real gather**: the whole
WordNet tree (`tree build`, 24,113 categories), then N images with the rows a gather
writes (an `ok` candidate each, spread over the leaves, 5% of them fetched for a second
category, 1% pending and 1% failed candidates) and stored pHash/dHash values (random, with
4% near copies of an earlier image), so `dedup` finds hashes present and no blob is read.
Then every command runs as its own `imgnet` process, in the order given, and the table
shows its wall time, its CPU time (user + system) and the peak RSS of that process (GNU
time), and the load average when it ended (the machine may be shared: CPU time is the
steadier figure).

PostgreSQL: a new database on `IMGNET_TEST_POSTGRES`'s server (127.0.0.1:5432 by default),
dropped afterwards. Other benchmarks extend the table by adding to `COMMANDS` or `ROWS`
(a row is any callable `(workspace, size) -> (seconds, CPU seconds, peak KB, note)`).
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import numpy as np
from sqlalchemy import create_engine, insert, select, text

from imgnet_build.store import Candidate, Category, CategoryEdge, Image, analyze, url_hash
from imgnet_build.workspace import Workspace

POSTGRES_ADMIN_URL = os.environ.get("IMGNET_TEST_POSTGRES", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
IMGNET = str(Path(sys.executable).with_name("imgnet"))

# name -> imgnet arguments (after -w WS); "{out}" is a scratch folder
COMMANDS: dict[str, list[str]] = {
    "dedup": ["dedup"],
    "dedup-rerun": ["dedup"],
    "status": ["status"],
    "tree-show": ["tree", "show"],
    "label-submit-dry": ["label", "submit", "--backend", "simulated", "--dry-run"],
    "label-status": ["label", "status"],
    "report": ["report", "-o", "{out}/report.html"],
    "label-submit": ["label", "submit", "--backend", "simulated"],  # writes tasks: after the read-only rows
    "label-collect": ["label", "collect"],  # round 1: the simulated crowd answers those tasks, the first decide
    "label-run": ["label", "run", "--backend", "simulated"],  # collects those tasks (or from round 2, after
    # label-collect), writes votes and labels
    "label-status-voted": ["label", "status"],  # again, with the votes and labels label-run wrote
}
# Commands skipped past this many images (label run took 63 min at 100k before issue 16's fixes);
# --no-limits runs them anyway.
SIZE_LIMITS: dict[str, int] = {"label-run": 100_000, "label-status-voted": 100_000}
Row = Callable[[Workspace, int], tuple[float, float, int, str]]
ROWS: dict[str, Row] = {}  # extra rows measured in this process (e.g. gather with executors)


def parse_size(text_: str) -> int:
    text_ = text_.strip().lower()
    factor = {"k": 1_000, "m": 1_000_000}.get(text_[-1:], 1)
    return int(float(text_.rstrip("km")) * factor)


def populate(workspace: Workspace, images: int, seed: int = 0, batch: int = 20_000) -> None:
    """The rows a gather and a tree build write, for `images` images (see the module doc)."""
    from imgnet_build import taxonomy

    with workspace.session() as session:
        empty = not session.scalar(select(Category.id).limit(1))
    if empty:
        taxonomy.build_tree(workspace, taxonomy.TreeOptions())
    with workspace.session() as session:
        parents = set(session.scalars(select(CategoryEdge.parent_id)))
        leaves = np.array(sorted(set(session.scalars(select(Category.id))) - parents), dtype=np.int64)
    rng = np.random.default_rng(seed)
    phash = rng.integers(-2**63, 2**63 - 1, size=images, dtype=np.int64)
    dhash = rng.integers(-2**63, 2**63 - 1, size=images, dtype=np.int64)
    near = np.flatnonzero(rng.random(images) < 0.04)
    near = near[near > 0]
    parent = (rng.random(len(near)) * near).astype(np.int64)  # an earlier image
    for bits in range(3):  # up to 3 random bit flips on each hash
        flip = np.left_shift(np.int64(1), rng.integers(0, 63, size=len(near))).astype(np.int64)
        phash[near] = phash[parent] ^ flip if bits == 0 else phash[near] ^ flip
        dhash[near] = dhash[parent] ^ flip if bits == 0 else dhash[near] ^ flip
    category = leaves[rng.integers(0, len(leaves), size=images)]
    second = rng.random(images) < 0.05
    now = dt.datetime.now(dt.UTC)
    with workspace.engine.begin() as connection:
        next_id = 1 + (connection.scalar(text("SELECT max(id) FROM candidate")) or 0)
        for start in range(0, images, batch):
            stop = min(images, start + batch)
            shas = [f"{i:064x}" for i in range(start, stop)]
            connection.execute(insert(Image), [
                {"sha256": sha, "width": 640, "height": 480, "format": "JPEG", "bytes": 50_000,
                 "blob_key": f"{sha[:2]}/{sha[2:4]}/{sha}.jpg", "phash": int(phash[i]), "dhash": int(dhash[i]),
                 "created_at": now} for i, sha in zip(range(start, stop), shas, strict=True)])
            rows = []
            for i, sha in zip(range(start, stop), shas, strict=True):
                rows.append(_candidate(next_id, int(category[i]), i, "ok", sha, now))
                next_id += 1
                if second[i]:
                    mirror = _candidate(next_id, int(leaves[(i * 7919) % len(leaves)]), i, "ok", sha, now)
                    url = mirror["url"].replace(".jpg", "-mirror.jpg")
                    rows.append({**mirror, "url": url, "url_hash": url_hash(url)})
                    next_id += 1
                if i % 100 == 0:
                    rows.append(_candidate(next_id, int(category[i]), -i - 1, "pending", None, None))
                    next_id += 1
                if i % 100 == 50:
                    failed = _candidate(next_id, int(category[i]), -i - 1, "failed", None, now)
                    rows.append({**failed, "error": "HTTP 404"})
                    next_id += 1
            connection.execute(insert(Candidate), rows)
    analyze(workspace.engine)


def mark_clustered(workspace: Workspace, threshold: int = 10) -> None:
    """Every image its own cluster, as a dedup run at `threshold` that found no duplicate
    leaves it (SQL, for the rerun rows at sizes where the first run is not measured)."""
    with workspace.engine.begin() as connection:
        connection.exec_driver_sql("INSERT INTO cluster (key, representative, created_at) "
                                   "SELECT sha256, sha256, created_at FROM image WHERE cluster_id IS NULL")
        connection.exec_driver_sql("UPDATE image SET cluster_id = cluster.id, dedup_threshold = ? "
                                   "FROM cluster WHERE cluster.key = image.sha256 AND image.cluster_id IS NULL"
                                   .replace("?", str(int(threshold))))
    analyze(workspace.engine)


def _candidate(id_: int, category_id: int, n: int, status: str, sha: str | None, fetched) -> dict:
    url = f"https://img{n % 97}.example.org/{n}.jpg"
    return {"id": id_, "category_id": category_id, "source": "urls", "url": url, "url_hash": url_hash(url),
            "rank": abs(n) % 500, "status": status, "image_sha256": sha, "attempts": 1 if fetched else 0,
            "fetched_at": fetched, "created_at": fetched or dt.datetime.now(dt.UTC),
            "license": None, "attribution": None, "source_sha1": None, "truth": status == "ok" and n % 5 != 0, "error": None,
            "query_id": None, "lease_owner": None, "lease_until": None}


def run_command(workspace: Path, arguments: list[str], out: Path) -> tuple[float, float, int, str]:
    """(seconds, CPU seconds, peak RSS in KB, last output line) of one `imgnet` process, measured by
    GNU time (GNU time would count the memory this process had when it forked)."""
    arguments = [a.replace("{out}", str(out)) for a in arguments]
    measured = out / "time.txt"
    result = subprocess.run(["/usr/bin/time", "-o", str(measured), "-f", "%e %U %S %M", IMGNET, "-w", str(workspace),
                             *arguments], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    seconds, user, system, kb = measured.read_text().split()[-4:]
    lines = [line for line in result.stdout.splitlines() if line.strip() and not line.startswith("Command ")]
    note = lines[-1][:70] if lines else ""
    if result.returncode:
        note = f"exit {result.returncode}: {note}"
    return float(seconds), float(user) + float(system), int(kb), note


def _postgres_database(prefix: str = "imgnet_bench") -> tuple[str, Callable[[], None]]:
    admin = create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))

    def drop() -> None:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()

    return POSTGRES_ADMIN_URL.rsplit("/", 1)[0] + "/" + name, drop


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10k,100k,1M")
    parser.add_argument("--databases", default="sqlite,postgresql")
    parser.add_argument("--commands", default=",".join([*COMMANDS, *ROWS]))
    parser.add_argument("--keep", type=Path, help="Keep the workspaces in this folder (and their PostgreSQL "
                                                  "databases: drop them yourself).")
    parser.add_argument("--database-prefix", default="imgnet_bench",
                        help="Name the PostgreSQL databases PREFIX_<random> (a shared server: your own prefix).")
    parser.add_argument("--no-limits", action="store_true", help="Run every command at every size (SIZE_LIMITS).")
    parser.add_argument("--reuse", type=Path, metavar="WS",
                        help="Measure the commands on this workspace, kept by an earlier --keep run (SQLite), instead "
                             "of populating one; --sizes names its size.")
    args = parser.parse_args()
    sizes = [parse_size(s) for s in args.sizes.split(",")]
    commands = args.commands.split(",")
    if args.reuse and (len(sizes) != 1 or args.databases != "sqlite"):
        parser.error("--reuse measures one workspace: give its one size and --databases sqlite")
    print(f"{'database':10} {'images':>8} {'command':18} {'seconds':>9} {'cpu s':>8} {'peak MB':>8} {'load':>5}  "
          "last line")
    for database in args.databases.split(","):
        for size in sizes:
            if args.reuse:  # its scratch files go beside it
                root = args.reuse.resolve()
                base = root.parent
            else:
                base = Path(tempfile.mkdtemp(dir=args.keep)) if args.keep else Path(tempfile.mkdtemp())
                root = base / "ws"
            url, drop = (_postgres_database(args.database_prefix) if database == "postgresql" and not args.reuse
                         else (None, lambda: None))
            if url and args.keep:
                print(f"keeping {url.rsplit('/', 1)[1]} (--keep): drop it when done", flush=True)
                drop = lambda: None  # noqa: E731
            try:
                if args.reuse:
                    workspace = Workspace.open(root)
                else:
                    workspace = Workspace.init(root, database=url)
                    started = time.perf_counter()
                    populate(workspace, size)
                    if "dedup" not in commands:  # the rerun rows need a clustered workspace: made in SQL
                        mark_clustered(workspace)
                    print(f"{database:10} {size:>8} {'(populate)':18} {time.perf_counter() - started:9.1f} "
                          f"{'':>8} {'':>8} {os.getloadavg()[0]:5.1f}  library inserts, not a gather", flush=True)
                for name in commands:
                    if size > SIZE_LIMITS.get(name, size) and not args.no_limits:
                        print(f"{database:10} {size:>8} {name:18} {'-':>9} {'-':>8} {'-':>8} {'':>5}  skipped past "
                              f"{SIZE_LIMITS[name]:,} images (--no-limits)", flush=True)
                        continue
                    if name in ROWS:
                        seconds, cpu, kb, note = ROWS[name](workspace, size)
                    else:
                        seconds, cpu, kb, note = run_command(root, COMMANDS[name], base)
                    print(f"{database:10} {size:>8} {name:18} {seconds:9.2f} {cpu:8.2f} {kb / 1024:8.0f} "
                          f"{os.getloadavg()[0]:5.1f}  {note}", flush=True)
                workspace.close()
            finally:
                drop()
                if not args.keep and not args.reuse:
                    shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
