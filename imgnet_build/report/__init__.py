"""The HTML report: one self-contained file a person can open and read.

    summary = write_report(workspace, "report.html")     # or: imgnet report -o report.html
    print(summary.summary())

The page holds the category tree with counts, images per category and split, candidates
per source and why they failed, duplicates, votes per pair, label precision on controls
and against candidates' known answers, worker quality, cost, hard-to-illustrate categories
and a contact sheet of thumbnails (accepted beside rejected) per category.

Self-contained: charts (matplotlib) and thumbnails (Pillow) are embedded as data: URIs,
and a Content-Security-Policy lets the page load nothing else and run no script. Every
value from the data is HTML-escaped (Jinja2 autoescape). Numbers come from aggregate
queries (`facts.py`); thumbnails are made one category at a time while the page is
written, with a cap per category and on the number of categories, so memory and file
size stay bounded however large the workspace is. A regular file is written to a temporary
name and renamed, so an interrupted run leaves the previous report whole; a FIFO or a
device (`-o /dev/stdout`) is written in place, never replaced.

Measured (benchmarks/bench_report.py, 60 categories x 40 labeled 480x360 JPEGs, 2 shared
cores): a 2.5 MB page (958 thumbnails of 2.2 kB: 83% of it) in 3.1 s, with 5 MB peak
Python memory (tracemalloc; Pillow decodes one picture at a time outside it).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
import stat
import tempfile
from collections.abc import Iterable
from decimal import Decimal
from functools import cache
from importlib import resources
from pathlib import Path
from typing import BinaryIO, cast

import jinja2

from imgnet_build import __version__
from imgnet_build.errors import BadInput
from imgnet_build.report.facts import MAX_TREE_ROWS, Facts, gather_facts
from imgnet_build.report.thumbnails import ContactSheet
from imgnet_build.workspace import Workspace

__all__ = ["write_report", "ReportOptions", "ReportSummary"]

STATUSES = ("ok", "failed", "skipped", "pending")


@dataclasses.dataclass(frozen=True)
class ReportOptions:
    """How much of the pictures goes into the page."""

    sheet_categories: int = 40  # categories on the contact sheet, in tree order; the rest is counted
    thumbnails_per_side: int = 12  # accepted, and as many rejected, per category
    thumbnail_size: int = 96  # pixels, longest side


@dataclasses.dataclass(frozen=True)
class ReportSummary:
    """What `write_report` wrote, with the headline figures."""

    path: str
    bytes: int
    categories: int
    images: int
    accepted: int
    rejected: int
    undecided: int
    truth_labels: int  # labels with a known answer from their candidates
    precision: float | None  # of accepted labels against the truth
    recall: float | None
    control_accuracy: float | None  # of votes on control items
    cost: str  # decimal amount in the backends' currency (USD for MTurk)
    thumbnails: int
    unreadable_images: int  # pictures the contact sheet could not show

    def summary(self) -> str:
        line = (f"report: {self.path} ({self.bytes / 1e6:.1f} MB): {self.categories} categories, {self.images} images, "
                f"labels {self.accepted} accepted / {self.rejected} rejected / {self.undecided} undecided")
        if self.precision is not None:
            line += f"; precision {self.precision:.1%}"
            line += f", recall {self.recall:.1%}" if self.recall is not None else ""
            line += f" against the truth ({self.truth_labels} labels)"
        if self.control_accuracy is not None:
            line += f"; {self.control_accuracy:.1%} right on controls"
        line += f"; cost ${self.cost}; {self.thumbnails} thumbnails"
        if self.unreadable_images:
            line += f" ({self.unreadable_images} images unreadable)"
        return line

    def as_dict(self) -> dict[str, object]:
        return dataclasses.asdict(self)


def _title(facts: Facts, folder: str) -> str:
    """The tree's top categories, then the workspace folder: "dog (workspace)"."""
    tops = [facts.categories[wnid].name for level, wnid in facts.tree_rows if level == 0]
    named = ", ".join(tops[:3]) + (f" and {len(tops) - 3} more" if len(tops) > 3 else "")
    return f"{named} ({folder})" if named else folder


def write_report(workspace: Workspace, path: str | os.PathLike,
                 options: ReportOptions = ReportOptions()) -> ReportSummary:
    """Write the report to `path` (HTML) and return what it holds."""
    from imgnet_build.report import plots  # matplotlib is slow to import; only the report needs it

    path = Path(path)
    if path.is_dir():
        raise BadInput(f"cannot write the report to {path}: it is a folder; name a file, e.g. {path / 'report.html'}")
    if not path.parent.is_dir():
        raise BadInput(f"cannot write {path}: folder {path.parent} does not exist")
    with workspace.session() as session:
        facts = gather_facts(session, workspace)
        with_pictures = [row for row in facts.categories.values() if row.images or row.accepted or row.rejected]
        sheet = ContactSheet(session, workspace.blob_store, with_pictures[:options.sheet_categories],
                             options.thumbnails_per_side, options.thumbnail_size)
        rows = list(facts.categories.values())
        context = {
            **_shallow(facts),
            "title": _title(facts, workspace.root.resolve().name), "version": __version__,
            "database": workspace.engine.url.render_as_string(hide_password=True),
            "written": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
            "statuses": STATUSES, "max_tree_rows": MAX_TREE_ROWS,
            "candidates_total": sum(sum(c.values()) for c in facts.sources.values()),
            "votes_total": sum(votes * pairs for votes, pairs in facts.votes_per_pair.items()),
            "total_cost": facts.total_cost, "splits": facts.splits,
            "plots": {"categories": plots.images_per_category(rows),
                      "sources": plots.candidates_by_source(facts.sources),
                      "votes": plots.votes_per_pair(facts.votes_per_pair),
                      "workers": plots.worker_accuracy(facts.workers.accuracies, facts.workers.control_accuracies)},
            "sheet": sheet, "sheet_left_out": max(0, len(with_pictures) - options.sheet_categories),
            "per_side": options.thumbnails_per_side, "thumb_size": options.thumbnail_size,
        }
        written = _write_atomically(path, _template().generate(**context))
    return _summary(path, written, facts, sheet)


def _shallow(facts: Facts) -> dict[str, object]:
    return {field.name: getattr(facts, field.name) for field in dataclasses.fields(facts)}


def _write_atomically(path: Path, chunks: Iterable[str]) -> int:
    """Write `chunks` to `path`. A regular file (or a new path) is written under a temporary name
    and renamed, so an interrupted run leaves the previous report whole; a symbolic link keeps
    pointing where it did. Anything else (a FIFO, a character device such as /dev/null or
    /dev/stdout) is written in place: renaming over it would replace the node itself."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        mode = None
    if mode is not None and not stat.S_ISREG(mode):
        with open(path, "wb") as handle:
            return _write_chunks(handle, chunks)
    target = path.resolve() if mode is not None else path
    fd, temporary = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            written = _write_chunks(handle, chunks)
        os.chmod(temporary, 0o644)
        os.replace(temporary, target)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return written


def _write_chunks(handle: BinaryIO, chunks: Iterable[str]) -> int:
    """Write text chunks as UTF-8; returns the bytes written."""
    written = 0
    for chunk in chunks:
        data = chunk.encode("utf-8")
        handle.write(data)
        written += len(data)
    return written


def _summary(path: Path, written: int, facts: Facts, sheet: ContactSheet) -> ReportSummary:
    labels = cast(dict[str, int], facts.stages["labels"])
    return ReportSummary(
        path=str(path), bytes=written, categories=cast(int, facts.stages["categories"]),
        images=cast(int, facts.stages["images"]),
        accepted=labels["accepted"], rejected=labels["rejected"], undecided=labels["undecided"],
        truth_labels=facts.truth.labels, precision=facts.truth.precision, recall=facts.truth.recall,
        control_accuracy=facts.controls.accuracy, cost=f"{facts.total_cost:.2f}",
        thumbnails=sheet.thumbnails, unreadable_images=sheet.unreadable)


def _number(value: int | None) -> str:
    return "—" if value is None else f"{value:,}"


def _percent(value: float | None) -> str:
    return "—" if value is None else f"{value:.1%}"


def _money(value: Decimal) -> str:
    return f"${value:,.2f}"


@cache
def _template() -> jinja2.Template:
    environment = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined,
                                     trim_blocks=True, lstrip_blocks=True)
    environment.filters.update(num=_number, pct=_percent, money=_money)
    source = resources.files("imgnet_build.report").joinpath("report.html.j2").read_text(encoding="utf-8")
    return environment.from_string(source)
