"""A lean HTTP/1.1 GET for the downloader: keep-alive connections per thread, the SSRF guard's sockets.

    with get(parts, headers, allow_loopback, connect_timeout, read_timeout) as response:
        response.status, response.headers.get("content-length"), response.read1(65536)

urllib3 and http.client spend most of a small GET's CPU on their own work (pool
bookkeeping, `email`-based header parsing, a poll per reused connection); the downloader's
whole GET through this costs 43-62 us against 162-248 through them (bench_gather_executors,
load 8-12). It keeps every check the guarded urllib3 path has: sockets come from
`netguard.checked_socket` (resolved once, every address checked, the checked address
connected to), TLS verifies the certificate against the host name, and the host name lookup
and each socket are under the item's deadline and Ctrl-C from before the connect
(`netguard.watch_socket`), the TLS handshake included.
What a hostile server sends is bounded: the head (64 KiB, 100 header lines, 8 interim
responses), chunk framing and trailers, decoded bytes per read (a gzip bomb), and the time
(the deadline shuts the socket, however slowly the bytes come). Redirects, the size cap and
the content checks stay with the caller (`imgnet_build.download`), which sees one response
per call. Bodies: Content-Length, chunked, or up to the close; gzip and deflate are decoded
(we ask for identity); other encodings fail the item.
"""

from __future__ import annotations

import http.client
import re
import socket
import ssl
import threading
import urllib.parse
import zlib
from typing import Any, cast

from imgnet_build.netguard import check_stopping, checked_socket, time_left, watch_socket

__all__ = ["Response", "get", "ProtocolError", "ConnectTimedOut"]

_MAX_HEAD = 64 * 1024  # bytes of status line and headers (http.client: 64 KiB per line, 100 headers)
_MAX_HEADERS = 100  # header lines per response, folded lines included (http.client's limit)
_MAX_INTERIM = 8  # 1xx responses before the final one
_IDLE_PER_HOST, _HOSTS = 2, 64  # idle connections kept per (scheme, host, port) and hosts kept, per thread
_TLS = ssl.create_default_context()  # certificate required and checked against the host name
_TLS.minimum_version = ssl.TLSVersion.TLSv1_2
_SAFE = "!#$%&'()*+,/:;=?@[]~"  # what stays as it is in a request target (urllib3 quotes the rest)
_CONTROL, _BREAK = re.compile(r"[\x00-\x20\x7f]"), re.compile(r"[\r\n\x00]")  # no request line or header injected
_CHUNK_SIZE, _LENGTH = re.compile(rb"[0-9A-Fa-f]{1,16}"), re.compile(r"[0-9]{1,18}")  # no sign, 0x, _ or spaces
_UNPRINTABLE = re.compile(r"[\x00-\x1f\x7f-\x9f]")  # kept out of the reason, which is stored and printed
_idle = threading.local()  # this thread's idle connections: key -> [socket, ...]


class ProtocolError(http.client.HTTPException):
    "The server's reply is not HTTP/1.x as we read it (bad status line, oversized head, broken framing)"


class ConnectTimedOut(OSError):
    "No connection to the host within the connect timeout"


class Headers(dict[str, str]):
    """Response headers by lower-case name; a repeated header's values joined by ", " (as urllib3 does)."""

    def get(self, name: str, default: Any = None) -> Any:
        return super().get(name.lower(), default)

    def __getitem__(self, name: str) -> str:
        return super().__getitem__(name.lower())

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and super().__contains__(name.lower())


class Response:
    """One response: `status`, `reason`, `headers`, and the body through `read1`. Leave the `with` block
    having read the whole body and its connection is kept for the next request to the host."""

    def __init__(self, sock: socket.socket, key: tuple) -> None:
        self._sock: socket.socket | None = sock
        self._key = key
        self._buffer = bytearray()  # received, not yet parsed; consumed from the front (O(1) in CPython)
        self.status, self.reason, self.headers, self._keep = 0, "", Headers(), False
        self._left: int | None = None  # body bytes still to come (Content-Length, or in this chunk)
        self._chunked = self._done = False
        self._decoder: Any = None

    def __enter__(self) -> Response:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        sock, self._sock = self._sock, None
        if sock is None:
            return
        if self._done and self._keep and not self._buffer:
            idle: dict[tuple, list[socket.socket]] = _idle.__dict__.setdefault("pools", {})
            kept = idle.pop(self._key, [])  # re-inserted last: the oldest host is the first to go
            kept.append(sock)
            while len(kept) > _IDLE_PER_HOST:
                kept.pop(0).close()
            idle[self._key] = kept
            while len(idle) > _HOSTS:
                for old in idle.pop(next(iter(idle))):
                    old.close()
        else:
            sock.close()

    # -- reading ---------------------------------------------------------------------------------

    def _recv(self, size: int) -> bytes:
        buffer = self._buffer
        if buffer:  # copies only what is taken: a body of tiny chunks costs no copy of the rest per chunk
            data = bytes(buffer[:size])
            del buffer[:size]
            return data
        assert self._sock is not None
        return self._sock.recv(size)

    def _line(self) -> bytes:
        buffer = self._buffer
        end = buffer.find(b"\n")
        while end < 0:
            if len(buffer) > _MAX_HEAD:
                raise ProtocolError("line too long")
            assert self._sock is not None
            data = self._sock.recv(65536)
            if not data:
                raise http.client.IncompleteRead(bytes(buffer))
            searched = len(buffer)
            buffer += data  # amortized: a line sent a byte at a time is not copied once per byte
            end = buffer.find(b"\n", searched)
        line = bytes(buffer[:end])
        del buffer[:end + 1]
        return line.rstrip(b"\r")

    def _raw(self, size: int) -> bytes:
        """Up to `size` body bytes as sent (before any Content-Encoding); b"" at the end."""
        if self._done:
            return b""
        if self._chunked and not self._left:
            size_line = self._line().split(b";", 1)[0].strip(b" \t")
            if not _CHUNK_SIZE.fullmatch(size_line):  # int(..., 16) would take "-5", "0x5", "5_0"
                raise ProtocolError(f"bad chunk size {size_line[:20]!r}")
            self._left = int(size_line, 16)
            if self._left == 0:
                trailers = 0
                while line := self._line():  # trailers, up to the empty line
                    trailers += len(line)
                    if trailers > _MAX_HEAD:
                        raise ProtocolError("trailers longer than 64 KiB")
                self._done = True
                return b""
        data = self._recv(size if self._left is None else min(size, self._left))
        if not data:
            if self._left is not None:
                raise http.client.IncompleteRead(b"", self._left)
            self._done = True  # a body that ends at the close
            return b""
        if self._left is not None:
            self._left -= len(data)
            if self._left == 0:
                if self._chunked:
                    if self._line():
                        raise ProtocolError("no CRLF after a chunk")
                else:
                    self._done = True
        return data

    def read1(self, size: int) -> bytes:
        """Up to `size` bytes of the (decoded) body; b"" once it has all been read."""
        decoder = self._decoder
        if decoder is None:
            return self._raw(size)
        while True:  # never more than `size` decoded bytes per call, however well the body compresses
            if decoder.unconsumed_tail:
                data = decoder.decompress(decoder.unconsumed_tail, size)
            else:
                raw = self._raw(size)
                if not raw:
                    return decoder.flush()
                data = decoder.decompress(raw, size)
            if data:
                return data

    def _begin(self) -> None:
        for _interim in range(_MAX_INTERIM + 1):
            line = self._line()
            version, _, rest = line.partition(b" ")
            code, _, reason = rest.partition(b" ")
            if not version.startswith(b"HTTP/1.") or len(code) != 3 or not code.isdigit():
                raise ProtocolError(f"bad status line {line[:60]!r}")
            self.status, self.reason = int(code), _UNPRINTABLE.sub("?", reason.decode("latin-1").strip()[:100])
            headers, size, name, count = self.headers, len(line), "", 0
            while line := self._line():
                size, count = size + len(line), count + 1
                if size > _MAX_HEAD:
                    raise ProtocolError("response head longer than 64 KiB")
                if count > _MAX_HEADERS:
                    raise ProtocolError(f"more than {_MAX_HEADERS} header lines")
                if line[:1] in (b" ", b"\t") and name:  # an obsolete folded line continues the header
                    headers[name] += " " + line.strip().decode("latin-1")
                    continue
                raw, sep, value = line.partition(b":")
                if not sep:
                    continue
                name, text = raw.strip().decode("latin-1").lower(), value.strip().decode("latin-1")
                headers[name] = f"{headers[name]}, {text}" if name in headers else text
            if self.status >= 200 or self.status == 101:
                break
            self.headers = Headers()  # 100 Continue, 103 Early Hints: the real response follows
        else:
            raise ProtocolError(f"more than {_MAX_INTERIM} interim (1xx) responses")
        self._keep = version == b"HTTP/1.1" and "close" not in self.headers.get("connection", "").lower()
        if 100 <= self.status < 200:  # 101: the connection now speaks another protocol; never reused
            self._done, self._keep = True, False
        elif self.status in (204, 304):
            self._done = True
        elif "chunked" in self.headers.get("transfer-encoding", "").lower():
            self._chunked = True
        elif "content-length" in self.headers:
            lengths = {part.strip() for part in self.headers["content-length"].split(",")}
            if len(lengths) != 1 or not _LENGTH.fullmatch(next(iter(lengths))):  # isdigit() takes "²"
                raise ProtocolError(f"bad Content-Length {self.headers['content-length'][:40]!r}")
            self._left = int(lengths.pop())
            self._done = self._left == 0
        else:
            self._keep = False  # the body ends at the close
        encoding = self.headers.get("content-encoding", "identity").strip().lower()
        if encoding in ("gzip", "x-gzip", "deflate"):
            self._decoder = zlib.decompressobj(16 + zlib.MAX_WBITS if "gzip" in encoding else zlib.MAX_WBITS)
        elif encoding not in ("identity", ""):
            raise ProtocolError(f"unsupported Content-Encoding {encoding[:40]!r}")


def get(parts: urllib.parse.SplitResult, headers: dict[str, str], allow_loopback: bool,
        connect_timeout: float, read_timeout: float) -> Response:
    """Send one GET for `parts` (a checked http or https URL) and read the status and headers; the body is
    read from the response. A kept connection the server has closed meanwhile is replaced once."""
    host, secure = parts.hostname or "", parts.scheme == "https"
    port = parts.port or (443 if secure else 80)
    authority = parts.netloc.rpartition("@")[2]
    if not authority.isascii():
        try:
            authority = authority.encode("idna").decode("ascii")
        except UnicodeError as exc:
            raise ProtocolError(f"host name {host!r} cannot be encoded: {exc}") from None
    target = urllib.parse.quote(parts.path or "/", safe=_SAFE) + \
        (f"?{urllib.parse.quote(parts.query, safe=_SAFE)}" if parts.query else "")
    if _CONTROL.search(authority) or any(_BREAK.search(name + value) for name, value in headers.items()):
        raise ProtocolError("a control character in the host or a line break in a header: not sent")
    request = "".join([f"GET {target} HTTP/1.1\r\nHost: {authority}\r\nAccept-Encoding: identity\r\n",
                       *(f"{name}: {value}\r\n" for name, value in headers.items()), "\r\n"]).encode("latin-1")
    key = (parts.scheme, host, port, allow_loopback)
    kept = _idle.__dict__.get("pools", {}).get(key)
    while True:
        reused = bool(kept)
        if kept:
            sock = kept.pop()
            try:
                watch_socket(sock)  # under the item's deadline; Abandoned once the run is stopping
            except BaseException:
                sock.close()
                raise
        else:
            sock = _connect(host, port, secure, allow_loopback, connect_timeout)
        sock.settimeout(read_timeout)
        response = Response(sock, key)
        try:
            sock.sendall(request)
            response._begin()
            return response
        except (http.client.IncompleteRead, ConnectionResetError, BrokenPipeError) as exc:
            response.close()
            if not reused or (isinstance(exc, http.client.IncompleteRead) and exc.partial) or time_left() <= 0:
                raise
            # the server closed a kept connection before answering: one fresh connection (GET is safe to resend)
        except BaseException:
            response.close()
            raise


def _connect(host: str, port: int, secure: bool, allow_loopback: bool, timeout: float) -> socket.socket:
    """A new connection through the SSRF guard, under the item's deadline from before the TLS handshake."""
    check_stopping()  # Ctrl-C: no new connection
    timeout = min(timeout, time_left())  # the deadline bounds the connect too
    if timeout <= 0:
        raise ConnectTimedOut(f"no time left to connect to {host}")
    try:
        sock = checked_socket(host, port, allow_loopback, timeout,
                              socket_options=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)])
    except TimeoutError as exc:
        raise ConnectTimedOut(f"connection to {host} timed out") from exc
    try:
        if secure:  # the certificate is checked against the host name during the handshake
            sock = _TLS.wrap_socket(sock, server_hostname=host, do_handshake_on_connect=False)
        watch_socket(sock)  # the deadline and Ctrl-C shut it from here on, the handshake included
        if secure:
            cast(ssl.SSLSocket, sock).do_handshake()  # as a whole within the connect timeout (CPython)
    except BaseException:
        sock.close()
        raise
    return sock
