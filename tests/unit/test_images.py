"""Image inputs without the model: decoding, the centre crop, hostile files, the modality check."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image
from pydantic import ValidationError

from service.errors import InvalidImage, InvalidInput, LimitExceeded
from service.gateway import validation_error
from service.images import decode_image
from service.schemas import ImageInput, PredictRequest, TrainRequest
from service.settings import Settings
from service.vision import ImageInputs
from tests.hostile_images import encoded, hostile, image_file, noise, photo_like

LIMITS = {"max_bytes": 10 * 1024 * 1024, "max_pixels": 50_000_000}


def decode(data: str, **limits: int) -> np.ndarray:
    return decode_image(data, size=224, field="inputs.0.image", **{**LIMITS, **limits})


@pytest.mark.parametrize("name", sorted(hostile()))
def test_hostile_files_are_refused_with_their_code(name):
    data, code = hostile()[name]
    with pytest.raises((InvalidImage, LimitExceeded)) as refused:
        decode(data)
    assert refused.value.code == code
    assert refused.value.field == "inputs.0.image"
    assert "0x" not in refused.value.message  # no object reprs, no addresses


def test_a_bomb_is_refused_from_its_header_before_any_pixel_is_decoded():
    # Its pixel stream stops after one row: decoding would fail as truncated, not as too large.
    with pytest.raises(LimitExceeded) as refused:
        decode(hostile()["png_bomb"][0])
    assert refused.value.details == {"limit": "GRAFT_MAX_IMAGE_PIXELS", "value": 50_000_000}
    assert "8000×8000" in refused.value.message


def test_pixel_limit_is_the_setting():
    data = encoded(photo_like("PNG", (200, 200)))
    assert decode(data, max_pixels=40_000).shape == (224, 224, 3)
    with pytest.raises(LimitExceeded, match="200×200"):
        decode(data, max_pixels=39_999)


def test_byte_limit_is_checked_before_and_after_base64():
    data = image_file(noise(100, 100), "PNG")  # random pixels: about 30 KB
    with pytest.raises(LimitExceeded) as refused:
        decode(encoded(data), max_bytes=len(data) - 1)
    assert refused.value.details["limit"] == "GRAFT_MAX_IMAGE_BYTES"
    # Far over the limit: refused from the length of the text, without decoding it.
    with pytest.raises(LimitExceeded):
        decode("A" * 4_000_000, max_bytes=1024)
    assert decode(encoded(data), max_bytes=len(data)).shape == (224, 224, 3)


@pytest.mark.parametrize(("size", "accepted"), [((16, 16), True), ((15, 300), False)])
def test_smallest_side(size, accepted):
    data = encoded(image_file(noise(*size), "PNG"))
    if accepted:
        assert decode(data).shape == (224, 224, 3)
    else:
        with pytest.raises(InvalidImage, match="15×300"):
            decode(data)


@pytest.mark.parametrize(
    ("mode", "format"),
    [
        ("RGB", "JPEG"),
        ("RGB", "PNG"),
        ("RGB", "WEBP"),
        ("RGBA", "PNG"),
        ("RGBA", "WEBP"),
        ("L", "JPEG"),
        ("P", "PNG"),
        ("I;16", "PNG"),
        ("CMYK", "JPEG"),
    ],
)
def test_every_common_kind_of_still_image_becomes_rgb(mode, format):
    image = Image.new(mode, (300, 200)) if mode == "I;16" else noise(300, 200).convert(mode)
    out = decode(encoded(image_file(image, format)))
    assert out.shape == (224, 224, 3) and out.dtype == np.uint8


def test_the_crop_is_the_centre_not_a_squash():
    # 400×200: red left and right quarters, blue centre. The centre crop (87.5 % of the
    # shorter side, 175 px) lies inside the blue; squashing the whole width would not.
    image = Image.new("RGB", (400, 200), "red")
    image.paste(Image.new("RGB", (200, 200), "blue"), (100, 0))
    out = decode(encoded(image_file(image, "PNG"))).astype(int)
    assert (out[..., 2] > 250).all() and (out[..., 0] < 5).all()


def test_exif_orientation_is_applied():
    # Stored landscape, top red and bottom blue, tagged "rotate 90° clockwise to display": as
    # displayed, the left half is blue and the right half red.
    image = Image.new("RGB", (200, 100), "red")
    image.paste(Image.new("RGB", (200, 50), "blue"), (0, 50))
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation
    out = decode(encoded(image_file(image, "JPEG", exif=exif, quality=95))).astype(int)
    assert out[112, 20, 2] > 200 and out[112, 20, 0] < 60  # left: blue
    assert out[112, 200, 0] > 200 and out[112, 200, 2] < 60  # right: red


def test_large_jpegs_decode_at_reduced_scale_to_nearly_the_same_crop():
    image = Image.linear_gradient("L").resize((4000, 3000)).convert("RGB")
    data = image_file(image, "JPEG", quality=90)
    fast = decode(encoded(data)).astype(float)
    full = Image.open(io.BytesIO(data)).convert("RGB")  # decoded at full size, then cropped
    side = 0.875 * 3000
    box = ((4000 - side) / 2, (3000 - side) / 2, (4000 + side) / 2, (3000 + side) / 2)
    reference = np.asarray(full.resize((224, 224), Image.Resampling.BICUBIC, box=box), float)
    assert np.abs(fast - reference).mean() < 2.0  # of 255


def test_image_inputs_name_the_field_of_the_bad_item():
    inputs = ImageInputs(Settings(backbone_kind="image"))
    good = ImageInput(image=encoded(photo_like()))
    bad = ImageInput(image=hostile()["truncated_jpeg"][0])
    assert [a.shape for a in inputs.prepare([good, good])] == [(224, 224, 3)] * 2
    with pytest.raises(InvalidImage) as refused:
        inputs.prepare([good, bad], "examples")
    assert refused.value.field == "examples.1.image"
    with pytest.raises(InvalidInput) as refused:
        inputs.prepare(["a text"])
    assert refused.value.field == "inputs.0" and refused.value.code == "invalid_input"
    assert inputs.cost(inputs.prepare([good])[0]) == 49  # 7 × 7 feature-map positions


def test_image_inputs_take_their_limits_from_the_settings(monkeypatch):
    monkeypatch.setenv("GRAFT_MAX_IMAGE_PIXELS", "10000")
    monkeypatch.setenv("GRAFT_MAX_IMAGE_BYTES", "2048")
    inputs = ImageInputs(Settings(backbone_kind="image"))
    small = ImageInput(image=encoded(image_file(Image.new("RGB", (100, 100)), "PNG")))
    assert inputs.prepare([small])[0].shape == (224, 224, 3)
    for image, limit in ((photo_like("PNG", (101, 100)), "PIXELS"), (photo_like(), "BYTES")):
        with pytest.raises(LimitExceeded) as refused:
            inputs.prepare([ImageInput(image=encoded(image))])
        assert refused.value.details["limit"] == f"GRAFT_MAX_IMAGE_{limit}"


# -- the modality check of the request schemas ----------------------------------------------

IMAGE = {"image": encoded(photo_like())}


def refusal(model, body, modality):
    with pytest.raises(ValidationError) as refused:
        model.model_validate(body, context={"modality": modality})
    return validation_error(refused.value)


TEXT_EXAMPLE = {"text": "a", "label": "x"}
IMAGE_EXAMPLE = {**IMAGE, "label": "x"}


@pytest.mark.parametrize(
    ("model", "body", "modality", "field"),
    [
        (PredictRequest, {"head": "h", "inputs": [IMAGE, "a text"]}, "image", "inputs.1"),
        (PredictRequest, {"head": "h", "inputs": ["a text", IMAGE]}, "text", "inputs.1"),
        (TrainRequest, {"head": "h", "examples": [TEXT_EXAMPLE]}, "image", "examples.0.text"),
        (TrainRequest, {"head": "h", "examples": [IMAGE_EXAMPLE]}, "text", "examples.0.image"),
    ],
)
def test_an_input_of_the_other_modality_is_invalid_input(model, body, modality, field):
    error = refusal(model, body, modality)
    assert (error.code, error.field) == ("invalid_input", field)
    assert f"GRAFT_BACKBONE_KIND={modality}" in error.message


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"head": "h", "inputs": [{"image": 5}]}, "inputs.0.image"),
        ({"head": "h", "inputs": [{"image": ""}]}, "inputs.0.image"),
        ({"head": "h", "inputs": [{"image": "x", "url": "http://x"}]}, "inputs.0.url"),
        ({"head": "h", "inputs": [{"url": "http://example.com/cat.jpg"}]}, "inputs.0"),
        ({"head": "h", "inputs": [["nested"]]}, "inputs.0"),
    ],
)
def test_malformed_image_inputs_are_invalid_requests(body, field):
    error = refusal(PredictRequest, body, "image")
    assert (error.code, error.field) == ("invalid_request", field)


def test_an_example_has_exactly_one_input():
    for example in ({"label": "x"}, {"text": "a", **IMAGE, "label": "x"}):
        error = refusal(TrainRequest, {"head": "h", "examples": [example]}, None)
        assert (error.code, error.field) == ("invalid_request", "examples.0")
        assert "a 'text' or an 'image'" in error.message


def test_without_a_modality_both_kinds_validate():
    """BentoML validates the body a second time, without the gateway's context."""
    request = PredictRequest.model_validate({"head": "h", "inputs": ["a text", IMAGE]})
    assert request.inputs == ["a text", ImageInput(image=IMAGE["image"])]
    train = TrainRequest.model_validate({"head": "h", "examples": [{**IMAGE, "label": "cat"}]})
    assert train.examples[0].input == ImageInput(image=IMAGE["image"])
    assert hash(train.examples[0].input) == hash(ImageInput(image=IMAGE["image"]))
