"""Core layers: InputLayer (and the Input function), Dense, Flatten, Dropout, Activation,
ReLU and Softmax; and the argument checks every layer module shares."""
from typing import Optional, Sequence

import numpy as np

from .. import activations, initializers
from ..errors import ConfigError, ShapeError
from ..inference_steps import Elementwise, Matmul, Whole, activation_stages
from ..layer import KerasTensor, Layer, register

__all__ = ["Input", "InputLayer", "Dense", "Flatten", "Dropout", "Activation", "ReLU", "Softmax"]


# -- argument checks shared by the layer modules -------------------------------------------
def positive_int(layer, name, value):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
        raise ConfigError(f"{layer}: `{name}` must be a positive integer. "
                          f"Received: {name}={value!r}.")
    return int(value)


def non_negative(layer, name, value):
    if isinstance(value, bool) or not isinstance(value, (int, float, np.number)) or value < 0:
        raise ConfigError(f"{layer}: `{name}` must be a number >= 0. Received: {name}={value!r}.")
    return float(value)


def int_pair(layer, name, value):
    """An int or a pair of ints (Keras's `normalize_tuple`) as a tuple of 2 positive ints."""
    values = (value, value) if isinstance(value, (int, np.integer)) else value
    if not isinstance(values, (list, tuple)) or len(values) != 2:
        raise ConfigError(f"{layer}: `{name}` must be an integer or a pair of integers. "
                          f"Received: {name}={value!r}.")
    return tuple(positive_int(layer, name, v) for v in values)


def check_padding(layer, padding):
    mode = padding.lower() if isinstance(padding, str) else padding
    if mode not in ("valid", "same"):
        raise ConfigError(f"{layer}: `padding` must be 'valid' or 'same'. "
                          f"Received: padding={padding!r}.")
    return mode


def check_data_format(layer, data_format):
    if data_format not in (None, "channels_last"):
        raise ConfigError(f"{layer}: only data_format='channels_last' (NHWC) is supported. "
                          f"Received: data_format={data_format!r}. Transpose the input to NHWC.")
    return "channels_last"


def check_initializer(layer, name, identifier):
    """Resolve now so a bad name fails at construction; keep the identifier for the config."""
    try:
        initializers.get(identifier)
    except ConfigError as error:
        raise ConfigError(f"{layer}: bad `{name}`. {error}") from None
    return identifier


def check_rank(layer, input_shape, rank):
    if len(input_shape) != rank or input_shape[-1] is None:
        raise ShapeError(f"Layer {layer.name!r} ({type(layer).__name__}) expects a {rank}-D "
                         "input with a known last axis. "
                         f"Received: input_shape={tuple(input_shape)}.")


def check_channels(layer, x, channels):
    """Forward-time check that the last axis is what the weights were built for."""
    if x.ndim < 2 or x.shape[-1] != channels:
        raise ShapeError(f"Layer {layer.name!r} was built for {channels} input channels "
                         f"(last axis). Received: input shape {x.shape}.")


@register
class InputLayer(Layer):
    """The graph's entry point: an identity that checks the incoming shape."""

    def __init__(self, shape=None, batch_size=None, input_shape=None, batch_input_shape=None,
                 batch_shape=None, name=None, **kwargs):
        kwargs.pop("sparse", None), kwargs.pop("ragged", None)
        super().__init__(name=name, **kwargs)
        if batch_shape is None and batch_input_shape is None:
            shape = shape if shape is not None else input_shape
            batch_shape = (batch_size,) + tuple(shape)
        self._batch_input_shape = tuple(batch_shape or batch_input_shape)
        self.built = True
        out = KerasTensor(self._batch_input_shape, self)
        self.outbound = out
        self.input_shape = self.output_shape = self._batch_input_shape

    def forward(self, x, training=False):
        expected = self._batch_input_shape[1:]
        if x.ndim != len(expected) + 1 or any(e is not None and e != s
                                              for e, s in zip(expected, x.shape[1:])):
            raise ShapeError(f"Input {self.name!r} expects shape {(None,) + tuple(expected)}. "
                             f"Received: shape={x.shape}.")
        return x

    def backward(self, dy):
        return dy

    def get_config(self):
        return {"name": self.name, "dtype": self.dtype,
                "batch_input_shape": list(self._batch_input_shape)}


def Input(shape: Sequence[Optional[int]], batch_size: Optional[int] = None,
          name: Optional[str] = None) -> KerasTensor:
    """A symbolic input tensor, as `keras.Input`: `x = Input((224, 224, 3))`."""
    return InputLayer(shape=tuple(shape), batch_size=batch_size, name=name).outbound


@register
class Dense(Layer):
    """y = activation(x @ kernel + bias) on the last axis: (..., in) -> (..., units),
    kernel (in, units). On an N-D input every leading position shares the kernel."""
    torch_weights = {"kernel": ("weight", (1, 0)), "bias": ("bias", None)}  # (units, in)

    def __init__(self, units, activation=None, use_bias=True,
                 kernel_initializer="glorot_uniform", bias_initializer="zeros", **kwargs):
        super().__init__(**kwargs)
        self.units = positive_int("Dense", "units", units)
        self.activation = activations.get(activation)
        self.use_bias = bool(use_bias)
        self.kernel_initializer = check_initializer("Dense", "kernel_initializer",
                                                    kernel_initializer)
        self.bias_initializer = check_initializer("Dense", "bias_initializer", bias_initializer)
        self.bias = None

    def build(self, input_shape):
        if len(input_shape) < 2 or input_shape[-1] is None:
            raise ShapeError(f"Layer {self.name!r} (Dense) expects an input of rank >= 2 with "
                             f"a known last axis. Received: input_shape={tuple(input_shape)}.")
        self.kernel = self.add_weight("kernel", (input_shape[-1], self.units),
                                      self.kernel_initializer)
        if self.use_bias:
            self.bias = self.add_weight("bias", (self.units,), self.bias_initializer)

    def forward(self, x, training=False):
        check_channels(self, x, self.kernel.shape[0])
        z = x @ self.kernel.value
        if self.bias is not None:
            z += self.bias.value
        y = self.activation.forward(z)
        self._cache = (x, z, y)
        return y

    def backward(self, dy):
        x, z, y = self._cache
        dz = self.activation.backward(dy, z, y)
        if self.trainable:
            self.kernel.grad += x.reshape(-1, x.shape[-1]).T @ dz.reshape(-1, self.units)
            if self.bias is not None:
                self.bias.grad += dz.reshape(-1, self.units).sum(axis=0)
        return dz @ self.kernel.value.T

    def to_inference(self, srcs, new_vid):
        return [Matmul(srcs, new_vid(), self, self.kernel.value)]

    def to_onnx(self, graph, xs, shapes):
        rank = len(shapes[0])
        kernel = graph.constant(f"{self.name}/kernel", self.kernel.value)
        bias = None if self.bias is None else graph.constant(f"{self.name}/bias",
                                                             self.bias.value)
        if rank == 2:
            y = graph.node("Gemm", [xs[0], kernel] + ([bias] if bias else []), self.name)
        else:                                 # on the channels (last) axis of NHWC
            x = graph.channels_last(xs[0], rank, f"{self.name}/nhwc")
            y = graph.node("MatMul", [x, kernel], f"{self.name}/matmul")
            y = graph.node("Add", [y, bias], f"{self.name}/bias_add") if bias else y
            y = graph.channels_first(y, rank, f"{self.name}/nchw")
        return graph.activation(self.activation.name, y, rank, self.name)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (self.units,)

    def get_config(self):
        return {**super().get_config(), "units": self.units,
                "activation": self.activation.name, "use_bias": self.use_bias,
                "kernel_initializer": self.kernel_initializer,
                "bias_initializer": self.bias_initializer}


@register
class Flatten(Layer):
    """(N, d1, d2, ...) -> (N, d1*d2*...), row-major, so NHWC flattens in (H, W, C) order."""

    def __init__(self, data_format=None, **kwargs):
        super().__init__(**kwargs)
        self.data_format = check_data_format("Flatten", data_format)

    def forward(self, x, training=False):
        self._cache = x.shape
        return x.reshape(x.shape[0], -1)

    def backward(self, dy):
        return dy.reshape(self._cache)

    def to_inference(self, srcs, new_vid):
        return [Whole(srcs, new_vid(), self, lambda x, out: np.copyto(out, x.reshape(out.shape)))]

    def to_onnx(self, graph, xs, shapes):
        rank = len(shapes[0])
        if rank == 2:
            return xs[0]
        x = graph.channels_last(xs[0], rank, f"{self.name}/nhwc")     # Keras's NHWC order
        return graph.node("Flatten", [x], self.name, axis=1)

    def compute_output_shape(self, input_shape):
        rest = input_shape[1:]
        size = None if any(d is None for d in rest) else int(np.prod(rest, dtype=np.int64))
        return (input_shape[0], size)

    def get_config(self):
        return {**super().get_config(), "data_format": self.data_format}


@register
class Dropout(Layer):
    """Inverted dropout: in training, zero each unit with probability `rate` and scale the
    survivors by 1 / (1 - rate), so inference is the identity.

    Draws from the engine's seeded generator (`initializers.rng()`), or from a generator of
    its own when given `seed`. `noise_shape` (None entries = the input's size) shares one
    draw along its 1-sized axes, as in Keras.
    """

    def __init__(self, rate, noise_shape=None, seed=None, **kwargs):
        super().__init__(**kwargs)
        if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0 <= rate < 1:
            raise ConfigError(f"Dropout: `rate` must be a number in [0, 1). "
                              f"Received: rate={rate!r}.")
        self.rate = float(rate)
        self.noise_shape = None if noise_shape is None else tuple(noise_shape)
        self.seed = seed
        self._rng = None if seed is None else np.random.default_rng(seed)

    def forward(self, x, training=False):
        if not training or self.rate == 0.0:
            self._cache = None
            return x
        shape = x.shape if self.noise_shape is None else tuple(
            size if want is None else want for size, want in zip(x.shape, self.noise_shape))
        generator = self._rng or initializers.rng()
        keep = generator.random(shape) >= self.rate
        self._cache = keep.astype(x.dtype) * (1 / (1 - self.rate))
        return x * self._cache

    def backward(self, dy):
        return dy if self._cache is None else dy * self._cache

    def to_inference(self, srcs, new_vid):
        return []                      # the identity at inference

    def inference_epilogue(self):
        return {}

    def to_onnx(self, graph, xs, shapes):
        return xs[0]

    def get_config(self):
        noise_shape = None if self.noise_shape is None else list(self.noise_shape)
        return {**super().get_config(), "rate": self.rate, "noise_shape": noise_shape,
                "seed": self.seed}


@register
class Activation(Layer):
    """Apply a named activation ('relu', 'softmax', 'hard_sigmoid', ...); shape unchanged."""

    def __init__(self, activation, **kwargs):
        super().__init__(**kwargs)
        self.activation = activations.get(activation)

    def forward(self, x, training=False):
        y = self.activation.forward(x)
        self._cache = (x, y)
        return y

    def backward(self, dy):
        x, y = self._cache
        return self.activation.backward(dy, x, y)

    def to_inference(self, srcs, new_vid):
        return [Elementwise(srcs, new_vid(), self.inference_epilogue())]

    def inference_epilogue(self):
        return activation_stages(self.activation.name)

    def to_onnx(self, graph, xs, shapes):
        return graph.activation(self.activation.name, xs[0], len(shapes[0]), self.name)

    def get_config(self):
        return {**super().get_config(), "activation": self.activation.name}


@register
class ReLU(Layer):
    """max_value if x >= max_value, x if threshold < x < max_value, else
    negative_slope * (x - threshold). ReLU(6.) is MobileNet's relu6."""

    def __init__(self, max_value=None, negative_slope=0.0, threshold=0.0, **kwargs):
        super().__init__(**kwargs)
        self.max_value = None if max_value is None else non_negative("ReLU", "max_value",
                                                                     max_value)
        self.negative_slope = non_negative("ReLU", "negative_slope", negative_slope)
        self.threshold = non_negative("ReLU", "threshold", threshold)

    def forward(self, x, training=False):
        self._cache = x
        return activations.relu(x, self.negative_slope, self.max_value, self.threshold)

    def backward(self, dy):
        return activations.relu_backward(dy, self._cache, None, self.negative_slope,
                                         self.max_value, self.threshold)

    def to_inference(self, srcs, new_vid):
        return [Elementwise(srcs, new_vid(), self.inference_epilogue())]

    def inference_epilogue(self):
        if self.negative_slope == 0.0 and self.threshold == 0.0:
            return {"clip": (0.0, self.max_value)}
        return {"activation": lambda x: activations.relu(
            x, self.negative_slope, self.max_value, self.threshold)}

    def to_onnx(self, graph, xs, shapes):
        """Where(x > threshold, x, negative_slope * (x - threshold)), then Min(max_value)."""
        x, name = xs[0], self.name
        if self.negative_slope == 0.0 and self.threshold == 0.0:
            if self.max_value is None:
                return graph.node("Relu", [x], name)
            return graph.node("Clip", [x, graph.constant(f"{name}/zero", 0.0),
                                       graph.constant(f"{name}/max_value", self.max_value)],
                              name)
        threshold = graph.constant(f"{name}/threshold", self.threshold)
        below = graph.node("Mul", [graph.node("Sub", [x, threshold], f"{name}/shifted"),
                                   graph.constant(f"{name}/negative_slope",
                                                  self.negative_slope)], f"{name}/below")
        y = graph.node("Where", [graph.node("Greater", [x, threshold], f"{name}/above"), x,
                                 below], f"{name}/where")
        if self.max_value is None:
            return y
        return graph.node("Min", [y, graph.constant(f"{name}/max_value", self.max_value)],
                          name)

    def get_config(self):
        return {**super().get_config(), "max_value": self.max_value,
                "negative_slope": self.negative_slope, "threshold": self.threshold}


@register
class Softmax(Layer):
    """Numerically stable softmax along `axis` (default the last)."""

    def __init__(self, axis=-1, **kwargs):
        super().__init__(**kwargs)
        if isinstance(axis, bool) or not isinstance(axis, (int, np.integer)):
            raise ConfigError(f"Softmax: `axis` must be one integer axis. Received: axis={axis!r}.")
        self.axis = int(axis)

    def forward(self, x, training=False):
        y = activations.softmax(x, self.axis)
        self._cache = y
        return y

    def backward(self, dy):
        return activations.softmax_backward(dy, None, self._cache, self.axis)

    def to_inference(self, srcs, new_vid):
        if self.axis != -1:
            return [Whole(srcs, new_vid(), self, lambda x, out: np.copyto(
                out, activations.softmax(x, self.axis)))]
        return [Elementwise(srcs, new_vid(), {"activation": activations.softmax})]

    def to_onnx(self, graph, xs, shapes):
        rank = len(shapes[0])
        axis = self.axis % rank
        return graph.node("Softmax", xs, self.name,
                          axis=(0, 2, 3, 1)[axis] if rank == 4 else axis)

    def get_config(self):
        return {**super().get_config(), "axis": self.axis}
