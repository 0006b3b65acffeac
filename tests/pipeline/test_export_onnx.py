"""`retrain export --format onnx`: the file passes onnx.checker, and ONNX Runtime (which
nobody here wrote) computes from it what our engine computes from the model file, within
1e-4: for the ImageNet backbone, for a fine-tuned run, and for a model of every layer kind."""
import json
import sys
from pathlib import Path

import numpy as np
import pytest

from layer_cases import CASES, one_layer_model
from retrain.backbones.weights import pretrained_dir
from retrain.cli import main
from retrain.distribution import pip_install
from retrain.engine import (Activation, Add, AveragePooling2D, BatchNormalization, Conv2D,
                            Dense, DepthwiseConv2D, Dropout, Flatten, GlobalAveragePooling2D,
                            GlobalMaxPooling2D, Input, MaxPooling2D, Model, ReLU, Softmax,
                            ZeroPadding2D, set_random_seed)
from retrain.model_file import load_model_file
from retrain.onnx_export import onnx_bytes, to_onnx
from retrain.pipeline import RunOptions, run
from retrain.fit import HeadOptions
from stand_in import use_lite_stand_in

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "effnet"
WEIGHTS = pretrained_dir() / "efficientnet_lite0.h5"


def _session(path_or_proto):
    source = path_or_proto if isinstance(path_or_proto, str) else \
        path_or_proto.SerializeToString()
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    return ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])


def _run(session, xs):
    feeds = {i.name: x for i, x in zip(session.get_inputs(), xs)}
    return session.run(None, feeds)


def _export(model_path, out, capsys):
    assert main(["export", str(model_path), "--format", "onnx", "--out", str(out)]) == 0
    assert capsys.readouterr().out.strip() == f"wrote {out}"
    onnx.checker.check_model(str(out), full_check=True)
    return onnx.load(str(out))


@pytest.mark.skipif(not WEIGHTS.is_file(), reason=f"{WEIGHTS} is absent: run `make pretrained`")
def test_the_pretrained_backbone_round_trips_through_onnx_runtime(tmp_path, capsys):
    proto = _export(WEIGHTS, tmp_path / "lite0.onnx", capsys)
    model = load_model_file(WEIGHTS)
    x = np.load(FIXTURES / "reference.npz")["inputs"]            # 4 photos, preprocessed
    (logits,) = _run(_session(str(tmp_path / "lite0.onnx")), [x])
    ours = model.predict(x)
    assert logits.shape == (4, 1000)
    np.testing.assert_allclose(logits, ours, rtol=0, atol=1e-4)
    props = {p.key: json.loads(p.value) for p in proto.metadata_props}
    assert props["retrain.preprocessing"] == model.metadata["preprocessing"]
    assert props["retrain.labels"] == model.metadata["labels"]
    assert props["retrain.outputs"] == "logits"


def test_a_fine_tuned_run_round_trips_through_onnx_runtime(tmp_path, monkeypatch, capsys):
    """The Lite0 graph (32x32 stand-in weights) with its top block fine-tuned and a hidden
    ReLU layer in the head, as `retrain fit` writes it."""
    from test_fine_tune import stripes

    use_lite_stand_in(monkeypatch)
    result = run(stripes(tmp_path / "data", per_class=6), tmp_path / "run",
                 RunOptions(cache_dir=tmp_path / "cache", progress=False, val_percent=20,
                            test_percent=20, head=HeadOptions(epochs=2, fine_tune=1,
                                                              hidden_units=8, seed=0)))
    proto = _export(result.model_path, tmp_path / "run.onnx", capsys)
    model = load_model_file(result.model_path)
    x = np.random.default_rng(0).normal(0, 1, (5, 32, 32, 3)).astype(np.float32)
    (probabilities,) = _run(_session(str(tmp_path / "run.onnx")), [x])
    np.testing.assert_allclose(probabilities, model.predict(x), rtol=0, atol=1e-4)
    props = {p.key: json.loads(p.value) for p in proto.metadata_props}
    assert props["retrain.labels"] == ["dots", "horizontal", "vertical"]
    assert props["retrain.preprocessing"]["input_size"] == [32, 32]
    assert props["retrain.training"]["fine_tune"] == 1


ACTIVATIONS = ["linear", "relu", "relu6", "sigmoid", "tanh", "softmax", "silu", "swish", "elu",
               "selu", "gelu", "hard_sigmoid", "softplus", "softsign", "exponential"]


def _every_layer_model():
    """One graph with every layer class and option the exporter treats apart: 'same' on odd
    sizes, strides, dilation, depth multiplier, BN without scale or centre, the ReLU forms,
    a three-way Add, softmax on an inner axis, Dense and Flatten of 4-D values."""
    set_random_seed(0)
    x = Input((9, 11, 3), name="image")
    a = ZeroPadding2D(((1, 0), (2, 1)))(x)
    a = Conv2D(6, 3, strides=2, padding="same", activation="relu6")(a)
    a = BatchNormalization(epsilon=0.5)(a)
    b = DepthwiseConv2D(3, padding="same", depth_multiplier=2, dilation_rate=2)(a)
    b = BatchNormalization(scale=False, center=False, epsilon=0.25)(b)
    b = ReLU(max_value=1.5, negative_slope=0.3, threshold=0.2)(b)
    c = Conv2D(12, 1, activation="swish")(a)
    d = ReLU(max_value=0.8)(Dense(12)(a))
    added = Add()([b, c, d])
    pooled = AveragePooling2D(3, strides=2, padding="same")(added)
    maxed = MaxPooling2D(2, padding="same")(Activation("gelu")(added))
    wide = Flatten()(Softmax(axis=2)(maxed))
    vector = GlobalAveragePooling2D()(Dropout(0.5)(pooled))
    vector = BatchNormalization()(Dense(7, activation="selu")(vector))
    kept = GlobalMaxPooling2D(keepdims=True)(Conv2D(4, 2, activation="hard_sigmoid")(pooled))
    model = Model(x, [Dense(5, activation="softmax")(vector), wide, kept, added])
    rng = np.random.default_rng(1)
    for layer in model.layers:     # moving statistics away from 0 and 1, so BN does something
        if type(layer) is BatchNormalization:
            layer.moving_mean.assign(rng.normal(0, 0.5, layer.moving_mean.shape))
            layer.moving_variance.assign(rng.uniform(0.05, 2, layer.moving_variance.shape))
    return model


def test_every_layer_kind_matches_onnx_runtime():
    model = _every_layer_model()
    proto = to_onnx(model)
    onnx.checker.check_model(proto, full_check=True)
    # onnx_wire.py writes the bytes without the onnx package: protobuf writes them again
    # the same (every field where onnx.proto numbers it, in its order)
    assert proto.SerializeToString() == onnx_bytes(model)
    x = np.random.default_rng(2).normal(0, 1.5, (3, 9, 11, 3)).astype(np.float32)
    outputs = _run(_session(proto), [x])
    for theirs, ours in zip(outputs, model.forward(x)):
        assert theirs.shape == ours.shape
        np.testing.assert_allclose(theirs, ours, rtol=0, atol=1e-5)


@pytest.mark.parametrize("class_name", sorted(CASES))
def test_each_layer_kind_alone_matches_onnx_runtime(class_name):
    """Every registered kind's `to_onnx`, on its case of tests/layer_cases.py."""
    model, x = one_layer_model(class_name, seed=3)
    proto = to_onnx(model)
    onnx.checker.check_model(proto, full_check=True)
    (theirs,) = _run(_session(proto), x if isinstance(x, list) else [x])
    ours = model.forward(x)
    assert theirs.shape == ours.shape
    np.testing.assert_allclose(theirs, ours, rtol=0, atol=1e-5)


@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_every_activation_matches_onnx_runtime(activation):
    x_in = Input((6,))
    model = Model(x_in, Activation(activation)(Dense(6)(x_in)))
    x = np.random.default_rng(3).normal(0, 3, (4, 6)).astype(np.float32)
    (theirs,) = _run(_session(to_onnx(model)), [x])
    np.testing.assert_allclose(theirs, model.forward(x), rtol=1e-6, atol=1e-5)


def test_without_onnx_the_error_says_what_to_install(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "onnx", None)             # import onnx -> ImportError
    assert main(["export", str(tmp_path / "model.h5"), "--format", "onnx"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 2 and err[0].startswith("error: ") and "onnx package" in err[0]
    assert err[1] == f"hint: Install it with: {pip_install('onnx')}"


def test_export_refuses_to_overwrite_the_model_file(tmp_path, capsys):
    model = tmp_path / "model.h5"
    model.write_bytes(b"not read")
    assert main(["export", str(model), "--format", "onnx", "--out", str(model)]) == 2
    assert "is the model file itself" in capsys.readouterr().err
    assert model.read_bytes() == b"not read"


def test_exporting_a_run_writes_beside_it_so_the_next_fit_is_not_refused(image_tree, tmp_path,
                                                                          monkeypatch, capsys):
    """The issue's case: `export RUN/model.h5` wrote RUN/model.onnx, and the next
    `fit --out RUN` refused RUN as holding files retrain did not write."""
    from stand_in import use_stand_in
    use_stand_in(monkeypatch)
    data = image_tree({"a": 6, "b": 6})
    fit = ["fit", str(data), "--out", str(tmp_path / "run"), "--cache", str(tmp_path / "c"),
           "--epochs", "2", "-q"]
    assert main(fit) == 0
    assert main(["export", str(tmp_path / "run" / "model.h5"), "--format", "onnx"]) == 0
    assert capsys.readouterr().out.strip().endswith(f"wrote {tmp_path / 'run.onnx'}")
    onnx.checker.check_model(str(tmp_path / "run.onnx"))
    assert main(fit) == 0, capsys.readouterr().err
    inside = tmp_path / "run" / "model.onnx"
    assert main(["export", str(tmp_path / "run" / "model.h5"), "--format", "onnx", "--out",
                 str(inside)]) == 2
    assert "inside the run folder" in capsys.readouterr().err and not inside.exists()
