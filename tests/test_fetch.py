"""The downloader against a real HTTP server on 127.0.0.1: good files and every bad input."""

from __future__ import annotations

import hashlib
import socket

import pytest
from loopback import LoopbackServer, closed_port, endless_slow, gif_bytes, jpeg_bytes, png_bomb
from sqlalchemy import select

from imgnet_build.errors import BadInput
from imgnet_build.fetch import FetchSettings, fetch_pending
from imgnet_build.store import Candidate, Category, Image

FAST = FetchSettings(workers=8, allow_loopback=True, deadline=2.0, backoff=0.01, read_timeout=1.0,
                     connect_timeout=1.0, host_rate=0)


@pytest.fixture
def server():
    server = LoopbackServer()
    yield server
    server.close()


def add_category(session, wnid: str = "n02084071", name: str = "dog") -> int:
    category = Category(wnid=wnid, synset=f"{name}.n.01", name=name, lemmas=[name], gloss=f"a {name}",
                        lexname="noun.animal", depth=0)
    session.add(category)
    session.flush()
    return category.id


def add_candidates(workspace, urls: list[str], wnid: str = "n02084071", source: str = "urls",
                   sha1s: list[str | None] | None = None) -> None:
    with workspace.session() as session:
        category_id = session.scalar(select(Category.id).where(Category.wnid == wnid)) or add_category(session, wnid)
        for rank, url in enumerate(urls):
            session.add(Candidate(category_id=category_id, source=source, url=url, rank=rank,
                                  source_sha1=sha1s[rank] if sha1s else None))


def outcomes(workspace) -> dict[str, tuple[str, str | None]]:
    with workspace.session() as session:
        return {url: (status, error) for url, status, error in
                session.execute(select(Candidate.url, Candidate.status, Candidate.error)).all()}


def test_good_images_are_stored_once_with_their_facts(any_workspace, server):
    good = jpeg_bytes(64, 48, seed=1)
    urls = [server.add("/a.jpg", good), server.add("/copy.jpg", good),
            server.add("/rotated.jpg", jpeg_bytes(64, 40, seed=2, exif_orientation=6)),
            server.add("/cmyk.jpg", jpeg_bytes(50, 50, seed=3, mode="CMYK")),
            server.add("/still.gif", gif_bytes(40, 40), content_type="image/gif")]
    add_candidates(any_workspace, urls)

    summary = fetch_pending(any_workspace, FAST)

    assert (summary.ok, summary.failed, summary.skipped) == (5, 0, 0)
    with any_workspace.session() as session:
        images = {image.sha256: image for image in session.scalars(select(Image))}
    sha = hashlib.sha256(good).hexdigest()
    assert len(images) == 4  # a.jpg and copy.jpg are the same file
    assert (images[sha].width, images[sha].height, images[sha].format, images[sha].bytes) == (64, 48, "JPEG", len(good))
    assert any_workspace.blob_store.get(images[sha].blob_key) == good
    rotated = next(image for image in images.values() if {image.width, image.height} == {64, 40})
    assert (rotated.width, rotated.height) == (40, 64)  # EXIF orientation 6: stored sideways, portrait
    assert {image.format for image in images.values()} == {"JPEG", "GIF"}


def test_bad_inputs_each_get_a_status_and_a_reason(workspace, server):
    jpeg = jpeg_bytes(80, 60, seed=5)
    server.add("/ok.jpg", jpeg)
    cases = {
        server.add("/truncated.jpg", jpeg[: len(jpeg) // 2]): ("failed", "truncated or corrupt JPEG"),
        server.add("/empty.jpg", b""): ("failed", "empty file (0 bytes)"),
        server.add("/page.jpg", b"<!DOCTYPE html><html><body>Not found</body></html>"):
            ("failed", "HTML page, not an image"),
        server.add("/vector.svg", b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg"/>',
                   content_type="image/svg+xml"): ("failed", "SVG (vector images are not taken)"),
        server.add("/pixel.gif", gif_bytes(1, 1), content_type="image/gif"):
            ("failed", "too small: 1x1 px (minimum side 32 px)"),
        server.add("/bomb.png", png_bomb(30000), content_type="image/png"): ("failed", "decompression bomb"),
        server.add("/animated.gif", gif_bytes(40, 40, frames=3), content_type="image/gif"):
            ("failed", "animated GIF (3 frames); only still images are taken"),
        server.add("/text.jpg", b"just some text, no image here", content_type="image/jpeg"):
            ("failed", "not an image in a format we take"),
        server.route("/slow.jpg", endless_slow): ("failed", "timed out: no complete response within 2 s"),
        server.redirect("/loop-a", "/loop-b"): ("failed", "redirect loop"),
        server.redirect("/chain0", "/chain1"): ("failed", "too many redirects (more than 5)"),
        server.add("/404.jpg", b"nope", status=404): ("failed", "HTTP 404 Not Found"),
        server.add("/410.jpg", b"gone", status=410): ("failed", "HTTP 410 Gone"),
        server.add("/500.jpg", b"oops", status=500): ("failed", "HTTP 500 Internal Server Error (after 3 attempts)"),
        server.add("/429.jpg", b"slow down", status=429, headers={"Retry-After": "0"}):
            ("failed", "HTTP 429 Too Many Requests (after 3 attempts)"),
        server.add("/429-long.jpg", b"slow down", status=429, headers={"Retry-After": "3600"}):
            ("failed", "HTTP 429 Too Many Requests; Retry-After 3600 s is longer than the 60 s we wait"),
        server.add("/noai.jpg", jpeg, headers={"X-Robots-Tag": "noai, noimageai"}):
            ("skipped", "opt-out: X-Robots-Tag noai"),
        server.redirect("/to-file", "file:///etc/passwd"): ("failed", "refused URL scheme 'file'"),
        f"http://127.0.0.1:{closed_port()}/x.jpg": ("failed", "connection refused (after 3 attempts)"),
        "http://": ("failed", "invalid URL: no host name"),
        "not a url": ("failed", "invalid URL: no scheme"),
        "http://exa mple.com/a.jpg": ("failed", "invalid URL: contains spaces"),
        "http://127.0.0.1:99999/a.jpg": ("failed", "invalid URL: Port out of range"),
        "file:///etc/passwd": ("failed", "refused URL scheme 'file' (only http and https are fetched)"),
        "ftp://127.0.0.1/a.jpg": ("failed", "refused URL scheme 'ftp'"),
    }
    server.redirect("/loop-b", "/loop-a")
    for hop in range(1, 7):
        server.redirect(f"/chain{hop}", f"/chain{hop + 1}")
    add_candidates(workspace, [server.url("/ok.jpg"), *cases])

    summary = fetch_pending(workspace, FAST)

    got = outcomes(workspace)
    assert got[server.url("/ok.jpg")] == ("ok", None)
    for url, (status, reason) in cases.items():
        assert got[url][0] == status, (url, got[url])
        assert got[url][1].startswith(reason), (url, got[url])
    assert (summary.ok, summary.failed, summary.skipped) == (1, len(cases) - 1, 1)
    assert server.counts["/500.jpg"] == 3 and server.counts["/404.jpg"] == 1
    assert server.counts["/loop-a"] == 1 and server.counts["/loop-b"] == 1
    with workspace.session() as session:
        assert session.scalar(select(Candidate.attempts).where(Candidate.url == server.url("/500.jpg"))) == 3


def test_retry_after_429_then_success(workspace, server):
    calls = []

    def flaky(request):
        calls.append(1)
        body, status = (b"wait", 429) if len(calls) == 1 else (jpeg_bytes(40, 40), 200)
        request.send_response(status)
        request.send_header("Retry-After", "0")
        request.send_header("Content-Length", str(len(body)))
        request.end_headers()
        request.wfile.write(body)

    add_candidates(workspace, [server.route("/flaky.jpg", flaky)])
    fetch_pending(workspace, FAST)
    with workspace.session() as session:
        row = session.scalars(select(Candidate)).one()
    assert (row.status, row.attempts, len(calls)) == ("ok", 2, 2)


def test_size_cap_stops_reading(workspace, server):
    add_candidates(workspace, [server.add("/big.jpg", jpeg_bytes(400, 400, seed=9, quality=100))])
    fetch_pending(workspace, FetchSettings(allow_loopback=True, max_bytes=2000))
    ((status, reason),) = outcomes(workspace).values()
    assert status == "failed" and reason.startswith("too large:")


def test_loopback_is_refused_by_default(workspace, server):
    add_candidates(workspace, [server.add("/ok.jpg", jpeg_bytes())])
    fetch_pending(workspace, FetchSettings(workers=2))
    assert list(outcomes(workspace).values()) == [("failed", "refused: 127.0.0.1 is a loopback address "
                                                             "(allow it with --allow-loopback)")]
    assert server.counts["/ok.jpg"] == 0


@pytest.fixture
def fake_dns(monkeypatch):
    """Test host names resolve as given; any connect() to a non-loopback address is recorded and refused."""
    table = {"evil.test": "10.0.0.1", "metadata.test": "169.254.169.254", "mapped.test": "::ffff:10.1.2.3",
             "mirror.test": "127.0.0.1"}
    rebinding = iter(["127.0.0.1"] + ["10.0.0.1"] * 10)  # first answer passes the check, later ones would not
    real_getaddrinfo, real_connect = socket.getaddrinfo, socket.socket.connect
    attempts: list = []

    def getaddrinfo(host, port, *args, **kwargs):
        if host == "nxdomain.test":
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        if host in table or host == "rebind.test":
            address = table.get(host) or next(rebinding)
            family = socket.AF_INET6 if ":" in address else socket.AF_INET
            sockaddr = (address, port, 0, 0) if family == socket.AF_INET6 else (address, port)
            return [(family, socket.SOCK_STREAM, 6, "", sockaddr)]
        return real_getaddrinfo(host, port, *args, **kwargs)

    def connect(sock, address):
        if address[0] not in ("127.0.0.1", "::1"):
            attempts.append(address)
            raise OSError("test forbids connecting outside loopback")
        return real_connect(sock, address)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    monkeypatch.setattr(socket.socket, "connect", connect)
    return attempts


def test_ssrf_guard_refuses_private_addresses_before_connecting(workspace, server, fake_dns):
    cases = {
        "http://evil.test/a.jpg": "refused: evil.test (10.0.0.1) is a private address",
        "http://metadata.test/latest/meta-data/": "refused: metadata.test (169.254.169.254) is a link-local address",
        "https://mapped.test/a.jpg": "refused: mapped.test (::ffff:10.1.2.3) is a private address",
        "http://169.254.169.254/latest/": "refused: 169.254.169.254 is a link-local address",
        "http://0.0.0.0/a.jpg": "refused: 0.0.0.0 is an unspecified address",
        server.redirect("/to-evil", "http://evil.test/a.jpg"): "refused: evil.test (10.0.0.1) is a private address",
    }
    mirror = f"http://mirror.test:{server.port}/ok.jpg"
    rebind = f"http://rebind.test:{server.port}/ok.jpg"
    server.add("/ok.jpg", jpeg_bytes())
    add_candidates(workspace, [*cases, mirror, rebind, "http://nxdomain.test/a.jpg"])

    fetch_pending(workspace, FAST)

    got = outcomes(workspace)
    assert {url: got[url] for url in cases} == {url: ("failed", reason) for url, reason in cases.items()}
    assert got[mirror] == ("ok", None)  # a name that resolves to loopback, allowed by the setting
    assert got[rebind] == ("ok", None)  # resolved once, checked, and that very address was connected to
    assert got["http://nxdomain.test/a.jpg"] == ("failed", "host name not found")
    assert fake_dns == []  # no connection was even attempted to a refused address


def test_quota_stops_a_category_and_a_bigger_quota_resumes_it(workspace, server):
    urls = [server.add(f"/{i}.jpg", jpeg_bytes(40, 40, seed=i)) for i in range(10)]
    add_candidates(workspace, urls)

    first = fetch_pending(workspace, FAST, per_category=3)
    assert (first.ok, first.skipped) == (3, 7)
    assert sorted(status for status, _ in outcomes(workspace).values()) == ["ok"] * 3 + ["skipped"] * 7
    assert {reason for status, reason in outcomes(workspace).values() if status == "skipped"} == {"quota reached"}

    second = fetch_pending(workspace, FAST, per_category=5)
    assert (second.ok, second.skipped) == (2, 5)
    assert sum(server.counts.values()) == 5  # nothing fetched twice


def test_same_url_or_sha1_in_two_categories_is_downloaded_once(workspace, server):
    url = server.add("/shared.jpg", jpeg_bytes(50, 50, seed=4))
    other = server.add("/other.jpg", jpeg_bytes(50, 50, seed=4))  # same bytes, announced by the same sha1
    add_candidates(workspace, [url], wnid="n02084071", sha1s=["ab" * 20])
    add_candidates(workspace, [url], wnid="n02121808")  # the same URL at the same time: waits for the first

    first = fetch_pending(workspace, FAST)
    add_candidates(workspace, [other], wnid="n01503061", sha1s=["ab" * 20])
    second = fetch_pending(workspace, FAST)

    assert (first.ok, first.downloaded, second.ok, second.downloaded) == (2, 1, 1, 0)
    assert server.counts["/shared.jpg"] == 1 and server.counts["/other.jpg"] == 0
    with workspace.session() as session:
        assert len(set(session.scalars(select(Candidate.image_sha256)))) == 1


def test_local_files_are_read_without_http(workspace, tmp_path):
    good, bad = tmp_path / "good.jpg", tmp_path / "bad.jpg"
    good.write_bytes(jpeg_bytes(50, 50))
    bad.write_bytes(b"")
    add_candidates(workspace, [str(good), str(bad), str(tmp_path / "missing.jpg")], source="dir")
    fetch_pending(workspace, FetchSettings(workers=2))
    assert outcomes(workspace) == {str(good): ("ok", None), str(bad): ("failed", "empty file (0 bytes)"),
                                   str(tmp_path / "missing.jpg"): ("failed", "no such file")}


def test_a_rerun_downloads_nothing_already_done(workspace, server):
    add_candidates(workspace, [server.add("/a.jpg", jpeg_bytes()), server.add("/b.jpg", b"", status=404)])
    fetch_pending(workspace, FAST)
    counts = dict(server.counts)
    again = fetch_pending(workspace, FAST)
    assert (again.ok, again.failed, again.downloaded) == (0, 0, 0)
    assert dict(server.counts) == counts


@pytest.mark.parametrize("field, value, message", [
    ("workers", 0, "fetch setting workers must be at least 1"),
    ("deadline", 0, "fetch setting deadline must be more than 0 seconds"),
    ("retries", -1, "cannot be negative"),
])
def test_settings_are_checked(field, value, message):
    with pytest.raises(BadInput, match=message):
        FetchSettings(**{field: value})
