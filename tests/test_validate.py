"""What the validator takes and refuses, file by file (no network)."""

from __future__ import annotations

import io
import random

import pytest
from loopback import gif_bytes, jpeg_bytes, png_bomb
from PIL import Image, ImageDraw

from imgnet_build import validate
from imgnet_build.validate import ImageInfo, ImageRejected, check_image


def webp_bytes(frames: int) -> bytes:
    images = [Image.new("RGB", (40, 40), (i * 90, 10, 10)) for i in range(frames)]
    buffer = io.BytesIO()
    images[0].save(buffer, "WEBP", save_all=frames > 1, append_images=images[1:], duration=100)
    return buffer.getvalue()


def png16_bytes() -> bytes:
    buffer = io.BytesIO()
    Image.new("I;16", (40, 40), 4000).save(buffer, "PNG")
    return buffer.getvalue()


@pytest.mark.parametrize("data, info", [
    (jpeg_bytes(64, 48), ImageInfo("JPEG", 64, 48, "jpg")),
    (jpeg_bytes(64, 40, exif_orientation=8), ImageInfo("JPEG", 40, 64, "jpg")),
    (jpeg_bytes(40, 40, mode="CMYK"), ImageInfo("JPEG", 40, 40, "jpg")),
    (png16_bytes(), ImageInfo("PNG", 40, 40, "png")),
    (webp_bytes(1), ImageInfo("WEBP", 40, 40, "webp")),
])
def test_taken_as_is(data, info):
    assert check_image(data) == info


@pytest.mark.parametrize("data, reason", [
    (b"", "empty file (0 bytes)"),
    (png_bomb(30000), "decompression bomb: over 179 MP (cap 80 MP)"),
    (png_bomb(9000), "decompression bomb: 9000x9000 is 81 MP (cap 80 MP)"),
    (webp_bytes(3), "animated WEBP (3 frames); only still images are taken"),
    (gif_bytes(40, 40, frames=2), "animated GIF (2 frames); only still images are taken"),
    (gif_bytes(31, 200), "too small: 31x200 px (minimum side 32 px)"),
    (b'{"error": "not found"}', "JSON or text, not an image"),
    (b"\xef\xbb\xbf<svg xmlns='http://www.w3.org/2000/svg'/>", "SVG (vector images are not taken)"),
    (b"%!PS-Adobe-3.0 EPSF-3.0\n", "not an image in a format we take (JPEG, PNG, GIF, WebP, BMP, TIFF)"),
])
def test_refused_with_a_reason(data, reason):
    with pytest.raises(ImageRejected) as caught:
        check_image(data)
    assert str(caught.value) == reason


def test_truncated_jpeg_is_refused_after_a_full_decode():
    data = jpeg_bytes(200, 200, quality=95)
    with pytest.raises(ImageRejected, match=r"^truncated or corrupt JPEG: image file is truncated"):
        check_image(data[: len(data) - 200])


def _varied_jpeg(rng: random.Random) -> bytes:
    width, height = rng.randrange(40, 400), rng.randrange(40, 400)
    image = Image.new("RGB", (width, height), tuple(rng.randrange(256) for _ in range(3)))
    draw = ImageDraw.Draw(image)
    for _ in range(8):
        x, y = rng.randrange(width), rng.randrange(height)
        draw.ellipse((x, y, x + rng.randrange(5, 150), y + rng.randrange(5, 150)),
                     fill=tuple(rng.randrange(256) for _ in range(3)))
    buffer = io.BytesIO()
    image.convert(rng.choice(["RGB", "L", "CMYK"])).save(
        buffer, "JPEG", quality=rng.randrange(30, 98), progressive=rng.random() < 0.4,
        subsampling=rng.choice([0, 1, 2]), restart_marker_blocks=rng.choice([0, 0, 4]))
    return buffer.getvalue()


def _mutants(data: bytes, rng: random.Random) -> list[bytes]:
    """Truncated at random points, bytes overwritten, runs zeroed or cut out: what broken downloads look like."""
    out = [data]
    for _ in range(4):
        out.append(data[:rng.randrange(1, len(data))])
    for _ in range(5):
        flipped = bytearray(data)
        for _ in range(rng.randrange(1, 8)):
            flipped[rng.randrange(len(flipped))] = rng.randrange(256)
        out.append(bytes(flipped))
    start, length = rng.randrange(len(data)), rng.randrange(1, 200)
    out += [data[:start] + bytes(length) + data[start + length:], data[:start] + data[start + length:]]
    return out


def _judge(data: bytes) -> ImageInfo | str:
    try:
        return check_image(data, min_side=1)
    except ImageRejected as exc:
        return str(exc)


def test_jpeg_draft_decode_judges_as_a_full_decode(monkeypatch):
    """A JPEG is decoded at 1/8 scale (Pillow's draft mode) to save CPU; libjpeg still reads every block, so
    each of several hundred broken and whole files gets the same verdict and the same reason as with a full
    decode."""
    rng = random.Random(16)
    files = [mutant for _ in range(40) for mutant in _mutants(_varied_jpeg(rng), rng)]
    from PIL import JpegImagePlugin

    drafts = []
    real_draft = JpegImagePlugin.JpegImageFile.draft
    monkeypatch.setattr(JpegImagePlugin.JpegImageFile, "draft",
                        lambda image, *args: drafts.append(image.size) or real_draft(image, *args))
    drafted = [_judge(data) for data in files]
    assert len(drafts) > len(files) // 2  # the draft path did run
    monkeypatch.setattr(validate, "_DRAFT", frozenset())
    full = [_judge(data) for data in files]
    assert drafted == full
    refused = sum(isinstance(verdict, str) for verdict in full)
    assert 100 < refused < len(files) - 100  # both kinds well represented
