"""Every layer of a block that fine-tuning trains passes the float64 gradient check in the
mode fine-tuning runs it in: BatchNormalization in inference mode (moving statistics fixed)
with gamma and beta trainable, every other layer in training mode. The layers are rebuilt
from the configs of EfficientNet-Lite0's own block6d, block7a and top (kernel sizes,
strides, padding, activations), with fewer channels so that the finite differences stay
quick."""
import importlib.util
from pathlib import Path

import pytest

from retrain.backbones import block_layers, efficientnet_lite0

_spec = importlib.util.spec_from_file_location(
    "engine_gradcheck", Path(__file__).resolve().parents[1] / "engine" / "test_gradcheck.py")
_gradcheck = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_gradcheck)

CHANNELS = 3
_MODEL = efficientnet_lite0(include_top=False, pooling="avg", weights=None,
                            input_shape=(64, 64, 3))
_LAYERS = [layer for block in ("block6d", "block7a", "top")
           for layer in block_layers(_MODEL, block)]


@pytest.mark.parametrize("layer", _LAYERS, ids=lambda layer: layer.name)
def test_trained_block_layer_passes_gradcheck(layer):
    config = dict(layer.get_config(), trainable=True)
    if "filters" in config:
        config["filters"] = CHANNELS
    copy = type(layer).from_config(config)
    shape = (2, 5, 5, CHANNELS)
    inference_mode = type(layer).__name__ == "BatchNormalization"
    _gradcheck.gradcheck(copy, [shape, shape] if type(layer).__name__ == "Add" else shape,
                         training=not inference_mode, scale=3.0 if "activation" in layer.name
                         else 1.0)
    if inference_mode:
        assert [w.name for w in copy.trainable_weights] == ["gamma", "beta"]


def test_the_trained_blocks_hold_every_kind_of_layer_checked():
    kinds = {type(layer).__name__ for layer in _LAYERS}
    assert kinds == {"Conv2D", "DepthwiseConv2D", "BatchNormalization", "ReLU", "Add"}
