"""`retrain export --format onnx`: a model's layer graph as an ONNX file, for ONNX Runtime,
OpenVINO and the other runtimes that read ONNX.

The ONNX graph takes and returns what the model does: float32 NHWC images made by the
preprocessing recipe, and the model's outputs. The recipe, the labels and the rest of the
model file's metadata go into the file's metadata_props as JSON (`retrain.preprocessing`,
`retrain.labels`, ...), so the file stays self-describing. Inside the graph 4-D values are
NCHW, the layout ONNX's Conv and pooling operators define: one Transpose after each 4-D
input and one before each 4-D output. BatchNormalization stays an ONNX BatchNormalization
(runtimes fold it themselves). Needs the `onnx` package: the `onnx` extra.
"""
import json
import math
from pathlib import Path

import numpy as np

from . import __version__
from .engine import (Activation, Add, AveragePooling2D, BatchNormalization, Conv2D, Dense,
                     DepthwiseConv2D, Dropout, Flatten, GlobalAveragePooling2D,
                     GlobalMaxPooling2D, InputLayer, MaxPooling2D, ReLU, Softmax,
                     UnsupportedLayerError, ZeroPadding2D)
from .distribution import pip_install
from .engine import check_replaceable
from .errors import ConfigError
from .files import atomic_write_bytes
from .model_file import load_model_file
from .output import json_ready

__all__ = ["OPSET", "export_file", "to_onnx", "write_onnx"]

# Opset 17 with IR version 8: what ONNX Runtime has read since 1.13 and OpenVINO since 2022.
OPSET = 17
_IR_VERSION = 8
_INSTALL = pip_install("onnx")


def _onnx():
    try:
        import onnx
    except ImportError:
        raise ConfigError("Exporting to ONNX needs the onnx package, which is not installed.",
                          hint=f"Install it with: {_INSTALL}") from None
    return onnx


class _Graph:
    """The nodes and initializers being built, with unique value names."""

    def __init__(self, onnx):
        self.onnx, self.nodes, self.initializers, self.used = onnx, [], [], set()

    def unique(self, base):
        name, count = base, 0
        while name in self.used:
            count += 1
            name = f"{base}_{count}"
        self.used.add(name)
        return name

    def constant(self, base, array, dtype=np.float32):
        name = self.unique(base)
        self.initializers.append(self.onnx.numpy_helper.from_array(
            np.ascontiguousarray(array, dtype), name))
        return name

    def node(self, op, inputs, base, **attributes):
        output = self.unique(base)
        self.nodes.append(self.onnx.helper.make_node(op, list(inputs), [output],
                                                     name=output, **attributes))
        return output


# -- lowerings: (graph, layer, input names, input ranks) -> output name ----------------------
def _to_channels_last(g, x, rank, base):
    return g.node("Transpose", [x], base, perm=[0, 2, 3, 1]) if rank == 4 else x


def _to_channels_first(g, x, rank, base):
    return g.node("Transpose", [x], base, perm=[0, 3, 1, 2]) if rank == 4 else x


def _activation(g, name, x, rank, base):
    """Keras activation `name` (activations.py) applied to x, whose channels are axis 1 if
    rank is 4, else the last axis."""
    if name == "linear":
        return x
    simple = {"relu": "Relu", "sigmoid": "Sigmoid", "tanh": "Tanh", "softplus": "Softplus",
              "softsign": "Softsign", "exponential": "Exp", "elu": "Elu"}
    if name in simple:
        return g.node(simple[name], [x], f"{base}/{name}")
    if name == "relu6":
        return g.node("Clip", [x, g.constant(f"{base}/zero", 0.0), g.constant(
            f"{base}/six", 6.0)], f"{base}/relu6")
    if name == "softmax":
        return g.node("Softmax", [x], f"{base}/softmax", axis=1 if rank == 4 else -1)
    if name in ("silu", "swish"):
        return g.node("Mul", [x, g.node("Sigmoid", [x], f"{base}/sigmoid")], f"{base}/silu")
    if name == "selu":   # the constants of activations.selu, not ONNX's float32 defaults
        return g.node("Selu", [x], f"{base}/selu", alpha=1.6732632423543772,
                      gamma=1.0507009873554805)
    if name == "hard_sigmoid":    # Keras 3's relu6(x + 3) / 6 = clip(x / 6 + 0.5, 0, 1)
        return g.node("HardSigmoid", [x], f"{base}/hard_sigmoid", alpha=1 / 6, beta=0.5)
    if name == "gelu":            # 0.5 x (1 + erf(x / sqrt 2)); opset 17 has no Gelu
        scaled = g.node("Mul", [x, g.constant(f"{base}/rsqrt2", 1 / math.sqrt(2))],
                        f"{base}/scaled")
        one_plus = g.node("Add", [g.node("Erf", [scaled], f"{base}/erf"),
                                  g.constant(f"{base}/one", 1.0)], f"{base}/one_plus")
        half_x = g.node("Mul", [x, g.constant(f"{base}/half", 0.5)], f"{base}/half_x")
        return g.node("Mul", [half_x, one_plus], f"{base}/gelu")
    raise UnsupportedLayerError(f"Activation {name!r} of layer {base!r} has no ONNX form.")


def _same_pads(layer, shape, window, strides, dilation):
    """ONNX pads [top, left, bottom, right] for the layer's padding on an NHWC `shape`:
    TF's 'same' puts the odd extra row and column at the bottom and right."""
    if layer.padding == "valid":
        return {"pads": [0, 0, 0, 0]}
    if any(side is None for side in shape[1:3]):
        return {"auto_pad": "SAME_UPPER"}
    begin, end = [], []
    for n, k, s, d in zip(shape[1:3], window, strides, dilation):
        total = max((-(-n // s) - 1) * s + (k - 1) * d + 1 - n, 0)
        begin.append(total // 2)
        end.append(total - total // 2)
    return {"pads": begin + end}


def _conv(g, layer, xs, ranks, shapes):
    if type(layer) is DepthwiseConv2D:        # (kh, kw, C, M) -> (C*M, 1, kh, kw), group C
        kernel = layer.depthwise_kernel.value
        weight = kernel.transpose(2, 3, 0, 1).reshape((-1, 1) + kernel.shape[:2])
        group = kernel.shape[2]
    else:                                     # HWIO -> OIHW
        kernel = layer.kernel.value
        weight, group = kernel.transpose(3, 2, 0, 1), 1
    inputs = [xs[0], g.constant(f"{layer.name}/kernel", weight)]
    if layer.bias is not None:
        inputs.append(g.constant(f"{layer.name}/bias", layer.bias.value))
    y = g.node("Conv", inputs, layer.name, kernel_shape=list(kernel.shape[:2]),
               strides=list(layer.strides), dilations=list(layer.dilation_rate), group=group,
               **_same_pads(layer, shapes[0], kernel.shape[:2], layer.strides,
                            layer.dilation_rate))
    return _activation(g, layer.activation.name, y, 4, layer.name)


def _dense(g, layer, xs, ranks, shapes):
    kernel = g.constant(f"{layer.name}/kernel", layer.kernel.value)
    bias = None if layer.bias is None else g.constant(f"{layer.name}/bias", layer.bias.value)
    if ranks[0] == 2:
        y = g.node("Gemm", [xs[0], kernel] + ([bias] if bias else []), layer.name)
    else:                                     # on the channels (last) axis of NHWC
        x = _to_channels_last(g, xs[0], ranks[0], f"{layer.name}/nhwc")
        y = g.node("MatMul", [x, kernel], f"{layer.name}/matmul")
        y = g.node("Add", [y, bias], f"{layer.name}/bias_add") if bias else y
        y = _to_channels_first(g, y, ranks[0], f"{layer.name}/nchw")
    return _activation(g, layer.activation.name, y, ranks[0], layer.name)


def _batch_norm(g, layer, xs, ranks, shapes):
    size = layer.moving_mean.value.shape
    gamma = layer.gamma.value if layer.gamma is not None else np.ones(size, np.float32)
    beta = layer.beta.value if layer.beta is not None else np.zeros(size, np.float32)
    if ranks[0] in (2, 4):                    # channels on axis 1, as ONNX's operator wants
        params = [g.constant(f"{layer.name}/{n}", v) for n, v in (
            ("gamma", gamma), ("beta", beta), ("moving_mean", layer.moving_mean.value),
            ("moving_variance", layer.moving_variance.value))]
        return g.node("BatchNormalization", [xs[0]] + params, layer.name,
                      epsilon=layer.epsilon)
    factor = gamma.astype(np.float64) / np.sqrt(layer.moving_variance.value + layer.epsilon)
    shift = beta - layer.moving_mean.value * factor
    y = g.node("Mul", [xs[0], g.constant(f"{layer.name}/factor", factor)], f"{layer.name}/mul")
    return g.node("Add", [y, g.constant(f"{layer.name}/shift", shift)], layer.name)


def _relu(g, layer, xs, ranks, shapes):
    """Keras's relu: max_value if x >= max_value, x if x > threshold, else
    negative_slope * (x - threshold) (activations.relu)."""
    x, name = xs[0], layer.name
    if layer.negative_slope == 0.0 and layer.threshold == 0.0:
        if layer.max_value is None:
            return g.node("Relu", [x], name)
        return g.node("Clip", [x, g.constant(f"{name}/zero", 0.0),
                               g.constant(f"{name}/max_value", layer.max_value)], name)
    threshold = g.constant(f"{name}/threshold", layer.threshold)
    below = g.node("Mul", [g.node("Sub", [x, threshold], f"{name}/shifted"),
                           g.constant(f"{name}/negative_slope", layer.negative_slope)],
                   f"{name}/below")
    y = g.node("Where", [g.node("Greater", [x, threshold], f"{name}/above"), x, below],
               f"{name}/where")
    if layer.max_value is None:
        return y
    return g.node("Min", [y, g.constant(f"{name}/max_value", layer.max_value)], name)


def _pool(g, layer, xs, ranks, shapes):
    op = "MaxPool" if type(layer) is MaxPooling2D else "AveragePool"
    extra = {} if op == "MaxPool" else {"count_include_pad": 0}   # TF: mean of real cells
    return g.node(op, xs, layer.name, kernel_shape=list(layer.pool_size),
                  strides=list(layer.strides), **extra,
                  **_same_pads(layer, shapes[0], layer.pool_size, layer.strides, (1, 1)))


def _global_pool(g, layer, xs, ranks, shapes):
    op = "GlobalAveragePool" if type(layer) is GlobalAveragePooling2D else "GlobalMaxPool"
    y = g.node(op, xs, layer.name if layer.keepdims else f"{layer.name}/pool")
    return y if layer.keepdims else g.node("Flatten", [y], layer.name, axis=1)


def _flatten(g, layer, xs, ranks, shapes):
    if ranks[0] == 2:
        return xs[0]
    x = _to_channels_last(g, xs[0], ranks[0], f"{layer.name}/nhwc")   # Keras's NHWC order
    return g.node("Flatten", [x], layer.name, axis=1)


def _probabilities(g, layer, xs, ranks, shapes):
    axis = layer.axis % ranks[0]
    if ranks[0] == 4:
        axis = (0, 2, 3, 1)[axis]
    return g.node("Softmax", xs, layer.name, axis=axis)


def _zero_padding(g, layer, xs, ranks, shapes):
    (top, bottom), (left, right) = layer.padding
    pads = g.constant(f"{layer.name}/pads", [0, 0, top, left, 0, 0, bottom, right], np.int64)
    return g.node("Pad", [xs[0], pads], layer.name)


def _add(g, layer, xs, ranks, shapes):
    return g.node("Add" if len(xs) == 2 else "Sum", xs, layer.name)


def _activation_layer(g, layer, xs, ranks, shapes):
    return _activation(g, layer.activation.name, xs[0], ranks[0], layer.name)


LOWERINGS = {Conv2D: _conv, DepthwiseConv2D: _conv, Dense: _dense, BatchNormalization: _batch_norm,
             ReLU: _relu, Activation: _activation_layer, MaxPooling2D: _pool,
             AveragePooling2D: _pool, GlobalAveragePooling2D: _global_pool,
             GlobalMaxPooling2D: _global_pool, Flatten: _flatten, Softmax: _probabilities,
             ZeroPadding2D: _zero_padding, Add: _add,
             Dropout: lambda g, layer, xs, ranks, shapes: xs[0]}     # inference: identity


# -- the model -------------------------------------------------------------------------------
def _value_info(onnx, name, shape):
    dims = ["N"] + [f"{name}_{i}" if d is None else int(d) for i, d in enumerate(shape[1:], 1)]
    return onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, dims)


def to_onnx(model):
    """The ModelProto of `model` (every layer of retrain.engine, see LOWERINGS), with its
    `metadata` dict as metadata_props."""
    onnx = _onnx()
    g = _Graph(onnx)
    names, inputs, outputs = {}, [], []
    for t in model.inputs:
        name = g.unique(t.layer.name)
        inputs.append(_value_info(onnx, name, t.shape))
        names[id(t)] = _to_channels_first(g, name, len(t.shape), f"{name}/nchw")
    for layer in model.layers:
        if isinstance(layer, InputLayer):
            continue
        lower = LOWERINGS.get(type(layer))
        if lower is None:
            raise UnsupportedLayerError(f"Layer {layer.name!r} ({type(layer).__name__}) has "
                                        "no ONNX form.", hint="Export a model of retrain's "
                                        "built-in layers.")
        names[id(layer.outputs[0])] = lower(g, layer, [names[id(t)] for t in layer.inbound],
                                            [len(t.shape) for t in layer.inbound],
                                            [t.shape for t in layer.inbound])
    for t in model.outputs:
        name = g.unique(f"{t.layer.name}_output")
        g.nodes.append(onnx.helper.make_node(
            "Transpose" if len(t.shape) == 4 else "Identity", [names[id(t)]], [name],
            name=name, **({"perm": [0, 2, 3, 1]} if len(t.shape) == 4 else {})))
        outputs.append(_value_info(onnx, name, t.shape))
    graph = onnx.helper.make_graph(g.nodes, model.name, inputs, outputs, g.initializers)
    proto = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", OPSET)],
                                   producer_name="retrain", producer_version=__version__,
                                   ir_version=_IR_VERSION)
    metadata = getattr(model, "metadata", None) or {}
    onnx.helper.set_model_props(proto, {f"retrain.{key}": json.dumps(
        json_ready(value), ensure_ascii=False, allow_nan=False) for key, value in metadata.items()})
    return proto


def write_onnx(model, path):
    """Write `model` as an ONNX file at `path` (atomically); return the path."""
    atomic_write_bytes(path, to_onnx(model).SerializeToString())
    return path


def export_file(model_path, out=None):
    """`retrain export MODEL --format onnx [--out FILE]`: the model file at `model_path` (a
    RUN/model.h5, a pretrained backbone) as ONNX at `out` (default: beside it, .onnx)."""
    model_path = Path(model_path)
    out = model_path.with_suffix(".onnx") if out is None else Path(out)
    if out.is_dir():
        raise ConfigError(f"--out must be a file name; {out} is a folder.",
                          hint=f"Give e.g. --out {out / model_path.with_suffix('.onnx').name}.")
    if out.resolve() == model_path.resolve():
        raise ConfigError(f"--out {out} is the model file itself; exporting would replace it.",
                          hint="Give an --out ending in .onnx.")
    check_replaceable(out)                    # a device node, a FIFO: before any work
    _onnx()                                   # before the model is read: say it at once
    return write_onnx(load_model_file(model_path), out)
