"""Content-addressed image storage: a local folder, or S3 (any S3-compatible endpoint).

Keys look like `ab/cd/<sha256>.<ext>`. A blob is written whole or not at all: the local
store writes a temporary file and renames it; S3's PutObject is atomic.
"""

from __future__ import annotations

import contextlib
import errno
import itertools
import os
import secrets
from pathlib import Path
from typing import Protocol

from imgnet_build.errors import BadInput

__all__ = ["BlobStore", "LocalBlobStore", "S3BlobStore", "open_blob_store", "blob_key", "import_boto3"]


def import_boto3(needed_for: str, extra: str):
    """boto3, or BadInput naming the extra that installs it (the core runs without it)."""
    try:
        import boto3
    except ImportError as exc:
        raise BadInput(f"{needed_for} needs boto3: pip install 'imgnet-build[{extra}]'") from exc
    return boto3


def blob_key(sha256: str, ext: str) -> str:
    return f"{sha256[:2]}/{sha256[2:4]}/{sha256}.{ext.lstrip('.').lower()}"


class BlobStore(Protocol):
    location: str

    def put(self, key: str, data: bytes) -> None: ...
    def get(self, key: str) -> bytes: ...
    def exists(self, key: str) -> bool: ...
    def local_path(self, key: str) -> Path | None:
        """A path on this machine for the blob, when the store has one."""
        ...


class LocalBlobStore:
    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:  # a file in the way, no permission
            raise BadInput(f"cannot use {self.root} as the blob store folder: {exc.strerror or exc}; "
                           "set blobs in imgnet.toml to a folder") from exc
        self.location = str(self.root)
        self._root = str(self.root)
        self._folders: set[str] = set()  # folders known to exist (at most 65,536: ab/cd)
        self._token = secrets.token_hex(6)  # temporary names unique across processes and machines
        self._serial = itertools.count()

    def _path(self, key: str) -> Path:
        return self.root / key

    def put(self, key: str, data: bytes) -> None:
        """Write a temporary file beside the blob and rename it into place (plain `os` calls on strings, the
        folders made once per store: this runs once per downloaded image, beside the downloads)."""
        path = os.path.join(self._root, key)
        if os.path.exists(path):
            return
        folder = os.path.dirname(path)
        if folder not in self._folders:
            os.makedirs(folder, exist_ok=True)
            self._folders.add(folder)
        tmp = f"{folder}/.tmp-{self._token}-{next(self._serial)}"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666)
        except FileNotFoundError:  # the folder went away since it was made: make it again
            self._folders.discard(folder)
            os.makedirs(folder, exist_ok=True)
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666)
        try:
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view):]
            finally:
                os.close(fd)
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise

    def get(self, key: str) -> bytes:
        return self._path(key).read_bytes()

    def exists(self, key: str) -> bool:
        return self._path(key).exists()

    def local_path(self, key: str) -> Path | None:
        return self._path(key)


class S3BlobStore:
    def __init__(self, url: str, endpoint_url: str | None = None):
        boto3 = import_boto3("an s3:// blob store", "s3")
        bucket, _, prefix = url[len("s3://"):].partition("/")
        if not bucket:
            raise BadInput(f"blob store {url!r} names no bucket; use s3://bucket/prefix")
        self.bucket, self.prefix, self.location = bucket, prefix.strip("/"), url
        endpoint_url = endpoint_url or os.environ.get("IMGNET_S3_ENDPOINT_URL") or None
        self.endpoint_url = endpoint_url  # what a worker elsewhere needs to open the same store
        self.client = boto3.client("s3", endpoint_url=endpoint_url)

    def _key(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    def put(self, key: str, data: bytes) -> None:
        self.client.put_object(Bucket=self.bucket, Key=self._key(key), Body=data)

    def get(self, key: str) -> bytes:
        """The blob's bytes; FileNotFoundError when it is missing (as for a local store)."""
        from botocore.exceptions import ClientError

        try:
            return self.client.get_object(Bucket=self.bucket, Key=self._key(key))["Body"].read()
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                raise FileNotFoundError(errno.ENOENT, "no such blob", f"{self.location}/{key}") from exc
            raise

    def exists(self, key: str) -> bool:
        from botocore.exceptions import ClientError

        try:
            self.client.head_object(Bucket=self.bucket, Key=self._key(key))
            return True
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return False
            raise

    def local_path(self, key: str) -> Path | None:
        return None


def open_blob_store(location: str, endpoint_url: str | None = None) -> BlobStore:
    """`s3://bucket/prefix` gives an S3 store; anything else is a local folder."""
    if location.startswith("s3://"):
        return S3BlobStore(location, endpoint_url=endpoint_url)
    if "://" in location:
        raise BadInput(f"unsupported blob store {location!r}; use a folder path or s3://bucket/prefix")
    return LocalBlobStore(location)
