"""`imgnet gather` end to end: URL lists and folders, bad input files, kill -9 and resume."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import ClassVar
from urllib.parse import quote

import pytest
from loopback import LoopbackServer, jpeg_bytes
from sqlalchemy import create_engine, func, select, text

from imgnet_build.cli.main import cli
from imgnet_build.fetch import FetchSettings
from imgnet_build.gather import OVERASK, gather
from imgnet_build.store import Candidate, Category, Image, Query

DOG, CAT = "n02084071", "n02121808"


@pytest.fixture
def server():
    server = LoopbackServer()
    yield server
    server.close()


def add_categories(workspace, *wnids: str) -> None:
    names = {DOG: "dog", CAT: "domestic_cat"}
    with workspace.session() as session:
        for wnid in wnids:
            name = names[wnid]
            session.add(Category(wnid=wnid, synset=f"{name}.n.01", name=name, lemmas=[name], gloss="",
                                 lexname="noun.animal", depth=0))


def write_csv(path: Path, rows: list[tuple[str, str]], header: str = "url,wnid") -> Path:
    path.write_text(header + "\n" + "".join(f"{url},{wnid}\n" for url, wnid in rows))
    return path


def invoke(runner, workspace, *args: str):
    return runner.invoke(cli, ["-w", str(workspace.root), "gather", *args], catch_exceptions=False)


def test_gather_a_url_list_from_the_cli(any_workspace, server, runner, tmp_path):
    add_categories(any_workspace, DOG, CAT)
    rows = [(server.add(f"/dog{i}.jpg", jpeg_bytes(48, 48, seed=i)), DOG) for i in range(4)]
    rows += [(server.add(f"/cat{i}.jpg", jpeg_bytes(48, 48, seed=10 + i)), CAT) for i in range(3)]
    rows += [(server.add("/gone.jpg", b"", status=404), CAT), (server.url("/dog0.jpg"), "n00000001"),
             (server.url("/cat0.jpg"), "n00000001")]
    listing = write_csv(tmp_path / "list.csv", rows)

    result = invoke(runner, any_workspace, "--source", f"urls:{listing}", "--allow-loopback", "--workers", "4")

    assert result.exit_code == 0, result.output
    assert "warning: 2 proposal(s) not attached to any category: unknown wnid n00000001 (2)" in result.stderr
    assert result.stdout.startswith("gathered: 7 ok, 1 failed, 0 skipped in ")
    with any_workspace.session() as session:
        assert session.scalar(select(func.count()).select_from(Image)) == 7
        assert session.scalar(select(func.count()).select_from(Query)) == 0  # a URL list needs no queries
        assert session.scalar(select(Candidate.error).where(Candidate.status == "failed")) == "HTTP 404 Not Found"

    again = invoke(runner, any_workspace, "--source", f"urls:{listing}", "--allow-loopback", "--json")
    document = json.loads(again.stdout)
    assert (document["new_candidates"], document["ok"], document["fetch"]["downloaded"]) == (0, 0, 0)
    assert document["rejected_reasons"] == {"unknown wnid n00000001": 2}
    assert max(server.counts.values()) == 1


def test_quota_from_the_cli(workspace, server, runner, tmp_path):
    add_categories(workspace, DOG)
    listing = write_csv(tmp_path / "list.csv",
                        [(server.add(f"/{i}.jpg", jpeg_bytes(40, 40, seed=i)), DOG) for i in range(6)])
    result = invoke(runner, workspace, "--source", f"urls:{listing}", "--allow-loopback", "--per-category", "2",
                    "--json")
    assert json.loads(result.stdout)["ok"] == 2 and json.loads(result.stdout)["skipped"] == 4


def test_gather_a_folder_without_http(workspace, runner, tmp_path):
    add_categories(workspace, DOG)
    (tmp_path / "photos" / DOG).mkdir(parents=True)
    (tmp_path / "photos" / "n99999999").mkdir()
    (tmp_path / "photos" / DOG / "a.jpg").write_bytes(jpeg_bytes(50, 50, seed=1))
    (tmp_path / "photos" / DOG / "broken.jpg").write_bytes(jpeg_bytes(50, 50, seed=2)[:200])
    (tmp_path / "photos" / "n99999999" / "b.jpg").write_bytes(jpeg_bytes(50, 50, seed=3))

    result = invoke(runner, workspace, "--source", f"dir:{tmp_path / 'photos'}")

    assert result.exit_code == 0
    assert result.stderr == "warning: 1 proposal(s) not attached to any category: folder n99999999 names no category (1)\n"
    assert result.stdout.startswith("gathered: 1 ok, 1 failed, 0 skipped")


@pytest.mark.parametrize("content, message", [
    (b"link,wnid\nhttp://x/a.jpg,n02084071\n", "no url column (found link, wnid)"),
    (b"url,wnid\nhttp://x/\xe9.jpg,n02084071\n", "not UTF-8"),
])
def test_an_unusable_input_file_stops_with_exit_1(workspace, runner, tmp_path, content, message):
    add_categories(workspace, DOG)
    (tmp_path / "bad.csv").write_bytes(content)
    result = invoke(runner, workspace, "--source", f"urls:{tmp_path / 'bad.csv'}")
    assert result.exit_code == 1
    assert result.output.startswith("Error: ") and message in result.output


def test_bad_rows_are_recorded_and_the_rest_is_gathered(workspace, server, runner, tmp_path):
    add_categories(workspace, DOG)
    good = server.add("/good.jpg", jpeg_bytes(40, 40))
    listing = tmp_path / "list.jsonl"
    listing.write_text("\n".join([
        json.dumps({"url": good, "wnid": DOG}),
        "{not json",
        json.dumps({"url": server.url("/x.jpg"), "wnid": DOG, "truth": "maybe"}),
        json.dumps({"url": "", "wnid": DOG}),
    ]) + "\n")
    result = invoke(runner, workspace, "--source", f"urls:{listing}", "--allow-loopback", "--json")
    document = json.loads(result.stdout)
    assert result.exit_code == 0
    assert (document["ok"], document["failed"], document["invalid"], document["rejected"]) == (1, 1, 1, 2)
    with workspace.session() as session:
        assert session.scalar(select(Candidate.error).where(Candidate.status == "failed")).endswith(
            "truth 'maybe' is not one of yes/no/true/false/1/0")


def test_no_categories_is_an_error_that_names_the_fix(workspace, runner, tmp_path):
    result = invoke(runner, workspace, "--source", f"urls:{write_csv(tmp_path / 'l.csv', [])}")
    assert result.exit_code == 1
    assert result.output == ("Error: the workspace has no categories yet; build the tree first: "
                             "imgnet tree build --root SYNSET\n")


def test_library_api(workspace, server, tmp_path):
    add_categories(workspace, DOG)
    listing = write_csv(tmp_path / "l.csv", [(server.add("/a.jpg", jpeg_bytes()), DOG)])
    summary = gather(workspace, f"urls:{listing}", settings=FetchSettings(allow_loopback=True))
    assert (summary.ok, summary.proposed, summary.new_candidates) == (1, 1, 1)


# -- kill -9 in the middle, then the same command again --------------------------------------

class GatedServer(LoopbackServer):
    """Serves the first `open_count` requests at once; later ones wait until `gate` is set."""

    def __init__(self, files: dict[str, bytes], open_count: int):
        super().__init__()
        self.gate, self.served, self.waiting = threading.Event(), 0, 0
        for path, body in files.items():
            self.route(path, self._handler(body, open_count))

    def _handler(self, body: bytes, open_count: int):
        def handle(request):
            with self.lock:
                self.served += 1
                held = self.served > open_count
                self.waiting += held
            if held:
                self.gate.wait(30)
            request.send_response(200)
            request.send_header("Content-Type", "image/jpeg")
            request.send_header("Content-Length", str(len(body)))
            request.end_headers()
            request.wfile.write(body)
        return handle


def _ok_urls(database_url: str) -> set[str]:
    engine = create_engine(database_url)
    try:
        with engine.connect() as connection:
            return set(connection.scalars(text("SELECT url FROM candidate WHERE status = 'ok'")))
    finally:
        engine.dispose()


def test_kill_9_mid_run_then_rerun_finishes_without_refetching(workspace, tmp_path):
    add_categories(workspace, DOG, CAT)
    files = {f"/{i}.jpg": jpeg_bytes(40, 40, seed=i) for i in range(40)}
    server = GatedServer(files, open_count=12)
    listing = write_csv(tmp_path / "list.csv", [(server.url(path), DOG if i % 2 else CAT)
                                                for i, path in enumerate(files)])
    command = [str(Path(sys.executable).parent / "imgnet"), "-w", str(workspace.root), "gather",
               "--source", f"urls:{listing}", "--allow-loopback", "--workers", "4"]
    try:
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        stop = time.monotonic() + 60
        while (len(_ok_urls(workspace.database_url)) < 12 or server.waiting < 4) and time.monotonic() < stop:
            assert process.poll() is None, process.stderr.read().decode()
            time.sleep(0.05)
        assert len(_ok_urls(workspace.database_url)) == 12 and server.waiting == 4
        process.send_signal(signal.SIGKILL)
        process.wait()
        stored_before = _ok_urls(workspace.database_url)
        server.gate.set()

        rerun = subprocess.run([*command, "--json"], capture_output=True, text=True, timeout=120)
    finally:
        server.gate.set()
        server.close()

    assert rerun.returncode == 0, rerun.stderr
    assert json.loads(rerun.stdout)["ok"] == 28
    with workspace.session() as session:
        assert session.scalar(select(func.count()).select_from(Candidate)) == 40  # no duplicate rows
        assert set(session.scalars(select(Candidate.status))) == {"ok"}
        images = session.scalar(select(func.count()).select_from(Image))
    for url in stored_before:  # what was stored before the kill was not downloaded again
        assert server.counts[url.split(str(server.port), 1)[1]] == 1
    assert max(server.counts.values()) <= 2 and sum(server.counts.values()) == 40 + 4
    blobs = [path for path in (workspace.root / "blobs").rglob("*") if path.is_file()]
    assert not [path for path in blobs if path.name.startswith(".tmp-")]  # no half-written blob
    assert len(blobs) == images == 40
    for path in blobs:
        assert hashlib.sha256(path.read_bytes()).hexdigest() == path.stem


def test_a_searching_source_gets_expanded_queries_and_candidates_keep_their_query(workspace, server, monkeypatch):
    from imgnet_build import sources
    from imgnet_build.sources import Proposal, register

    monkeypatch.setattr(sources, "REGISTRY", sources.REGISTRY.copy())  # the fake source leaves with the test

    image = server.add("/found.jpg", jpeg_bytes(40, 40))

    @register("test-search")
    class FakeSearch:
        local = False
        searches = True
        seen: ClassVar[list] = []

        def __init__(self, argument: str, **settings):
            pass

        def propose(self, categories, per_category):
            for category in categories:
                FakeSearch.seen.append((category, per_category))
                query_id, _text, _language = category.queries[0]
                yield Proposal(wnid=category.wnid, url=image, rank=1, query_id=query_id, license="cc-by")

    add_categories(workspace, DOG)
    summary = gather(workspace, "test-search", per_category=7, settings=FetchSettings(allow_loopback=True))

    ((category, per_category),) = FakeSearch.seen
    assert per_category == 7 * OVERASK and category.wnid == DOG and ("dog", "en") in {(t, lang) for _, t, lang in category.queries}
    with workspace.session() as session:
        candidate = session.scalars(select(Candidate)).one()
        query = session.get(Query, candidate.query_id)
    assert (summary.ok, candidate.license, query.text, query.method) == (1, "cc-by", "dog", "lemma")


def test_gather_help_has_an_example(runner):
    result = runner.invoke(cli, ["gather", "--help"])
    assert result.exit_code == 0
    assert "Propose candidate images for every category" in result.output
    assert "imgnet gather --source urls:candidates.csv --per-category 200" in result.output


def test_retry_failed_fetches_failed_candidates_again(workspace, server, runner, tmp_path):
    add_categories(workspace, DOG)
    listing = tmp_path / "list.jsonl"
    listing.write_text(json.dumps({"url": server.add("/later.jpg", b"", status=404), "wnid": DOG}) + "\n"
                       + json.dumps({"url": server.url("/bad-truth.jpg"), "wnid": DOG, "truth": "maybe"}) + "\n")
    first = invoke(runner, workspace, "--source", f"urls:{listing}", "--allow-loopback")
    assert first.stdout.startswith("gathered: 0 ok, 2 failed")
    server.add("/later.jpg", jpeg_bytes(40, 40))  # the server is back

    plain = json.loads(invoke(runner, workspace, "--source", f"urls:{listing}", "--allow-loopback", "--json").stdout)
    retried = json.loads(invoke(runner, workspace, "--source", f"urls:{listing}", "--allow-loopback", "--json",
                                "--retry-failed").stdout)

    assert (plain["ok"], plain["failed"], plain["new_candidates"]) == (0, 0, 0)
    assert (retried["ok"], retried["failed"], retried["fetch"]["downloaded"]) == (1, 0, 1)
    assert server.counts["/later.jpg"] == 2 and server.counts["/bad-truth.jpg"] == 0


class MeetingServer(LoopbackServer):
    """Holds every response until `meet` requests are in flight at once (so two runs provably overlap),
    then serves everything; counts requests per path (LoopbackServer.counts)."""

    def __init__(self, files: dict[str, bytes], meet: int):
        super().__init__()
        self.met, self.in_flight, self.meet = threading.Event(), 0, meet
        for path, body in files.items():
            self.add(path, body)
            self.route(path, self._held(self.routes[path]))

    def _held(self, handler):
        def handle(request):
            with self.lock:
                self.in_flight += 1
                if self.in_flight >= self.meet:
                    self.met.set()
            self.met.wait(60)
            handler(request)
        return handle


def test_two_gathers_on_one_workspace_fetch_every_url_once(any_workspace, tmp_path):
    """Before: each process fetched every pending URL (2 requests per URL) and on PostgreSQL a
    stale final write could turn an ok row into failed. Now pending rows are claimed in leased batches."""
    add_categories(any_workspace, DOG, CAT)
    files = {f"/{i}.jpg": jpeg_bytes(40, 40, seed=i) for i in range(300)}
    server = MeetingServer(files, meet=6)  # one run has at most 4 requests in flight (--workers 4)
    listing = write_csv(tmp_path / "list.csv", [(server.url(path), DOG if i % 2 else CAT)
                                                for i, path in enumerate(files)])
    command = [str(Path(sys.executable).parent / "imgnet"), "-w", str(any_workspace.root), "gather",
               "--source", f"urls:{listing}", "--allow-loopback", "--workers", "4", "--json"]
    try:
        runs = [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
        outputs = [run.communicate(timeout=300) for run in runs]
    finally:
        server.met.set()
        server.close()
    assert [run.returncode for run in runs] == [0, 0], [err for _, err in outputs]
    assert server.met.is_set()
    summaries = [json.loads(out) for out, _ in outputs]
    assert sorted(server.counts.values()) == [1] * 300  # every URL fetched once, by one of the two
    assert sum(s["ok"] for s in summaries) == 300 and sum(s["failed"] + s["skipped"] for s in summaries) == 0
    assert sum(s["new_candidates"] for s in summaries) == 300
    assert all(s["ok"] > 0 for s in summaries)  # both did part of the work
    with any_workspace.session() as session:
        rows = session.execute(select(Candidate.status, Candidate.lease_owner)).all()
    assert {status for status, _ in rows} == {"ok"} and {owner for _, owner in rows} == {None}


def test_rows_postgres_could_not_store_are_stored_or_failed_alike(any_workspace, server, tmp_path):
    """Before, on PostgreSQL one of these killed the gather with a traceback and nothing inserted: a
    licence over 255 characters, a NUL byte in a URL, a URL of 5 KB (the unique btree overflowed)."""
    add_categories(any_workspace, DOG)
    good = server.add("/good.jpg", jpeg_bytes(40, 40, seed=1))
    long_url = server.url("/" + "x" * 5000 + ".jpg")
    rows = [{"url": good, "wnid": DOG, "license": "L" * 300},
            {"url": good.replace("good", "n\u0000ul"), "wnid": DOG, "license": "CC\u0000BY"},
            {"url": long_url, "wnid": DOG},
            {"url": good + "?lone=\ud800", "wnid": DOG}]
    listing = tmp_path / "list.jsonl"
    listing.write_text("".join(json.dumps(row) + "\n" for row in rows))

    summary = gather(any_workspace, f"urls:{listing}", settings=FetchSettings(allow_loopback=True, workers=2))

    assert (summary.new_candidates, summary.ok, summary.failed) == (4, 1, 3)
    with any_workspace.session() as session:
        got = {url: (status, error, license) for url, status, error, license in session.execute(
            select(Candidate.url, Candidate.status, Candidate.error, Candidate.license))}
    assert got[good] == ("ok", None, "L" * 300)
    assert got[good.replace("good", "n%00ul")] == ("failed", "invalid URL: contains a NUL byte", "CC\ufffdBY")
    assert got[long_url] == ("failed", "HTTP 404 Not Found", None)
    assert got[good + "?lone=\\ud800"] == ("failed", "invalid URL: not valid Unicode", None)


def test_failure_reasons_in_status_and_candidates_one_by_one(workspace, server, runner, tmp_path):
    """Before: README and gather pointed at `imgnet status` for the reasons, which showed none."""
    add_categories(workspace, DOG, CAT)
    rows = [(server.add("/ok.jpg", jpeg_bytes(40, 40)), DOG), (server.url("/gone1.jpg"), DOG),
            (server.url("/gone2.jpg"), CAT), ("http://me:pw@10.0.0.1/a.jpg", CAT)]
    listing = write_csv(tmp_path / "list.csv", rows)
    assert invoke(runner, workspace, "--source", f"urls:{listing}", "--allow-loopback").exit_code == 0

    status = runner.invoke(cli, ["-w", str(workspace.root), "status"])
    assert "failures:    HTTP 404 Not Found 2, refused 1\n" in status.output
    assert json.loads(runner.invoke(cli, ["-w", str(workspace.root), "status", "--json"]).output)["failures"] == {
        "HTTP 404 Not Found": 2, "refused": 1}

    def listed(*args):
        result = runner.invoke(cli, ["-w", str(workspace.root), "candidates", *args], catch_exceptions=False)
        assert result.exit_code == 0, result.output
        return result.output

    assert listed("--status", "failed", "--reason", "REFUSED") == (
        f"failed\t{CAT}\thttp://me:***@10.0.0.1/a.jpg\trefused: 10.0.0.1 is a private address\n")
    assert [json.loads(line)["url"] for line in listed("--category", CAT, "--json").splitlines()] == [
        server.url("/gone2.jpg"), "http://me:***@10.0.0.1/a.jpg"]
    table = list(csv.DictReader(io.StringIO(listed("--status", "ok", "--csv"))))
    assert [(row["wnid"], row["url"], row["reason"]) for row in table] == [(DOG, server.url("/ok.jpg"), "")]
    assert listed("--category", "dog.n.01", "--status", "failed") == (
        f"failed\t{DOG}\t{server.url('/gone1.jpg')}\tHTTP 404 Not Found\n")


def test_a_folder_with_links_loops_and_odd_names(any_workspace, tmp_path):
    """Before: a non-UTF-8 file name crashed the run with nothing inserted, a link to /etc made all of /etc
    candidates, and a link loop ended the walk early so later files were never proposed."""
    add_categories(any_workspace, DOG)
    folder = tmp_path / "photos" / DOG
    folder.mkdir(parents=True)
    (folder / "a.jpg").write_bytes(jpeg_bytes(40, 40, seed=1))
    (folder / "etc").symlink_to("/etc")
    (folder / "loop").symlink_to(folder)
    (folder / "zz.jpg").write_bytes(jpeg_bytes(40, 40, seed=2))
    odd = os.fsencode(folder) + b"/\xff\xfe odd.jpg"
    with open(odd, "wb") as handle:
        handle.write(jpeg_bytes(40, 40, seed=3))

    summary = gather(any_workspace, f"dir:{tmp_path / 'photos'}")

    assert (summary.ok, summary.failed) == (3, 2)
    with any_workspace.session() as session:
        got = dict(session.execute(select(Candidate.url, Candidate.error)).all())
    odd_url = "file://" + quote(odd)
    assert got == {str(folder / "a.jpg"): None, str(folder / "zz.jpg"): None, odd_url: None,
                   str(folder / "etc"): "a link to a folder (links are not followed)",
                   str(folder / "loop"): "a link to a folder (links are not followed)"}
    assert gather(any_workspace, f"dir:{tmp_path / 'photos'}").new_candidates == 0  # the odd name is found again


def _plan(connection, sql: str) -> str:
    postgres = connection.dialect.name == "postgresql"
    return " ".join(str(row[-1]) for row in connection.exec_driver_sql(
        ("EXPLAIN " if postgres else "EXPLAIN QUERY PLAN ") + sql))


def _counted_rows(connection, table: str) -> float:
    """The rows of `table` as the planner's statistics count them."""
    return connection.scalar(text(
        f"SELECT reltuples FROM pg_class WHERE relname = '{table}'" if connection.dialect.name == "postgresql" else
        f"SELECT max(CAST(stat AS INTEGER)) FROM sqlite_stat1 WHERE tbl = '{table}'")) or 0


def test_a_large_gather_refreshes_the_statistics_and_hot_queries_use_their_indexes(any_workspace, server, tmp_path,
                                                                                    monkeypatch):
    """A gather that writes many rows runs ANALYZE: after the proposals, so that the claims are planned with
    the pending rows counted, and after the downloads. Then the claim, the "already stored?" lookups and a
    category's ok count are served by their indexes, by the planner's own choice (no `enable_seqscan =
    off`), with the statistics in place."""
    import imgnet_build.gather as gather_module
    from imgnet_build.claims import _SQLITE_PENDING, _SQLITE_SHA1
    from imgnet_build.store import ANALYZE_AT_LEAST

    add_categories(any_workspace, DOG, CAT)
    rows = [(server.add(f"/{wnid}{i}.jpg", jpeg_bytes(48, 48, seed=i + (50 if wnid == CAT else 0))), wnid)
            for wnid in (DOG, CAT) for i in range(3)]
    rows += [(server.url(f"/never{i}.jpg"), (DOG, CAT)[i % 2]) for i in range(2 * ANALYZE_AT_LEAST)]  # quota-skipped
    listing = write_csv(tmp_path / "list.csv", rows)
    engine = any_workspace.engine
    postgres = engine.dialect.name == "postgresql"
    claim = _SQLITE_PENDING.replace(":now", "'2000-01-01'").replace(":limit", "128")
    if postgres:
        claim = claim.replace(" INDEXED BY ix_candidate_pending", "") + " FOR UPDATE SKIP LOCKED"
    before_fetch = {}

    def fetch_pending(*args, **kwargs):
        with engine.connect() as connection:
            before_fetch["rows"] = _counted_rows(connection, "candidate")
            before_fetch["claim"] = _plan(connection, claim)
        return real_fetch_pending(*args, **kwargs)

    real_fetch_pending = gather_module.fetch_pending
    monkeypatch.setattr(gather_module, "fetch_pending", fetch_pending)
    summary = gather(any_workspace, f"urls:{listing}", per_category=2,
                     settings=FetchSettings(workers=2, allow_loopback=True, host_rate=0))
    assert summary.new_candidates == len(rows) and summary.ok == 4 and summary.fetch.skipped > 2 * ANALYZE_AT_LEAST - 10
    assert before_fetch["rows"] >= len(rows) * 0.9, before_fetch  # counted before the downloads began
    assert "ix_candidate_pending" in before_fetch["claim"] and "Seq Scan" not in before_fetch["claim"] and \
        "TEMP B-TREE" not in before_fetch["claim"], before_fetch["claim"]  # walked in claim order, no sort
    lookups = {
        "ix_candidate_url_hash": "SELECT url, status FROM candidate WHERE url_hash IN ('a', 'b', 'c')",
        "ix_candidate_source_sha1": _SQLITE_SHA1.replace(":sha1s", "('a', 'b')").replace(
            " INDEXED BY ix_candidate_source_sha1" if postgres else "", ""),  # SQLite: pinned (see claims)
        "ix_candidate_category": "SELECT category_id, count(*) FROM candidate WHERE category_id IN (1, 2) "
                                 "AND status = 'ok' GROUP BY category_id",
    }
    with engine.connect() as connection:
        assert _counted_rows(connection, "candidate") >= len(rows) * 0.9
        for index, sql in lookups.items():
            plan = _plan(connection, sql)
            assert "Seq Scan" not in plan and "SCAN candidate" not in plan.replace("SCAN candidate USING", ""), \
                (index, plan)
            if index == "ix_candidate_category":  # any index that narrows to ok rows of these categories
                assert any(name in plan for name in (index, "uq_candidate", "ix_candidate_status")), plan
            else:
                assert index in plan, (index, plan)
