"""The downloader's lean HTTP/1.1 client (`imgnet_build.http1`) against a loopback server that sends
exactly the bytes each test scripts: framing, encodings, headers, kept connections, broken replies.

The SSRF guard, TLS, redirects, size cap and deadlines on this path are tested end to end in
test_fetch.py and test_fetch_hardening.py (every download goes through it)."""

from __future__ import annotations

import gzip
import socket
import threading

import pytest

from imgnet_build.download import Downloader, ItemFailed
from imgnet_build.fetch import FetchSettings
from imgnet_build.netguard import deadline

SETTINGS = FetchSettings(allow_loopback=True, retries=0, host_rate=0, connect_timeout=2, read_timeout=2, deadline=5)


class ScriptedServer:
    """Answers each request head with the bytes scripted for its path; `close` paths end the connection after
    the reply. Counts connections and records request heads."""

    def __init__(self) -> None:
        self.replies: dict[str, bytes] = {}
        self.close: set[str] = set()
        self.heads: list[bytes] = []
        self.connections = 0
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def url(self, path: str, reply: bytes, close: bool = False) -> str:
        self.replies[path] = reply
        if close:
            self.close.add(path)
        return f"http://127.0.0.1:{self.port}{path}"

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        buffer = b""
        with conn:
            while True:
                while b"\r\n\r\n" not in buffer:
                    data = conn.recv(65536)
                    if not data:
                        return
                    buffer += data
                head, _, buffer = buffer.partition(b"\r\n\r\n")
                self.heads.append(head)
                path = head.split(b" ")[1].decode().split("?")[0]
                conn.sendall(self.replies.get(path, b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n"))
                if path in self.close:
                    return

    def shutdown(self) -> None:
        self.listener.close()


@pytest.fixture
def scripted():
    server = ScriptedServer()
    yield server
    server.shutdown()


def fetch(url: str) -> bytes:
    with deadline(SETTINGS.deadline):
        return Downloader(SETTINGS).get(url)[0]


def failure(url: str) -> str:
    with pytest.raises(ItemFailed) as caught, deadline(SETTINGS.deadline):
        Downloader(SETTINGS).get(url)
    return caught.value.reason


BODY = bytes(range(256)) * 300  # 76,800 bytes


def test_bodies_by_length_chunks_and_close_arrive_whole(scripted):
    chunked = b"".join(b"%x;ext=1\r\n%s\r\n" % (len(part), part) for part in (BODY[:1000], BODY[1000:70000],
                                                                               BODY[70000:]))
    urls = {
        "length": scripted.url("/length", b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(BODY), BODY)),
        "chunked": scripted.url("/chunked", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                                + chunked + b"0\r\nX-Trailer: 1\r\n\r\n"),
        "close": scripted.url("/close", b"HTTP/1.0 200 OK\r\nContent-Type: image/jpeg\r\n\r\n" + BODY, close=True),
        "continue": scripted.url("/continue", b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\n"
                                 b"Content-Length: 5\r\n\r\nhello"),
    }
    got = {name: fetch(url) for name, url in urls.items()}
    assert got == {"length": BODY, "chunked": BODY, "close": BODY, "continue": b"hello"}


def test_kept_connections_are_reused_and_one_closed_meanwhile_is_replaced(scripted):
    ok = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
    first, second = scripted.url("/a", ok), scripted.url("/b", ok)
    assert [fetch(first), fetch(second), fetch(first)] == [b"ok"] * 3
    assert scripted.connections == 1  # one keep-alive connection for all three

    last = scripted.url("/last", b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", close=True)
    assert fetch(last) == b"ok"  # the server closes this connection after answering; the client kept it
    assert fetch(first) == b"ok"  # sent on the closed connection, then once more on a fresh one
    assert scripted.connections == 2
    assert scripted.heads[0].startswith(b"GET /a HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n" % scripted.port)
    assert b"\r\nAccept-Encoding: identity\r\n" in scripted.heads[0]
    assert b"\r\nUser-Agent: imgnet-build/" in scripted.heads[0]


def test_request_target_is_quoted_as_urllib3_quotes_it(scripted):
    url = scripted.url("/caf%C3%A9.jpg", b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
    assert fetch(url.replace("%C3%A9", "\u00e9") + "?a=1&b=%2F") == b"ok"
    assert scripted.heads[-1].startswith(b"GET /caf%C3%A9.jpg?a=1&b=%2F HTTP/1.1\r\n")


def test_gzip_is_decoded_in_pieces_no_larger_than_asked_and_the_cap_counts_decoded_bytes(scripted):
    packed = gzip.compress(b"\0" * 3_000_000)  # about 3 KB on the wire
    url = scripted.url("/bomb", b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: %d\r\n\r\n%s"
                       % (len(packed), packed))
    assert fetch(url) == b"\0" * 3_000_000
    from imgnet_build import http1
    from imgnet_build.download import check_url

    with deadline(5), http1.get(check_url(url), {}, True, 2, 2) as response:
        sizes = []
        while piece := response.read1(65536):
            sizes.append(len(piece))
    assert max(sizes) <= 65536 and sum(sizes) == 3_000_000
    small = FetchSettings(allow_loopback=True, retries=0, host_rate=0, max_bytes=1_000_000)
    with pytest.raises(ItemFailed, match=r"too large: over 1000000 bytes"), deadline(5):
        Downloader(small).get(url)
    brotli = scripted.url("/br", b"HTTP/1.1 200 OK\r\nContent-Encoding: br\r\nContent-Length: 2\r\n\r\nok")
    assert "unsupported Content-Encoding 'br'" in failure(brotli)


def test_repeated_and_folded_headers_are_read_as_urllib3_reads_them(scripted):
    opted = scripted.url("/opt", b"HTTP/1.1 200 OK\r\nX-Robots-Tag: otherbot: noai\r\nx-robots-tag: noimageai\r\n"
                         b"Content-Length: 2\r\n\r\nok")
    assert failure(opted) == "opt-out: X-Robots-Tag noimageai"
    folded = scripted.url("/fold", b"HTTP/1.1 429 Too Many\r\nRetry-After:\r\n 7200\r\nContent-Length: 0\r\n\r\n")
    assert failure(folded) == "HTTP 429 Too Many; Retry-After 7200 s is longer than the 60 s we wait"


@pytest.mark.parametrize(("reply", "reason"), [
    (b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort", "IncompleteRead"),  # then the server closes
    (b"ICY 200 OK\r\n\r\n", "bad status line"),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 5, 6\r\n\r\nhello", "bad Content-Length"),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", "bad chunk size"),
    (b"HTTP/1.1 200 OK\r\n" + b"X-Pad: " + b"a" * 140_000, "line too long"),  # no end of line
    (b"HTTP/1.1 200 OK\r\n" + b"X-Pad: aaaaaaaaaa\r\n" * 4000 + b"\r\n", "longer than 64 KiB"),
])
def test_broken_replies_fail_the_item_with_a_reason(scripted, reply, reason):
    url = scripted.url("/broken", reply, close=True)
    got = failure(url)
    assert got.startswith("network error: ") and reason in got


def test_nothing_is_sent_that_would_add_a_line_to_the_request(scripted):
    from imgnet_build import http1
    from imgnet_build.download import check_url

    url = scripted.url("/a", b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
    for headers in ({"User-Agent": "x\r\nX-Injected: 1"}, {"X-A\nB": "1"}):
        with pytest.raises(http1.ProtocolError, match="not sent"), deadline(5):
            http1.get(check_url(url), headers, True, 2, 2)
    with pytest.raises(http1.ProtocolError, match="not sent"), deadline(5):
        http1.get(check_url(url)._replace(netloc="127.0.0.1\r\nX-Injected"), {}, True, 2, 2)
    assert scripted.heads == []


def test_endless_interim_responses_and_trailers_are_cut_off(scripted):
    interim = scripted.url("/interim", b"HTTP/1.1 100 Continue\r\n\r\n" * 9 + b"HTTP/1.1 200 OK\r\n\r\n", close=True)
    assert "more than 8 interim (1xx) responses" in failure(interim)
    trailers = scripted.url("/trailers", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n"
                            + b"X-T: aaaaaaaaaaaaaaaaaaaa\r\n" * 4000 + b"\r\n", close=True)
    assert "trailers longer than 64 KiB" in failure(trailers)
