"""Known answers for controls: `imgnet label gold FILE.csv` with `url|sha256, wnid, answer`.

The file is read as a whole before anything is stored: UTF-8 (a leading byte order mark,
as Excel writes, is dropped), one row per line of at most `MAX_LINE` bytes, so a binary
file or a huge line is one clear error read in bounded memory. Two rows that give one
(image, category) pair different answers are refused with both line numbers; a later
file replaces the answers an earlier one gave, and the counts say how many it replaced.
"""

from __future__ import annotations

import csv
import dataclasses
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from sqlalchemy import select
from sqlalchemy.orm import Session

from imgnet_build.errors import BadInput
from imgnet_build.sources.urls import parse_truth
from imgnet_build.stage import Document
from imgnet_build.store import Candidate, Category, Gold, Image
from imgnet_build.workspace import Workspace

__all__ = ["load_gold", "GoldLoaded", "MAX_LINE"]

MAX_LINE = 64 * 1024  # bytes; a gold row is a URL or hash, a wnid and an answer
BOM = b"\xef\xbb\xbf"


@dataclasses.dataclass(frozen=True)
class GoldLoaded(Document):
    """`stored`: answers in the file that name a known pair; `replaced` of them changed an answer an
    earlier file gave; rows naming no image or no category of the workspace were counted, not stored."""

    stored: int
    replaced: int
    unknown_image: int
    unknown_category: int

    def as_dict(self) -> dict[str, int]:
        return dataclasses.asdict(self)

    def summary(self) -> str:
        replaced = f" ({self.replaced} replace earlier answers)" if self.replaced else ""
        return (f"label gold: {self.stored} known answers stored{replaced}; {self.unknown_image} rows "
                f"name no image of this workspace, {self.unknown_category} no category")


def load_gold(workspace: Workspace, path: str | Path) -> GoldLoaded:
    """Store the file's known answers; rows whose image or category is not in the workspace
    are counted, not stored (see `GoldLoaded`)."""
    path = Path(path)
    try:
        handle = path.open("rb")
    except OSError as exc:
        raise BadInput(f"cannot read {path}: {exc.strerror}") from exc
    counts = {"stored": 0, "replaced": 0, "unknown_image": 0, "unknown_category": 0}
    with handle, workspace.session() as session:
        reader = csv.DictReader(_lines(handle, path))
        try:
            fields = set(reader.fieldnames or ())
        except csv.Error as exc:
            raise BadInput(f"{path}, line 1: unreadable header ({exc})") from None
        if not {"wnid", "answer"} <= fields or not fields & {"url", "sha256"}:
            raise BadInput(f"{path}: needs the columns url or sha256, wnid and answer; found {sorted(fields)}")
        categories = dict(session.execute(select(Category.wnid, Category.id)).all())
        answers: dict[tuple[str, int], tuple[bool, int]] = {}  # (sha256, category id) -> (answer, line)
        conflicts: list[str] = []
        for line, row in _rows(reader, path):
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
            elif (sha, category) in answers and answers[sha, category][0] != answer:
                conflicts.append(f"lines {answers[sha, category][1]} and {line}")
            else:
                answers.setdefault((sha, category), (answer, line))
        if conflicts:
            more = f" (and {len(conflicts) - 3} more)" if len(conflicts) > 3 else ""
            raise BadInput(f"{path}: {', '.join(conflicts[:3])}{more} give one image and category different "
                           "answers; keep one answer per pair and load the file again (nothing was stored)")
        counts["replaced"] = _store(session, {key: answer for key, (answer, _) in answers.items()})
        counts["stored"] = len(answers)
    return GoldLoaded(**counts)


def _store(session: Session, answers: dict[tuple[str, int], bool]) -> int:
    """Insert new answers and replace changed ones; returns how many were replaced."""
    known = {(row.image_sha256, row.category_id): row for row in session.scalars(
        select(Gold).where(Gold.image_sha256.in_({sha for sha, _ in answers})))} if answers else {}
    replaced = 0
    for (sha, category), answer in answers.items():
        row = known.get((sha, category))
        if row is None:
            session.add(Gold(image_sha256=sha, category_id=category, answer=answer))
        elif row.answer != answer:
            row.answer = answer
            replaced += 1
    return replaced


def _lines(handle: IO[bytes], path: Path) -> Iterator[str]:
    """The file's lines as text: UTF-8 with the BOM dropped, each at most MAX_LINE bytes (BadInput otherwise)."""
    number = 0
    while raw := handle.readline(MAX_LINE + 1):
        number += 1
        if len(raw) > MAX_LINE and not raw.endswith(b"\n"):
            raise BadInput(f"{path}, line {number}: longer than {MAX_LINE // 1024} KiB; a gold file is a CSV "
                           "text with one short row per line (url or sha256, wnid, answer)")
        if number == 1 and raw.startswith(BOM):
            raw = raw[len(BOM):]
        if b"\x00" in raw:
            raise BadInput(f"{path}, line {number}: a NUL byte; this is not a CSV text file")
        try:
            yield raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise BadInput(f"{path}, line {number}: not UTF-8 (byte 0x{raw[exc.start]:02x} at column "
                           f"{exc.start + 1}); save the file as UTF-8") from None


def _rows(reader: csv.DictReader, path: Path) -> Iterator[tuple[int, dict]]:
    while True:
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            raise BadInput(f"{path}, line {reader.line_num}: unreadable row ({exc})") from None
        yield reader.line_num, row


def _sha_of_url(session: Session, url: str) -> str | None:
    return session.scalar(select(Candidate.image_sha256).where(Candidate.url == url,
                                                               Candidate.image_sha256.is_not(None)).limit(1))
