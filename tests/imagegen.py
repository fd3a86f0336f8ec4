"""Generated "photos" and the edits the web makes to them, for dedup tests and benchmarks.

A photo is a smooth random colour field, a low-frequency luminance texture, a handful of
shapes and fine grain: structured enough that perceptual hashes behave as on real photos.
`photo(seed, layout=...)` with one layout and different seeds gives pictures with the same
colour layout but different structure (not duplicates).
"""

from __future__ import annotations

import io
import struct

import numpy as np
from PIL import Image, ImageDraw, ImageEnhance, ImageFont

__all__ = ["photo", "jpeg", "png", "reencode", "resize", "crop", "brightness", "watermark",
           "with_comment", "flip"]


def _field(rng: np.random.Generator, shape: tuple[int, int, int], size: tuple[int, int]) -> np.ndarray:
    small = Image.fromarray((rng.random(shape) * 255).astype(np.uint8).squeeze())
    return np.asarray(small.resize(size, Image.Resampling.BICUBIC), dtype=np.float32)


def photo(seed: int, size: tuple[int, int] = (1200, 900), layout: int | None = None) -> Image.Image:
    """A textured RGB picture; `layout` (default: seed) fixes the colour field only."""
    rng = np.random.default_rng(seed)
    colours = _field(np.random.default_rng(10_000 + (seed if layout is None else layout)), (3, 4, 3), size)
    texture = _field(rng, (12, 16, 1), size)[..., None] / 255.0
    pixels = colours * (0.45 + 0.8 * texture)
    image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    width, height = size
    for _ in range(int(rng.integers(5, 10))):
        x0, y0 = rng.integers(0, width - width // 6), rng.integers(0, height - height // 6)
        x1 = x0 + rng.integers(width // 10, width // 2)
        y1 = y0 + rng.integers(height // 10, height // 2)
        fill = tuple(int(c) for c in rng.integers(0, 256, 3))
        kind = rng.integers(3)
        if kind == 0:
            draw.ellipse((x0, y0, x1, y1), fill=fill)
        elif kind == 1:
            draw.rectangle((x0, y0, x1, y1), fill=fill)
        else:
            points = [(int(rng.integers(0, width)), int(rng.integers(0, height))) for _ in range(3)]
            draw.polygon(points, fill=fill)
    grain = rng.normal(0, 6, (height, width, 1)).astype(np.float32)
    return Image.fromarray(np.clip(np.asarray(image, dtype=np.float32) + grain, 0, 255).astype(np.uint8))


def jpeg(image: Image.Image, quality: int = 90) -> bytes:
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, "JPEG", quality=quality)
    return buffer.getvalue()


def png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG", compress_level=1)
    return buffer.getvalue()


def decode(data: bytes) -> Image.Image:
    return Image.open(io.BytesIO(data)).convert("RGB")


def reencode(data: bytes, quality: int) -> bytes:
    return jpeg(decode(data), quality)


def resize(image: Image.Image, scale: float) -> Image.Image:
    return image.resize((round(image.width * scale), round(image.height * scale)), Image.Resampling.LANCZOS)


def crop(image: Image.Image, fraction: float) -> Image.Image:
    """Cut `fraction` of the width and of the height, split between both sides."""
    dx, dy = round(image.width * fraction / 2), round(image.height * fraction / 2)
    return image.crop((dx, dy, image.width - dx, image.height - dy))


def brightness(image: Image.Image, factor: float) -> Image.Image:
    return ImageEnhance.Brightness(image).enhance(factor)


def watermark(image: Image.Image, text: str = "© stock-photos.example") -> Image.Image:
    marked = image.copy()
    draw = ImageDraw.Draw(marked)
    font = ImageFont.load_default(size=max(12, image.height // 18))
    draw.text((image.width // 20, image.height - image.height // 8), text, fill=(255, 255, 255), font=font)
    return marked


def flip(image: Image.Image) -> Image.Image:
    return image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)


def with_comment(data: bytes, comment: str) -> bytes:
    """The same JPEG with a comment segment added: other bytes, identical pixels."""
    assert data[:2] == b"\xff\xd8"
    payload = comment.encode()
    return data[:2] + b"\xff\xfe" + struct.pack(">H", len(payload) + 2) + payload + data[2:]
