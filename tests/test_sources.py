"""Candidate sources: URL lists and folders on disk (the API sources are in test_api_sources.py)."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
import threading

import pytest

from imgnet_build.errors import BadInput, UnknownSource
from imgnet_build.sources import CategoryQueries, Proposal, open_source

WHIPPET, TABBY = "n02091134", "n02123045"
CATEGORIES = [CategoryQueries(WHIPPET, ()), CategoryQueries(TABBY, ())]


def propose(spec: str) -> list[Proposal]:
    return list(open_source(spec).propose(CATEGORIES, 10))


def good(proposals: list[Proposal]) -> list[tuple]:
    return [(p.wnid, p.url, p.rank, p.license, p.attribution, p.truth) for p in proposals if p.error is None]


def errors(proposals: list[Proposal]) -> list[str]:
    return [p.error for p in proposals if p.error is not None]


EXPECTED = [
    (WHIPPET, "http://img.test/w1.jpg", 1, "CC BY 4.0", "Ann", True),
    (TABBY, "http://img.test/t1.jpg", 1, None, None, False),
    (WHIPPET, "http://img.test/w2.jpg", 2, None, None, None),
]


def test_csv(tmp_path):
    path = tmp_path / "list.csv"
    path.write_text("url,wnid,license,attribution,truth\n"
                    "http://img.test/w1.jpg,n02091134,CC BY 4.0,Ann,yes\n"
                    "http://img.test/t1.jpg,n02123045,,,0\n"
                    "\n"
                    "http://img.test/w2.jpg,n02091134,,,\n", encoding="utf-8")
    proposals = propose(f"urls:{path}")
    assert good(proposals) == EXPECTED
    assert errors(proposals) == []


def test_tsv_with_bom_and_column_order(tmp_path):
    path = tmp_path / "list.tsv"
    path.write_bytes("\ufeffWNID\tURL\ttruth\tlicense\tattribution\n".encode()
                     + b"n02091134\thttp://img.test/w1.jpg\tTrue\tCC BY 4.0\tAnn\n"
                     + b"n02123045\thttp://img.test/t1.jpg\tno\t\t\n"
                     + b"n02091134\thttp://img.test/w2.jpg\t\t\t\n")
    assert good(propose(f"urls:{path}")) == EXPECTED


def test_jsonl_gzipped(tmp_path):
    rows = [{"url": "http://img.test/w1.jpg", "wnid": WHIPPET, "license": "CC BY 4.0", "attribution": "Ann", "truth": True},
            {"url": "http://img.test/t1.jpg", "wnid": TABBY, "truth": "false"},
            {"url": "http://img.test/w2.jpg", "wnid": WHIPPET}]
    path = tmp_path / "list.jsonl.gz"
    with gzip.open(path, "wt", encoding="utf-8") as handle:
        handle.write("\n".join(json.dumps(row) for row in rows) + "\n")
    assert good(propose(f"urls:{path}")) == EXPECTED


def test_format_sniffed_without_extension(tmp_path):
    path = tmp_path / "list"
    path.write_text('{"url": "http://img.test/w1.jpg", "wnid": "n02091134"}\n')
    assert good(propose(f"urls:{path}")) == [(WHIPPET, "http://img.test/w1.jpg", 1, None, None, None)]
    path.write_text("url\twnid\nhttp://img.test/w1.jpg\tn02091134\n")
    assert good(propose(f"urls:{path}")) == [(WHIPPET, "http://img.test/w1.jpg", 1, None, None, None)]


def test_bad_rows_are_data(tmp_path):
    path = tmp_path / "list.jsonl"
    path.write_text('{"url": "http://img.test/w1.jpg", "wnid": "n02091134"}\n'
                    '{"url": "http://img.test/w2.jpg", "wnid": \n'
                    '{"url": "", "wnid": "n02091134"}\n'
                    '["http://img.test/w3.jpg", "n02091134"]\n'
                    '{"url": "http://img.test/x.jpg", "wnid": "n09999999"}\n'
                    '{"url": "http://img.test/w4.jpg", "wnid": "n02091134", "truth": "maybe"}\n'
                    '{"url": "http://img.test/w5.jpg", "wnid": "n02091134"}\n')
    proposals = propose(f"urls:{path}")
    assert [p.url for p in proposals if p.error is None] == ["http://img.test/w1.jpg", "http://img.test/w5.jpg"]
    assert [p.rank for p in proposals if p.error is None] == [1, 2]
    found = errors(proposals)
    assert len(found) == 5
    assert found[0].startswith("line 2: malformed JSON")
    assert found[1] == "line 3: empty url"
    assert found[2] == "line 4: a JSON list, not an object with url and wnid"
    assert found[3] == "unknown wnid n09999999 (not in the category tree)"
    assert found[4] == "line 6: truth 'maybe' is not one of yes/no/true/false/1/0"
    assert [p.wnid for p in proposals if p.error][3] == "n09999999"


def test_csv_unknown_wnid_and_extra_fields(tmp_path):
    path = tmp_path / "list.csv"
    path.write_text("url,wnid\nhttp://img.test/a.jpg,n01234567\nhttp://img.test/b.jpg,n02091134,extra\n")
    assert errors(propose(f"urls:{path}")) == ["unknown wnid n01234567 (not in the category tree)",
                                               "line 3: 3 fields, the header has 2"]


@pytest.mark.parametrize("header, missing", [("url,label\n", "wnid"), ("link,wnid\n", "url"), ("image,class\n", "url or wnid")])
def test_missing_column_is_bad_input(tmp_path, header, missing):
    path = tmp_path / "list.csv"
    path.write_text(header + "http://img.test/a.jpg,n02091134\n")
    with pytest.raises(BadInput) as caught:
        open_source(f"urls:{path}")
    assert str(caught.value).startswith(f"{path}, line 1: no {missing} column (found ")


def test_jsonl_without_wnid_key_is_bad_input(tmp_path):
    path = tmp_path / "list.jsonl"
    path.write_text('not json\n{"url": "http://img.test/a.jpg", "class": "dog"}\n')
    with pytest.raises(BadInput, match=r"line 2: no wnid column"):
        open_source(f"urls:{path}")


def test_latin1_file_is_bad_input(tmp_path):
    path = tmp_path / "list.csv"
    path.write_bytes("url,wnid,attribution\nhttp://img.test/a.jpg,n02091134,Ann\n"
                     "http://img.test/b.jpg,n02091134,José Müller\n".encode("latin-1"))
    source = open_source(f"urls:{path}")  # the header is fine; the failure is found while streaming
    with pytest.raises(BadInput) as caught:
        list(source.propose(CATEGORIES, 10))
    assert str(caught.value) == f"{path}, line 3: not UTF-8 (byte 0xe9 at column 36); save the file as UTF-8"


def test_latin1_header_is_bad_input_at_once(tmp_path):
    path = tmp_path / "list.csv"
    path.write_bytes("url,wnid,légende\n".encode("latin-1"))
    with pytest.raises(BadInput, match=r"line 1: not UTF-8"):
        open_source(f"urls:{path}")


@pytest.mark.parametrize("make", ["missing", "empty", "folder"])
def test_unusable_file_is_bad_input(tmp_path, make):
    path = tmp_path / "list.csv"
    if make == "empty":
        path.write_text("")
    elif make == "folder":
        path.mkdir()
    with pytest.raises(BadInput, match=str(path)):
        open_source(f"urls:{path}")


def test_urls_needs_a_file_and_unknown_source():
    with pytest.raises(BadInput, match=r"urls:candidates.csv"):
        open_source("urls")
    with pytest.raises(UnknownSource, match=r"unknown source .bing.; choose from dir, "):
        open_source("bing")


def test_big_file_is_streamed(tmp_path):
    path = tmp_path / "big.csv"
    with path.open("w") as handle:
        handle.write("url,wnid\n")
        for i in range(200_000):
            handle.write(f"http://img.test/{i}.jpg,{WHIPPET}\n")
    stream = open_source(f"urls:{path}").propose(CATEGORIES, 10)
    first = next(stream)
    assert (first.url, first.rank) == ("http://img.test/0.jpg", 1)
    assert sum(1 for _ in stream) == 199_999


# -- dir:PATH ---------------------------------------------------------------------------------


def test_dir_source(tmp_path):
    root = tmp_path / "photos"
    (root / WHIPPET / "more").mkdir(parents=True)
    (root / WHIPPET / "b.jpg").write_bytes(b"x")
    (root / WHIPPET / "a.jpg").write_bytes(b"x")
    (root / WHIPPET / ".DS_Store").write_bytes(b"x")
    (root / WHIPPET / "more" / "c.png").write_bytes(b"x")
    (root / TABBY).mkdir()
    (root / "n09999999").mkdir()
    (root / "n09999999" / "z.jpg").write_bytes(b"x")
    (root / "loose.jpg").write_bytes(b"x")
    source = open_source(f"dir:{root}")
    assert source.local is True
    proposals = list(source.propose(CATEGORIES, 1))
    assert good(proposals) == [(WHIPPET, str(root / WHIPPET / "a.jpg"), 1, None, None, None),
                               (WHIPPET, str(root / WHIPPET / "b.jpg"), 2, None, None, None),
                               (WHIPPET, str(root / WHIPPET / "more" / "c.png"), 3, None, None, None)]
    assert errors(proposals) == ["folder n09999999 names no category"]


def test_dir_paths_are_absolute(tmp_path, monkeypatch):
    (tmp_path / "photos" / WHIPPET).mkdir(parents=True)
    (tmp_path / "photos" / WHIPPET / "a.jpg").write_bytes(b"x")
    monkeypatch.chdir(tmp_path)
    assert [p.url for p in propose("dir:photos")] == [str(tmp_path / "photos" / WHIPPET / "a.jpg")]


def test_dir_missing_is_bad_input(tmp_path):
    with pytest.raises(BadInput, match="does not exist"):
        open_source(f"dir:{tmp_path / 'nope'}")
    (tmp_path / "file").write_text("x")
    with pytest.raises(BadInput, match="is not a folder"):
        open_source(f"dir:{tmp_path / 'file'}")


def test_hostile_url_lists_end_in_clear_errors(tmp_path):
    """Before: RecursionError, a csv field-limit traceback, and unbounded memory on an endless line."""
    deep = tmp_path / "deep.jsonl"
    deep.write_text('{{"url": "http://img.test/a.jpg", "wnid": "{}"}}\n{}\n'.format(WHIPPET, "[" * 100_000))
    assert errors(propose(f"urls:{deep}")) == ["line 2: malformed JSON (nested too deep)"]

    wide = tmp_path / "wide.csv"
    wide.write_text("url,wnid," + "x" * 140_000 + f"\nhttp://img.test/a.jpg,{WHIPPET},\n")
    with pytest.raises(BadInput, match=r"wide.csv, line 1: unreadable header \(field larger than field limit"):
        propose(f"urls:{wide}")

    long_line = tmp_path / "long.csv"
    long_line.write_text(f"url,wnid\nhttp://img.test/{'y' * 3_000_000}.jpg,{WHIPPET}\nhttp://img.test/b.jpg,{WHIPPET}\n")
    proposals = propose(f"urls:{long_line}")
    assert errors(proposals) == ["line 2: line longer than 1 MiB"]
    assert good(proposals) == [(WHIPPET, "http://img.test/b.jpg", 1, None, None, None)]

    with pytest.raises(BadInput, match="/dev/zero, line 1: no end of line within 64 MiB"):
        propose("urls:/dev/zero")


def test_a_fifo_and_stdin_are_read_once(tmp_path):
    """Before: a FIFO hung (it was opened three times) and /dev/stdin was reported empty."""
    text = f"url,wnid\nhttp://img.test/a.jpg,{WHIPPET}\n"
    fifo = tmp_path / "list.fifo"
    os.mkfifo(fifo)
    writer = threading.Thread(target=fifo.write_text, args=(text,))
    writer.start()
    assert good(propose(f"urls:{fifo}")) == [(WHIPPET, "http://img.test/a.jpg", 1, None, None, None)]
    writer.join()

    script = ("import sys; from imgnet_build.sources import open_source, CategoryQueries; "
              f"print([p.url for p in open_source('urls:/dev/stdin').propose([CategoryQueries('{WHIPPET}', ())], 5)])")
    run = subprocess.run([sys.executable, "-c", script], input=text, capture_output=True, text=True)
    assert (run.returncode, run.stdout) == (0, "['http://img.test/a.jpg']\n"), run.stderr


def test_url_lists_take_nltk_names_and_gather_takes_category(tmp_path, runner):
    """Issue 14 item 17: the wnid column took only wnids (toy_poodle.n.01 was "unknown wnid"), and gather had no
    --category; it gathers for that category and the ones below it."""
    from imgnet_build.cli.main import cli

    ws = str(tmp_path / "ws")
    assert runner.invoke(cli, ["init", ws]).exit_code == 0
    assert runner.invoke(cli, ["-w", ws, "tree", "build", "--root", "poodle.n.01"]).exit_code == 0
    path = tmp_path / "list.csv"
    path.write_text("url,wnid\nhttp://127.0.0.1:9/a.jpg,toy_poodle.n.01\nhttp://127.0.0.1:9/b.jpg,n02113624\n"
                    "http://127.0.0.1:9/c.jpg,standard_poodle.n.01\nhttp://127.0.0.1:9/d.jpg,poodle.n.01\n")
    [proposal, *_] = open_source(f"urls:{path}").propose([CategoryQueries("n02113624", synset="toy_poodle.n.01")])
    assert (proposal.wnid, proposal.error) == ("n02113624", None)
    result = runner.invoke(cli, ["-w", ws, "gather", "--source", f"urls:{path}", "--category", "toy_poodle.n.01",
                                 "--json"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)
    assert (summary["new_candidates"], summary["outside_categories"], summary["rejected"]) == (2, 2, 0)
    listed = runner.invoke(cli, ["-w", ws, "candidates", "--json"]).output.splitlines()
    assert sorted((json.loads(line)["wnid"], json.loads(line)["url"][-5:]) for line in listed) == [
        ("n02113624", "a.jpg"), ("n02113624", "b.jpg")]
