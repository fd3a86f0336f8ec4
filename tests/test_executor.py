"""The executor setting, and gathering on a Dask cluster of worker processes on this machine.

Real parts: a `LocalCluster` of worker processes, PostgreSQL, moto's S3 server on
127.0.0.1, a loopback HTTP server, real JPEG decoding. One worker is killed with SIGKILL
in the middle of the run.
"""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest
from loopback import LoopbackServer, jpeg_bytes
from sqlalchemy import func, select

from imgnet_build.errors import BadInput
from imgnet_build.executor import DaskExecutor, LocalExecutor, open_executor, parse_executor
from imgnet_build.fetch import FetchSettings, fetch_pending
from imgnet_build.store import Candidate, Category, Image
from imgnet_build.workspace import Workspace

FAST = FetchSettings(workers=8, allow_loopback=True, deadline=10.0, backoff=0.01, read_timeout=5.0,
                     connect_timeout=2.0, host_rate=0, per_host=16)


def add_candidates(workspace: Workspace, urls_by_wnid: dict[str, list[str]]) -> None:
    with workspace.session() as session:
        for wnid, urls in urls_by_wnid.items():
            category = Category(wnid=wnid, synset=f"{wnid}.n.01", name=wnid, lemmas=[wnid], gloss="",
                                lexname="noun.animal", depth=0)
            session.add(category)
            session.flush()
            session.add_all(Candidate(category_id=category.id, source="urls", url=url, rank=rank)
                            for rank, url in enumerate(urls))


def results(workspace: Workspace) -> tuple[dict, dict, int]:
    """url -> (status, error, sha256); sha256 -> image facts; the number of candidate rows."""
    with workspace.session() as session:
        candidates = {(wnid, url): (status, error, sha) for wnid, url, status, error, sha in session.execute(
            select(Category.wnid, Candidate.url, Candidate.status, Candidate.error, Candidate.image_sha256)
            .join(Category, Category.id == Candidate.category_id))}
        images = {row.sha256: (row.width, row.height, row.format, row.bytes, row.blob_key)
                  for row in session.scalars(select(Image))}
        rows = session.scalar(select(func.count()).select_from(Candidate))
    return candidates, images, rows


def s3_keys(endpoint: str, prefix: str) -> list[str]:
    import boto3

    pages = boto3.client("s3", endpoint_url=endpoint).get_paginator("list_objects_v2").paginate(
        Bucket="imgs", Prefix=prefix + "/")
    return [item["Key"].removeprefix(prefix + "/") for page in pages for item in page.get("Contents", [])]


@pytest.mark.parametrize("text, kind", [("local", "local"), ("dask-local:3", "dask-local"),
                                        ("dask://scheduler.example:8786", "dask")])
def test_executor_settings_are_parsed(text, kind):
    assert parse_executor(text).kind == kind


@pytest.mark.parametrize("text", ["threads", "dask-local:0", "dask-local", "dask://nohost", "tcp://a:1"])
def test_an_unknown_executor_is_one_clear_error(text):
    with pytest.raises(BadInput, match="executor"):
        parse_executor(text)


def test_executor_precedence_is_flag_then_environment_then_file(tmp_path, monkeypatch):
    """Flag > IMGNET_EXECUTOR > imgnet.toml > local."""
    workspace = Workspace.init(tmp_path / "ws")
    monkeypatch.delenv("IMGNET_EXECUTOR", raising=False)
    assert workspace.executor == "local"
    (tmp_path / "ws" / "imgnet.toml").write_text((tmp_path / "ws" / "imgnet.toml").read_text()
                                                  + 'executor = "dask-local:2"\n')
    assert Workspace.open(tmp_path / "ws").executor == "dask-local:2"
    monkeypatch.setenv("IMGNET_EXECUTOR", "local")
    assert Workspace.open(tmp_path / "ws").executor == "local"
    assert isinstance(open_executor(FetchSettings(executor="local").executor), LocalExecutor)
    with pytest.raises(BadInput, match="unknown executor"):
        FetchSettings(executor="spark")


def test_gather_executor_flag_is_checked_before_anything_runs(runner, workspace):
    from imgnet_build.cli.main import cli

    result = runner.invoke(cli, ["-w", str(workspace.root), "gather", "--source", "urls:x.csv",
                                 "--executor", "dask-local:0"])
    assert (result.exit_code, result.output) == (
        1, "Error: executor 'dask-local:0': dask-local needs 1 to 512 worker processes\n")


def broken_and_good(server: LoopbackServer, count: int) -> dict[str, list[str]]:
    """`count` URLs over two categories: distinct JPEGs, repeated files, and about 6% broken."""
    urls: dict[str, list[str]] = {"n00000001": [], "n00000002": []}
    for i in range(count):
        path = f"/img/{i}.jpg"
        if i % 50 == 7:
            server.add(path, b"not found", status=404, content_type="text/plain")
        elif i % 50 == 19:
            server.add(path, jpeg_bytes(48, 40, seed=i)[:200])  # truncated
        elif i % 50 == 31:
            server.add(path, b"<!DOCTYPE html><html><body>moved</body></html>", content_type="image/jpeg")
        else:
            server.add(path, jpeg_bytes(48, 40, seed=i % 600))  # seeds repeat: the same file at two URLs
        urls["n00000001" if i % 3 else "n00000002"].append(server.url(path))
    return urls


@pytest.mark.postgres
def test_two_dask_workers_one_killed_mid_run_give_what_a_local_run_gives(postgres_url, s3_endpoint, tmp_path,
                                                                         monkeypatch):
    """dask-local:2, PostgreSQL, S3 on loopback; SIGKILL to one worker while shards are in flight. Its shards run
    again on the other worker (or its replacement) and every result is committed once: the same rows, statuses,
    reasons, images and blobs as a local run, no duplicate rows or blobs."""
    monkeypatch.setenv("IMGNET_S3_ENDPOINT_URL", s3_endpoint)  # the workers inherit it
    server = LoopbackServer()
    try:
        urls = broken_and_good(server, 1000)
        local = Workspace.init(tmp_path / "local", blobs="s3://imgs/local")
        distributed = Workspace.init(tmp_path / "dask", database=postgres_url, blobs="s3://imgs/dask")
        for workspace in (local, distributed):
            add_candidates(workspace, urls)

        local_summary = fetch_pending(local, FAST, executor="local")

        executor = DaskExecutor(parse_executor("dask-local:2"))
        try:
            victim = sorted(executor.worker_pids().values())[0]
            killed: list[int] = []

            def progress(done: int, total: int) -> None:
                if not killed and total and done >= total // 4:
                    os.kill(victim, 0)  # raises if the worker were already gone
                    os.kill(victim, signal.SIGKILL)
                    killed.append(done)

            summary = fetch_pending(distributed, FAST, progress=progress, executor=executor)
            survivors = set(executor.worker_pids().values())
        finally:
            executor.close()
    finally:
        server.close()

    assert killed and killed[0] < 1000 and victim not in survivors  # killed mid-run, while it was alive
    assert (summary.ok, summary.failed, summary.skipped) == (local_summary.ok, local_summary.failed,
                                                             local_summary.skipped)
    assert summary.failed == 60 and summary.ok == 940
    local_rows, local_images, local_count = results(local)
    dask_rows, dask_images, dask_count = results(distributed)
    assert dask_count == local_count == 1000  # no duplicate rows
    assert dask_rows == local_rows
    assert dask_images == local_images
    keys = s3_keys(s3_endpoint, "dask")
    assert len(keys) == len(set(keys)) == len(dask_images)  # one blob per image, none left over
    assert sorted(keys) == sorted(s3_keys(s3_endpoint, "local"))
    with distributed.session() as session:
        assert not session.scalar(select(func.count()).select_from(Candidate).where(
            Candidate.lease_owner.is_not(None)))
    local.close()
    distributed.close()


def test_per_host_limit_holds_across_the_cluster(tmp_path):
    """per_host 3 on two workers of eight download threads each: never more than 3 requests at the host at once."""
    server = LoopbackServer()
    lock, state = threading.Lock(), {"now": 0, "most": 0}
    body = jpeg_bytes(40, 40)

    def slow(request) -> None:
        with lock:
            state["now"] += 1
            state["most"] = max(state["most"], state["now"])
        try:
            time.sleep(0.05)
            request.send_response(200)
            request.send_header("Content-Type", "image/jpeg")
            request.send_header("Content-Length", str(len(body)))
            request.end_headers()
            request.wfile.write(body)
        finally:
            with lock:
                state["now"] -= 1

    try:
        workspace = Workspace.init(tmp_path / "ws")
        add_candidates(workspace, {"n00000001": [server.route(f"/{i}.jpg", slow) for i in range(60)]})
        summary = fetch_pending(workspace, FetchSettings(workers=8, per_host=3, host_rate=0, allow_loopback=True),
                                executor="dask-local:2")
    finally:
        server.close()
    assert summary.ok == 60
    assert 1 < state["most"] <= 3
    workspace.close()


def test_dedup_hashes_on_a_dask_worker_equal_those_made_here(s3_endpoint, tmp_path, monkeypatch):
    """dedup with executor dask-local:1 and an S3 store: the worker reads the blobs from S3 itself and its
    pHashes and dHashes are the ones this process computes; a rerun with nothing to hash starts no cluster."""
    from imgnet_build import dedup

    monkeypatch.setenv("IMGNET_S3_ENDPOINT_URL", s3_endpoint)
    server = LoopbackServer()
    try:
        urls = {"n00000001": [server.add(f"/{i}.jpg", jpeg_bytes(64, 48, seed=i)) for i in range(12)]}
        urls["n00000001"].append(server.add("/same.jpg", jpeg_bytes(64, 48, seed=3)))
        workspace = Workspace.init(tmp_path / "ws", blobs="s3://imgs/dedup")
        add_candidates(workspace, urls)
        assert fetch_pending(workspace, FAST).ok == 13
    finally:
        server.close()
    monkeypatch.setenv("IMGNET_EXECUTOR", "dask-local:1")
    report = dedup.run(workspace)
    assert report.hashed == 12
    with workspace.session() as session:
        stored = {row.blob_key: (row.phash, row.dhash) for row in session.scalars(select(Image))}
    for key, (phash, dhash) in stored.items():
        here = dedup.hash_image(workspace.blob_store.get(key))
        assert (phash % 2**64, dhash % 2**64) == (here[0], here[1])
    monkeypatch.setenv("IMGNET_EXECUTOR", "dask-local:not-a-number")  # would fail if a cluster were started
    assert dedup.run(workspace).hashed == 0
    workspace.close()
