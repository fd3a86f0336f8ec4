"""The contact sheet: small JPEG thumbnails per category, accepted beside rejected.

Categories are made one at a time while the page is written (`ContactSheet` is an
iterator), so memory holds one category's thumbnails, and the count per category and
the number of categories are capped so the file stays small (about 3 KB a thumbnail).
"""

from __future__ import annotations

import base64
import dataclasses
import io
from collections.abc import Iterator

from PIL import Image as PILImage
from PIL.Image import Transpose
from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from imgnet_build.store import Candidate, CandidateStatus, Category, Cluster, Image, Label

__all__ = ["ContactSheet", "SheetCategory", "Thumbnail", "make_thumbnail"]

ORIENTATION = 0x0112  # the EXIF tag; its values turn the stored pixels upright (as ImageOps.exif_transpose)
TURNS = {2: Transpose.FLIP_LEFT_RIGHT, 3: Transpose.ROTATE_180, 4: Transpose.FLIP_TOP_BOTTOM, 5: Transpose.TRANSPOSE,
         6: Transpose.ROTATE_270, 7: Transpose.TRANSVERSE, 8: Transpose.ROTATE_90}


def make_thumbnail(data: bytes, size: int, quality: int = 70) -> tuple[str, int, int]:
    """A JPEG data URI of the picture fitted in size x size, upright (EXIF orientation), and its size.
    The small picture is turned, not the decoded one (ImageOps.exif_transpose copies it whole)."""
    with PILImage.open(io.BytesIO(data)) as image:
        orientation = image.getexif().get(ORIENTATION, 1)
        image.draft("RGB", (size * 2, size * 2))  # JPEG: decode at a fraction of the size
        image.thumbnail((size, size))  # fits the square box either way up
        rgb = image.convert("RGB")
    if orientation in TURNS:
        rgb = rgb.transpose(TURNS[orientation])
    buffer = io.BytesIO()
    rgb.save(buffer, "JPEG", quality=quality, optimize=True)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii"), rgb.width, rgb.height


@dataclasses.dataclass
class Thumbnail:
    src: str
    width: int
    height: int
    caption: str  # e.g. "0.99 · 3-0"
    url: str  # where a candidate of it came from (shown as text, never as a link)
    truth: bool | None  # the candidates' known answer for this category, when there is one


@dataclasses.dataclass
class SheetCategory:
    wnid: str
    name: str
    accepted: list[Thumbnail]
    rejected: list[Thumbnail]
    gathered: list[Thumbnail]  # only for a category without labels yet
    accepted_total: int
    rejected_total: int


class ContactSheet:
    """Iterates over SheetCategory for the given categories; counts what it made."""

    def __init__(self, session: Session, blob_store, rows: list, per_side: int, size: int):
        self.session, self.blob_store = session, blob_store
        self.rows, self.per_side, self.size = rows, per_side, size
        self.thumbnails = 0
        self.unreadable = 0  # blobs missing or not decodable: left out, counted
        self.bytes = 0

    def __len__(self) -> int:
        return len(self.rows)

    def __iter__(self) -> Iterator[SheetCategory]:
        ids = dict(self.session.execute(select(Category.wnid, Category.id)
                                        .where(Category.wnid.in_([r.wnid for r in self.rows]))).all())
        for row in self.rows:
            category_id = ids[row.wnid]
            accepted = self._labelled(category_id, "accepted")
            rejected = self._labelled(category_id, "rejected")
            gathered = [] if row.accepted or row.rejected else self._gathered(category_id)
            yield SheetCategory(row.wnid, row.name, accepted, rejected, gathered, row.accepted, row.rejected)

    def _labelled(self, category_id: int, status: str) -> list[Thumbnail]:
        order = Label.confidence.desc() if status == "accepted" else Label.confidence.asc()
        labels = self.session.execute(
            select(Label.cluster_id, Cluster.representative, Label.confidence, Label.yes_votes, Label.no_votes)
            .join(Cluster, Cluster.id == Label.cluster_id)
            .where(Label.category_id == category_id, Label.status == status)
            .order_by(order, Label.cluster_id).limit(self.per_side)).all()
        if not labels:
            return []
        keys = dict(self.session.execute(select(Image.sha256, Image.blob_key)
                                         .where(Image.sha256.in_([label.representative for label in labels]))).all())
        origins: dict[int | None, list] = {}
        for cluster_id, truth, url in self.session.execute(
                select(Image.cluster_id, Candidate.truth, Candidate.url)
                .join(Candidate, Candidate.image_sha256 == Image.sha256)
                .where(Image.cluster_id.in_([label.cluster_id for label in labels]),
                       Candidate.category_id == category_id)
                .order_by(Candidate.id)):
            origins.setdefault(cluster_id, []).append((truth, url))
        thumbnails = []
        for label in labels:
            known = [truth for truth, _ in origins.get(label.cluster_id, []) if truth is not None]
            truth = None if not known or known.count(True) * 2 == len(known) else known.count(True) * 2 > len(known)
            url = next((url for _, url in origins.get(label.cluster_id, [])), "")
            caption = f"{label.confidence:.2f} · {label.yes_votes}-{label.no_votes}"
            thumbnail = self._thumbnail(keys.get(label.representative), caption, url, truth)
            if thumbnail:
                thumbnails.append(thumbnail)
        return thumbnails

    def _gathered(self, category_id: int) -> list[Thumbnail]:
        rows = self.session.execute(
            select(Image.sha256, Image.blob_key, Candidate.url, Candidate.truth)
            .join(Candidate, Candidate.image_sha256 == Image.sha256)
            .outerjoin(Cluster, Cluster.id == Image.cluster_id)
            .where(Candidate.category_id == category_id, Candidate.status == CandidateStatus.OK,
                   or_(Cluster.id.is_(None), Cluster.representative == Image.sha256))  # one image per cluster
            .order_by(Candidate.id).limit(self.per_side * 3)).all()
        seen: set[str] = set()
        thumbnails: list[Thumbnail] = []
        for row in rows:
            if row.sha256 in seen or len(thumbnails) == self.per_side:
                continue
            seen.add(row.sha256)
            thumbnail = self._thumbnail(row.blob_key, "not labelled yet", row.url, row.truth)
            if thumbnail:
                thumbnails.append(thumbnail)
        return thumbnails

    def _thumbnail(self, blob_key: str | None, caption: str, url: str, truth: bool | None) -> Thumbnail | None:
        try:
            src, width, height = make_thumbnail(self.blob_store.get(blob_key), self.size)
        except Exception:  # one picture's problem (blob gone, undecodable) must not stop the report
            self.unreadable += 1
            return None
        self.thumbnails += 1
        self.bytes += len(src)
        return Thumbnail(src, width, height, caption, url, truth)
