"""Core layers: InputLayer (and the Input function), Dense, Flatten, Dropout, Activation,
ReLU and Softmax; and the argument checks every layer module shares."""
import numpy as np

from .. import activations, initializers
from ..errors import ConfigError, ShapeError
from ..layer import KerasTensor, Layer


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
        self.outputs = [out]
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


def Input(shape, batch_size=None, name=None):
    """A symbolic input tensor, as `keras.Input`: `x = Input((224, 224, 3))`."""
    return InputLayer(shape=tuple(shape), batch_size=batch_size, name=name).outputs[0]


class Dense(Layer):
    """y = activation(x @ kernel + bias) on the last axis: (..., in) -> (..., units),
    kernel (in, units). On an N-D input every leading position shares the kernel."""

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

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (self.units,)

    def get_config(self):
        return {**super().get_config(), "units": self.units,
                "activation": self.activation.name, "use_bias": self.use_bias,
                "kernel_initializer": self.kernel_initializer,
                "bias_initializer": self.bias_initializer}


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

    def compute_output_shape(self, input_shape):
        rest = input_shape[1:]
        size = None if any(d is None for d in rest) else int(np.prod(rest, dtype=np.int64))
        return (input_shape[0], size)

    def get_config(self):
        return {**super().get_config(), "data_format": self.data_format}


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

    def get_config(self):
        noise_shape = None if self.noise_shape is None else list(self.noise_shape)
        return {**super().get_config(), "rate": self.rate, "noise_shape": noise_shape,
                "seed": self.seed}


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

    def get_config(self):
        return {**super().get_config(), "activation": self.activation.name}


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

    def get_config(self):
        return {**super().get_config(), "max_value": self.max_value,
                "negative_slope": self.negative_slope, "threshold": self.threshold}


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

    def get_config(self):
        return {**super().get_config(), "axis": self.axis}
