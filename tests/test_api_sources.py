"""The API sources against loopback servers that answer in each API's real JSON shape."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import pytest
import requests

from imgnet_build.errors import MissingCredentials, SourceUnreachable, UnknownSource
from imgnet_build.sources import CategoryQueries, Proposal, open_source
from imgnet_build.sources.http import retry_after

WHIPPET, TABBY = "n02091134", "n02123045"
Answer = tuple[int, dict[str, str], object]  # status, headers, JSON body


class ApiServer:
    """An HTTP server on 127.0.0.1: `answer(path, params)` makes each response; `calls` records requests."""

    def __init__(self, answer: Callable[[str, dict[str, str]], Answer]):
        self.answer = answer
        self.calls: list[tuple[str, dict[str, str], dict[str, str]]] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                parts = urlsplit(self.path)
                params = {key: values[-1] for key, values in parse_qs(parts.query).items()}
                server.calls.append((parts.path, params, dict(self.headers)))
                status, headers, body = server.answer(parts.path, params)
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json; charset=utf-8")
                self.send_header("Content-Length", str(len(data)))
                for name, value in headers.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def params(self, key: str) -> list[str | None]:
        return [params.get(key) for _, params, _ in self.calls]


@pytest.fixture
def serve():
    servers = []

    def start(answer):
        servers.append(ApiServer(answer))
        return servers[-1]

    yield start
    for server in servers:
        server.httpd.shutdown()
        server.httpd.server_close()


def settings(server: ApiServer, **more) -> dict:
    session = requests.Session()
    session.trust_env = False  # never a proxy, even if the environment names one
    return {"base_url": server.url + more.pop("path", ""), "session": session, "min_interval": 0, **more}


def good(proposals: list[Proposal]) -> list[tuple]:
    return [(p.wnid, p.url, p.rank, p.query_id) for p in proposals if p.error is None]


def test_registry_knows_every_source():
    with pytest.raises(UnknownSource, match=r"choose from dir, flickr, openverse, urls, wikimedia"):
        open_source("bing")


def test_retry_after_header_forms():
    assert retry_after("7") == 7.0
    assert retry_after(None) is None and retry_after("soon") is None
    assert 100 < retry_after(time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(time.time() + 120))) <= 120


# -- Wikimedia Commons ------------------------------------------------------------------------


def commons_page(pageid: int, index: int, name: str, mime: str = "image/jpeg", artist: str = "<a href='//x'>Ann</a>"):
    return str(pageid), {
        "pageid": pageid, "ns": 6, "title": f"File:{name}", "index": index, "imagerepository": "local",
        "imageinfo": [{"size": 1000, "width": 640, "height": 480, "url": f"https://upload.test/{name}",
                       "descriptionurl": f"https://commons.test/wiki/File:{name}", "sha1": f"{pageid:040x}".upper(),
                       "mime": mime, "extmetadata": {
                           "LicenseShortName": {"value": "CC BY-SA 4.0", "source": "commons-desc-page"},
                           "Artist": {"value": artist, "source": "commons-desc-page"}}}]}


def commons(pages: list, more: dict | None = None) -> dict:
    body: dict = {"batchcomplete": "", "query": {"pages": dict(pages)}}
    if more:
        body["continue"] = more
    return body


def test_wikimedia_pages_with_continue(serve):
    def answer(path, params):
        if params["gsrsearch"] == "whippet" and "gsroffset" not in params:
            pages = [commons_page(30, 2, "b.jpg", artist="<span>Bob &amp; Co</span>"),
                     commons_page(10, 1, "a.jpg"), commons_page(20, 3, "c.svg", mime="image/svg+xml")]
            return 200, {}, commons(pages, {"gsroffset": 3, "continue": "gsroffset||"})
        if params["gsrsearch"] == "whippet":
            return 200, {}, commons([commons_page(40, 4, "d.jpg"), commons_page(10, 5, "a.jpg")])
        if params["gsrsearch"] == "whippet dog":
            return 200, {}, commons([commons_page(50, 1, "a.jpg"), commons_page(60, 2, "e.jpg")])
        return 200, {}, {"batchcomplete": ""}  # no results: no "query" at all

    server = serve(answer)
    source = open_source("wikimedia", **settings(server, path="/w/api.php", user_agent="imgnet-test/1 (me@example.test)"))
    proposals = list(source.propose([CategoryQueries(WHIPPET, ((7, "whippet", "en"), (8, "whippet dog", "en"))),
                                     CategoryQueries(TABBY, ((9, "tabby", "en"),))], per_category=10))
    assert good(proposals) == [(WHIPPET, "https://upload.test/a.jpg", 1, 7), (WHIPPET, "https://upload.test/b.jpg", 2, 7),
                               (WHIPPET, "https://upload.test/d.jpg", 3, 7), (WHIPPET, "https://upload.test/e.jpg", 4, 8)]
    first, second = proposals[:2]
    assert (first.license, first.attribution, first.source_sha1) == ("CC BY-SA 4.0", "Ann", f"{10:040x}")
    assert second.attribution == "Bob & Co"
    path, params, headers = server.calls[0]
    assert path == "/w/api.php" and headers["User-Agent"] == "imgnet-test/1 (me@example.test)"
    assert {k: params[k] for k in ("action", "format", "generator", "gsrnamespace", "gsrlimit", "prop", "iiprop", "maxlag")} == {
        "action": "query", "format": "json", "generator": "search", "gsrnamespace": "6", "gsrlimit": "50",
        "prop": "imageinfo", "iiprop": "url|size|mime|sha1|extmetadata", "maxlag": "5"}
    assert server.params("gsroffset") == [None, "3", None, None]
    assert server.params("gsrsearch") == ["whippet", "whippet", "whippet dog", "tabby"]


def test_wikimedia_stops_at_per_category(serve):
    server = serve(lambda path, params: (200, {}, commons([commons_page(i, i, f"{i}.jpg") for i in range(1, 6)],
                                                          {"gsroffset": 5, "continue": "gsroffset||"})))
    source = open_source("wikimedia", **settings(server))
    proposals = list(source.propose([CategoryQueries(WHIPPET, ((1, "whippet", "en"), (2, "whippet dog", "en")))], 3))
    assert [p.rank for p in proposals] == [1, 2, 3]
    assert len(server.calls) == 1


def test_wikimedia_waits_out_maxlag(serve):
    calls = []

    def answer(path, params):
        calls.append(time.monotonic())
        if len(calls) == 1:
            return 200, {"Retry-After": "1", "X-Database-Lag": "7"}, {"error": {
                "code": "maxlag", "info": "Waiting for 10.64.0.1: 7 seconds lagged.", "host": "10.64.0.1", "lag": 7}}
        return 200, {}, commons([commons_page(1, 1, "a.jpg")])

    source = open_source("wikimedia", **settings(serve(answer)))
    proposals = list(source.propose([CategoryQueries(WHIPPET, ((1, "whippet", "en"),))], 5))
    assert good(proposals) == [(WHIPPET, "https://upload.test/a.jpg", 1, 1)]
    assert calls[1] - calls[0] >= 1.0


def test_wikimedia_failures_are_data(serve):
    def answer(path, params):
        if params["gsrsearch"] == "whippet":
            return 500, {}, {"oops": True}
        if params["gsrsearch"] == "bad":
            return 200, {}, {"error": {"code": "badvalue", "info": "Unrecognized value"}}
        return 200, {}, commons([commons_page(1, 1, "t.jpg")])

    source = open_source("wikimedia", **settings(serve(answer), retries=0))
    proposals = list(source.propose([CategoryQueries(WHIPPET, ((1, "whippet", "en"), (2, "bad", "en"))),
                                     CategoryQueries(TABBY, ((3, "tabby", "en"),))], 5))
    assert [(p.wnid, p.query_id, p.error) for p in proposals] == [
        (WHIPPET, 1, "wikimedia search 'whippet' failed: HTTP 500 after 1 tries"),
        (WHIPPET, 2, "wikimedia search 'bad' failed: badvalue: Unrecognized value"),
        (TABBY, 3, None)]


def test_connection_refused_stops_the_source_and_the_spec_argument_is_the_base_url():
    """Issue 14 item 13: an API that refuses connections is "cannot reach", not one failed row per query."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # closed again: nothing listens there
    session = requests.Session()
    session.trust_env = False
    source = open_source(f"wikimedia:http://127.0.0.1:{port}/w/api.php", session=session, retries=0)
    with pytest.raises(SourceUnreachable) as error:
        list(source.propose([CategoryQueries(WHIPPET, ((1, "whippet", "en"),)),
                             CategoryQueries(TABBY, ((2, "tabby", "en"),))], 5))
    assert str(error.value) == (f"cannot reach 127.0.0.1:{port}: connection refused after 2 tries; check the network "
                                "(or the source's address) and run the same command again")
    assert "User-Agent" not in session.headers or session.headers["User-Agent"].startswith("python-requests")


def test_a_server_that_answered_before_may_drop_a_query_then_the_source_stops(serve):
    """One lost connection after answers is one failed query; `unreachable_after` in a row stop the source."""
    server = serve(lambda path, params: (200, {}, commons([commons_page(1, 1, params["gsrsearch"] + ".jpg")])))
    source = open_source("wikimedia", **settings(server, retries=0, connect_retries=0, unreachable_after=2))
    categories = [CategoryQueries(f"n0000000{i}", ((i, f"q{i}", "en"),)) for i in range(1, 5)]
    proposals = source.propose(categories, 5)
    assert next(proposals).url == "https://upload.test/q1.jpg"
    server.httpd.shutdown()
    server.httpd.server_close()  # the port refuses from now on
    failed = next(proposals)
    assert failed.url == "" and failed.error.endswith("connection refused after 1 tries")
    with pytest.raises(SourceUnreachable, match=r"cannot reach 127\.0\.0\.1"):
        next(proposals)


def test_a_blackholed_api_fails_on_its_connect_timeout():
    """A port whose backlog is full drops the SYN: only the connect timeout ends the wait (not the 30 s read one)."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        port = listener.getsockname()[1]
        fillers = []
        for _ in range(8):  # fill the accept queue: later connections get no answer
            filler = socket.socket()
            filler.setblocking(False)
            filler.connect_ex(("127.0.0.1", port))
            fillers.append(filler)
        session = requests.Session()
        session.trust_env = False
        source = open_source(f"wikimedia:http://127.0.0.1:{port}/w/api.php", session=session, retries=0,
                             connect_timeout=0.3, connect_retries=1, timeout=600)
        with pytest.raises(SourceUnreachable) as error:
            list(source.propose([CategoryQueries(WHIPPET, ((1, "whippet", "en"),))], 5))
        assert "no answer to the connection (connect timeout) after 2 tries" in str(error.value)
        for filler in fillers:
            filler.close()


# -- Openverse --------------------------------------------------------------------------------


def openverse_page(params: dict, page_count: int, per_page: int | None = None) -> dict:
    page, size = int(params["page"]), per_page or int(params["page_size"])
    results = [{"id": f"id-{page}-{i}", "title": f"Whippet {page}.{i}", "url": f"https://img.test/{params['q']}/{page}/{i}.jpg",
                "creator": "Ann", "license": ["by", "cc0", "by-nc-sa"][i % 3], "license_version": ["2.0", "1.0", "4.0"][i % 3],
                "provider": "flickr", "source": "flickr", "filetype": "jpg", "width": 640, "height": 480,
                "attribution": f"\"Whippet {page}.{i}\" by Ann is licensed under CC BY 2.0."} for i in range(size)]
    return {"result_count": page_count * size, "page_count": page_count, "page_size": size, "page": page, "results": results}


def test_openverse_pages_and_licenses(serve):
    server = serve(lambda path, params: (200, {}, openverse_page(params, page_count=2)))
    source = open_source("openverse", **settings(server, licenses=["by", "cc0"], page_size=100))
    proposals = list(source.propose([CategoryQueries(WHIPPET, ((5, "whippet", "en"),))], 100))
    assert len(proposals) == 40 and [p.rank for p in proposals] == list(range(1, 41))
    assert [(p.license, p.query_id) for p in proposals[:3]] == [("CC BY 2.0", 5), ("CC0 1.0", 5), ("CC BY-NC-SA 4.0", 5)]
    assert proposals[0].attribution == "\"Whippet 1.0\" by Ann is licensed under CC BY 2.0."
    assert [path for path, _, _ in server.calls] == ["/v1/images/", "/v1/images/"]
    assert server.params("page") == ["1", "2"]
    assert server.params("page_size") == ["20", "20"]  # anonymous: at most 20 a page
    assert server.params("license") == ["by,cc0", "by,cc0"]
    assert server.calls[0][2]["User-Agent"].startswith("imgnet-build/0.1.0 (")


def test_openverse_anonymous_depth_is_20_pages(serve):
    server = serve(lambda path, params: (200, {}, openverse_page(params, page_count=500)))
    proposals = list(open_source("openverse", **settings(server, page_size=2)).propose(
        [CategoryQueries(WHIPPET, ((1, "whippet", "en"),))], 10_000))
    assert len(proposals) == 40
    assert server.params("page") == [str(n) for n in range(1, 21)]


def test_openverse_honours_429_retry_after(serve):
    calls = []

    def answer(path, params):
        calls.append(time.monotonic())
        if len(calls) == 1:
            return 429, {"Retry-After": "1"}, {"detail": "Request was throttled. Expected available in 1 second."}
        return 200, {}, openverse_page(params, page_count=1, per_page=2)

    proposals = list(open_source("openverse", **settings(serve(answer))).propose(
        [CategoryQueries(WHIPPET, ((1, "whippet", "en"),))], 10))
    assert len(good(proposals)) == 2
    assert calls[1] - calls[0] >= 1.0


def test_openverse_long_retry_after_fails_fast_and_pauses_the_source(serve):
    server = serve(lambda path, params: (429, {"Retry-After": "86400"}, {"detail": "Request was throttled."}))
    started = time.monotonic()
    proposals = list(open_source("openverse", **settings(server, max_wait=30)).propose(
        [CategoryQueries(WHIPPET, ((1, "whippet", "en"),)), CategoryQueries(TABBY, ((2, "tabby", "en"),))], 10))
    assert time.monotonic() - started < 5
    assert [p.error for p in proposals] == [
        "openverse search 'whippet' failed: HTTP 429: asked to wait 86400 s, more than max_wait 30 s",
        "openverse search 'tabby' failed: rate limited for 86400 s more"]
    assert len(server.calls) == 1  # the second query did not knock again


def test_openverse_sends_a_token_when_given(serve):
    server = serve(lambda path, params: (200, {}, openverse_page(params, page_count=1, per_page=1)))
    list(open_source("openverse", **settings(server, api_key="tok", page_size=100)).propose(
        [CategoryQueries(WHIPPET, ((1, "whippet", "en"),))], 10))
    assert server.calls[0][2]["Authorization"] == "Bearer tok"
    assert server.params("page_size") == ["100"]


# -- Flickr -----------------------------------------------------------------------------------

T0, T1 = 1_500_000_000, 1_500_000_000 + 90 * 86400


def flickr_corpus(count: int) -> list[dict]:
    step = (T1 - T0) // count
    return [{"id": str(n), "owner": f"{n}@N00", "secret": "abc", "server": "65535", "farm": 66, "title": f"whippet {n}",
             "ispublic": 1, "isfriend": 0, "isfamily": 0, "license": str(n % 11), "dateupload": str(T0 + n * step),
             "ownername": f"owner {n}", **({"url_o": f"https://live.test/{n}_o.jpg", "height_o": 3000, "width_o": 4000}
                                         if n % 2 else {}),
             "url_l": f"https://live.test/{n}_b.jpg", "height_l": 768, "width_l": 1024} for n in range(count)]


def flickr_answer(corpus: list[dict]):
    """flickr.photos.search over `corpus`, with its real quirk: nothing past the first 4,000."""
    def answer(path, params):
        if params.get("api_key") != "key-1":
            return 200, {}, {"stat": "fail", "code": 100, "message": "Invalid API Key (Key has invalid format)"}
        low, high = int(params["min_upload_date"]), int(params["max_upload_date"])
        found = [photo for photo in corpus if low <= int(photo["dateupload"]) <= high]
        page, per_page = int(params["page"]), int(params["per_page"])
        start = min((page - 1) * per_page, 4000 - per_page)  # Flickr repeats the last pages past the cap
        pages = -(-len(found) // per_page)
        return 200, {}, {"photos": {"page": page, "pages": pages, "perpage": per_page, "total": len(found),
                                    "photo": found[start:start + per_page]}, "stat": "ok"}
    return answer


def test_flickr_splits_date_windows_past_4000(serve, monkeypatch):
    monkeypatch.setenv("FLICKR_API_KEY", "key-1")
    corpus = flickr_corpus(9000)
    server = serve(flickr_answer(corpus))
    source = open_source("flickr", **settings(server, min_upload_date=T0, max_upload_date=T1))
    proposals = list(source.propose([CategoryQueries(WHIPPET, ((3, "whippet", "en"),))], 100_000))
    assert len(proposals) == 9000 == len({p.url for p in proposals})
    assert [p.rank for p in proposals] == list(range(1, 9001))
    for _, params, _ in server.calls:
        assert int(params["page"]) * int(params["per_page"]) <= 4000
        assert params["method"] == "flickr.photos.search" and params["nojsoncallback"] == "1"
        assert params["extras"] == "license,owner_name,url_o,url_l,o_dims,date_upload"
    windows = {(int(p["min_upload_date"]), int(p["max_upload_date"])) for _, p, _ in server.calls}
    assert (T0, T1) in windows and len(windows) == 7  # the whole, two halves, four quarters
    assert int(server.calls[1][1]["min_upload_date"]) > T0  # the newer half first


def test_flickr_fields_and_filters(serve, monkeypatch):
    monkeypatch.setenv("FLICKR_API_KEY", "key-1")
    server = serve(flickr_answer(flickr_corpus(12)))
    source = open_source("flickr", **settings(server, per_page=5, licenses=[4, 5, 9, 10],
                                              min_upload_date="2017-07-14", max_upload_date=T1))
    proposals = list(source.propose([CategoryQueries(WHIPPET, ((3, "whippet", "en"),))], 4))
    assert [(p.url, p.license, p.attribution, p.rank, p.query_id) for p in proposals] == [
        ("https://live.test/0_b.jpg", "All Rights Reserved", "owner 0", 1, 3),
        ("https://live.test/1_o.jpg", "CC BY-NC-SA 2.0", "owner 1", 2, 3),
        ("https://live.test/2_b.jpg", "CC BY-NC 2.0", "owner 2", 3, 3),
        ("https://live.test/3_o.jpg", "CC BY-NC-ND 2.0", "owner 3", 4, 3)]
    params = server.calls[0][1]
    assert (params["license"], params["min_upload_date"], params["per_page"]) == ("4,5,9,10", "1499990400", "5")
    assert len(server.calls) == 1


def test_flickr_needs_a_key(monkeypatch):
    monkeypatch.delenv("FLICKR_API_KEY", raising=False)
    with pytest.raises(MissingCredentials, match="set FLICKR_API_KEY"):
        open_source("flickr")


def test_flickr_rejected_key_stops_the_command(serve, monkeypatch):
    monkeypatch.setenv("FLICKR_API_KEY", "wrong")
    source = open_source("flickr", **settings(serve(flickr_answer([]))))
    with pytest.raises(MissingCredentials, match="Flickr rejected the key in FLICKR_API_KEY: Invalid API Key"):
        list(source.propose([CategoryQueries(WHIPPET, ((3, "whippet", "en"),))], 4))


# -- gather against an API (issue 14 item 13) ---------------------------------------------


def corgi_workspace(workspace):
    from imgnet_build import taxonomy

    taxonomy.build_tree(workspace, taxonomy.TreeOptions(roots=("corgi.n.01",)))
    return workspace


def test_gather_shows_search_progress_and_a_rerun_asks_only_unanswered_queries(serve, workspace):
    """The old gather asked every query again on each run and showed nothing while searching."""
    from imgnet_build.gather import gather

    def answer(path, params):  # one hit per query, on a loopback URL the fetcher refuses without --allow-loopback
        key, page = commons_page(1, 1, params["gsrsearch"].replace(" ", "_") + ".jpg")
        page["imageinfo"][0]["url"] = page["imageinfo"][0]["url"].replace("https://upload.test", "http://127.0.0.1:9")
        return 200, {}, commons([(key, page)])

    server = serve(answer)
    corgi_workspace(workspace)
    session = requests.Session()
    session.trust_env = False
    seen: list[tuple[int, int]] = []
    summary = gather(workspace, f"wikimedia:{server.url}/w/api.php", per_category=1,
                     source_settings={"session": session, "min_interval": 0}, search_progress=lambda *p: seen.append(p))
    asked = len(server.calls)
    assert seen[0] == (0, 3) and seen[-1] == (3, 3) and summary.new_candidates == asked == 9
    again = gather(workspace, f"wikimedia:{server.url}/w/api.php", per_category=1,
                   source_settings={"session": session, "min_interval": 0})
    assert len(server.calls) == asked  # every category has its candidate: nothing to ask
    assert again.new_candidates == 0


def test_gather_from_an_unreachable_api_is_one_error_line(runner, workspace):
    """`gather --source wikimedia` offline printed nothing for 9+ minutes and made 0 candidates."""
    from imgnet_build.cli.main import cli

    corgi_workspace(workspace)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    result = runner.invoke(cli, ["-w", str(workspace.root), "gather", "--source",
                                 f"wikimedia:http://127.0.0.1:{port}/w/api.php"], catch_exceptions=False)
    assert result.exit_code == 1
    assert result.output == (f"Error: cannot reach 127.0.0.1:{port}: connection refused after 2 tries; check the "
                             "network (or the source's address) and run the same command again\n")
