"""Callers' images, decoded defensively: base64 → Pillow → the backbone's centre crop, as uint8.

A caller's bytes are untrusted input to a C decoder, so everything that can be checked before
decoding is: the size of the base64 text, the file's size, the format (JPEG, PNG or WebP only;
no other Pillow plugin ever sees the bytes), the pixel count declared in the header (a
decompression bomb declares far more pixels than its file size suggests), animation. Only then
are the pixels decoded, and a truncated or corrupt file fails there. Each refusal is a 4xx that
names the offending field; nothing is fetched from a URL, ever.

The result is what crosses the pipe to the backbone process: the centre crop resized to the
model's input size, as an ``(size, size, 3)`` uint8 array (150 KB at 224 px, smaller than the
float tensor it becomes, which the backbone process computes).
"""

from __future__ import annotations

import base64
import binascii
import io
import math
import struct
import warnings

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from service.errors import InvalidImage, LimitExceeded

# Pillow warns of images over its own 89-megapixel default as it opens them; the pixel limit
# below is ours (GRAFT_MAX_IMAGE_PIXELS, checked before decoding), so that warning only adds
# noise to the log. Set once here, not per call: warnings filters are process-wide.
warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)

#: The formats a caller may send. Restricting Pillow to these keeps its dozens of other
#: decoders (some rarely fuzzed) away from untrusted bytes.
FORMATS = ("JPEG", "PNG", "WEBP")
#: Below this many pixels on a side there is nothing left for the backbone to see.
MIN_SIDE = 16
#: The share of the shorter side kept by the centre crop: EfficientNet's evaluation crop,
#: 224 / (224 + 32), as in the TensorFlow reference (and timm's crop_pct 0.875).
CROP_FRACTION = 0.875
#: What Pillow raises on malformed files (truncated data, broken chunks, bad headers); each is
#: the caller's bad data, not a bug of ours.
DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, struct.error)
#: Describes everything above, for the backbone fingerprint: other preprocessing, other features.
PREPROCESSING = "exif-transpose, rgb, centre-crop-0.875, bicubic"


def decode_image(
    data: str, *, size: int, max_bytes: int, max_pixels: int, field: str
) -> np.ndarray:
    """The centre crop of the base64 image ``data`` at ``size`` × ``size``, as RGB uint8."""
    raw = _decode_base64(data, max_bytes=max_bytes, field=field)
    try:
        image = Image.open(io.BytesIO(raw), formats=FORMATS)
    except Image.DecompressionBombError:  # Pillow's own check: over twice its 89 Mpx default
        raise _too_many_pixels(None, max_pixels, field) from None
    except UnidentifiedImageError:
        raise InvalidImage(f"{field}: {_not_accepted(raw)}", field=field) from None
    except DECODE_ERRORS as exc:
        raise InvalidImage(f"{field}: an unreadable image ({_reason(exc)})", field=field) from None
    with image:
        _check_header(image, max_pixels=max_pixels, field=field)
        try:
            return _centre_crop(image, size)
        except DECODE_ERRORS as exc:
            raise InvalidImage(
                f"{field}: the {image.format} file is truncated or corrupt ({_reason(exc)})",
                field=field,
            ) from None


def _decode_base64(data: str, *, max_bytes: int, field: str) -> bytes:
    # Base64 carries 3 bytes in 4 characters: refuse an oversized file before decoding it.
    if len(data) > 4 * math.ceil(max_bytes / 3):
        raise _too_large(len(data) * 3 // 4, max_bytes, field)
    try:
        raw = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidImage(
            f"{field}: not base64 (send the file's bytes base64-encoded, with no 'data:' prefix "
            "and no line breaks)",
            field=field,
        ) from None
    if len(raw) > max_bytes:
        raise _too_large(len(raw), max_bytes, field)
    return raw


def _check_header(image: Image.Image, *, max_pixels: int, field: str) -> None:
    """What the header declares, checked before a single pixel is decoded."""
    width, height = image.size
    if width * height > max_pixels:
        raise _too_many_pixels((width, height), max_pixels, field)
    if min(width, height) < MIN_SIDE:
        raise InvalidImage(
            f"{field}: the image is {width}×{height} pixels; each side needs at least {MIN_SIDE}",
            field=field,
        )
    # An MPO (a camera's JPEG with a second, depth or preview picture) is a still photo: its
    # first frame is the picture. Animated PNG and WebP have no one picture to classify.
    if getattr(image, "is_animated", False) and image.format != "MPO":
        raise InvalidImage(
            f"{field}: animated {image.format} images are not accepted; send a single frame",
            field=field,
        )


def _centre_crop(image: Image.Image, size: int) -> np.ndarray:
    # A JPEG much larger than needed decodes at 1/2, 1/4 or 1/8 scale straight from the DCT:
    # several times faster for phone photos, and still at least the crop's resolution.
    width, height = image.size
    shorter = min(width, height)
    needed = size / CROP_FRACTION
    if image.format in ("JPEG", "MPO") and shorter > 2 * needed:
        scale = needed / shorter
        image.draft("RGB", (math.ceil(width * scale), math.ceil(height * scale)))
    image.load()
    image = ImageOps.exif_transpose(image)  # as a viewer shows it: phones store photos rotated
    if image.mode != "RGB":
        image = image.convert("RGB")
    width, height = image.size
    side = CROP_FRACTION * min(width, height)
    box = ((width - side) / 2, (height - side) / 2, (width + side) / 2, (height + side) / 2)
    # reducing_gap: a large image is first shrunk by a box filter, then resampled bicubically.
    crop = image.resize((size, size), Image.Resampling.BICUBIC, box=box, reducing_gap=3.0)
    return np.asarray(crop, dtype=np.uint8).copy()


#: Leading bytes of formats callers are likely to send, for a refusal that says what was sent.
_SIGNATURES = {
    b"GIF8": "GIF",
    b"BM": "BMP",
    b"II*\x00": "TIFF",
    b"MM\x00*": "TIFF",
    b"<svg": "SVG",
    b"<?xml": "SVG",
}


def _not_accepted(raw: bytes) -> str:
    sent = next((name for sig, name in _SIGNATURES.items() if raw.startswith(sig)), None)
    if sent is None and raw[4:8] == b"ftyp":  # the ISO media container of HEIC and AVIF
        sent = "HEIC or AVIF"
    if sent is None:
        return "not a JPEG, PNG or WebP image"
    return f"a {sent} image; send JPEG, PNG or WebP"


def _too_large(size: int, limit: int, field: str) -> LimitExceeded:
    return LimitExceeded(
        f"{field}: the image file has {size} bytes; the limit (GRAFT_MAX_IMAGE_BYTES) is {limit}",
        limit="GRAFT_MAX_IMAGE_BYTES",
        value=limit,
        field=field,
    )


def _too_many_pixels(shape: tuple[int, int] | None, limit: int, field: str) -> LimitExceeded:
    if shape is None:  # refused by Pillow's own, higher limit, which does not say the size
        declared = f"declares more than {2 * (Image.MAX_IMAGE_PIXELS or 0)} pixels"
    else:
        declared = f"declares {shape[0]}×{shape[1]} pixels"
    return LimitExceeded(
        f"{field}: the image {declared}; the limit (GRAFT_MAX_IMAGE_PIXELS) is {limit}",
        limit="GRAFT_MAX_IMAGE_PIXELS",
        value=limit,
        field=field,
    )


def _reason(exc: BaseException) -> str:
    return str(exc).split("\n")[0][:200] or type(exc).__name__
