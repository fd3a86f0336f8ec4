"""Download speed: `imgnet gather` against img2dataset on the same URL list, in one run.

A loopback HTTP server (asyncio, in its own process, HTTP/1.1 keep-alive) serves a few
thousand generated JPEGs with about 5% failures mixed in (404s, truncated files, HTML
served as image/jpeg, empty bodies). The same CSV goes through

  imgnet gather --source urls:LIST --allow-loopback --host-rate 0 ...   (a fresh workspace)
  img2dataset --input_format csv --resize_mode no --output_format files ...

each as its own process, timed end to end (start-up included), `--repeat` times in
turn, so that both see the same load on the machine. Prints the median valid images per
second of each and the ratio. Ours runs with per-host politeness off (`--host-rate 0`,
`--per-host` = workers), as img2dataset has none. Nothing leaves 127.0.0.1.

    python benchmarks/bench_gather.py [--images 3000] [--workers 32] [--repeat 3]
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import multiprocessing
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from PIL import Image, ImageDraw

BIN = Path(sys.executable).parent


def make_files(count: int, failure_rate: float, seed: int = 0) -> tuple[dict[str, bytes], dict[str, int], int]:
    """Path -> body, path -> HTTP status, and how many are valid images."""
    rng = random.Random(seed)
    bodies, statuses, valid = {}, {}, 0
    for i in range(count):
        path = f"/img/{i:06d}.jpg"
        image = Image.new("RGB", (400, 300), tuple(rng.randrange(256) for _ in range(3)))
        draw = ImageDraw.Draw(image)
        for _ in range(12):
            x, y = rng.randrange(400), rng.randrange(300)
            draw.ellipse((x, y, x + rng.randrange(20, 120), y + rng.randrange(20, 120)),
                         fill=tuple(rng.randrange(256) for _ in range(3)))
        buffer = io.BytesIO()
        image.save(buffer, "JPEG", quality=85)
        body, status = buffer.getvalue(), 200
        if rng.random() < failure_rate:
            kind = rng.choice(["404", "truncated", "html", "empty"])
            body, status = {"404": (b"not found", 404), "truncated": (body[: len(body) // 3], 200),
                            "html": (b"<!DOCTYPE html><html><body>moved</body></html>", 200),
                            "empty": (b"", 200)}[kind]
        else:
            valid += 1
        bodies[path], statuses[path] = body, status
    return bodies, statuses, valid


def serve(bodies: dict[str, bytes], statuses: dict[str, int], port_queue) -> None:
    """A small asyncio HTTP/1.1 server: GET only, keep-alive, bodies from memory."""
    reasons = {200: "OK", 404: "Not Found"}

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                path = head.split(b" ", 2)[1].decode()
                body, status = bodies.get(path, b""), statuses.get(path, 404)
                close = b"connection: close" in head.lower() or head.startswith(b"GET / HTTP/1.0")
                writer.write(f"HTTP/1.1 {status} {reasons[status]}\r\nContent-Type: image/jpeg\r\n"
                             f"Content-Length: {len(body)}\r\n{'Connection: close' if close else ''}\r\n\r\n"
                             .replace("\r\n\r\n\r\n", "\r\n\r\n").encode() + body)
                await writer.drain()
                if close:
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def main() -> None:
        server = await asyncio.start_server(handle, "127.0.0.1", 0, backlog=1024)
        port_queue.put(server.sockets[0].getsockname()[1])
        await server.serve_forever()

    asyncio.run(main())


def pick_wnids(count: int) -> list[tuple[str, str]]:
    from imgnet_build.wordnet import load_wordnet, wnid

    dog = load_wordnet().synset("dog.n.01")
    hyponyms = sorted(dog.closure(lambda s: s.hyponyms()), key=lambda s: s.name())[:count]
    return [(wnid(synset), synset.name()) for synset in hyponyms]


def run_ours(root: Path, listing: Path, categories: list[tuple[str, str]], workers: int) -> dict:
    from imgnet_build.store import Category
    from imgnet_build.workspace import Workspace

    workspace = Workspace.init(root / "ws")
    with workspace.session() as session:
        for wnid, name in categories:
            session.add(Category(wnid=wnid, synset=name, name=name.split(".")[0], lemmas=[], gloss="",
                                 lexname="noun.animal", depth=1))
    workspace.close()
    command = [str(BIN / "imgnet"), "-w", str(root / "ws"), "gather", "--source", f"urls:{listing}",
               "--allow-loopback", "--workers", str(workers), "--per-host", str(workers), "--host-rate", "0", "--json"]
    started = time.monotonic()
    result = subprocess.run(command, capture_output=True, text=True, check=True)
    seconds = time.monotonic() - started
    document = json.loads(result.stdout)
    return {"ok": document["ok"], "failed": document["failed"], "seconds": seconds,
            "fetch_seconds": document["fetch"]["seconds"]}


def run_img2dataset(root: Path, listing: Path, processes: int, threads: int, extra: list[str]) -> dict:
    out = root / f"i2d-{processes}x{threads}{'-'.join(extra)}"
    command = [str(BIN / "img2dataset"), "--url_list", str(listing), "--input_format", "csv", "--url_col", "url",
               "--output_folder", str(out), "--output_format", "files", "--resize_mode", "no",
               "--processes_count", str(processes), "--thread_count", str(threads), *extra]
    started = time.monotonic()
    subprocess.run(command, capture_output=True, text=True, check=True)
    seconds = time.monotonic() - started
    stats = [json.loads(path.read_text()) for path in out.glob("*_stats.json")]
    ok = sum(item["successes"] for item in stats)
    return {"ok": ok, "failed": sum(item["failed_to_download"] + item["failed_to_resize"] for item in stats),
            "seconds": seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=3000)
    parser.add_argument("--failures", type=float, default=0.05)
    parser.add_argument("--workers", type=int, default=32)
    parser.add_argument("--categories", type=int, default=10)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    if not (BIN / "img2dataset").exists():
        sys.exit("img2dataset is not installed: pip install -e '.[bench]'")

    print(f"generating {args.images} JPEGs ({args.failures:.0%} broken)...", flush=True)
    bodies, statuses, valid = make_files(args.images, args.failures)
    ports = multiprocessing.Queue()
    server = multiprocessing.Process(target=serve, args=(bodies, statuses, ports), daemon=True)
    server.start()
    port = ports.get(timeout=30)
    categories = pick_wnids(args.categories)
    root = Path(tempfile.mkdtemp(prefix="bench-gather-"))
    try:
        listing = root / "list.csv"
        listing.write_text("url,wnid\n" + "".join(
            f"http://127.0.0.1:{port}{path},{categories[i % len(categories)][0]}\n" for i, path in enumerate(bodies)))
        print(f"{len(bodies)} URLs, {valid} valid images, {len(categories)} categories, "
              f"2 tools on {multiprocessing.cpu_count()} cores\n", flush=True)

        ours_name = f"imgnet gather ({args.workers} workers)"
        configs = {f"img2dataset {p} proc x {t} threads{' ' + ' '.join(e) if e else ''}": (p, t, e)
                   for p, t, e in [(1, 256, []), (2, 64, []), (2, 64, ["--skip_reencode", "True"])]}
        runs: dict[str, list[dict]] = {ours_name: [], **{name: [] for name in configs}}
        for round_ in range(args.repeat):
            work = root / f"round{round_}"
            work.mkdir()
            runs[ours_name].append(run_ours(work, listing, categories, args.workers))
            for name, (processes, threads, extra) in configs.items():
                runs[name].append(run_img2dataset(work, listing, processes, threads, extra))
            print(f"round {round_ + 1}/{args.repeat} done", flush=True)
    finally:
        server.terminate()
        shutil.rmtree(root, ignore_errors=True)

    rate = {name: statistics.median(row["ok"] / row["seconds"] for row in rows) for name, rows in runs.items()}
    print(f"\n{'tool':<52} {'ok':>6} {'failed':>6} {'images/s (median; min-max)':>28}")
    for name, rows in runs.items():
        rates = [row["ok"] / row["seconds"] for row in rows]
        print(f"{name:<52} {rows[0]['ok']:>6} {rows[0]['failed']:>6} "
              f"{rate[name]:>10.0f}  ({min(rates):.0f}-{max(rates):.0f})")
    fetch_only = statistics.median(row["ok"] / row["fetch_seconds"] for row in runs[ours_name])
    best = max(configs, key=rate.get)
    print(f"\nimgnet gather, fetch stage only: {fetch_only:.0f} images/s (median)")
    print(f"ratio imgnet gather / best img2dataset ({best}), end to end: {rate[ours_name] / rate[best]:.2f}x")


if __name__ == "__main__":
    main()
