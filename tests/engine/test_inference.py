"""The inference plan (predict's fast path) against model.forward, which the rest of the suite
proves against Keras and PyTorch: random models with every fusion the plan makes, the
threading paths, plan caching, and the reference backbones through predict."""
import os
import signal
import warnings
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

import retrain.engine
from layer_cases import CASES, one_layer_model
from numerics import float32_paths_atol
from retrain.engine import Layer, Model, Sequential, inference, inference_steps, kernels
from retrain.engine.layers import (Activation, Add, AveragePooling2D, BatchNormalization,
                                   Conv2D, Dense, DepthwiseConv2D, Dropout, Flatten,
                                   GlobalAveragePooling2D, GlobalMaxPooling2D, Input,
                                   InputLayer, LAYERS, MaxPooling2D, ReLU, Softmax,
                                   ZeroPadding2D)

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


def _randomize(model, seed=0):
    """Random weights, with BatchNormalization statistics far from the identity so that
    folding them is tested for real."""
    rng = np.random.default_rng(seed)
    for w in model.weights:
        low, high = {"moving_variance": (0.2, 3.0), "gamma": (0.5, 1.5)}.get(w.name, (-1, 1))
        w.assign(rng.uniform(low, high, w.shape) * (0.5 if "kernel" in w.name else 1))
    return model


def _check(model, shapes, batches=(1, 3, 4), threads=1, monkeypatch=None):
    """plan.run equals model.forward for several batch sizes (1 and odd sizes take the
    row-split path when there are several threads). The plan's uninitialised buffers start
    as NaN, so reading a cell nobody wrote (a padded border) cannot go unnoticed."""
    monkeypatch.setattr(inference, "_thread_count", lambda: threads)
    numpy = SimpleNamespace(**{name: getattr(np, name) for name in dir(np)
                               if not name.startswith("__")})
    numpy.empty = lambda shape, dtype: np.full(shape, np.nan, dtype)
    monkeypatch.setattr(inference, "np", numpy)
    plan = inference.InferencePlan(model)
    rng = np.random.default_rng(1)
    for batch in batches:
        xs = [rng.normal(size=(batch,) + s).astype(np.float32) for s in shapes]
        x = xs if len(xs) > 1 else xs[0]
        want, got = model.forward(x), plan.run(x)
        for w, g in zip(*(([want], [got]) if not isinstance(want, list) else (want, got))):
            assert g.dtype == np.float32 and g.shape == w.shape
            np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-5)
    return plan


def _mbconv_net():
    """EfficientNet/MobileNetV2 in small: padding, stride 2, depthwise with a multiplier,
    BN (with and without scale/center) folded into convolutions, ReLU6, residual Adds."""
    inputs = Input((13, 12, 3))
    x = ZeroPadding2D(((0, 1), (1, 0)))(inputs)
    x = Conv2D(8, 3, strides=2, use_bias=False)(x)
    x = BatchNormalization()(x)
    x = ReLU(6.0)(x)
    skip = x
    x = Conv2D(16, 1, padding="same", use_bias=False)(x)
    x = BatchNormalization(scale=False)(x)
    x = ReLU(6.0)(x)
    x = DepthwiseConv2D(3, padding="same", depth_multiplier=2, use_bias=False)(x)
    x = BatchNormalization(center=False)(x)
    x = Activation("relu6")(x)
    x = Conv2D(8, 1, use_bias=True)(x)
    x = BatchNormalization()(x)
    x = Add()([skip, x])                      # the residual on the Add's first input
    y = DepthwiseConv2D(5, strides=2, padding="same", dilation_rate=1)(x)
    y = BatchNormalization()(y)
    y = Conv2D(8, 1, activation="relu")(y)
    z = ZeroPadding2D(1)(x)                   # x has two readers: both pads copy it
    z = DepthwiseConv2D(3, strides=2, padding="valid", activation="relu")(z)
    z = DepthwiseConv2D(2, strides=1, padding="same")(z)
    y = Add()([y, z])
    top = Conv2D(12, 3, padding="same", dilation_rate=2)(y)
    top = Dropout(0.5)(GlobalAveragePooling2D()(top))
    return Model(inputs, [x, y, Dense(5)(top)])


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_fused_mbconv_network_equals_forward(threads, monkeypatch):
    model = _randomize(_mbconv_net())
    plan = _check(model, [(13, 12, 3)], batches=(1, 3, 4, 7), threads=threads,
                  monkeypatch=monkeypatch)
    kinds = [type(s).__name__ for s in plan.steps]
    weighted = [layer for layer in model.layers if type(layer) in (Conv2D, DepthwiseConv2D, Dense)]
    # every BatchNormalization, activation and Add was absorbed into a weighted step: one
    # step per Conv2D/DepthwiseConv2D/Dense, and no standalone elementwise step
    assert kinds.count("Elementwise") == 0, kinds
    assert sum(kind in ("Window", "Matmul", "Depthwise") for kind in kinds) == len(weighted)


def test_efficientnet_architecture_equals_forward(monkeypatch):
    """The whole EfficientNet-Lite0 graph (untrained, 160x160) on 2 threads: two images side
    by side, then one split by rows, whose threads share buffers between barriers (a buffer
    handed on too early shows here)."""
    from retrain.backbones import efficientnet_lite0
    model = efficientnet_lite0(include_top=False, pooling="avg", weights=None,
                               input_shape=(160, 160, 3))
    rng = np.random.default_rng(0)      # Glorot kernels; BN near the identity, so that 40
    for layer in model.layers:          # layers do not amplify float32 rounding
        if isinstance(layer, BatchNormalization):
            layer.set_weights([rng.uniform(0.8, 1.2, layer.gamma.shape),
                               rng.uniform(-0.1, 0.1, layer.beta.shape),
                               rng.uniform(-0.1, 0.1, layer.gamma.shape),
                               rng.uniform(0.8, 1.2, layer.gamma.shape)])
    _check(model, [(160, 160, 3)], batches=(3,), threads=2, monkeypatch=monkeypatch)


def _various_net():
    """Layers the plan runs without fusing: pooling, flatten, standalone BN and activations,
    leaky ReLU, softmax on an inner axis, a BN after an activation, two outputs."""
    inputs = Input((10, 9, 4))
    x = Conv2D(6, 3, padding="same", activation="tanh")(inputs)
    x = BatchNormalization()(x)
    a = MaxPooling2D(3, strides=2, padding="same")(x)
    b = AveragePooling2D(2, padding="same")(x)
    x = Add()([a, b])
    x = BatchNormalization()(x)
    x = ReLU(max_value=4.0, negative_slope=0.1, threshold=0.5)(x)
    x = Activation("swish")(x)
    x = Softmax(axis=1)(x)
    x = Conv2D(5, 2, strides=(2, 1), padding="valid")(x)
    pooled = GlobalMaxPooling2D(keepdims=True)(x)
    x = Flatten()(AveragePooling2D(2, padding="valid")(x))
    x = Dense(7)(x)
    x = BatchNormalization()(x)
    return Model(inputs, [Softmax()(Activation("relu")(x)), pooled])


@pytest.mark.parametrize("threads", [1, 2])
def test_unfused_layers_equal_forward(threads, monkeypatch):
    _check(_randomize(_various_net()), [(10, 9, 4)], threads=threads, monkeypatch=monkeypatch)


def test_outputs_inside_a_fusable_chain_are_kept(monkeypatch):
    """An output in the middle of conv -> BN -> ReLU stops the fusion there."""
    inputs = Input((6, 6, 2))
    conv = Conv2D(3, 3, padding="same")(inputs)
    bn = BatchNormalization()(conv)
    relu = ReLU()(bn)
    model = _randomize(Model(inputs, [conv, relu, Dense(4)(relu)]))
    _check(model, [(6, 6, 2)], threads=2, monkeypatch=monkeypatch)


def test_several_inputs_and_vectors(monkeypatch):
    a, b = Input((5,)), Input((5,))
    x = Dense(6, activation="relu")(Add()([a, b]))
    x = BatchNormalization()(Dropout(0.3)(x))
    model = _randomize(Model([a, b], Dense(3, activation="sigmoid")(x)))
    _check(model, [(5,), (5,)], batches=(1, 2, 1000), threads=2, monkeypatch=monkeypatch)


def test_kernels_match_the_training_kernels():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(2, 9, 8, 4)).astype(np.float32)
    kernel = rng.normal(size=(3, 2, 4, 5)).astype(np.float32)
    pads = kernels.window_pads((9, 8), (3, 2), (2, 1), (1, 2), "same")
    out = np.zeros((2, 5, 8, 5), np.float32)
    kernels.conv2d_call(kernels.pad2d_forward(x, pads), kernel, (2, 1), (1, 2), out,
                        np.empty((2, 5, 8, 3 * 2 * 4), np.float32))()
    np.testing.assert_allclose(out, kernels.conv2d_forward(x, kernel, (2, 1), (1, 2), pads),
                               atol=1e-5)
    depthwise = rng.normal(size=(3, 3, 4, 1)).astype(np.float32)
    padded = np.zeros((2, 11, 12, 4), np.float32)      # output into a padded interior
    interior = padded[:, 1:10, 2:10]
    bias = rng.normal(size=4).astype(np.float32)
    kernels.depthwise_call(kernels.pad2d_forward(x, ((1, 1), (1, 1))), depthwise, (1, 1),
                           (1, 1), interior, kernels.depthwise_tiled_kernel(depthwise, 8),
                           bias=bias, clip=(0.0, 6.0))()
    want = kernels.depthwise_conv2d_forward(x, depthwise, pads=((1, 1), (1, 1)))
    np.testing.assert_allclose(interior, np.clip(want + bias, 0, 6), atol=1e-5)
    assert not padded[:, 0].any() and not padded[:, :, :2].any()


def test_a_failing_thread_raises_instead_of_hanging(monkeypatch):
    monkeypatch.setattr(inference, "_thread_count", lambda: 2)
    plan = inference.InferencePlan(_randomize(_mbconv_net()))
    depthwise = next(s for s in plan.steps if type(s).__name__ == "Depthwise")

    def broken(arrays, rows, params, scratch):
        def fail():
            raise FloatingPointError("part 1 failed")
        return fail if rows is not None and rows[0] > 0 else (lambda: None)
    monkeypatch.setattr(depthwise, "prepare", broken)
    with pytest.raises(FloatingPointError, match="part 1 failed"):
        plan.run(np.zeros((1, 13, 12, 3), np.float32))


def test_predict_rebuilds_the_plan_when_weights_change():
    model = _randomize(_mbconv_net())
    x = np.random.default_rng(3).normal(size=(2, 13, 12, 3)).astype(np.float32)
    first = inference.inference_function(model)
    assert inference.inference_function(model) is first
    for _ in range(2):
        for got, want in zip(model.predict(x), model.forward(x)):
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
        _randomize(model, seed=5)
        assert inference.inference_function(model) is not first


@pytest.mark.parametrize("class_name", sorted(CASES))
def test_every_layer_kind_runs_in_the_plan_as_its_forward(class_name):
    """Each kind's `to_inference`, alone in a model, computes its forward (inference mode),
    without falling back to that forward."""
    model, x = one_layer_model(class_name)
    with warnings.catch_warnings():
        warnings.simplefilter("error", inference_steps.InferenceFallbackWarning)
        got = model.predict(x)
    want = model.forward(x)
    np.testing.assert_allclose(got, want, rtol=0, atol=float32_paths_atol(model, want) + 1e-7)


def test_a_layer_without_lowering_runs_its_forward_and_is_reported():
    class Double(Layer):
        def forward(self, x, training=False):
            return 2 * x

    dense = Dense(3, input_shape=(4,))
    model = Sequential([dense, Double(name="double"), Dense(2, activation="softmax")])
    x = np.random.default_rng(0).normal(size=(5, 4)).astype(np.float32)
    with pytest.warns(inference_steps.InferenceFallbackWarning, match=r"double \(Double\)"):
        got = model.predict(x)
    np.testing.assert_allclose(got, model.forward(x), rtol=1e-6)
    with pytest.warns(inference_steps.InferenceFallbackWarning):
        steps = inference.InferencePlan(model).steps
    assert [type(step).__name__ for step in steps] == ["Matmul", "Forward", "Matmul"]
    # a plan of registry layers alone says nothing
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        Sequential([Dense(3, input_shape=(4,))]).predict(x)


def test_predict_default_batch_size_and_input_checks(monkeypatch):
    """Keras's predict runs batches of 32 when batch_size is None; so does ours."""
    model = Sequential([Input((4,)), Dense(2)])
    x = np.random.default_rng(4).normal(size=(70, 4)).astype(np.float32)
    sizes = []

    def recording(model):
        def run(batch):
            sizes.append(len(batch))
            return model.forward(batch)
        return run

    monkeypatch.setattr(inference, "inference_function", recording)
    np.testing.assert_allclose(model.predict(x), model.forward(x), rtol=1e-6)
    assert sizes == [32, 32, 6]
    monkeypatch.undo()
    np.testing.assert_allclose(model.predict(x), model.forward(x), rtol=1e-6)
    with pytest.raises(ValueError, match=r"expects shape \(None, 4\)"):
        model.predict(np.ones((2, 5), np.float32))


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_predict_works_in_a_forked_child(monkeypatch):
    """The thread pool does not survive a fork; the child must make its own, not hang."""
    monkeypatch.setattr(inference, "_thread_count", lambda: 2)
    model = _randomize(_mbconv_net())
    x = np.random.default_rng(5).normal(size=(4, 13, 12, 3)).astype(np.float32)
    want = model.predict(x)[2]
    pid = os.fork()
    if pid == 0:                      # the child: exit 0 on success, killed after 60 s
        signal.alarm(60)
        os._exit(0 if np.allclose(model.predict(x)[2], want) else 1)
    assert os.waitpid(pid, 0)[1] == 0


def test_blas_threads_are_restored():
    calls = inference._OneBlasThread._get_set_pairs()
    if not calls:
        pytest.skip("this numpy's BLAS exposes no thread setting")
    before = [get() for get, _ in calls]
    with inference._OneBlasThread():
        assert all(get() == 1 for get, _ in calls)
    assert [get() for get, _ in calls] == before


def test_mobilenet_v2_fixture_through_predict():
    from retrain.backbones import mobilenet_v2
    folder = FIXTURES / "keras" / "mobilenet_v2"
    model = mobilenet_v2(alpha=0.35, input_shape=(96, 96, 3), pooling="avg",
                         weights=str(folder / "mobilenet_v2_legacy_no_top.h5"))
    reference = np.load(folder / "mobilenet_v2.npz")
    np.testing.assert_allclose(model.predict(reference["input"]), reference["output"],
                               rtol=1e-4, atol=1e-4)


def test_efficientnet_reference_through_predict(monkeypatch):
    """Batches of 3 on 2 threads: two images side by side, then one split by rows."""
    from retrain.backbones import efficientnet_lite0
    from retrain.backbones.weights import pretrained_dir
    if not (pretrained_dir() / "efficientnet_lite0.h5").is_file():
        pytest.skip("pretrained/efficientnet_lite0.h5 is absent: run `make pretrained`")
    monkeypatch.setattr(inference, "_thread_count", lambda: 2)
    reference = np.load(FIXTURES / "effnet" / "reference.npz")
    model = efficientnet_lite0(include_top=True, weights="imagenet")
    features, logits = Model(model.inputs[0], [model.get_layer("avg_pool").outputs[0],
                                               model.outputs[0]]).predict(reference["inputs"],
                                                                          batch_size=3)
    np.testing.assert_allclose(features, reference["features"], rtol=0, atol=1e-4)
    np.testing.assert_allclose(logits, reference["logits"], rtol=0, atol=1e-3)
    np.testing.assert_array_equal(np.argsort(-logits, axis=1)[:, :5], reference["top5"])


@pytest.mark.parametrize("kind", [Conv2D, DepthwiseConv2D, Dense])
@pytest.mark.parametrize("use_bias, scale, center", [(True, True, True), (False, False, True),
                                                     (True, True, False), (False, True, False)])
def test_the_plan_folds_batch_norm_into_the_layer_before(kind, use_bias, scale, center):
    """BN's affine map + Weighted.fold, the folding predict uses, against the two layers' own
    forward passes (BN in inference mode), in float64 to a tight tolerance."""
    from retrain.engine.inference_steps import Depthwise, Matmul, Window
    layer = (Dense(4, use_bias=use_bias) if kind is Dense else
             DepthwiseConv2D(3, depth_multiplier=2, use_bias=use_bias)
             if kind is DepthwiseConv2D else Conv2D(4, 3, use_bias=use_bias))
    shape = (5,) if kind is Dense else (6, 6, 3)
    bn = BatchNormalization(scale=scale, center=center, epsilon=1e-3)
    _randomize(Sequential([Input(shape), layer, bn]), seed=3)
    x = np.random.default_rng(5).normal(size=(2,) + shape)
    want = bn.forward(layer.forward(x), training=False)
    step = {Dense: Matmul, Conv2D: Window, DepthwiseConv2D: Depthwise}[kind](
        [0], 1, layer, layer.weights[0].value.astype(np.float64))     # the kernel
    step.fold(*bn.inference_epilogue()["affine"])
    if kind is Dense:
        got = x @ step.kernel
    else:
        conv = (kernels.depthwise_conv2d_forward if kind is DepthwiseConv2D
                else kernels.conv2d_forward)
        got = conv(x, step.kernel)
    np.testing.assert_allclose(got + step.stages["bias"], want, rtol=1e-6, atol=1e-6)
