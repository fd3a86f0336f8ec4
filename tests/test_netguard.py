"""The SSRF guard over TLS: the checked address is connected to, the certificate is checked against the name."""

from __future__ import annotations

import datetime as dt
import http.server
import socket
import ssl
import threading
import time

import pytest
import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from loopback import in_thread, jpeg_bytes

from imgnet_build import netguard
from imgnet_build.blobs import LocalBlobStore
from imgnet_build.claims import Item
from imgnet_build.download import Downloader, ItemFailed
from imgnet_build.fetch import FetchSettings
from imgnet_build.fetch_item import Tools, fetch_item
from imgnet_build.netguard import AddressRefused, GuardedAdapter, deadline, refusal


@pytest.fixture
def tls_server(tmp_path):
    """An HTTPS server on 127.0.0.1 with a self-signed certificate for the name `localhost`."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=1))
            .not_valid_after(now + dt.timedelta(hours=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
            .sign(key, hashes.SHA256()))
    cert_file, key_file = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    body = jpeg_bytes()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_file, key_file)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server.server_address[1], str(cert_file), body
    server.shutdown()
    server.server_close()


def session(allow_loopback: bool) -> requests.Session:
    session = requests.Session()
    session.trust_env = False
    session.mount("https://", GuardedAdapter(allow_loopback))
    return session


def test_tls_through_the_guard_verifies_the_host_name(tls_server):
    port, ca, body = tls_server
    assert session(True).get(f"https://localhost:{port}/", verify=ca, timeout=5).content == body
    with pytest.raises(requests.exceptions.SSLError, match=r"certificate is not valid for '127.0.0.1'"):
        session(True).get(f"https://127.0.0.1:{port}/", verify=ca, timeout=5)  # the name, not the address, counts
    with pytest.raises(AddressRefused, match=r"refused: localhost \(127.0.0.1\) is a loopback address"):
        session(False).get(f"https://localhost:{port}/", verify=ca, timeout=5)



def test_the_downloaders_tls_verifies_the_host_name_and_keeps_the_guard(tls_server, monkeypatch):
    """The same checks on the downloader's own HTTP client (imgnet_build.http1)."""
    from imgnet_build import http1
    from imgnet_build.download import Downloader, ItemFailed
    from imgnet_build.fetch import FetchSettings

    port, ca, body = tls_server
    trusting = ssl.create_default_context(cafile=ca)
    monkeypatch.setattr(http1, "_TLS", trusting)
    loopback = FetchSettings(allow_loopback=True, retries=0, host_rate=0)
    assert Downloader(loopback).get(f"https://localhost:{port}/")[0] == body
    with pytest.raises(ItemFailed, match=r"^TLS error: .*IP address mismatch"):
        Downloader(loopback).get(f"https://127.0.0.1:{port}/")
    with pytest.raises(ItemFailed, match=r"^refused: localhost \(127.0.0.1\) is a loopback address \(allow it"):
        Downloader(FetchSettings(retries=0, host_rate=0)).get(f"https://localhost:{port}/")


@pytest.mark.parametrize("address, reason", [
    ("8.8.8.8", None), ("2001:4860:4860::8888", None),
    ("127.0.0.1", "a loopback address (allow it with --allow-loopback)"), ("10.1.2.3", "a private address"),
    ("192.168.0.1", "a private address"), ("172.16.5.4", "a private address"),
    ("169.254.169.254", "a link-local address"), ("fe80::1", "a link-local address"),
    ("::ffff:127.0.0.1", "a loopback address (allow it with --allow-loopback)"), ("fc00::1", "a private address"),
    ("0.0.0.0", "an unspecified address"), ("224.0.0.1", "a multicast address"),
    ("100.64.0.1", "not a public address"), ("240.0.0.1", "a private address"),
])
def test_refusal(address, reason):
    assert refusal(address) == reason


class FakeClock:
    """Stands in for the `time` module inside netguard: sleeping advances the clock, nothing waits."""

    def __init__(self) -> None:
        self.now, self.sleeps = 1000.0, []

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(round(seconds, 6))
        self.now += seconds

    def wait(self, seconds: float) -> bool:  # as the limiter's `stopping` event: never set
        self.sleep(seconds)
        return False

    def is_set(self) -> bool:
        return False


def test_host_rate_spaces_requests_and_retry_after_pauses_the_host(monkeypatch):
    import imgnet_build.netguard as netguard

    clock = FakeClock()
    monkeypatch.setattr(netguard, "time", clock)
    limiter = netguard.HostLimiter(concurrency=4, rate=10.0, stopping=clock)
    for _ in range(3):
        with limiter.slot("a.example"):
            pass
    with limiter.slot("b.example"):  # another host has its own pace
        pass
    limiter.pause("a.example", 5.0)
    with limiter.slot("a.example"):
        pass
    assert clock.sleeps == [0.1, 0.1, 5.0]


def test_per_host_concurrency_is_capped(workspace):
    from loopback import LoopbackServer

    from imgnet_build.fetch import FetchSettings, fetch_pending
    from imgnet_build.store import Candidate, Category

    server, lock, state = LoopbackServer(), threading.Lock(), {"now": 0, "max": 0}
    body = jpeg_bytes()

    def handler(request):
        with lock:
            state["now"] += 1
            state["max"] = max(state["max"], state["now"])
        threading.Event().wait(0.2)  # long enough for the other workers to pile up
        with lock:
            state["now"] -= 1
        request.send_response(200)
        request.send_header("Content-Length", str(len(body)))
        request.end_headers()
        request.wfile.write(body)

    try:
        with workspace.session() as session:
            category = Category(wnid="n02084071", synset="dog.n.01", name="dog", lemmas=["dog"], gloss="",
                                lexname="noun.animal", depth=0)
            session.add(category)
            session.flush()
            for i in range(12):
                session.add(Candidate(category_id=category.id, source="urls", url=server.route(f"/{i}.jpg", handler)))
        summary = fetch_pending(workspace, FetchSettings(workers=8, per_host=3, host_rate=0, allow_loopback=True))
    finally:
        server.close()
    assert summary.ok == 12 and state["max"] == 3


# -- the lookup and the connect end with the item's deadline and at Ctrl-C ------------------------

@pytest.fixture
def hung_dns(monkeypatch):
    """`hung.test` is looked up by a resolver that never answers (until the test ends); any connect() outside
    loopback is recorded and refused. Yields (asked: set once the lookup has begun, connects)."""
    release, asked, connects = threading.Event(), threading.Event(), []
    real_getaddrinfo, real_connect = socket.getaddrinfo, socket.socket.connect

    def getaddrinfo(host, port, *args, **kwargs):
        if host == "hung.test":
            asked.set()
            release.wait()
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", 9))]
        return real_getaddrinfo(host, port, *args, **kwargs)

    def connect(sock, address):
        connects.append(address)
        if address[0] not in ("127.0.0.1", "::1"):
            raise OSError("test forbids connecting outside loopback")
        return real_connect(sock, address)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    monkeypatch.setattr(socket.socket, "connect", connect)
    yield asked, connects
    release.set()  # the abandoned lookup's thread ends


def test_a_hung_host_name_lookup_ends_with_the_items_deadline(hung_dns, tmp_path):
    """Before: getaddrinfo ran in the download thread, bounded by nothing: the item waited for the resolver."""
    asked, connects = hung_dns
    tools = Tools(FetchSettings(retries=0, deadline=1), LocalBlobStore(str(tmp_path)))
    thread, result = in_thread(lambda: fetch_item(Item(1, 1, "http://hung.test/a.jpg", "", "urls", None, 0), tools))
    thread.join(30)  # a guard against hanging: the deadline is 1 s
    assert result and (result[0].status, result[0].reason) == ("failed", "timed out: no complete response within 1 s")
    assert asked.is_set() and connects == []


def test_ctrl_c_ends_a_hung_host_name_lookup_at_once(hung_dns, tmp_path):
    """Before: Ctrl-C waited for the resolver (the process cannot exit before the download thread returns)."""
    asked, connects = hung_dns
    tools = Tools(FetchSettings(retries=0, deadline=3600), LocalBlobStore(str(tmp_path)))
    thread, result = in_thread(lambda: fetch_item(Item(1, 1, "http://hung.test/a.jpg", "", "urls", None, 0), tools))
    assert asked.wait(30)
    tools.abandon()
    thread.join(30)  # a guard against hanging: the deadline is an hour
    assert result and (result[0].status, result[0].reason) == ("failed", "abandoned: the run is stopping")
    assert connects == []


def test_lookups_stuck_in_every_resolver_thread_fail_new_ones_at_once(hung_dns, monkeypatch):
    """Hung lookups hold at most the resolver's few threads; once all hang, a lookup fails at once (not after
    the hour it may wait here) with the reason, and the item is not retried."""
    _asked, connects = hung_dns
    resolver = netguard._Resolver(2)
    monkeypatch.setattr(netguard, "_RESOLVER", resolver)
    monkeypatch.setattr(netguard, "RESOLVE_TIMEOUT", 0.2)
    downloader = Downloader(FetchSettings(retries=3, deadline=3600))
    with deadline(3600):
        for _ in range(2):
            with pytest.raises(ItemFailed, match=r"^host name lookup timed out$") as caught:
                downloader.get("http://hung.test/a.jpg")
            assert caught.value.attempts == 1
        while not all(time.monotonic() - lookup.started > 0.2 for lookup in resolver._running):
            time.sleep(0.05)
        with pytest.raises(netguard.LookupTimedOut, match=r"host name lookup timed out: 2 lookups hang"):
            resolver.lookup("hung.test", 80, 3600)
    assert resolver._threads == 2 and connects == []


@pytest.fixture
def unanswered_port():
    """A loopback port whose accept queue is full: a connect to it stays in progress (SYN unanswered)."""
    listener = socket.create_server(("127.0.0.1", 0), backlog=0)
    port, fillers = listener.getsockname()[1], []
    for _ in range(16):  # until one filler's connect hangs: the queue is full
        filler = socket.socket()
        fillers.append(filler)
        filler.settimeout(0.5)
        try:
            filler.connect(("127.0.0.1", port))
        except TimeoutError:
            break
    yield port
    for filler in fillers:
        filler.close()
    listener.close()


def test_ctrl_c_ends_a_connect_in_progress(unanswered_port, monkeypatch, tmp_path):
    """Before: the socket reached the watchdog only once connected; Ctrl-C waited for the connect timeout."""
    connecting, real_connect = threading.Event(), socket.socket.connect

    def connect(sock, address):
        if address[0] != "127.0.0.1":
            raise OSError("test forbids connecting outside loopback")
        connecting.set()
        return real_connect(sock, address)

    monkeypatch.setattr(socket.socket, "connect", connect)
    tools = Tools(FetchSettings(allow_loopback=True, retries=0, deadline=3600, connect_timeout=3600),
                  LocalBlobStore(str(tmp_path)))
    url = f"http://127.0.0.1:{unanswered_port}/a.jpg"
    thread, result = in_thread(lambda: fetch_item(Item(1, 1, url, "", "urls", None, 0), tools))
    assert connecting.wait(30)
    tools.abandon()
    thread.join(30)  # a guard against hanging: the connect timeout is an hour
    assert result and (result[0].status, result[0].reason) == ("failed", "abandoned: the run is stopping")
