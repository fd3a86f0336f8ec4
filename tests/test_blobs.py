"""Blob stores: the local folder, and S3 against moto's server over real HTTP on 127.0.0.1."""

from __future__ import annotations

import hashlib
import os

import boto3
import pytest
from loopback import LoopbackServer, jpeg_bytes
from sqlalchemy import select

from imgnet_build.blobs import LocalBlobStore, S3BlobStore, blob_key, open_blob_store
from imgnet_build.cli.main import cli
from imgnet_build.errors import BadInput
from imgnet_build.fetch import BlobStoreFailed, FetchSettings, fetch_pending
from imgnet_build.store import Candidate, Category, Image
from imgnet_build.workspace import Workspace

DATA = b"\xff\xd8 not really a jpeg"
SHA = hashlib.sha256(DATA).hexdigest()


def test_blob_key_layout():
    assert blob_key(SHA, ".JPG") == f"{SHA[:2]}/{SHA[2:4]}/{SHA}.jpg"


def test_local_store_round_trip_and_idempotent_put(tmp_path):
    store = open_blob_store(str(tmp_path / "blobs"))
    key = blob_key(SHA, "jpg")
    assert isinstance(store, LocalBlobStore) and not store.exists(key)
    store.put(key, DATA)
    store.put(key, b"something else")  # content-addressed: the first write stands
    assert store.exists(key) and store.get(key) == DATA
    assert store.local_path(key) == tmp_path / "blobs" / key


def test_blobs_are_readable_as_the_umask_says(tmp_path):
    # Blobs were made 0600 (mkstemp's mode), and an export hard-links them: a training job
    # running as another user could not read the dataset (test_export checks the dataset too).
    old = os.umask(0o022)
    try:
        LocalBlobStore(tmp_path / "blobs").put("ab/cd/abcd.jpg", b"picture")
    finally:
        os.umask(old)
    assert (tmp_path / "blobs" / "ab/cd/abcd.jpg").stat().st_mode & 0o777 == 0o644


def test_local_store_leaves_nothing_behind_when_a_write_fails(tmp_path, monkeypatch):
    store = LocalBlobStore(tmp_path / "blobs")

    def broken_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError):
        store.put(blob_key(SHA, "jpg"), DATA)
    assert [path for path in (tmp_path / "blobs").rglob("*") if path.is_file()] == []


def test_unsupported_locations_are_refused():
    with pytest.raises(BadInput, match="use a folder path or s3://bucket/prefix"):
        open_blob_store("gs://bucket/x")
    with pytest.raises(BadInput, match="names no bucket"):
        open_blob_store("s3://")


def test_s3_store_round_trip(s3_endpoint):
    store = open_blob_store("s3://imgs/run1/", endpoint_url=s3_endpoint)
    key = blob_key(SHA, "jpg")
    assert isinstance(store, S3BlobStore) and not store.exists(key)
    store.put(key, DATA)
    assert store.exists(key) and store.get(key) == DATA and store.local_path(key) is None
    listed = boto3.client("s3", endpoint_url=s3_endpoint).list_objects_v2(Bucket="imgs")["Contents"]
    assert [item["Key"] for item in listed] == [f"run1/{key}"]


def _one_candidate(workspace, url: str) -> None:
    with workspace.session() as session:
        category = Category(wnid="n02084071", synset="dog.n.01", name="dog", lemmas=["dog"], gloss="",
                            lexname="noun.animal", depth=0)
        session.add(category)
        session.flush()
        session.add(Candidate(category_id=category.id, source="urls", url=url))


def test_gather_into_an_s3_workspace_from_the_cli(s3_endpoint, tmp_path, monkeypatch, runner):
    monkeypatch.setenv("IMGNET_S3_ENDPOINT_URL", s3_endpoint)
    root = tmp_path / "ws"
    assert runner.invoke(cli, ["init", str(root), "--blobs", "s3://imgs/ws"]).exit_code == 0
    server = LoopbackServer()
    try:
        body = jpeg_bytes(40, 40)
        workspace = Workspace.open(root)
        _one_candidate(workspace, server.add("/a.jpg", body))
        listing = tmp_path / "list.csv"
        listing.write_text(f"url,wnid\n{server.url('/a.jpg')},n02084071\n")
        result = runner.invoke(cli, ["-w", str(root), "gather", "--source", f"urls:{listing}", "--allow-loopback"])
        with workspace.session() as session:
            image = session.scalars(select(Image)).one()
        workspace.close()
    finally:
        server.close()
    assert result.exit_code == 0 and result.stdout.startswith("gathered: 1 ok, 0 failed"), result.output
    s3 = boto3.client("s3", endpoint_url=s3_endpoint)
    assert s3.get_object(Bucket="imgs", Key=f"ws/{image.blob_key}")["Body"].read() == body


def test_a_broken_blob_store_stops_the_run_and_blames_no_candidate(s3_endpoint, tmp_path, monkeypatch):
    monkeypatch.setenv("IMGNET_S3_ENDPOINT_URL", s3_endpoint)
    workspace = Workspace.init(tmp_path / "ws", blobs="s3://no-such-bucket/ws")
    server = LoopbackServer()
    try:
        _one_candidate(workspace, server.add("/a.jpg", jpeg_bytes(40, 40)))
        with pytest.raises(BlobStoreFailed, match=r"cannot write to the blob store s3://no-such-bucket/ws: .*NoSuchBucket"):
            fetch_pending(workspace, FetchSettings(allow_loopback=True, workers=2))
        with workspace.session() as session:
            assert session.scalars(select(Candidate.status)).one() == "pending"
    finally:
        server.close()
        workspace.close()


def test_a_missing_s3_blob_counts_as_unreadable_in_dedup(s3_endpoint, tmp_path, monkeypatch):
    """Before: botocore's NoSuchKey crashed `imgnet dedup`; a missing local blob already counted as unreadable."""
    from imgnet_build import dedup

    monkeypatch.setenv("IMGNET_S3_ENDPOINT_URL", s3_endpoint)
    workspace = Workspace.init(tmp_path / "ws", blobs="s3://imgs/gone")
    server = LoopbackServer()
    try:
        _one_candidate(workspace, server.add("/a.jpg", jpeg_bytes(40, 40)))
        assert fetch_pending(workspace, FetchSettings(allow_loopback=True, workers=2)).ok == 1
        with workspace.session() as session:
            key = session.scalars(select(Image.blob_key)).one()
        boto3.client("s3", endpoint_url=s3_endpoint).delete_object(Bucket="imgs", Key=f"gone/{key}")
        with pytest.raises(FileNotFoundError):
            workspace.blob_store.get(key)
        assert dedup.run(workspace).unreadable == 1
    finally:
        server.close()
        workspace.close()
