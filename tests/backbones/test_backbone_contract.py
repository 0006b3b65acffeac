"""One contract for every registered backbone (retrain.backbones.BACKBONES), generic over the
registry: it builds with its published parameter count; its blocks partition the layers above
its stem, bottom to top, and cutting below any of them computes the whole backbone; it loads
a weights file by path as a frozen extractor; and, where its converted ImageNet file is on
disk, the file carries the registry's recipe, it matches its reference
(tests/backbone_references.py) through `predict` from the photos themselves, and it
round-trips through export. A new backbone is done when it passes; no backbone is named here."""
import numpy as np
import pytest

from backbone_references import FIXTURES, REFERENCES
from retrain.backbones import (BACKBONES, block_layers, block_names, get_backbone,
                               load_backbone, weights_path)
from retrain.backbones.cut import split_backbone
from retrain.engine import (Dense, Input, Sequential, clone_model, load_model,
                            set_random_seed)
from retrain.errors import ConfigError
from retrain.files import sha256_file
from retrain.images import decode_image
from retrain.preprocess import crop_and_resize, preprocess_batch

NAMES = sorted(BACKBONES)
SMALL = (64, 64, 3)       # an input size every backbone takes, for the structural checks


def _needs_weights(name):
    path = weights_path(name)
    if not path.is_file():
        pytest.skip(f"{path} is absent: run `{get_backbone(name).how_to_get}`")
    return path


@pytest.fixture(scope="module", params=NAMES)
def name(request):
    return request.param


@pytest.fixture(scope="module")
def reference(name):
    if name not in REFERENCES:
        pytest.skip(f"no reference outputs for {name} (tests/backbone_references.py)")
    return np.load(REFERENCES[name])


@pytest.fixture(scope="module")
def backbone(name):
    _needs_weights(name)
    return load_backbone(name)


@pytest.fixture(scope="module")
def small(name):
    """The backbone at SMALL with seeded random weights, BN statistics away from 0 and 1."""
    set_random_seed(0)
    model = get_backbone(name).builder(include_top=False, pooling="avg", weights=None,
                                       input_shape=SMALL)
    rng = np.random.default_rng(0)
    for layer in model.layers:
        for weight in layer.weights:
            if weight.name == "moving_variance":
                weight.assign(rng.uniform(0.5, 2.0, weight.shape))
            elif weight.name == "moving_mean":
                weight.assign(rng.normal(0, 0.1, weight.shape))
    return model


def test_builds_with_the_published_parameter_count(name):
    record = get_backbone(name)
    model = record.builder(include_top=True, weights=None)
    assert sum(w.value.size for w in model.trainable_weights) == record.params
    assert model.inputs[0].shape[1:3] == tuple(record.preprocessing["input_size"])
    assert model.outputs[0].shape == (None, 1000)
    pooled = record.builder(include_top=False, pooling="avg", weights=None)
    assert pooled.outputs[0].shape == (None, record.features)


def test_blocks_partition_the_layers_above_the_stem_bottom_to_top(name, small):
    record = get_backbone(name)
    blocks = block_names(small)
    assert blocks and len(set(blocks)) == len(blocks)
    position = {id(layer): i for i, layer in enumerate(small.layers)}
    spans, owner = [], {}
    for block in blocks:
        layers = block_layers(small, block)
        assert layers and all(record.block_of(layer.name) == block for layer in layers)
        spans.append([position[id(layer)] for layer in layers])
        for layer in layers:
            assert id(layer) not in owner, f"{layer.name} is in {owner[id(layer)]} and {block}"
            owner[id(layer)] = block
    assert [span[0] for span in spans] == sorted(span[0] for span in spans)  # bottom to top
    first = spans[0][0]
    outside = [l.name for l in small.layers[first:] if l.weights and id(l) not in owner]
    assert outside == [], f"weighted layers above the stem in no block: {outside}"
    with pytest.raises(ConfigError, match="no block 'no_such_block'"):
        block_layers(small, "no_such_block")


def test_cutting_below_any_block_computes_the_whole_backbone(name, small):
    """The cut rule: for every N, the frozen bottom then the trainable top of the top N
    blocks compute what the backbone computes (the same layers in the same order)."""
    x = np.random.default_rng(1).normal(size=(2,) + SMALL).astype(np.float32)
    want = small.forward(x)
    blocks = block_names(small)
    for n in range(1, len(blocks) + 1):
        bottom, top, cut = split_backbone(small, n)
        assert cut == blocks[-n]
        assert {l.name for l in top.layers} >= {l.name for l in block_layers(small, cut)}
        np.testing.assert_allclose(top.forward(bottom.forward(x)), want, rtol=0,
                                   atol=1e-6 * float(np.max(np.abs(want))), err_msg=cut)
    with pytest.raises(ConfigError, match="--fine-tune must be between 0"):
        split_backbone(small, len(blocks) + 1)


def test_loads_a_weights_file_by_path_as_a_frozen_extractor(name, tmp_path):
    """weights=PATH: a file of the layers below the top, by layer name (as Keras writes its
    no-top files)."""
    record = get_backbone(name)
    set_random_seed(3)
    source = record.builder(include_top=False, weights=None)
    source.save_weights(str(tmp_path / "weights.h5"))
    model = load_backbone(name, weights=tmp_path / "weights.h5")
    assert model.trainable_weights == [] and model.outputs[0].shape == (None, record.features)
    assert model.metadata["backbone"] == name
    assert model.metadata["preprocessing"] == record.preprocessing
    assert model.metadata["provenance"]["weights_sha256"] == sha256_file(tmp_path / "weights.h5")
    for layer in (l for l in source.layers if l.weights):
        for theirs, ours in zip(layer.get_weights(), model.get_layer(layer.name).get_weights()):
            np.testing.assert_array_equal(theirs, ours)


def test_the_converted_file_carries_the_registry_recipe(name):
    path = _needs_weights(name)
    record = get_backbone(name)
    metadata = load_model(path).metadata
    assert metadata["backbone"] == name
    assert metadata["preprocessing"] == record.preprocessing
    assert len(metadata["labels"]) == 1000 and metadata["labels"][967] == "espresso"
    if record.checkpoint is not None:      # a pinned download: the file names its pins
        assert metadata["provenance"]["wheel_sha256"] == record.checkpoint.wheel_sha256


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
    record = get_backbone(name)
    if "params" in reference:
        assert int(reference["params"]) == record.params
    features = backbone.predict(reference["inputs"])
    np.testing.assert_allclose(features, reference["features"], rtol=0, atol=1e-4)
    logits = record.builder(include_top=True, weights="imagenet").predict(reference["inputs"])
    np.testing.assert_allclose(logits, reference["logits"], rtol=0, atol=1e-3)
    np.testing.assert_array_equal(np.argsort(-logits, axis=1)[:, :5], reference["top5"])


def test_round_trips_through_export(name, backbone, tmp_path):
    record = get_backbone(name)
    assert backbone.trainable_weights == []
    assert backbone.outputs[0].shape == (None, record.features)
    assert backbone.metadata["provenance"]["weights_sha256"] == sha256_file(weights_path(name))
    head = Sequential([Input((record.features,)), Dense(3, activation="softmax", name="head")])
    model = clone_model(head, input_tensors=backbone.outputs[0])
    model.save(tmp_path / "model.h5", metadata={"backbone": name})
    loaded = load_model(tmp_path / "model.h5")
    assert loaded.metadata["backbone"] == name
    assert block_names(loaded) == block_names(backbone)
    x = np.random.default_rng(2).normal(
        size=(2,) + tuple(backbone.inputs[0].shape[1:])).astype(np.float32)
    np.testing.assert_allclose(loaded.predict(x), head.predict(backbone.predict(x)),
                               rtol=0, atol=1e-6)
