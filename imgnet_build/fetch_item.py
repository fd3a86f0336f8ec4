"""One candidate, start to end: bytes (HTTP or disk), validation, SHA-256, the blob. No database.

    outcome = fetch_item(item, Tools(settings, blob_store))

The same function runs in a thread of the local executor and on a Dask worker; what it
returns is small (a status, a reason, an image record) and is written to the database by
the run that claimed the row. The blob is written here, straight to the shared store,
under its content address, so doing an item twice (a worker that died mid-shard) writes
the same key with the same bytes.
"""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

from imgnet_build.blobs import BlobStore, blob_key
from imgnet_build.claims import Item
from imgnet_build.download import Downloader, ItemFailed
from imgnet_build.errors import ImgnetError
from imgnet_build.netguard import HostLimiter, deadline
from imgnet_build.sources.dirs import local_path
from imgnet_build.store import CandidateStatus
from imgnet_build.validate import DecodeBudget, ImageRejected, check_image

if TYPE_CHECKING:
    from imgnet_build.fetch import FetchSettings

__all__ = ["Outcome", "Tools", "fetch_item", "BlobStoreFailed"]

OK, FAILED = CandidateStatus.OK, CandidateStatus.FAILED


class BlobStoreFailed(ImgnetError):
    "Writing to the blob store failed; the run stops (no candidate is blamed for it)"


@dataclasses.dataclass
class Outcome:
    """How one item ended: status, reason, HTTP attempts, and the image record when ok."""

    status: str
    reason: str | None = None
    attempts: int = 0
    image: dict[str, Any] | None = None  # an Image row (or only its sha256, for a known file)


class Tools:
    """What `fetch_item` works with: the settings, a downloader (politeness, pooled connections), the decode
    budget and the blob store. One per run locally; one per shard on a Dask worker."""

    def __init__(self, settings: FetchSettings, blobs: BlobStore, hosts: HostLimiter | None = None,
                 budget: DecodeBudget | None = None) -> None:
        self.settings, self.blobs = settings, blobs
        self.downloader = Downloader(settings, hosts)
        self.budget = budget or DecodeBudget(settings.decode_memory)

    def abandon(self) -> None:
        """Stop: waits and requests in flight end at once (Ctrl-C)."""
        self.downloader.abandon()
        self.budget.cancel()


def fetch_item(item: Item, tools: Tools) -> Outcome:
    """Fetch, validate, hash and store one item. Every failure of the item ends here as an outcome;
    only a blob store that cannot be written raises (`BlobStoreFailed`), since it is no item's fault."""
    settings, attempts = tools.settings, 1
    try:
        with deadline(settings.deadline, tools.downloader.stopping):
            if item.source in settings.local_sources:
                data = _read_local(item.url, settings.max_bytes)
            else:
                data, attempts = tools.downloader.get(item.url)
        info = check_image(data, settings.min_side, settings.max_pixels, tools.budget)
    except ItemFailed as exc:
        return Outcome(exc.status, exc.reason, exc.attempts)
    except ImageRejected as exc:
        return Outcome(FAILED, str(exc), attempts)
    except Exception as exc:  # the per-item boundary: a bug in one item must not stop the run
        return Outcome(FAILED, f"internal error: {type(exc).__name__}: {exc}"[:300], attempts)
    sha256 = hashlib.sha256(data).hexdigest()
    key = blob_key(sha256, info.ext)
    try:
        tools.blobs.put(key, data)
    except Exception as exc:
        raise BlobStoreFailed(f"cannot write to the blob store {tools.blobs.location}: {exc}") from exc
    image = {"sha256": sha256, "width": info.width, "height": info.height, "format": info.format,
             "bytes": len(data), "blob_key": key}
    return Outcome(OK, None, attempts, image)


def _read_local(url: str, max_bytes: int) -> bytes:
    file = Path(local_path(url))
    if not file.is_file():
        raise ItemFailed(FAILED, "no such file")
    size = file.stat().st_size
    if size > max_bytes:
        raise ItemFailed(FAILED, f"too large: {size} bytes (cap {max_bytes})")
    return file.read_bytes()
