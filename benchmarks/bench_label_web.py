"""Votes stored per second through the labeling web app (not a test; prints a report).

    python benchmarks/bench_label_web.py [--workers 20] [--tasks 60] [--items 48] [--postgres URL]

N invited workers, each a thread with its own HTTP session, label concurrently through the
app on waitress on 127.0.0.1: ask for the next task, load the page and its images (as a
browser would; --no-images skips them), submit, until no task is left. Every task of 48
images (42 candidates, 6 controls) wants 3 workers. Measured: votes stored per second from
the first request to the last answer, submissions per second, and the latency of one
submission (median, 95th percentile). SQLite by default; --postgres URL runs the same
load against PostgreSQL beside it. The workers think for no time, so this is the server's
ceiling, not a crowd's pace: a person takes about a minute per 48-image task.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from sqlalchemy import func, select
from webcrowd import HttpWorker, make_tasks, running_app

from imgnet_build.labeling.invites import invite
from imgnet_build.store import Vote
from imgnet_build.workspace import Workspace


def run(ws: Workspace, args) -> dict[str, float]:
    make_tasks(ws, tasks=args.tasks, items=args.items, controls=args.controls, assignments_wanted=args.assignments)
    links = [invite(ws, f"bench-{i}").path for i in range(args.workers)]
    latencies: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()

    def work(link: str, start: threading.Barrier) -> None:
        worker = HttpWorker(base_url)
        start.wait()
        worker.get(link)
        while (page := worker.next_task()) is not None:
            if args.images:
                for position in page.positions:
                    worker.get(f"/t/{page.task_id}/img/{position}")
            began = time.perf_counter()
            response = worker.submit(page, page.positions[::4])
            with lock:
                latencies.append(time.perf_counter() - began)
                if response.status_code != 200:
                    errors.append(f"{response.status_code} {response.text[:80]}")

    with running_app(ws, threads=args.threads) as base_url:
        start = threading.Barrier(args.workers + 1)
        threads = [threading.Thread(target=work, args=(link, start)) for link in links]
        for thread in threads:
            thread.start()
        start.wait()
        began = time.perf_counter()
        for thread in threads:
            thread.join()
        elapsed = time.perf_counter() - began
    with ws.session() as session:
        votes = session.scalar(select(func.count()).select_from(Vote))
    expected = args.tasks * args.assignments * args.items
    if errors or votes != expected:
        raise SystemExit(f"benchmark broken: {votes} votes stored of {expected}; errors: {errors[:3]}")
    latencies.sort()
    return {"votes": votes, "seconds": elapsed, "votes_per_s": votes / elapsed,
            "submissions_per_s": len(latencies) / elapsed, "median_ms": 1000 * statistics.median(latencies),
            "p95_ms": 1000 * latencies[int(0.95 * (len(latencies) - 1))]}


def postgres_database(admin_url: str):
    import uuid

    from sqlalchemy import create_engine, text

    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    name = f"imgnet_bench_{uuid.uuid4().hex[:10]}"
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    return admin, name, admin_url.rsplit("/", 1)[0] + "/" + name


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=20)
    parser.add_argument("--threads", type=int, default=8, help="waitress threads (imgnet label serve's default)")
    parser.add_argument("--tasks", type=int, default=60)
    parser.add_argument("--items", type=int, default=48)
    parser.add_argument("--controls", type=int, default=6)
    parser.add_argument("--assignments", type=int, default=3)
    parser.add_argument("--no-images", dest="images", action="store_false", help="do not load the pages' images")
    parser.add_argument("--postgres", metavar="URL", help="also run on PostgreSQL (a server URL; a new database is made)")
    args = parser.parse_args()
    logging.getLogger("waitress.queue").setLevel(logging.ERROR)  # "Task queue depth is N": the load is the point

    results = {}
    with tempfile.TemporaryDirectory() as folder:
        ws = Workspace.init(Path(folder) / "sqlite")
        results["SQLite"] = run(ws, args)
        ws.close()
        if args.postgres:
            admin, name, url = postgres_database(args.postgres)
            try:
                ws = Workspace.init(Path(folder) / "postgres", database=url)
                results["PostgreSQL"] = run(ws, args)
                ws.close()
            finally:
                from sqlalchemy import text

                with admin.connect() as connection:
                    connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))

    print(f"{args.workers} workers, {args.tasks} tasks x {args.items} images x {args.assignments} workers each, "
          f"waitress {args.threads} threads, images {'loaded' if args.images else 'not loaded'}, loopback")
    print(f"{'database':<12}{'votes':>8}{'seconds':>9}{'votes/s':>10}{'submits/s':>11}{'submit p50':>12}{'p95':>9}")
    for database, r in results.items():
        print(f"{database:<12}{r['votes']:>8}{r['seconds']:>9.1f}{r['votes_per_s']:>10.0f}{r['submissions_per_s']:>11.1f}"
              f"{r['median_ms']:>10.0f}ms{r['p95_ms']:>7.0f}ms")


if __name__ == "__main__":
    main()
