"""Known answers for controls: `imgnet label gold FILE.csv` with `url|sha256, wnid, answer`."""

from __future__ import annotations

import csv
from pathlib import Path

from sqlalchemy import select

from imgnet_build.dbutil import insert_ignore
from imgnet_build.errors import BadInput
from imgnet_build.sources.urls import parse_truth
from imgnet_build.store import Candidate, Category, Gold, Image

__all__ = ["load_gold"]


def load_gold(workspace, path: str | Path) -> dict[str, int]:
    """Store the file's known answers; rows whose image or category is not in the workspace
    are counted, not stored. Returns {"stored", "unknown_image", "unknown_category"}."""
    path = Path(path)
    try:
        handle = path.open(newline="", encoding="utf-8")
    except OSError as exc:
        raise BadInput(f"cannot read {path}: {exc.strerror}") from exc
    counts = {"stored": 0, "unknown_image": 0, "unknown_category": 0}
    with handle, workspace.session() as session:
        reader = csv.DictReader(handle)
        fields = set(reader.fieldnames or ())
        if not {"wnid", "answer"} <= fields or not fields & {"url", "sha256"}:
            raise BadInput(f"{path}: needs the columns url or sha256, wnid and answer; found {sorted(fields)}")
        categories = dict(session.execute(select(Category.wnid, Category.id)).all())
        rows = []
        for line, row in enumerate(reader, start=2):
            try:
                answer = parse_truth(row.get("answer"))
            except ValueError as exc:
                raise BadInput(f"{path}:{line}: {exc}") from exc
            if answer is None:
                raise BadInput(f"{path}:{line}: answer is empty")
            category = categories.get((row.get("wnid") or "").strip())
            sha = (row.get("sha256") or "").strip().lower() or _sha_of_url(session, (row.get("url") or "").strip())
            if category is None:
                counts["unknown_category"] += 1
            elif not sha or session.get(Image, sha) is None:
                counts["unknown_image"] += 1
            else:
                rows.append({"image_sha256": sha, "category_id": category, "answer": answer})
        insert_ignore(session, Gold, rows)
        counts["stored"] = len(rows)
    return counts


def _sha_of_url(session, url: str) -> str | None:
    return session.scalar(select(Candidate.image_sha256).where(Candidate.url == url,
                                                               Candidate.image_sha256.is_not(None)).limit(1))
