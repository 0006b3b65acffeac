"""MobileNet v1/v2 against Keras Applications: the MobileNetV2 fixture written by Keras
(tests/fixtures/keras/mobilenet_v2), and parameter counts Keras reports."""
import json
import re
from pathlib import Path

import numpy as np
import pytest

from retrain.backbones import mobilenet, mobilenet_v2
from retrain.backbones.mobilenet import make_divisible
from retrain.engine import Model, clear_session
from retrain.errors import ConfigError, PretrainedMissingError, WeightsError

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "keras" / "mobilenet_v2"
WEIGHTS = FIXTURES / "mobilenet_v2_legacy_no_top.h5"


@pytest.fixture(scope="module")
def keras_graph():
    return json.loads((FIXTURES / "mobilenet_v2.json").read_text())


@pytest.fixture(scope="module")
def keras_outputs():
    return np.load(FIXTURES / "mobilenet_v2.npz")


def _fixture_model():
    clear_session()  # auto names (input_layer, global_average_pooling2d) count per session
    return mobilenet_v2(alpha=0.35, input_shape=(96, 96, 3), pooling="avg", weights=str(WEIGHTS))


def test_mobilenet_v2_matches_keras_outputs_and_trace(keras_graph, keras_outputs):
    model = _fixture_model()
    np.testing.assert_allclose(model.forward(keras_outputs["input"]), keras_outputs["output"],
                               rtol=1e-4, atol=1e-4)
    names = keras_graph["trace_layers"]
    probe = Model(model.inputs[0], [model.get_layer(n).outputs[0] for n in names])
    for name, out in zip(names, probe.forward(keras_outputs["input"][:1])):
        np.testing.assert_allclose(out, keras_outputs[f"trace0/{name}"], rtol=1e-4, atol=1e-4,
                                   err_msg=name)


def test_mobilenet_v2_graph_equals_keras(keras_graph):
    clear_session()  # auto names (input_layer, global_average_pooling2d) count per session
    model = _fixture_model()
    assert model.name == keras_graph["model_name"]
    assert [l.name for l in model.layers] == [l["name"] for l in keras_graph["layers"]]
    assert model.count_params() == 410_208
    for layer, spec in zip(model.layers, keras_graph["layers"]):
        assert type(layer).__name__ == spec["class_name"]
        assert [t.layer.name for t in layer.inbound] == spec.get("inbound", [])
        assert list(layer.output_shape) == spec["output_shape"], layer.name
        config = json.loads(json.dumps(layer.get_config()))
        for key in ("filters", "kernel_size", "strides", "padding", "use_bias", "epsilon",
                    "momentum", "max_value", "depth_multiplier"):
            if key in spec["config"]:
                assert config[key] == spec["config"][key], (layer.name, key)


# Total parameters as Keras reports them (model.summary()) for 224x224 inputs.
@pytest.mark.parametrize("alpha, with_top, no_top", [(0.25, 475_544, 218_544),
                                                     (0.50, 1_342_536, 829_536),
                                                     (0.75, 2_601_976, 1_832_976),
                                                     (1.0, 4_253_864, 3_228_864)])
def test_mobilenet_v1_parameter_counts(alpha, with_top, no_top):
    assert mobilenet(alpha=alpha, include_top=True).count_params() == with_top
    assert mobilenet(alpha=alpha, input_shape=(224, 224, 3)).count_params() == no_top


@pytest.mark.parametrize("alpha, with_top, no_top", [(1.0, 3_538_984, 2_257_984),
                                                     (1.4, 6_156_712, 4_363_712)])
def test_mobilenet_v2_parameter_counts(alpha, with_top, no_top):
    assert mobilenet_v2(alpha=alpha, include_top=True).count_params() == with_top
    assert mobilenet_v2(alpha=alpha).count_params() == no_top


def test_mobilenet_v1_names_and_top():
    clear_session()
    model = mobilenet(alpha=0.25, include_top=True, input_shape=(128, 128, 3), classes=7)
    names = [l.name for l in model.layers]
    assert names[:8] == ["input_layer", "conv1", "conv1_bn", "conv1_relu", "conv_dw_1",
                         "conv_dw_1_bn", "conv_dw_1_relu", "conv_pw_1"]
    assert names.index("conv_pad_2") + 1 == names.index("conv_dw_2")
    assert [n for n in names if n.startswith("conv_pad")] == [
        "conv_pad_2", "conv_pad_4", "conv_pad_6", "conv_pad_12"]
    assert names[-5:] == ["global_average_pooling2d", "dropout", "conv_preds", "reshape_2",
                          "predictions"]
    assert model.name == "mobilenet_0.25_128"
    probabilities = model.forward(np.random.default_rng(0).uniform(-1, 1, (2, 128, 128, 3)))
    assert probabilities.shape == (2, 7)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)


def test_keras_padding_rules():
    """v2 uses Keras `correct_pad`: odd sizes pad (1, 1), even or unknown (0, 1); v1 always
    pads (0, 1)."""
    odd = mobilenet_v2(input_shape=(33, 33, 3))        # Conv1 'same' s2: 33 -> 17
    assert odd.get_layer("block_1_pad").get_config()["padding"] == [[1, 1], [1, 1]]
    unknown = mobilenet_v2()
    assert unknown.outputs[0].shape == (None, None, None, 1280)
    assert unknown.get_layer("block_1_pad").get_config()["padding"] == [[0, 1], [0, 1]]
    assert unknown.forward(np.zeros((1, 64, 64, 3), np.float32)).shape == (1, 2, 2, 1280)
    v1 = mobilenet(input_shape=(33, 33, 3))
    assert v1.get_layer("conv_pad_2").get_config()["padding"] == [[0, 1], [0, 1]]


def test_make_divisible_as_keras():
    assert [make_divisible(32 * a, 8) for a in (0.35, 0.5, 0.75, 1.0, 1.3, 1.4)] == [
        16, 16, 24, 32, 40, 48]
    assert make_divisible(int(16 * 0.35), 8) == 8
    assert make_divisible(1280 * 1.4, 8) == 1792


@pytest.mark.parametrize("builder, kwargs, message", [
    (mobilenet, {"alpha": 0.3, "weights": "imagenet"}, "alpha must be one of 0.25, 0.5"),
    (mobilenet_v2, {"alpha": 0.25, "weights": "imagenet"}, "alpha must be one of 0.35"),
    (mobilenet_v2, {"input_shape": (31, 64, 3)}, "at least 32x32"),
    (mobilenet, {"input_shape": (64, 64)}, "three integers"),
    (mobilenet_v2, {"include_top": True, "weights": "imagenet", "input_shape": (100, 100, 3)},
     r"must be \(224, 224, 3\)"),
    (mobilenet, {"include_top": True, "weights": "imagenet", "classes": 10}, "classes"),
    (mobilenet_v2, {"include_top": True, "input_shape": (None, None, 3)}, "static"),
    (mobilenet_v2, {"pooling": "sum"}, "pooling='sum'"),
    (mobilenet_v2, {"weights": "imagenet", "input_shape": (64, 64, 1)}, "3 channels"),
])
def test_keras_argument_checks(builder, kwargs, message):
    with pytest.raises(ConfigError, match=message):
        builder(**kwargs)


def test_imagenet_weights_name_the_keras_file(tmp_path, monkeypatch):
    monkeypatch.setenv("RETRAIN_PRETRAINED_DIR", str(tmp_path))
    with pytest.raises(PretrainedMissingError) as info:
        mobilenet_v2(alpha=0.35, input_shape=(96, 96, 3), weights="imagenet")
    assert "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0.35_96_no_top.h5" in str(info.value)
    assert "keras-applications/mobilenet_v2/" in info.value.hint
    with pytest.warns(UserWarning, match="224"):
        with pytest.raises(PretrainedMissingError, match="mobilenet_7_5_224_tf_no_top.h5"):
            mobilenet(alpha=0.75, input_shape=(100, 100, 3), weights="imagenet")


def test_keras_files_in_the_pretrained_folder_load_by_name(tmp_path, monkeypatch):
    """weights='imagenet' picks up a Keras no-top file placed in the pretrained folder; here
    one written by the engine in the same legacy layout stands in for Keras's."""
    monkeypatch.setenv("RETRAIN_PRETRAINED_DIR", str(tmp_path))
    with pytest.raises(PretrainedMissingError, match="1.0_224_no_top"):
        mobilenet_v2(input_shape=(224, 224, 3), weights="imagenet")
    keras_file = tmp_path / "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5"
    source = mobilenet_v2(input_shape=(224, 224, 3))
    source.save_weights(str(keras_file))
    loaded = mobilenet_v2(input_shape=(224, 224, 3), pooling="avg", weights="imagenet")
    assert loaded.outputs[0].shape == (None, 1280)
    np.testing.assert_array_equal(loaded.get_layer("Conv_1").weights[0].value,
                                  source.get_layer("Conv_1").weights[0].value)


def test_loading_by_name_reports_missing_layers_and_wrong_shapes():
    with pytest.raises(WeightsError, match=r"'block_1_project' weight 'kernel' expects shape "
                                           r"\(1, 1, 48, 16\)\. Received: shape=\(1, 1, 48, 8\)"):
        mobilenet_v2(alpha=0.5, input_shape=(96, 96, 3), weights=str(WEIGHTS))
    with pytest.raises(WeightsError, match=re.escape("Layer 'conv1' (Conv2D) is not in")):
        mobilenet(alpha=0.25, input_shape=(96, 96, 3), weights=str(WEIGHTS))
