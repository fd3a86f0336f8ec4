"""The downloader's lean HTTP/1.1 client (`imgnet_build.http1`) against a loopback server that sends
exactly the bytes each test scripts: framing, encodings, headers, kept connections, broken replies.

The SSRF guard, TLS, redirects, size cap and deadlines on this path are tested end to end in
test_fetch.py and test_fetch_hardening.py (every download goes through it)."""

from __future__ import annotations

import dataclasses
import gzip
import socket
import threading
import time

import pytest
from loopback import in_thread

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
    (b"HTTP/1.1 200 OK\r\n" + (b"X-Pad: " + b"a" * 1000 + b"\r\n") * 80 + b"\r\n", "longer than 64 KiB"),
    (b"HTTP/1.1 200 OK\r\n" + b"a:b\r\n" * 101 + b"\r\n", "more than 100 header lines"),  # http.client's cap
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0x2\r\nok\r\n0\r\n\r\n", "bad chunk size"),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n-2\r\nok\r\n0\r\n\r\n", "bad chunk size"),
    (b"HTTP/1.1 200 OK\r\nContent-Length: \xb2\r\n\r\nok", "bad Content-Length"),  # "\u00b2".isdigit()
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


def test_a_hostile_reason_phrase_is_cut_short_and_has_no_control_characters(scripted):
    url = scripted.url("/reason", b"HTTP/1.1 404 Not \x1b[2JFound" + b"!" * 5000 + b"\r\nContent-Length: 0\r\n\r\n")
    assert failure(url) == "HTTP 404 Not ?[2JFound" + "!" * 87  # 100 characters


def test_a_connection_switched_to_another_protocol_is_not_reused(scripted):
    upgraded = scripted.url("/up", b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n")
    ok = scripted.url("/ok", b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
    assert failure(upgraded) == "HTTP 101 Switching Protocols"
    assert fetch(ok) == b"ok"
    assert scripted.connections == 2  # the 101's connection speaks websocket now: a fresh one for /ok


@pytest.fixture
def silent():
    """A TCP server that accepts connections and never sends a byte (a TLS handshake that never ends)."""
    listener, held = socket.create_server(("127.0.0.1", 0)), []

    def accept() -> None:
        while True:
            try:
                held.append(listener.accept()[0])
            except OSError:
                return

    threading.Thread(target=accept, daemon=True).start()
    yield listener.getsockname()[1], held
    listener.close()
    for conn in held:
        conn.close()


def test_a_tls_handshake_that_never_ends_is_cut_by_the_deadline_and_by_ctrl_c(silent, tmp_path):
    """Before: the handshake ran before the socket was under the item's deadline, bounded only by the connect
    timeout (an hour here); the deadline and Ctrl-C did not reach it."""
    from imgnet_build.blobs import LocalBlobStore
    from imgnet_build.claims import Item
    from imgnet_build.fetch_item import Tools, fetch_item

    port, held = silent
    url = f"https://127.0.0.1:{port}/a.jpg"
    slow = FetchSettings(allow_loopback=True, retries=0, host_rate=0, connect_timeout=3600, read_timeout=3600,
                         deadline=1)
    thread, result = in_thread(lambda: fetch_item(Item(1, 1, url, "", "urls", None, 0),
                                                  Tools(slow, LocalBlobStore(str(tmp_path / "a")))))
    thread.join(60)
    assert result and (result[0].status, result[0].reason) == ("failed", "timed out: no complete response within 1 s")

    tools = Tools(dataclasses.replace(slow, deadline=3600), LocalBlobStore(str(tmp_path / "b")))
    thread, result = in_thread(lambda: fetch_item(Item(2, 1, url, "", "urls", None, 0), tools))
    while len(held) < 2:
        time.sleep(0.01)
    tools.abandon()
    thread.join(60)
    assert result and (result[0].status, result[0].reason) == ("failed", "abandoned: the run is stopping")


def test_ctrl_c_during_a_body_that_ends_at_the_close_abandons_the_item(tmp_path):
    """Before: the shut socket ended the body as a close would, and the cut file was judged as an image
    ("failed: not an image") instead of abandoned."""
    from loopback import LoopbackServer, endless_slow

    from imgnet_build.blobs import LocalBlobStore
    from imgnet_build.claims import Item
    from imgnet_build.fetch_item import Tools, fetch_item

    server = LoopbackServer()
    try:
        url = server.route("/slow.jpg", endless_slow)  # no Content-Length: the body ends at the close
        tools = Tools(FetchSettings(allow_loopback=True, deadline=3600, read_timeout=3600),
                      LocalBlobStore(str(tmp_path)))
        thread, result = in_thread(lambda: fetch_item(Item(1, 1, url, "", "urls", None, 0), tools))
        while not server.counts["/slow.jpg"]:
            time.sleep(0.01)
        time.sleep(0.2)  # some of the body has come
        tools.abandon()
        thread.join(60)
        assert result and (result[0].status, result[0].reason) == ("failed", "abandoned: the run is stopping")
    finally:
        server.close()
