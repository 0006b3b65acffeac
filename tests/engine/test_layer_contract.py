"""One generic contract test run on every layer class (Keras's run_layer_test): build, output
shape, parameter count, weight names in Keras order, config round trip, frozen layers; then
argument errors and the few Keras behaviours a generic test cannot see."""
import numpy as np
import pytest

from layer_cases import CASES, KERAS_CASES, inputs, keras_fixture
from numerics import gamma
from retrain.engine import ConfigError, Layer, ShapeError, initializers
from retrain.engine.layer import KerasTensor
from retrain.engine.layers import (LAYERS, Add, BatchNormalization, Conv2D, Dense, Dropout,
                                   GlobalMaxPooling2D, InputLayer)


def test_every_registered_layer_has_a_contract_case():
    assert set(CASES) == set(LAYERS) - {"InputLayer"}


def test_every_public_layer_class_is_registered():
    """A layer class that forgot `@register` could not be read back from a model file."""
    def subclasses(cls):
        for sub in cls.__subclasses__():
            yield sub
            yield from subclasses(sub)
    public = {cls.__name__: cls for cls in subclasses(Layer)
              if cls.__module__.startswith("retrain.engine.layers")
              and not cls.__name__.startswith("_")}
    assert public == {name: cls for name, cls in LAYERS.items()}


@pytest.mark.parametrize("class_name", sorted(set(LAYERS) - {"InputLayer"}))
def test_every_layer_kind_lowers_for_inference_and_onnx(class_name):
    """Each kind says how the inference plan and ONNX run it, beside its forward."""
    cls = LAYERS[class_name]
    assert cls.to_inference is not Layer.to_inference, f"{class_name} has no to_inference"
    assert cls.to_onnx is not Layer.to_onnx, f"{class_name} has no to_onnx"


@pytest.mark.parametrize("class_name", KERAS_CASES)
def test_layer_matches_its_keras_fixture(class_name):
    """Forward (inference) and every gradient against Keras 3 (fixture and its script in
    tests/fixtures/keras/layers)."""
    kwargs = CASES[class_name][0]
    ref = keras_fixture(class_name)
    layer = LAYERS[class_name](**kwargs)
    layer.maybe_build(ref["x"].shape)
    count = len(layer.weights)
    layer.set_weights([ref[f"w{i}"] for i in range(count)])
    y = layer(ref["x"], training=False)
    scale = float(np.max(np.abs(ref["y"])))
    np.testing.assert_allclose(y, ref["y"], rtol=0, atol=gamma(ref["x"].shape[-1]) * scale * 4)
    layer.zero_grads()
    dx = layer.backward(ref["dy"])
    for got, want in [(dx, ref["dx"])] + [(w.grad, ref[f"g{i}"])
                                           for i, w in enumerate(layer.weights)]:
        bound = gamma(int(np.prod(ref["x"].shape))) * float(np.max(np.abs(want))) * 4
        np.testing.assert_allclose(got, want, rtol=0, atol=bound)


def _symbolic(shape):
    unknown = lambda s: KerasTensor((None,) + tuple(s[1:]))  # noqa: E731
    return [unknown(s) for s in shape] if isinstance(shape, list) else unknown(shape)


def _shapes(x):
    return [a.shape for a in x] if isinstance(x, list) else x.shape


@pytest.mark.parametrize("class_name", sorted(CASES))
def test_layer_contract(class_name):
    kwargs, shape, params, weight_names = CASES[class_name][:4]
    rng = np.random.default_rng(0)
    layer = LAYERS[class_name](**kwargs)
    x = inputs(shape, rng)

    y = layer(x, training=True)
    assert y.dtype == np.float32
    assert y.shape == tuple(layer.compute_output_shape(_shapes(x)))
    symbolic = LAYERS[class_name](**kwargs)(_symbolic(shape))
    assert symbolic.shape == (None,) + y.shape[1:]
    assert layer.count_params() == params
    assert [w.name for w in layer.weights] == weight_names
    assert all(w.value.dtype == np.float32 for w in layer.weights)

    config = layer.get_config()
    assert type(layer)(**config).get_config() == config

    dy = rng.normal(size=y.shape).astype(np.float32)
    layer.zero_grads()
    dx = layer.backward(dy)
    for d, a in zip(dx if isinstance(x, list) else [dx], x if isinstance(x, list) else [x]):
        assert d.shape == a.shape and d.dtype == np.float32
    assert all(np.any(w.grad != 0) for w in layer.trainable_weights)
    assert all(np.all(w.grad == 0) for w in layer.weights if not w.trainable)

    layer.trainable = False
    layer.zero_grads()
    layer.forward(x, training=True)
    frozen_dx = layer.backward(dy)
    assert all(np.all(w.grad == 0) for w in layer.weights)
    assert layer.trainable_weights == [] and len(layer.non_trainable_weights) == len(weight_names)
    for d, a in zip(frozen_dx if isinstance(x, list) else [frozen_dx],
                    x if isinstance(x, list) else [x]):
        assert d.shape == a.shape


def test_input_layer_config_round_trip():
    layer = InputLayer(shape=(4, 4, 3), name="image")
    config = layer.get_config()
    assert InputLayer(**config).get_config() == config


def test_keras_config_vocabulary():
    conv = Conv2D(8, 3, strides=(2, 1), padding="SAME", dilation_rate=1, use_bias=False)
    config = conv.get_config()
    assert config["kernel_size"] == [3, 3] and config["strides"] == [2, 1]
    assert config["padding"] == "same" and config["data_format"] == "channels_last"
    assert config["dilation_rate"] == [1, 1] and config["activation"] == "linear"
    assert config["filters"] == 8 and config["use_bias"] is False


@pytest.mark.parametrize("make, message", [
    (lambda: Conv2D(0, 3), r"Received: filters=0"),
    (lambda: Conv2D(4, (3, 3, 3)), r"Received: kernel_size=\(3, 3, 3\)"),
    (lambda: Conv2D(4, 3, padding="causal"), r"Received: padding='causal'"),
    (lambda: Conv2D(4, 3, data_format="channels_first"), r"channels_last.*Received"),
    (lambda: Conv2D(4, 3, groups=2), r"Received: groups=2"),
    (lambda: Conv2D(4, 3, activation="swishy"), r"Received: activation='swishy'"),
    (lambda: Conv2D(4, 3, kernel_initializer="nope"), r"Received: initializer='nope'"),
    (lambda: Dense(-1), r"Received: units=-1"),
    (lambda: Dropout(1.0), r"Received: rate=1.0"),
    (lambda: LAYERS["ReLU"](negative_slope=-1), r"Received: negative_slope=-1"),
    (lambda: LAYERS["ZeroPadding2D"](padding=-1), r"Received: padding=-1"),
    (lambda: LAYERS["MaxPooling2D"](pool_size=0), r"Received: pool_size=0"),
    (lambda: BatchNormalization(axis=[1, 2]), r"Received: axis=\[1, 2\]"),
])
def test_bad_arguments_are_refused_clearly(make, message):
    with pytest.raises(ConfigError, match=message):
        make()


def test_bad_input_shapes_are_refused_clearly():
    with pytest.raises(ShapeError, match=r"expects a 4-D input.*Received: input_shape=\(2, 5\)"):
        Conv2D(2, 3)(np.zeros((2, 5), np.float32))
    with pytest.raises(ShapeError, match=r"does not fit a 'valid' input"):
        Conv2D(2, 5)(np.zeros((1, 3, 3, 1), np.float32))
    conv = Conv2D(2, 3)
    conv(np.zeros((1, 5, 5, 3), np.float32))
    with pytest.raises(ShapeError, match=r"built for 3 input channels.*\(1, 5, 5, 4\)"):
        conv(np.zeros((1, 5, 5, 4), np.float32))
    with pytest.raises(ShapeError, match=r"needs inputs of one shape"):
        Add()([np.zeros((1, 2)), np.zeros((1, 3))])
    with pytest.raises(ConfigError, match=r"only the last \(channels\) axis.*axis=1"):
        BatchNormalization(axis=1)(np.zeros((2, 3, 4), np.float32))


# -- Keras behaviours the generic contract cannot see -----------------------------------------
def test_batchnorm_training_updates_moving_stats_with_biased_variance():
    rng = np.random.default_rng(0)
    x = rng.normal(2.0, 3.0, size=(4, 3, 3, 2)).astype(np.float32)
    bn = BatchNormalization(momentum=0.9)
    y = bn(x, training=True)
    mean, var = x.mean(axis=(0, 1, 2)), x.var(axis=(0, 1, 2))       # ddof=0, as Keras 3
    np.testing.assert_allclose(bn.moving_mean.value, 0.1 * mean, rtol=1e-6)
    np.testing.assert_allclose(bn.moving_variance.value, 0.9 + 0.1 * var, rtol=1e-6)
    np.testing.assert_allclose(y, (x - mean) / np.sqrt(var + 1e-3), atol=1e-5)
    assert bn.moving_mean.value.dtype == np.float32


def test_frozen_batchnorm_runs_in_inference_mode_even_when_training():
    rng = np.random.default_rng(0)
    x = rng.normal(2.0, 3.0, size=(4, 2)).astype(np.float32)
    bn = BatchNormalization(trainable=False)
    bn.maybe_build(x.shape)
    bn.set_weights([np.full(2, 2.0), np.full(2, 0.5), np.full(2, 1.0), np.full(2, 4.0)])
    y = bn(x, training=True)
    np.testing.assert_allclose(y, 2.0 * (x - 1.0) / np.sqrt(4.0 + 1e-3) + 0.5, rtol=1e-6)
    np.testing.assert_array_equal(bn.moving_mean.value, np.full(2, 1.0, np.float32))


def test_dropout_is_inverted_seeded_and_inactive_at_inference():
    x = np.ones((200, 50), np.float32)
    layer = Dropout(0.25)
    np.testing.assert_array_equal(layer(x), x)
    initializers.set_random_seed(5)
    y = layer(x, training=True)
    assert set(np.unique(y)) == {0.0, np.float32(1 / 0.75)}
    assert abs((y == 0).mean() - 0.25) < 0.02
    initializers.set_random_seed(5)
    np.testing.assert_array_equal(layer(x, training=True), y)
    np.testing.assert_array_equal(layer.backward(x), y)
    shared = Dropout(0.5, noise_shape=(None, 1), seed=3)(x, training=True)
    assert np.all(shared == shared[:, :1])


def test_global_max_pool_splits_gradient_between_ties():
    layer = GlobalMaxPooling2D()
    x = np.zeros((1, 2, 2, 1), np.float32)
    layer(x)
    np.testing.assert_array_equal(layer.backward(np.ones((1, 1), np.float32))[0, :, :, 0],
                                  np.full((2, 2), 0.25))
