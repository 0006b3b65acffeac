"""EfficientNet-Lite0 block by block against the PyTorch reference (tests/fixtures/effnet),
its architecture, and its errors. Features, logits, preprocessing, pins and export of every
backbone are in test_backbone_contract.py."""
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from retrain.backbones import efficientnet_lite0, load_backbone
from retrain.backbones.efficientnet_lite import block_specs
from retrain.backbones.weights import pretrained_dir
from retrain.files import sha256_file
from retrain.engine import Model
from retrain.errors import ModelFileError, PretrainedMissingError

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "effnet"
WEIGHTS = pretrained_dir() / "efficientnet_lite0.h5"
needs_weights = pytest.mark.skipif(
    not WEIGHTS.is_file(), reason=f"{WEIGHTS} is absent: run `make pretrained` (`make test` does)")


@pytest.fixture(scope="module")
def model():
    return efficientnet_lite0(include_top=True, weights="imagenet")


def _outputs(model, names):
    """A model over the same layers whose outputs are the named layers' outputs."""
    return Model(model.inputs[0], [model.get_layer(n).outputs[0] for n in names])


@needs_weights
def test_every_block_matches_pytorch(model):
    """Localises an error: the first layer listed in a failure is the one to fix."""
    inter = np.load(FIXTURES / "reference_intermediates.npz")
    names = {"stem": "stem_activation", "head": "top_activation"}
    for index, spec in enumerate(block_specs()):
        residual = spec["strides"] == 1 and spec["filters_in"] == spec["filters_out"]
        names[f"block{index:02d}"] = spec["name"] + ("_add" if residual else "_project_bn")
    outputs = _outputs(model, list(names.values())).forward(inter["input"][None])
    for key, out in zip(names, outputs):
        # Values reach 52; float32 summation order alone moves them by ~1e-4.
        np.testing.assert_allclose(out[0], inter[key], rtol=1e-5, atol=3e-4,
                                   err_msg=f"{key} ({names[key]})")


@needs_weights
@pytest.mark.parametrize("damage", ["truncated", "random"])
def test_a_damaged_weights_file_is_a_clear_error(tmp_path, damage):
    path = tmp_path / "efficientnet_lite0.h5"
    data = WEIGHTS.read_bytes()
    path.write_bytes(data[:len(data) // 2] if damage == "truncated"
                     else np.random.default_rng(0).integers(0, 256, 4096, np.uint8).tobytes())
    with pytest.raises(ModelFileError, match=re.escape(str(path))):
        efficientnet_lite0(weights=str(path))


def test_missing_imagenet_weights_say_to_run_make_pretrained(tmp_path, monkeypatch):
    monkeypatch.setenv("RETRAIN_PRETRAINED_DIR", str(tmp_path))
    with pytest.raises(PretrainedMissingError, match="efficientnet_lite0.h5") as info:
        efficientnet_lite0(weights="imagenet")
    assert "make pretrained" in info.value.hint
    with pytest.raises(PretrainedMissingError):
        load_backbone("efficientnet_lite0")


@needs_weights
def test_pretrained_dir_override(tmp_path, monkeypatch):
    shutil.copy(WEIGHTS, tmp_path / "efficientnet_lite0.h5")
    monkeypatch.setenv("RETRAIN_PRETRAINED_DIR", str(tmp_path))
    assert pretrained_dir() == tmp_path
    assert load_backbone("efficientnet_lite0").metadata["provenance"]["weights_sha256"] == \
        sha256_file(WEIGHTS)


def test_architecture_matches_the_reference_table():
    model = efficientnet_lite0(include_top=True, weights=None)
    assert sum(w.value.size for w in model.trainable_weights) == 4_652_008
    assert model.outputs[0].shape == (None, 1000)
    assert len(block_specs()) == 16
    adds = [layer.name for layer in model.layers if layer.name.endswith("_add")]
    assert [name[:7] for name in adds] == ["block2b", "block3b", "block4b", "block4c", "block5b",
                                           "block5c", "block6b", "block6c", "block6d"]
    # TF 'same' for stride 2 on even sizes: the extra row/column goes bottom/right.
    pads = {l.name: l.get_config()["padding"] for l in model.layers
            if l.name.endswith("_pad")}
    assert pads["stem_conv_pad"] == pads["block2a_dwconv_pad"] == [[0, 1], [0, 1]]
    assert pads["block3a_dwconv_pad"] == pads["block6a_dwconv_pad"] == [[1, 2], [1, 2]]
    eps = {l.get_config()["epsilon"] for l in model.layers if "bn" in l.name}
    assert eps == {1e-3}
    relu6 = {l.get_config()["max_value"] for l in model.layers if l.name.endswith("activation")}
    assert relu6 == {6.0}


def test_no_top_shapes_and_validation():
    pooled = efficientnet_lite0(include_top=False, pooling="avg", weights=None)
    assert pooled.outputs[0].shape == (None, 1280)
    spatial = efficientnet_lite0(include_top=False, weights=None, input_shape=(96, 128, 3))
    assert spatial.outputs[0].shape == (None, 3, 4, 1280)
    with pytest.raises(ValueError, match="pooling='max'"):
        efficientnet_lite0(include_top=False, pooling="max", weights=None)
    with pytest.raises(ValueError, match=r"input_shape=\(224, 224, 1\)"):
        efficientnet_lite0(weights=None, input_shape=(224, 224, 1))
