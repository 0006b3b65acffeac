"""The steps of an inference plan (see inference.py), and `compile_graph`, which turns a
model's layer graph into them: each step one fused operation on preallocated arrays,
computed by the `kernels` *_call functions.

A step reads the values `inputs` and writes the value `output` (integer ids). `bind` gives
its output shape and parameters for a per-sample input shape; `prepare` gives a function of
no arguments that computes all of the output (rows=None), or a band of rows of a 4-D one, in
the arrays of a workspace (`scratch(name, shape)` lends it temporaries).

Which steps a layer becomes is the layer class's own business (`Layer.to_inference`, beside
its forward and backward); this module holds the steps and the compiler, and knows no layer
class by name.
"""
import itertools
import warnings
from functools import partial

import numpy as np

from . import activations, kernels


def _band(array, rows):
    return array if rows is None or array is None else array[:, rows[0]:rows[1]]


def activation_stages(name):
    """Epilogue stages for a named activation: a clip for relu and relu6, else the function."""
    if name == "linear":
        return {}
    if name in ("relu", "relu6"):
        return {"clip": (0.0, 6.0 if name == "relu6" else None)}
    return {"activation": activations.get(name).forward}


class Step:
    """splittable: it can compute any band of rows of its (4-D) output, so threads can share
    one image. local: output row r reads only row r of the inputs, so those threads need no
    barrier around it."""
    splittable = True
    local = True

    def __init__(self, inputs, output):
        self.inputs, self.output = list(inputs), output

    def reads(self):
        return self.inputs

    def bind(self, shapes):
        return shapes[self.inputs[0]], {}

    def band_height(self, shapes):
        return shapes[self.output][0]


class Fused(Step):
    """A step ending in kernels.epilogue. It absorbs the layers after it: a
    BatchNormalization (folded into its weights), then an activation, then a residual Add."""
    takes_residual = True

    def __init__(self, inputs, output, stages=None):
        super().__init__(inputs, output)
        self.stages = dict(stages or {})

    def reads(self):
        residual = self.stages.get("residual")
        return self.inputs + ([] if residual is None else [residual])

    def absorb(self, layer, tensor, vid_of):
        """Take over `layer`, the only reader of this step's output `tensor`, if possible:
        what it offers (`layer.inference_epilogue()`) is an affine map to fold, epilogue
        stages, or to be the residual sum; each only before the epilogue has ended."""
        offer = layer.inference_epilogue()
        ended = {"clip", "activation", "residual"} & self.stages.keys()
        if offer is None:
            return False
        if "affine" in offer:
            if not ended:
                self.fold(*offer["affine"])
            return not ended
        if "residual" in offer:
            if not self.takes_residual or ended or len(layer.inbound) != 2:
                return False
            other = layer.inbound[1] if layer.inbound[0] is tensor else layer.inbound[0]
            if id(other) not in vid_of:       # not computed before this step runs
                return False
            self.stages["residual"] = vid_of[id(other)]
            return True
        if ended and offer:
            return False
        self.stages.update(offer)
        return True

    def bind(self, shapes):
        """Also the epilogue's stages for this shape: scale and bias tiled along a row of a
        4-D output (see kernels.epilogue)."""
        shape, params = self.bind_shape(shapes)
        width = shape[1] if len(shape) == 3 else 1
        params["stages"] = {name: np.tile(value, width) if name in ("scale", "bias") else value
                            for name, value in self.stages.items()}
        return shape, params

    def epilogue(self, arrays, rows, params):
        stages = dict(params["stages"])
        if "residual" in stages:
            stages["residual"] = _band(arrays[stages["residual"]], rows)
        return stages


class Weighted(Fused):
    """Conv2D, DepthwiseConv2D or Dense: a kernel and a bias, with BatchNormalization folded
    in (see fold)."""
    depthwise = False

    def __init__(self, inputs, output, layer, kernel):
        super().__init__(inputs, output)
        self.kernel = kernel
        self.stages.update(activation_stages(layer.activation.name))
        if layer.bias is not None:
            self.stages["bias"] = layer.bias.value
        self.strides = getattr(layer, "strides", (1, 1))
        self.dilation = getattr(layer, "dilation_rate", (1, 1))

    def fold(self, factor, shift):
        """conv(x, kernel * factor) + (bias * factor + shift) == BN(conv(x, kernel) + bias);
        a depthwise kernel (kh, kw, C, M) scales [..., c, m] by output channel c*M + m's."""
        bias = self.stages.get("bias")
        self.stages["bias"] = shift if bias is None else bias * factor + shift
        self.kernel = self.kernel * factor.reshape(
            self.kernel.shape[-2:] if self.depthwise else self.kernel.shape[-1:])


class Matmul(Weighted):
    """Dense, or a 1x1 stride-1 convolution: one matmul over the last axis."""

    def bind_shape(self, shapes):
        return shapes[self.inputs[0]][:-1] + (self.kernel.shape[1],), {}

    def prepare(self, arrays, rows, params, scratch):
        out = arrays[self.output]
        temporary = None if out.flags.c_contiguous else scratch("matmul", out.shape)
        return kernels.matmul_call(_band(arrays[self.inputs[0]], rows), self.kernel,
                                   _band(out, rows), _band(temporary, rows),
                                   **self.epilogue(arrays, rows, params))


class Window(Weighted):
    """Conv2D (any window and stride) of an input that a Pad step has already padded."""
    local = False

    def bind_shape(self, shapes):
        hp, wp, c = shapes[self.inputs[0]]
        kh, kw, _, f = self.kernel.shape
        spatial = tuple(kernels.output_length(n, k, s, d, "valid") for n, k, s, d in zip(
            (hp, wp), (kh, kw), self.strides, self.dilation))
        return spatial + ((c * f) if self.depthwise else f,), {}

    def prepare(self, arrays, rows, params, scratch):
        xp, out = arrays[self.inputs[0]], arrays[self.output]
        if rows is not None:          # the padded rows that output rows [r0, r1) read
            step, reach = self.strides[0], (self.kernel.shape[0] - 1) * self.dilation[0]
            xp = xp[:, rows[0] * step:(rows[1] - 1) * step + reach + 1]
        return self.call(xp, out, rows, params, scratch, self.epilogue(arrays, rows, params))

    def call(self, xp, out, rows, params, scratch, stages):
        kh, kw, c, _ = self.kernel.shape
        cols = scratch("cols", out.shape[:3] + (kh * kw * c,))
        temporary = None if out.flags.c_contiguous else scratch("matmul", out.shape)
        return kernels.conv2d_call(xp, self.kernel, self.strides, self.dilation, _band(out, rows),
                                   _band(cols, rows), _band(temporary, rows), **stages)


class Depthwise(Window):
    """DepthwiseConv2D of an already padded input: one einsum, then the epilogue in place."""
    depthwise = True

    def bind_shape(self, shapes):
        shape, params = super().bind_shape(shapes)
        if self.strides[1] == 1 and self.kernel.shape[-1] == 1:
            params["tiled"] = kernels.depthwise_tiled_kernel(self.kernel, shape[1])
        return shape, params

    def call(self, xp, out, rows, params, scratch, stages):
        return kernels.depthwise_call(xp, self.kernel, self.strides, self.dilation,
                                      _band(out, rows), params.get("tiled"), **stages)


class Elementwise(Fused):
    """An activation, a standalone BatchNormalization or an Add: the sum of the inputs,
    then the epilogue (scale and bias, clip or activation)."""
    takes_residual = False

    def fold(self, factor, shift):
        scale, bias = self.stages.get("scale"), self.stages.get("bias")
        self.stages["scale"] = factor if scale is None else scale * factor
        self.stages["bias"] = shift if bias is None else bias * factor + shift

    def bind_shape(self, shapes):
        return shapes[self.inputs[0]], {}

    def prepare(self, arrays, rows, params, scratch):
        terms = [_band(arrays[v], rows) for v in self.inputs]
        out = _band(arrays[self.output], rows)
        calls = [partial(np.add, terms[0] if i == 0 else out, term, out=out)
                 for i, term in enumerate(terms[1:])]
        epilogue = kernels.epilogue_call(out if calls else terms[0], out,
                                         **self.epilogue(arrays, rows, params))
        return kernels.sequence(calls + [epilogue])


class Pad(Step):
    """Zero padding (a ZeroPadding2D's, or a 'same' window's): the input copied into the
    interior of a buffer whose border is zero. The plan's layout skips the copy when the
    input's producer can write straight into that interior."""

    def __init__(self, inputs, output, pads_of):
        super().__init__(inputs, output)
        self.pads_of = pads_of

    def bind(self, shapes):
        h, w, c = shapes[self.inputs[0]]
        (top, bottom), (left, right) = pads = self.pads_of((h, w))
        return (h + top + bottom, w + left + right, c), {"pads": pads}

    def band_height(self, shapes):
        return shapes[self.inputs[0]][0]

    def prepare(self, arrays, rows, params, scratch):
        (top, _), (left, _) = params["pads"]
        x = arrays[self.inputs[0]]
        r0, r1 = (0, x.shape[1]) if rows is None else rows
        return partial(np.copyto, arrays[self.output][:, top + r0:top + r1,
                                                      left:left + x.shape[2]], x[:, r0:r1])


class Whole(Step):
    """An op that one thread computes on whole samples: pooling, flatten, softmax on an
    axis other than the last."""
    splittable = False
    local = False

    def __init__(self, inputs, output, layer, compute):
        super().__init__(inputs, output)
        self.layer, self.compute = layer, compute

    def bind(self, shapes):
        return tuple(self.layer.compute_output_shape((None,) + shapes[self.inputs[0]])[1:]), {}

    def prepare(self, arrays, rows, params, scratch):
        return partial(self.compute, arrays[self.inputs[0]], arrays[self.output])


class Forward(Whole):
    """A layer class with no lowering, run by its own forward(x, training=False) on whole
    samples; compile_graph reports each one (InferenceFallbackWarning)."""

    def __init__(self, inputs, output, layer):
        super().__init__(inputs, output, layer, None)

    def bind(self, shapes):
        given = [(None,) + shapes[v] for v in self.inputs]
        shape = self.layer.compute_output_shape(given if len(given) > 1 else given[0])
        return tuple(shape[1:]), {}

    def prepare(self, arrays, rows, params, scratch):
        xs = [arrays[v] for v in self.inputs]
        return lambda: np.copyto(arrays[self.output], self.layer.forward(
            xs if len(xs) > 1 else xs[0], training=False))


class InferenceFallbackWarning(UserWarning):
    """A layer of the model runs through its slower `forward` (it has no lowering)."""


def compile_graph(model, srcs=None, new_vid=None):
    """(steps, input value ids, output value ids): the graph's layers in order, each lowered
    by its `to_inference` (or run by its Forward, with a warning, where that gives None) and
    absorbing the layers after it that only it feeds (see Fused.absorb). A model nested in
    another is compiled with the outer plan's `srcs` as its inputs and its `new_vid`."""
    readers, outputs = {}, {id(t) for t in model.outputs}
    for layer in model._graph:
        for t in layer.inbound:
            readers.setdefault(id(t), []).append(layer)
    new_vid = new_vid or itertools.count().__next__
    srcs = srcs or [new_vid() for _ in model.inputs]
    vid_of = {id(t): vid for t, vid in zip(model.inputs, srcs)}
    plan, absorbed, fallbacks = [], set(), []
    for layer in model._graph:
        if not layer.inbound or id(layer) in absorbed:       # an input, or absorbed
            continue
        srcs = [vid_of[id(t)] for t in layer.inbound]
        new = layer.to_inference(srcs, new_vid)
        if new is None:
            fallbacks.append(f"{layer.name} ({type(layer).__name__})")
            new = [Forward(srcs, new_vid(), layer)]
        if not new:
            vid_of[id(layer.outbound)] = srcs[0]
            continue
        tensor = layer.outbound
        while isinstance(new[-1], Fused) and id(tensor) not in outputs \
                and len(readers.get(id(tensor), [])) == 1 \
                and new[-1].absorb(readers[id(tensor)][0], tensor, vid_of):
            absorbed.add(id(readers[id(tensor)][0]))
            tensor = readers[id(tensor)][0].outbound
        vid_of[id(tensor)] = new[-1].output
        plan += new
    if fallbacks:
        warnings.warn(f"Model {model.name!r}: predict runs layer(s) {', '.join(fallbacks)} "
                      "through their forward, which is slower: they have no inference step "
                      "(Layer.to_inference).", InferenceFallbackWarning, stacklevel=5)
    return plan, [vid_of[id(t)] for t in model.inputs], [vid_of[id(t)] for t in model.outputs]
