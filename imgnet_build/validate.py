"""Is a downloaded file an image we take? Decoded fully with Pillow; the file itself is kept as is.

Decisions:
- The original bytes are stored unchanged (no re-encoding, no colour conversion): CMYK,
  palette and 16-bit files stay what they are; whoever reads them converts to RGB.
- EXIF orientation is not applied to the file; the width and height reported are the
  ones after orientation (a portrait photo stored sideways with orientation 6 reports
  as portrait). Readers apply it with `PIL.ImageOps.exif_transpose`.
- Formats taken: JPEG, PNG, GIF, WebP, BMP, TIFF (and AVIF where Pillow reads it). Only
  those decoders are tried, so EPS/PDF/PSD never reach Ghostscript or odd parsers. SVG
  and other vector or text files are refused.
- Animated images (GIF, WebP, APNG) and multi-page TIFFs are refused: a frame of an
  animation is rarely a good example of a category. A camera's multi-picture JPEG (MPO)
  is a plain JPEG to every reader and is taken as JPEG.
- Refused as well: empty files, truncated or corrupt files (the whole image is decoded;
  a JPEG at 1/8 scale, Pillow's draft mode, see below),
  images with a side under `min_side` pixels (tracking pixels), and images over
  `max_pixels` pixels (decompression bombs; checked from the header, before decoding).
- Memory: the cap is per image; a `DecodeBudget` shared by the fetch workers bounds the
  decoded pixels held at once (their size estimated from the header before decoding).
- A JPEG is decoded at 1/8 scale (`Image.draft`): libjpeg still reads and Huffman-decodes
  every block of every scan, so a truncated or corrupt file fails exactly as in a full
  decode, but the inverse DCT, upsampling and colour conversion run on 1/64 of the
  pixels, which made the check about 2x cheaper on small photos. The pixels are not
  kept, so nothing else changes (`tests/test_validate.py::test_jpeg_draft_decode_judges_as_a_full_decode`
  compares both decisions on thousands of truncated and corrupted files).
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import threading
from collections.abc import Iterator

from PIL import Image, UnidentifiedImageError

from imgnet_build.errors import ItemError

__all__ = ["ImageInfo", "ImageRejected", "DecodeBudget", "check_image", "decoded_bytes", "FORMATS"]

EXTENSIONS = {"JPEG": "jpg", "MPO": "jpg", "PNG": "png", "GIF": "gif", "WEBP": "webp", "BMP": "bmp",
              "TIFF": "tif", "AVIF": "avif"}
Image.init()
FORMATS = tuple(name for name in EXTENSIONS if name in Image.OPEN)
_ROTATED = {5, 6, 7, 8}  # EXIF orientations that swap width and height
_ORIENTATION = 0x0112
_DRAFT = frozenset({"JPEG", "MPO"})  # decoded at 1/8 scale (see above)


class ImageRejected(ItemError):
    "A file is not an image we take; the message is the reason recorded for its candidate"


@dataclasses.dataclass(frozen=True)
class ImageInfo:
    format: str  # Pillow format name: JPEG, PNG, GIF, WEBP, BMP, TIFF, AVIF
    width: int  # after EXIF orientation
    height: int
    ext: str  # file extension for the blob key


def _sniff(data: bytes) -> str | None:
    head = data[:1024].lstrip().lower()
    if head.startswith((b"<", b"\xef\xbb\xbf<")):
        if b"<svg" in data[:8192].lower():
            return "SVG (vector images are not taken)"
        if b"<html" in head or b"<!doctype html" in head or b"<head" in head or b"<body" in head:
            return "HTML page, not an image"
        return "XML or text, not an image"
    if head.startswith((b"{", b"[")):
        return "JSON or text, not an image"
    return None


class DecodeBudget:
    """At most `limit` bytes of decoded pixels at once across threads. An image larger than
    the whole budget waits until it can decode alone. `cancel()` wakes every waiter."""

    def __init__(self, limit: int) -> None:
        self.limit, self.used, self.cancelled = limit, 0, False
        self._cond = threading.Condition()

    @contextlib.contextmanager
    def hold(self, amount: int) -> Iterator[None]:
        amount = min(amount, self.limit)
        with self._cond:
            self._cond.wait_for(lambda: self.cancelled or self.used + amount <= self.limit)
            if self.cancelled:
                raise ImageRejected("abandoned: the run is stopping")
            self.used += amount
        try:
            yield
        finally:
            with self._cond:
                self.used -= amount
                self._cond.notify_all()

    def cancel(self) -> None:
        with self._cond:
            self.cancelled = True
            self._cond.notify_all()


def decoded_bytes(mode: str, width: int, height: int) -> int:
    """What Pillow allocates for an image: 1 byte per pixel for 1-band 8-bit modes, 2 for 16-bit, else 4."""
    per_pixel = 1 if mode in ("1", "L", "P") else 2 if mode.startswith("I;16") else 4
    return per_pixel * width * height


def check_image(data: bytes, min_side: int = 32, max_pixels: int = 80_000_000,
                budget: DecodeBudget | None = None) -> ImageInfo:
    """Decode `data` fully and describe it, or raise ImageRejected with the reason.

    With a `budget`, the decoding waits until its pixels fit in it."""
    if not data:
        raise ImageRejected("empty file (0 bytes)")
    sniffed = _sniff(data)
    if sniffed:
        raise ImageRejected(sniffed)
    try:
        image = Image.open(io.BytesIO(data), formats=FORMATS)
    except Image.DecompressionBombError as exc:  # Pillow's own cap (2 x MAX_IMAGE_PIXELS), before ours
        raise ImageRejected(f"decompression bomb: over {2 * (Image.MAX_IMAGE_PIXELS or 0) / 1e6:.0f} MP "
                            f"(cap {max_pixels / 1e6:.0f} MP)") from exc
    except UnidentifiedImageError as exc:
        raise ImageRejected("not an image in a format we take (JPEG, PNG, GIF, WebP, BMP, TIFF)") from exc
    except Exception as exc:  # a broken header can raise almost anything
        raise ImageRejected(f"unreadable image header: {exc}") from exc
    with image:
        fmt, (width, height) = image.format, image.size
        assert fmt is not None  # opened with formats=FORMATS, so Pillow named it
        if width * height > max_pixels:
            raise ImageRejected(f"decompression bomb: {width}x{height} is {width * height / 1e6:.0f} MP "
                                f"(cap {max_pixels / 1e6:.0f} MP)")
        frames = getattr(image, "n_frames", 1)
        if frames > 1 and fmt != "MPO":
            kind = "multi-page" if fmt == "TIFF" else "animated"
            raise ImageRejected(f"{kind} {fmt} ({frames} frames); only still images are taken")
        if min(width, height) < min_side:
            raise ImageRejected(f"too small: {width}x{height} px (minimum side {min_side} px)")
        if fmt in _DRAFT:
            image.draft(None, (1, 1))  # 1/8 scale: every block still decoded, the pixels not kept
        with budget.hold(decoded_bytes(image.mode, *image.size)) if budget else contextlib.nullcontext():
            try:
                image.load()
            except Exception as exc:  # truncated data, broken stream, decoder errors
                raise ImageRejected(f"truncated or corrupt {fmt}: {exc}") from exc
            try:
                orientation = image.getexif().get(_ORIENTATION)
            except Exception:  # a broken EXIF block does not make the image unusable
                orientation = None
            image.close()  # free the pixels before the budget is given back
    if orientation in _ROTATED:
        width, height = height, width
    fmt = "JPEG" if fmt == "MPO" else fmt
    return ImageInfo(format=fmt, width=width, height=height, ext=EXTENSIONS[fmt])
