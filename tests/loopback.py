"""A real HTTP server on 127.0.0.1 for tests, and the generated files it serves.

    server = LoopbackServer(); server.add("/a.jpg", jpeg_bytes(64, 48))
    server.url("/a.jpg"); server.counts["/a.jpg"]
"""

from __future__ import annotations

import io
import random
import socket
import struct
import threading
import time
import zlib
from collections import Counter
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from PIL import Image

Handler = Callable[[BaseHTTPRequestHandler], None]


def jpeg_bytes(width: int = 64, height: int = 48, seed: int = 0, mode: str = "RGB", exif_orientation: int | None = None,
               quality: int = 85) -> bytes:
    """A JPEG whose pixels differ with `seed`."""
    rng = random.Random(seed)
    image = Image.new("RGB", (width, height), tuple(rng.randrange(256) for _ in range(3)))
    for _ in range(6):
        x, y = rng.randrange(width), rng.randrange(height)
        image.paste(tuple(rng.randrange(256) for _ in range(3)), (x, y, min(width, x + 8), min(height, y + 8)))
    if mode != "RGB":
        image = image.convert(mode)
    buffer = io.BytesIO()
    exif = Image.Exif()
    if exif_orientation:
        exif[0x0112] = exif_orientation
    image.save(buffer, "JPEG", quality=quality, exif=exif.tobytes() if exif_orientation else b"")
    return buffer.getvalue()


def gif_bytes(width: int, height: int, frames: int = 1) -> bytes:
    images = [Image.new("RGB", (width, height), (i * 80 % 256, 0, 255 - i * 80 % 256)) for i in range(frames)]
    buffer = io.BytesIO()
    images[0].save(buffer, "GIF", save_all=frames > 1, append_images=images[1:], duration=100, loop=0)
    return buffer.getvalue()


def png_bomb(side: int = 30000) -> bytes:
    """A valid 1-bit PNG of side x side pixels, all zero: ~100 KB on disk, 900 MP decoded."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    row = b"\x00" * (1 + (side + 7) // 8)
    compressor, parts = zlib.compressobj(9), []
    rows_per_block = max(1, 2**20 // len(row))
    for start in range(0, side, rows_per_block):
        parts.append(compressor.compress(row * min(rows_per_block, side - start)))
    parts.append(compressor.flush())
    header = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", b"".join(parts)) + chunk(b"IEND", b"")


def in_thread(work: Callable[[], object]) -> tuple[threading.Thread, list]:
    """Start `work` in a daemon thread: the thread, and a list that gets its result (empty while it runs)."""
    result: list = []
    thread = threading.Thread(target=lambda: result.append(work()), daemon=True)
    thread.start()
    return thread, result


def closed_port() -> int:
    """A loopback port nobody listens on (connections to it are refused)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class LoopbackServer:
    """ThreadingHTTPServer on 127.0.0.1, port 0, in a thread; counts requests per path."""

    def __init__(self) -> None:
        self.routes: dict[str, Handler] = {}
        self.counts: Counter = Counter()
        self.lock = threading.Lock()
        server = self

        class RequestHandler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]
                with server.lock:
                    server.counts[path] += 1
                route = server.routes.get(path)
                if route is None:
                    self.send_error(404)
                    return
                try:
                    route(self)
                except (BrokenPipeError, ConnectionResetError):
                    pass

            def log_message(self, *args) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), RequestHandler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def route(self, path: str, handler: Handler) -> str:
        self.routes[path] = handler
        return self.url(path)

    def add(self, path: str, body: bytes, status: int = 200, content_type: str = "image/jpeg",
            headers: dict[str, str] | None = None, delay: float = 0.0) -> str:
        def handler(request: BaseHTTPRequestHandler) -> None:
            if delay:
                time.sleep(delay)
            request.send_response(status)
            request.send_header("Content-Type", content_type)
            request.send_header("Content-Length", str(len(body)))
            for name, value in (headers or {}).items():
                request.send_header(name, value)
            request.end_headers()
            request.wfile.write(body)

        return self.route(path, handler)

    def redirect(self, path: str, location: str, status: int = 302) -> str:
        return self.add(path, b"", status=status, content_type="text/plain", headers={"Location": location})

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def endless_slow(request: BaseHTTPRequestHandler) -> None:
    """200 with image headers, then one byte every 50 ms, forever (until the client goes away)."""
    request.send_response(200)
    request.send_header("Content-Type", "image/jpeg")
    request.end_headers()
    request.wfile.write(b"\xff\xd8\xff")
    while True:
        time.sleep(0.05)
        request.wfile.write(b"\x00")
        request.wfile.flush()


def png_flat(side: int = 8000, color_type: int = 2) -> bytes:
    """A valid 8-bit PNG of side x side black pixels (colour type 2: RGB): ~190 KB for 8000 x 8000, 256 MB decoded."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    channels = {0: 1, 2: 3, 6: 4}[color_type]
    row = b"\x00" * (1 + side * channels)
    compressor, parts = zlib.compressobj(9), []
    rows_per_block = max(1, 2**22 // len(row))
    for start in range(0, side, rows_per_block):
        parts.append(compressor.compress(row * min(rows_per_block, side - start)))
    parts.append(compressor.flush())
    header = struct.pack(">IIBBBBB", side, side, 8, color_type, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", b"".join(parts)) + chunk(b"IEND", b"")
