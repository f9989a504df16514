"""Images end to end: one real `graft serve` on the image backbone, few-shot breeds and species,
hostile images, and the README's image walkthrough run as written."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.datasets import Photo, pets
from tests.e2e.conftest import ROOT, Server
from tests.hostile_images import encoded, hostile, photo_like
from tests.integration.conftest import registry_snapshot
from tests.readme import run_walkthrough

#: The README section this module runs.
README_SECTION = "Images: cats, dogs and 37 breeds from a few photos each"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    started = Server(tmp_path_factory.mktemp("images"), backbone_kind="image").start()
    yield started
    started.stop()


def post(server: Server, path: str, body: dict, tenant: str) -> dict:
    response = server.post(path, body, headers={"X-Tenant-ID": tenant})
    assert response.status_code == 200, response.text
    return response.json()


def accuracy(server: Server, head: str, photos: list[Photo], label_of, tenant: str) -> float:
    inputs = [{"image": p.base64()} for p in photos]
    body = {"head": head, "inputs": inputs, "top_k": 1}
    predictions = post(server, "/v1/predict", body, tenant)["predictions"]
    right = [p["label"] == label_of(photo) for p, photo in zip(predictions, photos, strict=True)]
    return sum(right) / len(photos)


def test_readme_walkthrough_then_held_out_accuracy(server):
    """The README's image walkthrough as written (it trains a species head on 10 photos and a
    breeds head on 185 over HTTP), then both heads on the 111 held-out photos.

    Measured: 0.865 for breeds, 0.973 for species. The reference for frozen EfficientNet-Lite0 +
    logistic regression on this sample is 0.83 and 0.97; over 20 random 5-shot splits the breeds
    head averages 0.863 (standard deviation 0.024, lowest 0.82). The thresholds leave room for 7
    and 4 more mistakes (bfloat16 against float32 moves one or two) and still fail on a broken
    preprocessing (BGR for RGB gives the breeds head 0.757)."""
    assert run_walkthrough(README_SECTION, server.port, ROOT, timeout=300) >= 4

    heads = {
        h["head"]: h["versions"][0] for h in post(server, "/v1/heads/list", {}, "default")["heads"]
    }
    assert (heads["breeds"]["n_examples"], len(heads["breeds"]["labels"])) == (185, 37)
    assert (heads["species"]["n_examples"], heads["species"]["labels"]) == (10, ["cat", "dog"])
    test = pets("test")
    breeds_accuracy = accuracy(server, "breeds", test, lambda p: p.breed, "default")
    species_accuracy = accuracy(server, "species", test, lambda p: p.species, "default")
    print(f"held-out accuracy: breeds {breeds_accuracy:.3f}, species {species_accuracy:.3f}")
    assert breeds_accuracy >= 0.80, breeds_accuracy
    assert species_accuracy >= 0.93, species_accuracy


@pytest.fixture(scope="module")
def target(server: Server) -> str:
    """A head to predict with, so that predictions get as far as decoding their images."""
    images = [encoded(photo_like(size=(200 + i, 160))) for i in range(4)]
    good = [{"image": image, "label": f"l{i % 2}"} for i, image in enumerate(images)]
    post(server, "/v1/heads/train", {"head": "target", "examples": good}, "hostile")
    return good[0]["image"]


def hostile_bodies(image: str, good: str) -> dict[str, tuple[str, dict, str]]:
    """route → (path, body carrying ``image`` second, the field it must be refused at)."""
    inputs = [{"image": good}, {"image": image}]
    examples = [{"image": good, "label": "a"}, {"image": image, "label": "b"}]
    return {
        "predict": ("/v1/predict", {"head": "target", "inputs": inputs}, "inputs.1.image"),
        "embed": ("/v1/embed", {"inputs": inputs}, "inputs.1.image"),
        "train": ("/v1/heads/train", {"head": "target", "examples": examples}, "examples.1.image"),
    }


@pytest.mark.parametrize("route", ["predict", "embed", "train"])
def test_hostile_images_are_refused_and_change_nothing(server, target, route):
    for name, (image, code) in hostile().items():
        path, body, field = hostile_bodies(image, target)[route]
        before = registry_snapshot(server.home)
        response = server.post(path, body, headers={"X-Tenant-ID": "hostile"})
        assert response.status_code == 400, (name, response.text)
        error = response.json()["error"]
        assert (error["code"], error["field"]) == (code, field), (name, error)
        assert registry_snapshot(server.home) == before, name


TEXT_EXAMPLE = {"text": "a cat", "label": "cat"}
URL_INPUT = {"url": "http://127.0.0.1:1/cat.jpg"}  # never fetched: not even a field


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("/v1/predict", {"head": "target", "inputs": ["a photo of a cat"]}, "inputs.0"),
        ("/v1/heads/train", {"head": "target", "examples": [TEXT_EXAMPLE]}, "examples.0.text"),
        ("/v1/predict", {"head": "target", "inputs": [URL_INPUT]}, "inputs.0"),
    ],
)
def test_text_where_an_image_belongs_is_refused(server, target, path, body, field):
    before = registry_snapshot(server.home)
    response = server.post(path, body, headers={"X-Tenant-ID": "hostile"})
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["field"] == field
    assert error["code"] == ("invalid_request" if "url" in str(body) else "invalid_input")
    assert registry_snapshot(server.home) == before


def test_label_descriptions_are_refused_on_the_image_backbone(server, target):
    photo = pets("train")[0]
    before = registry_snapshot(server.home)
    response = server.post(
        "/v1/heads/train",
        {
            "head": "described-pets",
            "examples": [{"image": photo.base64(), "label": photo.species}],
            "label_descriptions": {photo.species: f"a photo of a {photo.species}"},
        },
    )
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert (error["code"], error["field"]) == ("invalid_input", "label_descriptions")
    assert "GRAFT_BACKBONE_KIND=image" in error["message"]
    assert registry_snapshot(server.home) == before


@pytest.mark.parametrize(
    ("kind", "why"),
    [
        ("tuned", "no transformer layer to tune"),
        ("matching", "match the tokens of texts"),
        ("hybrid", "learn from the words of texts"),
    ],
)
def test_text_only_kinds_are_refused_on_the_image_backbone(server, target, kind, why):
    photos = pets("train")[:4]
    examples = [{"image": p.base64(), "label": p.species} for p in photos]
    before = registry_snapshot(server.home)
    response = server.post(
        "/v1/heads/train",
        {"head": f"{kind}-pets", "examples": examples, "kind": kind},
        headers={"X-Tenant-ID": "hostile"},
    )
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert (error["code"], error["field"]) == ("kind_not_supported", "kind")
    assert why in error["message"]
    assert registry_snapshot(server.home) == before


def test_examples_are_the_committed_photos():
    assert len(pets("train")) == 185 and len(pets("test")) == 111
    assert all(Path(p.path).is_relative_to(ROOT / "examples" / "pets") for p in pets("test"))
