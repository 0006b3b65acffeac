"""Float64 central-difference gradcheck of every layer's backward, w.r.t. the input and each
trainable weight (tinygrad's gradcheck): loss = sum(forward(x) * R) for a fixed random R."""
import numpy as np
import pytest

from retrain.engine import activations, initializers
from retrain.engine.layers import (Activation, Add, AveragePooling2D, BatchNormalization,
                                   Conv2D, Dense, DepthwiseConv2D, Dropout, Flatten,
                                   GlobalAveragePooling2D, GlobalMaxPooling2D, MaxPooling2D,
                                   ReLU, Softmax, ZeroPadding2D)

EPS = 1e-6


def _to_float64(layer, rng):
    """Random float64 weights, set on `.value` directly (Variable.assign would cast to float32)."""
    for w in layer.weights:
        if w.name == "moving_variance":
            value = rng.uniform(0.5, 2.0, w.shape)
        elif w.name == "gamma":
            value = rng.uniform(0.5, 1.5, w.shape)
        else:
            value = rng.normal(0, 0.5, w.shape)
        w.value, w.grad = value, np.zeros(w.shape)


def _numeric(loss, array):
    """Central differences of loss() w.r.t. every element of `array` (perturbed in place)."""
    grad = np.zeros_like(array)
    for index in np.ndindex(array.shape):
        saved = array[index]
        array[index] = saved + EPS
        up = loss()
        array[index] = saved - EPS
        down = loss()
        array[index] = saved
        grad[index] = (up - down) / (2 * EPS)
    return grad


def gradcheck(layer, shapes, training=False, scale=1.0, seed=0):
    """Check layer.backward against central differences; `shapes` is one shape or a list."""
    rng = np.random.default_rng(seed)
    multi = isinstance(shapes, list)
    xs = [rng.normal(0, scale, s) for s in (shapes if multi else [shapes])]
    layer.maybe_build([x.shape for x in xs] if multi else xs[0].shape)
    _to_float64(layer, rng)
    arg = xs if multi else xs[0]

    def run():
        initializers.set_random_seed(3)        # Dropout draws the same mask every time
        return layer.forward(arg, training=training)

    out = run()
    assert out.dtype == np.float64
    weights = layer.trainable_weights
    r = rng.normal(size=out.shape)
    loss = lambda: float(np.sum(run() * r))  # noqa: E731
    run()
    dx = layer.backward(r)
    for x, analytic in zip(xs, dx if multi else [dx]):
        np.testing.assert_allclose(analytic, _numeric(loss, x), rtol=1e-6, atol=1e-7)
    for w in weights:
        np.testing.assert_allclose(w.grad, _numeric(loss, w.value), rtol=1e-6, atol=1e-7,
                                   err_msg=f"gradient of {w.name}")


CONV_SHAPE = (2, 6, 6, 3)
CASES = {
    "dense": (lambda: Dense(4, activation="tanh"), (3, 5)),
    "dense_nd_nobias": (lambda: Dense(3, use_bias=False), (2, 3, 2, 4)),
    "conv_valid": (lambda: Conv2D(4, 3), CONV_SHAPE),
    "conv_same_s2_even": (lambda: Conv2D(3, 3, strides=2, padding="same"), CONV_SHAPE),
    "conv_same_s2_odd_k4": (lambda: Conv2D(3, 4, strides=2, padding="same"), (2, 7, 7, 2)),
    "conv_same_k2": (lambda: Conv2D(2, 2, padding="same", activation="relu"), (2, 5, 5, 2)),
    "conv_nonsquare": (lambda: Conv2D(2, (3, 2), strides=(2, 1), padding="same"), (1, 7, 6, 2)),
    "conv_dilated": (lambda: Conv2D(2, 3, dilation_rate=2, padding="same"), (1, 7, 7, 2)),
    "conv_1x1_s2": (lambda: Conv2D(3, 1, strides=2, use_bias=False), (2, 5, 5, 3)),
    "depthwise_m1": (lambda: DepthwiseConv2D(3, strides=2, padding="same"), CONV_SHAPE),
    "depthwise_m2_s2": (lambda: DepthwiseConv2D(3, 2, depth_multiplier=2, padding="same",
                                                activation="relu6"), (2, 5, 5, 2)),
    "depthwise_dilated_valid": (lambda: DepthwiseConv2D(2, dilation_rate=2, use_bias=False),
                                (1, 6, 6, 2)),
    "zero_padding": (lambda: ZeroPadding2D(((1, 2), (0, 1))), (2, 3, 3, 2)),
    "max_pool_same_odd": (lambda: MaxPooling2D(2, padding="same"), (2, 5, 5, 2)),
    "max_pool_3_s2": (lambda: MaxPooling2D(3, strides=2, padding="same"), (1, 6, 6, 2)),
    "avg_pool_same": (lambda: AveragePooling2D(3, strides=2, padding="same"), (2, 5, 5, 2)),
    "avg_pool_valid": (lambda: AveragePooling2D(2), (1, 5, 5, 2)),
    "global_avg": (lambda: GlobalAveragePooling2D(), (2, 3, 4, 3)),
    "global_max_keepdims": (lambda: GlobalMaxPooling2D(keepdims=True), (2, 3, 4, 3)),
    "flatten": (lambda: Flatten(), (2, 3, 2, 2)),
    "dropout_training": (lambda: Dropout(0.4), (3, 8)),
    "relu": (lambda: ReLU(), (3, 8)),
    "relu6": (lambda: ReLU(6.0), (3, 8)),
    "relu_slope_threshold": (lambda: ReLU(max_value=4.0, negative_slope=0.1, threshold=0.5),
                             (3, 8)),
    "softmax_layer_axis1": (lambda: Softmax(axis=1), (2, 4, 3)),
    "bn_inference": (lambda: BatchNormalization(), (2, 3, 3, 4)),
    "bn_noscale_nocenter": (lambda: BatchNormalization(center=False, scale=False), (4, 3)),
}
TRAINING_CASES = {
    "bn_training": (lambda: BatchNormalization(), (2, 3, 3, 4)),
    "bn_training_2d_noscale": (lambda: BatchNormalization(scale=False), (6, 3)),
    "bn_training_nocenter": (lambda: BatchNormalization(center=False), (5, 2)),
    "dropout_training": (lambda: Dropout(0.4), (3, 8)),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_layer_gradient(name):
    make, shape = CASES[name]
    gradcheck(make(), shape, scale=3.0 if "relu" in name else 1.0)


@pytest.mark.parametrize("name", sorted(TRAINING_CASES))
def test_layer_gradient_training_mode(name):
    make, shape = TRAINING_CASES[name]
    gradcheck(make(), shape, training=True)


@pytest.mark.parametrize("name", activations.NAMES)
def test_activation_gradient(name):
    gradcheck(Activation(name), (3, 5), scale=2.0)


@pytest.mark.parametrize("name", ["relu", "sigmoid", "softmax", "gelu", "selu"])
def test_fused_activation_gradient(name):
    gradcheck(Conv2D(2, 3, padding="same", activation=name), (1, 4, 4, 2))
    gradcheck(Dense(3, activation=name), (4, 3))


def test_add_gradient():
    gradcheck(Add(), [(2, 3, 3, 2), (2, 3, 3, 2), (2, 3, 3, 2)])


def test_add_with_fan_out_accumulates():
    """y = Add([x, Dense(x)]): x feeds two places, so dL/dx is the sum of both paths."""
    rng = np.random.default_rng(1)
    dense, add = Dense(4), Add()
    x = rng.normal(size=(3, 4))
    dense.maybe_build(x.shape)
    add.maybe_build([(3, 4), (3, 4)])
    _to_float64(dense, rng)
    r = rng.normal(size=(3, 4))
    loss = lambda: float(np.sum(add.forward([x, dense.forward(x)]) * r))  # noqa: E731
    loss()
    d_skip, d_branch = add.backward(r)
    dx = d_skip + dense.backward(d_branch)
    np.testing.assert_allclose(dx, _numeric(loss, x), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(dense.kernel.grad, _numeric(loss, dense.kernel.value),
                               rtol=1e-6, atol=1e-7)


def test_weight_gradients_accumulate_across_backward_calls():
    rng = np.random.default_rng(2)
    layer = Conv2D(2, 3)
    x = rng.normal(size=(1, 5, 5, 2)).astype(np.float32)
    y = layer(x)
    layer.backward(np.ones_like(y))
    once = layer.kernel.grad.copy()
    layer.forward(x)
    layer.backward(np.ones_like(y))
    np.testing.assert_allclose(layer.kernel.grad, 2 * once, rtol=1e-6)
