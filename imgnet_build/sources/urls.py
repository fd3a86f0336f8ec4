"""`urls:FILE` — a user's own candidate list: CSV, TSV or JSONL with `url` and `wnid` columns.

Optional columns: `license`, `attribution`, `truth` (yes/no/true/false/1/0, empty = unknown).
The format comes from the extension (`.csv`, `.tsv`/`.tab`, `.jsonl`/`.ndjson`/`.json`,
each optionally `.gz`), else from the first line. The file is streamed, never loaded whole.

A file that cannot be used at all (missing, unreadable, not UTF-8, no `url` or `wnid`
column, no end of line within MAX_SKIP) raises `BadInput` naming the file and line. A single
bad row (malformed or too deeply nested JSON, a line over MAX_LINE, empty url, unknown
wnid) becomes a `Proposal` with `error` set, for the caller to record. The input is read
once, so a FIFO or /dev/stdin works.
`per_category` is not applied here: the rows are the user's; quotas are the caller's job.
"""

from __future__ import annotations

import csv
import gzip
import json
import zlib
from collections import Counter
from collections.abc import Iterable, Iterator
from pathlib import Path

from imgnet_build.errors import BadInput
from imgnet_build.sources import CategoryQueries, Proposal, register

__all__ = ["UrlList", "parse_truth"]

_FORMATS = {".csv": "csv", ".tsv": "tsv", ".tab": "tsv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl"}
_TRUTH = {"yes": True, "true": True, "1": True, "y": True, "no": False, "false": False, "0": False, "n": False}
REQUIRED = ("url", "wnid")
HEADER_LINES = 1000  # a JSON Lines file must have an object among its first lines
MAX_LINE = 2**20  # bytes; a longer line is one failed row
MAX_SKIP = 64 * 2**20  # no end of line within this: not a URL list (e.g. /dev/zero)
LONG_LINE = "\x00long line\x00\n"  # stands in for a line over MAX_LINE (a NUL never reaches a row otherwise)


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
        self._head: list[tuple[int, str]] = []  # lines already read to learn the format and check the header
        self._rest: Iterator[tuple[int, str]] | None = self._read()
        self.format = self._detect_format()
        self._check_header()  # fail now, not half-way, if the file is unusable

    def propose(self, categories: Iterable[CategoryQueries], per_category: int = 0) -> Iterator[Proposal]:
        """Every row of the file as a Proposal; rank is the row's position among its wnid's rows.

        The wnid column takes a wnid (`n02113624`) or the category's nltk name (`toy_poodle.n.01`)."""
        known: dict[str, str] = {}
        for category in categories:
            known[category.wnid] = category.wnid
            if category.synset:
                known[category.synset] = category.wnid
        ranks: Counter[str] = Counter()
        rows = self._json_rows() if self.format == "jsonl" else self._table_rows()
        for line, row in rows:
            if isinstance(row, str):  # the reason a row could not be read
                yield Proposal(wnid="", url="", error=f"line {line}: {row}")
                continue
            yield self._proposal(line, row, known, ranks)

    def _proposal(self, line: int, row: dict, known: dict[str, str], ranks: Counter[str]) -> Proposal:
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
        wnid = known[wnid]
        ranks[wnid] += 1
        return Proposal(wnid=wnid, url=url, rank=ranks[wnid], truth=truth, license=extras["license"],
                        attribution=extras["attribution"])

    # -- reading ---------------------------------------------------------------------------

    def _detect_format(self) -> str:
        suffixes = [s.lower() for s in self.path.suffixes]
        if suffixes and suffixes[-1] == ".gz":
            suffixes.pop()
        if suffixes and suffixes[-1] in _FORMATS:
            return _FORMATS[suffixes[-1]]
        first = next(self._peek(), (0, ""))[1].lstrip()
        return "jsonl" if first.startswith("{") else "tsv" if "\t" in first else "csv"

    def _check_header(self) -> None:
        """BadInput unless the header (or the first JSON object) has url and wnid."""
        for number, text in self._peek():
            if self.format != "jsonl":
                try:
                    header = next(csv.reader([text], delimiter=self._delimiter), [])
                except csv.Error as exc:  # e.g. a field over the csv module's limit
                    raise BadInput(f"{self.path}, line {number}: unreadable header ({exc})") from exc
                return self._check_columns(header, number)
            try:
                row = json.loads(text) if text.strip() else None
            except (ValueError, RecursionError):
                continue  # reported per row later
            if isinstance(row, dict):
                return self._check_columns(list(row), number)
            if number >= HEADER_LINES:
                raise BadInput(f"{self.path}: no JSON object in the first {HEADER_LINES} lines; a URL list in "
                               "JSON Lines has one object with url and wnid per line")
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

    def _peek(self) -> Iterator[tuple[int, str]]:
        """The first lines, kept so that the rows are read from the same single pass (a FIFO, stdin)."""
        yield from self._head
        for line in self._rest or ():
            self._head.append(line)
            yield line

    def _decoded(self) -> Iterator[tuple[int, str]]:
        """Every line once: those peeked, then the rest of the one read of the input."""
        if self._rest is None:  # a second propose: read a regular file again
            if not self.path.is_file():
                raise BadInput(f"{self.path} was read already and cannot be read twice (a pipe)")
            self._head, self._rest = [], self._read()
        head, rest = self._head, self._rest
        self._head, self._rest = [], None
        yield from head
        yield from rest

    def _read(self) -> Iterator[tuple[int, str]]:
        """(line number, text) per line, decoded as UTF-8 (a leading BOM dropped). A line over MAX_LINE
        bytes becomes the text LONG_LINE (a per-row error); none ending within MAX_SKIP is BadInput."""
        opener = gzip.open if self.path.suffix.lower() == ".gz" else open
        try:
            handle = opener(self.path, "rb")
        except OSError as exc:
            raise BadInput(f"cannot read {self.path}: {exc.strerror or exc}") from exc
        with handle:
            try:
                number = 0
                while raw := handle.readline(MAX_LINE + 1):
                    number += 1
                    if len(raw) > MAX_LINE and not raw.endswith(b"\n"):
                        self._skip_line(handle, number)
                        yield number, LONG_LINE
                        continue
                    if number == 1 and raw.startswith(b"\xef\xbb\xbf"):
                        raw = raw[3:]
                    try:
                        yield number, raw.decode("utf-8")
                    except UnicodeDecodeError as exc:
                        raise BadInput(f"{self.path}, line {number}: not UTF-8 (byte 0x{raw[exc.start]:02x} "
                                       f"at column {exc.start + 1}); save the file as UTF-8") from None
            except (OSError, EOFError, zlib.error) as exc:
                raise BadInput(f"cannot read {self.path}: {exc}") from exc

    def _skip_line(self, handle, number: int) -> None:
        skipped = MAX_LINE
        while skipped < MAX_SKIP:
            chunk = handle.readline(MAX_LINE)
            if not chunk or chunk.endswith(b"\n"):
                return
            skipped += len(chunk)
        raise BadInput(f"{self.path}, line {number}: no end of line within {MAX_SKIP // 2**20} MiB; "
                       "a URL list is a text file with one row per line")

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
            if values == [LONG_LINE.rstrip("\n")]:
                yield reader.line_num, f"line longer than {MAX_LINE // 2**20} MiB"
                continue
            if len(values) > len(header):
                yield reader.line_num, f"{len(values)} fields, the header has {len(header)}"
                continue
            yield reader.line_num, dict(zip(header, values, strict=True))

    def _json_rows(self) -> Iterator[tuple[int, dict | str]]:
        for number, text in self._decoded():
            if not text.strip():
                continue
            if text == LONG_LINE:
                yield number, f"line longer than {MAX_LINE // 2**20} MiB"
                continue
            try:
                row = json.loads(text)
            except ValueError as exc:
                yield number, f"malformed JSON ({exc})"
                continue
            except RecursionError:
                yield number, "malformed JSON (nested too deep)"
                continue
            if not isinstance(row, dict):
                yield number, f"a JSON {type(row).__name__}, not an object with url and wnid"
                continue
            yield number, {str(key).lower(): value for key, value in row.items()}
