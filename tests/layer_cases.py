"""The one table of layer kinds the tests run: every registered class has a case, and each
case runs through the generic tests (tests/engine/test_layer_contract.py: build, shapes,
config, gradients, frozen layers, and the Keras fixture where the case names one;
test_inference.py: the inference plan; tests/pipeline/test_export_onnx.py: ONNX Runtime).
A new layer kind is tested by adding its line here."""
from pathlib import Path

import numpy as np

from retrain.engine import Input, Model
from retrain.engine.layers import LAYERS

KERAS_FIXTURES = Path(__file__).resolve().parent / "fixtures" / "keras" / "layers"

# class name -> (constructor kwargs, input shape(s), parameter count, weight names in order
#                [, Keras fixture in KERAS_FIXTURES: inputs, weights, outputs and gradients])
CASES = {
    "Dense": (dict(units=3, activation="relu"), (2, 5), 18, ["kernel", "bias"]),
    "Flatten": ({}, (2, 3, 4, 2), 0, []),
    "Dropout": (dict(rate=0.3), (2, 6), 0, []),
    "Activation": (dict(activation="softmax"), (2, 6), 0, []),
    "ReLU": (dict(max_value=6.0, negative_slope=0.1, threshold=0.2), (2, 6), 0, []),
    "Softmax": (dict(axis=1), (2, 3, 4), 0, []),
    "Conv2D": (dict(filters=4, kernel_size=(3, 2), strides=2, padding="same",
                    dilation_rate=1, activation="relu6"), (2, 7, 6, 3), 76, ["kernel", "bias"]),
    "DepthwiseConv2D": (dict(kernel_size=3, padding="same", depth_multiplier=2), (2, 5, 5, 3),
                        60, ["depthwise_kernel", "bias"]),
    "ZeroPadding2D": (dict(padding=((1, 2), (3, 0))), (2, 4, 4, 2), 0, []),
    "MaxPooling2D": (dict(pool_size=3, strides=2, padding="same"), (2, 7, 7, 2), 0, []),
    "AveragePooling2D": (dict(pool_size=(2, 3), padding="valid"), (2, 6, 7, 2), 0, []),
    "GlobalAveragePooling2D": ({}, (2, 3, 4, 5), 0, []),
    "GlobalMaxPooling2D": (dict(keepdims=True), (2, 3, 4, 5), 0, []),
    "BatchNormalization": (dict(momentum=0.9, epsilon=1e-5), (2, 3, 3, 4), 16,
                           ["gamma", "beta", "moving_mean", "moving_variance"]),
    "Add": ({}, [(2, 3, 3, 2), (2, 3, 3, 2)], 0, []),
    "LayerNormalization": (dict(epsilon=1e-3), (2, 3, 4, 5), 10, ["gamma", "beta"],
                           "layer_normalization.npz"),
}
KERAS_CASES = sorted(name for name, case in CASES.items() if len(case) > 4)


def inputs(shape, rng):
    if isinstance(shape, list):
        return [rng.normal(size=s).astype(np.float32) for s in shape]
    return rng.normal(size=shape).astype(np.float32)


def one_layer_model(class_name, seed=0):
    """(a functional model of the case's layer alone, with seeded random weights (variances
    positive), an input batch for it)."""
    kwargs, shape = CASES[class_name][:2]
    rng = np.random.default_rng(seed)
    if isinstance(shape, list):
        x_in = [Input(s[1:]) for s in shape]
    else:
        x_in = Input(shape[1:])
    model = Model(x_in, LAYERS[class_name](**kwargs)(x_in))
    for layer in model.layers:
        for weight in layer.weights:
            value = rng.normal(0, 0.5, weight.shape)
            weight.assign(np.abs(value) + 0.1 if "variance" in weight.name else value)
    return model, inputs(shape, rng)


def keras_fixture(class_name):
    """The case's Keras fixture: x, weights w0..wn, y (inference), dy, dx, grads g0..gn."""
    with np.load(KERAS_FIXTURES / CASES[class_name][4]) as data:
        return {key: data[key] for key in data.files}
