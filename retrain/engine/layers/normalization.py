"""BatchNormalization (with Keras 3's training rule) and LayerNormalization, over the last axis."""
import numpy as np

from ..errors import ConfigError, ShapeError
from ..inference_steps import Elementwise, Whole
from ..layer import Layer, register
from .core import check_channels, check_initializer

__all__ = ["BatchNormalization", "LayerNormalization"]


@register
class BatchNormalization(Layer):
    """y = gamma * (x - mean) / sqrt(var + epsilon) + beta per channel; any rank >= 2.

    Inference uses moving_mean / moving_variance. Training mode is `training and
    self.trainable` (Keras 3: a frozen BN normalizes with its moving statistics even inside
    fit). There it uses the batch's mean and biased variance, and updates
    moving = moving * momentum + batch * (1 - momentum) with that same biased variance, as
    Keras 3's `ops.moments` does (tf_keras's fused kernel used the unbiased one).
    """
    torch_weights = {"gamma": ("weight", None), "beta": ("bias", None),
                     "moving_mean": ("running_mean", None),
                     "moving_variance": ("running_var", None)}


    def __init__(self, axis=-1, momentum=0.99, epsilon=1e-3, center=True, scale=True,
                 beta_initializer="zeros", gamma_initializer="ones",
                 moving_mean_initializer="zeros", moving_variance_initializer="ones",
                 **kwargs):
        super().__init__(**kwargs)
        self.axis = axis
        if not isinstance(axis, (int, np.integer)) and not (
                isinstance(axis, (list, tuple)) and len(axis) == 1):
            raise ConfigError(f"BatchNormalization: `axis` must be one axis, the channels "
                              f"(last) one. Received: axis={axis!r}.")
        self.momentum = float(momentum)
        self.epsilon = float(epsilon)
        if not 0.0 <= self.momentum <= 1.0 or self.epsilon <= 0.0:
            raise ConfigError(f"BatchNormalization: need 0 <= momentum <= 1 and epsilon > 0. "
                              f"Received: momentum={momentum!r}, epsilon={epsilon!r}.")
        self.center = bool(center)
        self.scale = bool(scale)
        given = {"beta_initializer": beta_initializer, "gamma_initializer": gamma_initializer,
                 "moving_mean_initializer": moving_mean_initializer,
                 "moving_variance_initializer": moving_variance_initializer}
        self.initializers = {name: check_initializer("BatchNormalization", name, value)
                             for name, value in given.items()}
        self.gamma = self.beta = None

    def build(self, input_shape):
        shape = _last_axis(self, input_shape, "last (channels) axis")
        init = self.initializers
        if self.scale:
            self.gamma = self.add_weight("gamma", shape, init["gamma_initializer"])
        if self.center:
            self.beta = self.add_weight("beta", shape, init["beta_initializer"])
        self.moving_mean = self.add_weight("moving_mean", shape,
                                           init["moving_mean_initializer"], trainable=False)
        self.moving_variance = self.add_weight("moving_variance", shape,
                                               init["moving_variance_initializer"],
                                               trainable=False)

    def forward(self, x, training=False):
        check_channels(self, x, self.moving_mean.shape[0])
        batch_stats = bool(training and self.trainable)
        if batch_stats:
            axes = tuple(range(x.ndim - 1))
            mean, variance = x.mean(axis=axes), x.var(axis=axes)
            for moving, batch in ((self.moving_mean, mean), (self.moving_variance, variance)):
                updated = moving.value * self.momentum + batch * (1.0 - self.momentum)
                moving.value = updated.astype(moving.value.dtype, copy=False)
        else:
            mean, variance = self.moving_mean.value, self.moving_variance.value
        inv_std = 1 / np.sqrt(variance + self.epsilon)
        factor, shift = self._affine(mean, inv_std)
        self._cache = (x, mean, inv_std, batch_stats)
        return x * factor + shift     # the formula of tf.nn.batch_normalization

    def _affine(self, mean, inv_std):
        """(factor, shift) with y = x * factor + shift, for these statistics."""
        factor = inv_std if self.gamma is None else inv_std * self.gamma.value
        shift = -mean * factor if self.beta is None else self.beta.value - mean * factor
        return factor, shift

    def backward(self, dy):
        x, mean, inv_std, batch_stats = self._cache
        axes = tuple(range(x.ndim - 1))
        x_hat = (x - mean) * inv_std
        if self.trainable:
            if self.gamma is not None:
                self.gamma.grad += (dy * x_hat).sum(axis=axes)
            if self.beta is not None:
                self.beta.grad += dy.sum(axis=axes)
        d_x_hat = dy if self.gamma is None else dy * self.gamma.value
        if not batch_stats:
            return d_x_hat * inv_std
        # mean and variance depend on x too: project out their two directions
        return inv_std * (d_x_hat - d_x_hat.mean(axis=axes)
                          - x_hat * (d_x_hat * x_hat).mean(axis=axes))

    def to_inference(self, srcs, new_vid):
        step = Elementwise(srcs, new_vid())
        step.fold(*self.inference_epilogue()["affine"])
        return [step]

    def inference_epilogue(self):
        """Inference mode is one per-channel affine map, which a convolution folds in."""
        return {"affine": self._affine(self.moving_mean.value,
                                       1 / np.sqrt(self.moving_variance.value + self.epsilon))}

    def to_onnx(self, graph, xs, shapes):
        """ONNX's BatchNormalization wants channels on axis 1: so on 2-D and (NCHW) 4-D
        values; other ranks get the affine map itself."""
        rank = len(shapes[0])
        if rank not in (2, 4):
            factor, shift = self.inference_epilogue()["affine"]
            y = graph.node("Mul", [xs[0], graph.constant(f"{self.name}/factor", factor)],
                           f"{self.name}/mul")
            return graph.node("Add", [y, graph.constant(f"{self.name}/shift", shift)], self.name)
        size = self.moving_mean.shape
        gamma = np.ones(size, np.float32) if self.gamma is None else self.gamma.value
        beta = np.zeros(size, np.float32) if self.beta is None else self.beta.value
        params = [graph.constant(f"{self.name}/{n}", v) for n, v in (
            ("gamma", gamma), ("beta", beta), ("moving_mean", self.moving_mean.value),
            ("moving_variance", self.moving_variance.value))]
        return graph.node("BatchNormalization", [xs[0]] + params, self.name,
                          epsilon=self.epsilon)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "axis": self.axis, "momentum": self.momentum,
                "epsilon": self.epsilon, "center": self.center, "scale": self.scale,
                **self.initializers}


@register
class LayerNormalization(Layer):
    """y = gamma * (x - mean) / sqrt(var + epsilon) + beta, the mean and (biased) variance
    taken over each sample's last axis; any rank >= 2. No moving statistics: training and
    inference compute the same. `rms_scaling` (RMSNorm) is not supported."""
    torch_weights = {"gamma": ("weight", None), "beta": ("bias", None)}

    def __init__(self, axis=-1, epsilon=1e-3, center=True, scale=True, rms_scaling=False,
                 beta_initializer="zeros", gamma_initializer="ones", **kwargs):
        super().__init__(**kwargs)
        if not (isinstance(axis, (int, np.integer)) and not isinstance(axis, bool)) and not (
                isinstance(axis, (list, tuple)) and len(axis) == 1):
            raise ConfigError(f"LayerNormalization: `axis` must be one axis, the last one. "
                              f"Received: axis={axis!r}.")
        self.axis = axis
        self.epsilon = float(epsilon)
        if not self.epsilon > 0.0:
            raise ConfigError(f"LayerNormalization: need epsilon > 0. Received: "
                              f"epsilon={epsilon!r}.")
        if rms_scaling:
            raise ConfigError("LayerNormalization: rms_scaling=True (RMSNorm) is not "
                              "supported. Received: rms_scaling=True.")
        self.center, self.scale = bool(center), bool(scale)
        self.initializers = {name: check_initializer("LayerNormalization", name, value)
                             for name, value in (("beta_initializer", beta_initializer),
                                                 ("gamma_initializer", gamma_initializer))}
        self.gamma = self.beta = None

    def build(self, input_shape):
        shape = _last_axis(self, input_shape, "last axis")
        self._features = input_shape[-1]
        if self.scale:
            self.gamma = self.add_weight("gamma", shape, self.initializers["gamma_initializer"])
        if self.center:
            self.beta = self.add_weight("beta", shape, self.initializers["beta_initializer"])

    def forward(self, x, training=False):
        check_channels(self, x, self._features)
        y, x_hat, inv_std = self._normalize(x)
        self._cache = (x_hat, inv_std)
        return y

    def _normalize(self, x):
        """(y, x_hat, 1 / std): the forward's math, shared with the inference plan."""
        mean = x.mean(axis=-1, keepdims=True)
        inv_std = 1 / np.sqrt(x.var(axis=-1, keepdims=True) + self.epsilon)
        x_hat = (x - mean) * inv_std
        y = x_hat if self.gamma is None else x_hat * self.gamma.value
        return (y if self.beta is None else y + self.beta.value), x_hat, inv_std

    def backward(self, dy):
        x_hat, inv_std = self._cache
        axes = tuple(range(dy.ndim - 1))
        if self.trainable:
            if self.gamma is not None:
                self.gamma.grad += (dy * x_hat).sum(axis=axes)
            if self.beta is not None:
                self.beta.grad += dy.sum(axis=axes)
        d_x_hat = dy if self.gamma is None else dy * self.gamma.value
        # the mean and variance depend on x: project out their two directions, per sample
        return inv_std * (d_x_hat - d_x_hat.mean(axis=-1, keepdims=True)
                          - x_hat * (d_x_hat * x_hat).mean(axis=-1, keepdims=True))

    def to_inference(self, srcs, new_vid):
        return [Whole(srcs, new_vid(), self, lambda x, out: np.copyto(
            out, self._normalize(x)[0]))]

    def to_onnx(self, graph, xs, shapes):
        """ONNX's LayerNormalization (opset 17) over the last axis of the NHWC value."""
        rank, size = len(shapes[0]), shapes[0][-1]
        gamma = np.ones(size, np.float32) if self.gamma is None else self.gamma.value
        beta = np.zeros(size, np.float32) if self.beta is None else self.beta.value
        x = graph.channels_last(xs[0], rank, f"{self.name}/nhwc")
        y = graph.node("LayerNormalization", [x, graph.constant(f"{self.name}/gamma", gamma),
                                              graph.constant(f"{self.name}/beta", beta)],
                       f"{self.name}/normalized", axis=-1, epsilon=self.epsilon)
        return graph.channels_first(y, rank, self.name)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "axis": self.axis, "epsilon": self.epsilon,
                "center": self.center, "scale": self.scale, "rms_scaling": False,
                **self.initializers}


def _last_axis(layer, input_shape, what):
    """The weights' shape (features,) of a layer that normalizes its input's last axis, the
    only one either normalization supports; ShapeError/ConfigError otherwise."""
    rank = len(input_shape)
    axis = layer.axis[0] if isinstance(layer.axis, (list, tuple)) else layer.axis
    if rank < 2 or input_shape[-1] is None:
        raise ShapeError(f"Layer {layer.name!r} expects an input of rank >= 2 with a known "
                         f"last axis. Received: input_shape={tuple(input_shape)}.")
    if axis not in (-1, rank - 1):
        raise ConfigError(f"Layer {layer.name!r}: only the {what} can be normalized. "
                          f"Received: axis={layer.axis!r} for rank {rank}.")
    return (input_shape[-1],)
