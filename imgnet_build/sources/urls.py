"""`urls:FILE` — a user's own candidate list: CSV, TSV or JSONL with `url` and `wnid` columns.

Optional columns: `license`, `attribution`, `truth` (yes/no/true/false/1/0, empty = unknown).
The format comes from the extension (`.csv`, `.tsv`/`.tab`, `.jsonl`/`.ndjson`/`.json`,
each optionally `.gz`), else from the first line. The file is streamed, never loaded whole.

A file that cannot be used at all (missing, unreadable, not UTF-8, no `url` or `wnid`
column) raises `BadInput` naming the file and line. A single bad row (malformed JSON, empty
url, unknown wnid) becomes a `Proposal` with `error` set, for the caller to record.
`per_category` is not applied here: the rows are the user's; quotas are the caller's job.
"""

from __future__ import annotations

import csv
import gzip
import json
from collections import Counter
from collections.abc import Iterable, Iterator
from pathlib import Path

from imgnet_build.errors import BadInput
from imgnet_build.sources import CategoryQueries, Proposal, register

__all__ = ["UrlList", "parse_truth"]

_FORMATS = {".csv": "csv", ".tsv": "tsv", ".tab": "tsv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl"}
_TRUTH = {"yes": True, "true": True, "1": True, "y": True, "no": False, "false": False, "0": False, "n": False}
REQUIRED = ("url", "wnid")


def parse_truth(value: object) -> bool | None:
    """`True`/`False` for yes/no/true/false/1/0 (any case), `None` when empty; ValueError otherwise."""
    if value is None or isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if not text:
        return None
    if text not in _TRUTH:
        raise ValueError(f"truth {value!r} is not one of yes/no/true/false/1/0")
    return _TRUTH[text]


@register("urls")
class UrlList:
    """Candidates read from a CSV/TSV/JSONL file; yields one `Proposal` per row, in file order."""

    name = "urls"
    local = False
    searches = False

    def __init__(self, argument: str, **settings: object):
        if not argument:
            raise BadInput("the urls source needs a file: --source urls:candidates.csv")
        self.path = Path(argument).expanduser()
        self.format = self._detect_format()
        self._check_header()  # fail now, not half-way, if the file is unusable

    def propose(self, categories: Iterable[CategoryQueries], per_category: int = 0) -> Iterator[Proposal]:
        """Every row of the file as a Proposal; rank is the row's position among its wnid's rows."""
        known = {category.wnid for category in categories}
        ranks: Counter[str] = Counter()
        rows = self._json_rows() if self.format == "jsonl" else self._table_rows()
        for line, row in rows:
            if isinstance(row, str):  # the reason a row could not be read
                yield Proposal(wnid="", url="", error=f"line {line}: {row}")
                continue
            yield self._proposal(line, row, known, ranks)

    def _proposal(self, line: int, row: dict, known: set[str], ranks: Counter[str]) -> Proposal:
        url = str(row.get("url") or "").strip()
        wnid = str(row.get("wnid") or "").strip()
        extras = {key: (str(row[key]).strip() or None) if row.get(key) is not None else None
                  for key in ("license", "attribution")}
        try:
            truth = parse_truth(row.get("truth"))
        except ValueError as exc:
            return Proposal(wnid=wnid, url=url, error=f"line {line}: {exc}")
        if not url:
            return Proposal(wnid=wnid, url=url, error=f"line {line}: empty url")
        if not wnid:
            return Proposal(wnid=wnid, url=url, error=f"line {line}: empty wnid")
        if wnid not in known:
            return Proposal(wnid=wnid, url=url, error=f"unknown wnid {wnid} (not in the category tree)")
        ranks[wnid] += 1
        return Proposal(wnid=wnid, url=url, rank=ranks[wnid], truth=truth, **extras)

    # -- reading ---------------------------------------------------------------------------

    def _detect_format(self) -> str:
        suffixes = [s.lower() for s in self.path.suffixes]
        if suffixes and suffixes[-1] == ".gz":
            suffixes.pop()
        if suffixes and suffixes[-1] in _FORMATS:
            return _FORMATS[suffixes[-1]]
        first = next(self._decoded(), (0, ""))[1].lstrip()
        return "jsonl" if first.startswith("{") else "tsv" if "\t" in first else "csv"

    def _check_header(self) -> None:
        """BadInput unless the header (or the first JSON object) has url and wnid."""
        for number, text in self._decoded():
            if self.format != "jsonl":
                return self._check_columns(next(csv.reader([text], delimiter=self._delimiter), []), number)
            try:
                row = json.loads(text) if text.strip() else None
            except ValueError:
                continue  # reported per row later
            if isinstance(row, dict):
                return self._check_columns(list(row), number)
        raise BadInput(f"{self.path} is empty; it needs url and wnid columns")

    def _check_columns(self, header: list, line: int) -> None:
        names = {str(name).strip().lower() for name in header}
        missing = [name for name in REQUIRED if name not in names]
        if missing:
            found = ", ".join(str(name).strip() for name in header) or "nothing"
            raise BadInput(f"{self.path}, line {line}: no {' or '.join(missing)} column (found {found}); "
                           "a URL list needs url and wnid columns")

    @property
    def _delimiter(self) -> str:
        return "\t" if self.format == "tsv" else ","

    def _decoded(self) -> Iterator[tuple[int, str]]:
        """(line number, text) per line, decoded as UTF-8 (a leading BOM dropped)."""
        opener = gzip.open if self.path.suffix.lower() == ".gz" else open
        try:
            handle = opener(self.path, "rb")
        except OSError as exc:
            raise BadInput(f"cannot read {self.path}: {exc.strerror or exc}") from exc
        with handle:
            try:
                for number, raw in enumerate(handle, 1):
                    if number == 1 and raw.startswith(b"\xef\xbb\xbf"):
                        raw = raw[3:]
                    try:
                        yield number, raw.decode("utf-8")
                    except UnicodeDecodeError as exc:
                        raise BadInput(f"{self.path}, line {number}: not UTF-8 (byte 0x{raw[exc.start]:02x} "
                                       f"at column {exc.start + 1}); save the file as UTF-8") from None
            except (OSError, EOFError) as exc:
                raise BadInput(f"cannot read {self.path}: {exc}") from exc

    def _table_rows(self) -> Iterator[tuple[int, dict | str]]:
        reader = csv.reader((text for _, text in self._decoded()), delimiter=self._delimiter)
        header = [name.strip().lower() for name in next(reader, [])]
        while True:
            try:
                values = next(reader)
            except StopIteration:
                return
            except csv.Error as exc:
                yield reader.line_num, f"unreadable row ({exc})"
                continue
            if not any(value.strip() for value in values):
                continue
            if len(values) > len(header):
                yield reader.line_num, f"{len(values)} fields, the header has {len(header)}"
                continue
            yield reader.line_num, dict(zip(header, values))

    def _json_rows(self) -> Iterator[tuple[int, dict | str]]:
        for number, text in self._decoded():
            if not text.strip():
                continue
            try:
                row = json.loads(text)
            except ValueError as exc:
                yield number, f"malformed JSON ({exc})"
                continue
            if not isinstance(row, dict):
                yield number, f"a JSON {type(row).__name__}, not an object with url and wnid"
                continue
            yield number, {str(key).lower(): value for key, value in row.items()}
