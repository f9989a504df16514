"""Image files for tests, good and hostile, made in memory (nothing here is a fixture file).

Each hostile file is built to fail one check of ``service.images`` and only that one: a
decompression bomb whose pixels, if they were ever decoded, would be truncated (so a refusal
for its size proves the header was checked first), a truncated file that is otherwise valid,
and so on. ``hostile()`` maps a name to the file's base64 and the error code it must get.
"""

from __future__ import annotations

import base64
import functools
import io
import random
import struct
import zlib

from PIL import Image


def encoded(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def noise(width: int, height: int, mode: str = "RGB", seed: int = 0) -> Image.Image:
    """Random pixels: they compress badly, so a cut-short file is really missing data."""
    rng = random.Random(seed)
    bands = len(mode)
    return Image.frombytes(mode, (width, height), rng.randbytes(width * height * bands))


def image_file(image: Image.Image, format: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=format, **options)
    return buffer.getvalue()


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_with(width: int, height: int, idat: bytes, *, before_idat: bytes = b"") -> bytes:
    """A grayscale 8-bit PNG with the given compressed pixel stream, written by hand."""
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", header)
        + before_idat
        + _chunk(b"IDAT", idat)
        + _chunk(b"IEND", b"")
    )


def png_bomb(side: int = 8_000) -> bytes:
    """A real PNG of ``side``² black pixels: 64 MB decoded, about 60 KB on the wire."""
    compressor = zlib.compressobj(9)
    row = b"\x00" * (side + 1)  # filter byte + pixels
    parts = [compressor.compress(row) for _ in range(side)]
    parts.append(compressor.flush())
    return png_with(side, side, b"".join(parts))


def declared_huge_png(side: int = 20_000) -> bytes:
    """A header declaring ``side``² pixels over a pixel stream cut short after one row: decoding
    it would fail as truncated, so refusing it for its size shows nothing was decoded."""
    compressor = zlib.compressobj(9)
    data = compressor.compress(b"\x00" * (side + 1)) + compressor.flush(zlib.Z_SYNC_FLUSH)
    return png_with(side, side, data)


def text_chunk_bomb() -> bytes:
    """A small, valid PNG with a zTXt chunk that inflates to 8 MB of text (Pillow stops at 1)."""
    pixels = zlib.compress(b"".join(b"\x00" + b"\x80" * 32 for _ in range(32)))
    text = _chunk(b"zTXt", b"comment\x00\x00" + zlib.compress(b"a" * 8_000_000, 9))
    return png_with(32, 32, pixels, before_idat=text)


def animated(format: str) -> bytes:
    frames = [Image.new("RGB", (64, 64), color) for color in ("red", "blue")]
    return image_file(frames[0], format, save_all=True, append_images=frames[1:], duration=100)


def truncated(format: str) -> bytes:
    data = image_file(noise(128, 128), format)
    return data[: len(data) // 2]


def photo_like(format: str = "JPEG", size: tuple[int, int] = (320, 240)) -> bytes:
    """A valid image with some structure: a gradient, for the cases that must decode."""
    image = Image.linear_gradient("L").resize(size).convert("RGB")
    return image_file(image, format)


@functools.cache
def hostile() -> dict[str, tuple[str, str]]:
    """name → (base64 of the file, the error code it must get); built once, on first use."""
    return {
        "truncated_jpeg": (encoded(truncated("JPEG")), "invalid_image"),
        "truncated_png": (encoded(truncated("PNG")), "invalid_image"),
        "one_by_one": (encoded(image_file(Image.new("RGB", (1, 1)), "PNG")), "invalid_image"),
        "declared_20000x20000": (encoded(declared_huge_png()), "limit_exceeded"),
        "png_bomb": (encoded(png_bomb()), "limit_exceeded"),
        "png_text_bomb": (encoded(text_chunk_bomb()), "invalid_image"),
        "animated_gif": (encoded(animated("GIF")), "invalid_image"),
        "animated_webp": (encoded(animated("WEBP")), "invalid_image"),
        "animated_png": (encoded(animated("PNG")), "invalid_image"),
        "bmp": (encoded(image_file(noise(64, 64), "BMP")), "invalid_image"),
        "random_bytes": (encoded(random.Random(1).randbytes(5000)), "invalid_image"),
        "not_base64": ("this is not base64!", "invalid_image"),
        "data_url": ("data:image/png;base64," + encoded(photo_like("PNG")), "invalid_image"),
    }
