"""One contract for every registered backbone (retrain.backbones.BACKBONES): it builds with
its published parameter count, its converted file carries the registry's pins, it loads as a
frozen extractor, it matches its PyTorch reference (tests/fixtures/effnet) through `predict`
from the photos themselves, and it round-trips through export. A new backbone is done when
it passes."""
from pathlib import Path

import numpy as np
import pytest

from retrain.backbones import (BACKBONES, block_layers, block_names, get_backbone,
                               load_backbone, weights_path)
from retrain.engine import Dense, Input, Sequential, load_model
from retrain.errors import ConfigError
from retrain.export import combine
from retrain.files import sha256_file
from retrain.images import decode_image
from retrain.preprocess import crop_and_resize, preprocess_batch

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
# The PyTorch reference of each backbone (tests/fixtures/effnet/ARCHITECTURE.md).
REFERENCES = {"efficientnet_lite0": "reference.npz", "efficientnet_lite1": "reference_lite1.npz",
              "efficientnet_lite2": "reference_lite2.npz"}
NAMES = sorted(BACKBONES)


def _needs_weights(name):
    path = weights_path(name)
    if not path.is_file():
        pytest.skip(f"{path} is absent: run `retrain pretrained --backbone {name}` "
                    "(`make test` does)")
    return path


@pytest.fixture(scope="module", params=NAMES)
def name(request):
    return request.param


@pytest.fixture(scope="module")
def reference(name):
    return np.load(FIXTURES / "effnet" / REFERENCES[name])


@pytest.fixture(scope="module")
def backbone(name):
    _needs_weights(name)
    return load_backbone(name)


def test_every_backbone_has_a_reference():
    assert set(REFERENCES) == set(BACKBONES)


def test_builds_with_the_published_parameter_count_and_its_blocks(name):
    record = get_backbone(name)
    model = record.builder(include_top=True, weights=None)
    assert sum(w.value.size for w in model.trainable_weights) == record.params
    assert model.inputs[0].shape[1:3] == tuple(record.preprocessing["input_size"])
    assert model.outputs[0].shape == (None, 1000)
    blocks = record.block_names()
    assert blocks == block_names(model) and blocks[-1] == "top"
    assert [l.name for l in block_layers(model, "top")] == ["top_conv", "top_bn",
                                                             "top_activation"]
    weighted = {l.name for b in blocks for l in block_layers(model, b) if l.weights}
    assert weighted == {l.name for l in model.layers if l.weights} - {
        "stem_conv", "stem_bn", "predictions"}
    with pytest.raises(ConfigError, match="no block 'block9z'"):
        block_layers(model, "block9z")


def test_published_parameter_counts():
    assert {n: b.params for n, b in BACKBONES.items()} == {
        "efficientnet_lite0": 4_652_008, "efficientnet_lite1": 5_416_680,
        "efficientnet_lite2": 6_092_072}


def test_the_converted_file_carries_the_registry_pins(name, reference):
    path = _needs_weights(name)
    record = get_backbone(name)
    model = load_model(path)
    assert sum(w.value.size for w in model.trainable_weights) == record.params
    metadata = model.metadata
    assert metadata["backbone"] == name and metadata["outputs"] == "logits"
    assert metadata["preprocessing"] == record.preprocessing
    assert metadata["labels"][967] == "espresso"
    provenance = metadata["provenance"]
    assert provenance["wheel_sha256"] == record.checkpoint.wheel_sha256
    assert provenance["pth_sha256"] == record.checkpoint.pth_sha256
    if "weights_sha256" in reference:   # the fixture names the .pth it was computed with
        assert str(reference["weights_sha256"]) == record.checkpoint.pth_sha256
        assert int(reference["params"]) == record.params


def test_preprocessing_reproduces_the_reference_inputs(name, reference):
    recipe = get_backbone(name).preprocessing
    images = [decode_image(next((FIXTURES / "photos").glob(f"{n}.*")))
              for n in reference["names"]]
    resized = np.stack([crop_and_resize(image, recipe) for image in images])
    np.testing.assert_array_equal(resized, reference["inputs_uint8"])
    np.testing.assert_allclose(preprocess_batch(images, recipe), reference["inputs"],
                               rtol=0, atol=1e-6)


def test_predict_matches_the_reference(name, reference, backbone):
    """Features from the frozen extractor, logits from the ImageNet model, both via predict."""
    features = backbone.predict(reference["inputs"])
    np.testing.assert_allclose(features, reference["features"], rtol=0, atol=1e-4)
    logits = get_backbone(name).builder(include_top=True, weights="imagenet").predict(
        reference["inputs"])
    np.testing.assert_allclose(logits, reference["logits"], rtol=0, atol=1e-3)
    np.testing.assert_array_equal(np.argsort(-logits, axis=1)[:, :5], reference["top5"])


def test_loads_as_a_frozen_extractor_and_round_trips_through_export(name, reference, backbone,
                                                                  tmp_path):
    path = weights_path(name)
    record = get_backbone(name)
    assert backbone.trainable_weights == []
    assert backbone.outputs[0].shape == (None, record.features)
    assert backbone.metadata["backbone"] == name
    assert backbone.metadata["preprocessing"] == record.preprocessing
    assert backbone.metadata["provenance"]["weights_sha256"] == sha256_file(path)
    head = Sequential([Input((record.features,)), Dense(3, activation="softmax", name="head")])
    model = combine(backbone, head)
    model.save(tmp_path / "model.h5", metadata={"backbone": name})
    loaded = load_model(tmp_path / "model.h5")
    assert loaded.metadata["backbone"] == name
    assert block_names(loaded) == record.block_names()
    x = reference["inputs"][:2]
    np.testing.assert_allclose(loaded.predict(x), head.predict(backbone.predict(x)),
                               rtol=0, atol=1e-6)
