"""`retrain export --format onnx`: a model's layer graph as an ONNX file, for ONNX Runtime,
OpenVINO and the other runtimes that read ONNX.

The ONNX graph takes and returns what the model does: float32 NHWC images made by the
preprocessing recipe, and the model's outputs. The recipe, the labels and the rest of the
model file's metadata go into the file's metadata_props as JSON (`retrain.preprocessing`,
`retrain.labels`, ...), so the file stays self-describing. Inside the graph 4-D values are
NCHW, the layout ONNX's Conv and pooling operators define: one Transpose after each 4-D
input and one before each 4-D output. BatchNormalization stays an ONNX BatchNormalization
(runtimes fold it themselves). The bytes are written by onnx_wire.py, without the onnx
package (whose import took half a second of every run on a compiled runtime): `onnx_bytes`.
`retrain export` and `to_onnx` (a ModelProto, parsed from those bytes) need the `onnx`
package, the `onnx` extra, so that the file written is one onnx itself reads and checks.
"""
import json
import math
import os
from pathlib import Path

import numpy as np

from . import onnx_wire
from .version import __version__
from .engine import UnsupportedLayerError
from .distribution import pip_install
from .engine import check_replaceable
from .errors import ConfigError
from .files import atomic_write_bytes
from .model_file import load_model_file
from .output import json_ready
from .run_folder import is_run_folder

__all__ = ["OPSET", "export_file", "onnx_bytes", "to_onnx", "write_onnx"]

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
    """The builder a layer's `to_onnx` writes through: the nodes and initializers being
    built, with unique value names, and the conversions several layer kinds share."""

    def __init__(self):
        self.nodes, self.initializers, self.used = [], [], set()

    def unique(self, base):
        name, count = base, 0
        while name in self.used:
            count += 1
            name = f"{base}_{count}"
        self.used.add(name)
        return name

    def constant(self, base, array, dtype=np.float32):
        name = self.unique(base)
        self.initializers.append(onnx_wire.tensor(name, np.ascontiguousarray(array, dtype)))
        return name

    def node(self, op, inputs, base, **attributes):
        output = self.unique(base)
        self.nodes.append(onnx_wire.node(op, inputs, [output], output, **attributes))
        return output

    def channels_last(self, x, rank, base):
        return self.node("Transpose", [x], base, perm=[0, 2, 3, 1]) if rank == 4 else x

    def channels_first(self, x, rank, base):
        return self.node("Transpose", [x], base, perm=[0, 3, 1, 2]) if rank == 4 else x

    def activation(self, name, x, rank, base):
        """Keras activation `name` (activations.py) applied to x, whose channels are axis 1
        if rank is 4, else the last axis."""
        if name == "linear":
            return x
        simple = {"relu": "Relu", "sigmoid": "Sigmoid", "tanh": "Tanh", "softplus": "Softplus",
                  "softsign": "Softsign", "exponential": "Exp", "elu": "Elu"}
        if name in simple:
            return self.node(simple[name], [x], f"{base}/{name}")
        if name == "relu6":
            return self.node("Clip", [x, self.constant(f"{base}/zero", 0.0), self.constant(
                f"{base}/six", 6.0)], f"{base}/relu6")
        if name == "softmax":
            return self.node("Softmax", [x], f"{base}/softmax", axis=1 if rank == 4 else -1)
        if name in ("silu", "swish"):
            return self.node("Mul", [x, self.node("Sigmoid", [x], f"{base}/sigmoid")],
                             f"{base}/silu")
        if name == "selu":   # the constants of activations.selu, not ONNX's float32 defaults
            return self.node("Selu", [x], f"{base}/selu", alpha=1.6732632423543772,
                             gamma=1.0507009873554805)
        if name == "hard_sigmoid":    # Keras 3's relu6(x + 3) / 6 = clip(x / 6 + 0.5, 0, 1)
            return self.node("HardSigmoid", [x], f"{base}/hard_sigmoid", alpha=1 / 6, beta=0.5)
        if name == "gelu":            # 0.5 x (1 + erf(x / sqrt 2)); opset 17 has no Gelu
            scaled = self.node("Mul", [x, self.constant(f"{base}/rsqrt2", 1 / math.sqrt(2))],
                               f"{base}/scaled")
            one_plus = self.node("Add", [self.node("Erf", [scaled], f"{base}/erf"),
                                         self.constant(f"{base}/one", 1.0)], f"{base}/one_plus")
            half_x = self.node("Mul", [x, self.constant(f"{base}/half", 0.5)], f"{base}/half_x")
            return self.node("Mul", [half_x, one_plus], f"{base}/gelu")
        raise UnsupportedLayerError(f"Activation {name!r} of layer {base!r} has no ONNX form.")

    @staticmethod
    def pads(padding, shape, window, strides, dilation):
        """ONNX pads [top, left, bottom, right] for Keras `padding` on an NHWC `shape`: TF's
        'same' puts the odd extra row and column at the bottom and right."""
        if padding == "valid":
            return {"pads": [0, 0, 0, 0]}
        if any(side is None for side in shape[1:3]):
            return {"auto_pad": "SAME_UPPER"}
        begin, end = [], []
        for n, k, s, d in zip(shape[1:3], window, strides, dilation):
            total = max((-(-n // s) - 1) * s + (k - 1) * d + 1 - n, 0)
            begin.append(total // 2)
            end.append(total - total // 2)
        return {"pads": begin + end}


# -- the model -------------------------------------------------------------------------------
def _value_info(name, shape):
    dims = ["N"] + [f"{name}_{i}" if d is None else int(d) for i, d in enumerate(shape[1:], 1)]
    return onnx_wire.value_info(name, dims)


def to_onnx(model):
    """The ModelProto of `model` (onnx_bytes parsed by the onnx package)."""
    return _onnx().ModelProto.FromString(onnx_bytes(model))


def onnx_bytes(model):
    """The ONNX file of `model` as bytes (each layer written by its `to_onnx`), with its
    `metadata` dict as metadata_props; no onnx package needed."""
    g = _Graph()
    names, inputs, outputs = {}, [], []
    for t in model.inputs:
        name = g.unique(t.layer.name)
        inputs.append(_value_info(name, t.shape))
        names[id(t)] = g.channels_first(name, len(t.shape), f"{name}/nchw")
    for layer in model.layers:
        if not layer.inbound:                 # an input
            continue
        output = layer.to_onnx(g, [names[id(t)] for t in layer.inbound],
                               [t.shape for t in layer.inbound])
        if output is None:
            raise UnsupportedLayerError(f"Layer {layer.name!r} ({type(layer).__name__}) has "
                                        "no ONNX form.", hint="Export a model of retrain's "
                                        "built-in layers.")
        names[id(layer.outbound)] = output
    for t in model.outputs:
        name = g.unique(f"{t.layer.name}_output")
        g.nodes.append(onnx_wire.node(
            "Transpose" if len(t.shape) == 4 else "Identity", [names[id(t)]], [name],
            name, **({"perm": [0, 2, 3, 1]} if len(t.shape) == 4 else {})))
        outputs.append(_value_info(name, t.shape))
    metadata = getattr(model, "metadata", None) or {}
    return onnx_wire.model(g.nodes, model.name, inputs, outputs, g.initializers,
                           ir_version=_IR_VERSION, opset=OPSET, producer="retrain",
                           producer_version=__version__, properties={
                               f"retrain.{key}": json.dumps(json_ready(value),
                                                            ensure_ascii=False, allow_nan=False)
                               for key, value in metadata.items()})


def write_onnx(model, path):
    """Write `model` as an ONNX file at `path` (atomically); return the path."""
    atomic_write_bytes(path, onnx_bytes(model))
    return path


def export_file(model_path, out=None):
    """`retrain export MODEL --format onnx [--out FILE]`: the model file at `model_path` (a
    RUN/model.h5, a pretrained backbone) as ONNX at `out`. Default: RUN.onnx beside the
    run folder for a run's model (a file inside RUN would make the next `fit --out RUN`
    refuse it), else the model's path with the suffix .onnx."""
    model_path = Path(model_path)
    run_dir = Path(os.path.realpath(model_path)).parent
    if out is None:             # a run folder holds fit's outputs only: write beside it
        out = (run_dir.parent / f"{run_dir.name}.onnx" if is_run_folder(run_dir)
               else model_path.with_suffix(".onnx"))
    out = Path(out)
    if is_run_folder(Path(os.path.realpath(out.parent))):
        raise ConfigError(f"--out {out} is inside the run folder {out.parent}, which holds "
                          "`retrain fit`'s outputs only: the next `fit --out` there would "
                          "refuse it.", hint=f"Leave out --out to write "
                          f"{run_dir.parent / (run_dir.name + '.onnx')}, or give another "
                          "folder.")
    if out.is_dir():
        raise ConfigError(f"--out must be a file name; {out} is a folder.",
                          hint=f"Give e.g. --out {out / model_path.with_suffix('.onnx').name}.")
    if out.resolve() == model_path.resolve():
        raise ConfigError(f"--out {out} is the model file itself; exporting would replace it.",
                          hint="Give an --out ending in .onnx.")
    check_replaceable(out)                    # a device node, a FIFO: before any work
    _onnx()                                   # before the model is read: say it at once
    return write_onnx(load_model_file(model_path), out)
