"""Fixture f. conv_gradients: forward outputs and every gradient of a small conv net vs Keras.

Input(8,8,2) -> Conv2D(4,3,same) -> ReLU -> MaxPooling2D(2) -> Flatten -> Dense(3) logits,
loss SparseCategoricalCrossentropy(from_logits=True), mean over 2 samples.
"""
from pathlib import Path

import numpy as np
import pytest

from retrain.engine import (Conv2D, Dense, Flatten, Input, MaxPooling2D, Model, ReLU,
                            SparseCategoricalCrossentropy)

FIXTURE = Path(__file__).parents[1] / "fixtures" / "keras" / "conv_gradients" / "conv_gradients.npz"
LAYERS = ["conv2d", "re_lu", "max_pooling2d", "flatten", "dense"]
ATOL = 1e-5


@pytest.fixture(scope="module")
def data():
    return dict(np.load(FIXTURE))


def _model(data):
    inputs = Input((8, 8, 2))
    x = Conv2D(4, 3, padding="same", name="conv2d")(inputs)
    x = ReLU(name="re_lu")(x)
    x = MaxPooling2D(2, name="max_pooling2d")(x)
    x = Flatten(name="flatten")(x)
    model = Model(inputs, Dense(3, name="dense")(x))
    for name in ("conv2d", "dense"):
        weights = [data[f"weight/{name}.kernel"], data[f"weight/{name}.bias"]]
        model.get_layer(name).set_weights(weights)
    return model


def _loss(data, logits):
    return SparseCategoricalCrossentropy(from_logits=True).value_and_grad(data["labels"], logits)


def test_every_layer_output_and_output_gradient_match_keras(data):
    """Run the layers one by one, then their backward one by one, checking each tensor."""
    model = _model(data)
    x = data["input"]
    for name in LAYERS:
        x = model.get_layer(name).forward(x, training=True)
        np.testing.assert_allclose(x, data[name], atol=ATOL, rtol=0, err_msg=name)
    loss, grad = _loss(data, x)
    assert loss == pytest.approx(float(data["loss"]), abs=ATOL)
    for name in reversed(LAYERS):
        np.testing.assert_allclose(grad, data[f"grad_out/{name}"], atol=ATOL, rtol=0, err_msg=name)
        grad = model.get_layer(name).backward(grad)
    np.testing.assert_allclose(grad, data["grad_input"], atol=ATOL, rtol=0)


def test_model_backward_gives_keras_weight_and_input_gradients(data):
    model = _model(data)
    model.zero_grads()
    logits = model.forward(data["input"], training=True)
    np.testing.assert_allclose(logits, data["dense"], atol=ATOL, rtol=0)
    _, dlogits = _loss(data, logits)
    dx = model.backward(dlogits, input_grad=True)
    np.testing.assert_allclose(dx, data["grad_input"], atol=ATOL, rtol=0)
    for name in ("conv2d", "dense"):
        kernel, bias = model.get_layer(name).weights
        np.testing.assert_allclose(kernel.grad, data[f"grad/{name}.kernel"], atol=ATOL, rtol=0)
        np.testing.assert_allclose(bias.grad, data[f"grad/{name}.bias"], atol=ATOL, rtol=0)


def test_max_pool_ties_route_the_gradient_to_one_cell(data):
    """After ReLU many windows are all zeros; Keras sends each window's gradient to exactly
    one cell (the first maximum), so the input-gradient mass per window is preserved."""
    model = _model(data)
    model.forward(data["input"], training=True)
    pool = model.get_layer("max_pooling2d")
    dy = np.ones_like(data["max_pooling2d"])
    dx = pool.backward(dy)
    windows = dx.reshape(2, 4, 2, 4, 2, 4)
    np.testing.assert_array_equal(np.count_nonzero(windows, axis=(2, 4)), np.ones((2, 4, 4, 4)))
