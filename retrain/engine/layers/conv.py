"""Convolution layers: Conv2D, DepthwiseConv2D and ZeroPadding2D (NHWC, Keras semantics).

The math lives in `kernels`; these classes validate arguments, own the weights and route
gradients.
"""
import numpy as np

from .. import activations, kernels
from ..errors import ConfigError, ShapeError
from ..inference_steps import Depthwise, Matmul, Pad, Window
from ..layer import Layer, register
from .core import (check_channels, check_data_format, check_initializer, check_padding,
                   check_rank, int_pair, positive_int)

__all__ = ["Conv2D", "DepthwiseConv2D", "ZeroPadding2D"]


# -- convolutions ---------------------------------------------------------------------------
class _BaseConv(Layer):
    """What Conv2D and DepthwiseConv2D share: window arguments, bias, fused activation."""
    _depthwise = False

    def __init__(self, kernel_size, strides, padding, data_format, dilation_rate, activation,
                 use_bias, bias_initializer, **kwargs):
        super().__init__(**kwargs)
        label = type(self).__name__
        self.kernel_size = int_pair(label, "kernel_size", kernel_size)
        self.strides = int_pair(label, "strides", strides)
        self.padding = check_padding(label, padding)
        self.data_format = check_data_format(label, data_format)
        self.dilation_rate = int_pair(label, "dilation_rate", dilation_rate)
        self.activation = activations.get(activation)
        self.use_bias = bool(use_bias)
        self.bias_initializer = check_initializer(label, "bias_initializer", bias_initializer)
        self.bias = None

    def _pads(self, x):
        return kernels.window_pads(x.shape[1:3], self.kernel_size, self.strides,
                                   self.dilation_rate, self.padding)

    def _finish(self, x, pads, z):
        """Add the bias, apply the activation and cache what backward needs."""
        if self.bias is not None:
            z += self.bias.value
        y = self.activation.forward(z)
        self._cache = (x, pads, z, y)
        return y

    def _start_backward(self, dy):
        """dLoss/d(pre-activation), with the bias gradient added; also returns x and pads."""
        x, pads, z, y = self._cache
        dz = self.activation.backward(dy, z, y)
        if self.trainable and self.bias is not None:
            self.bias.grad += dz.sum(axis=(0, 1, 2))
        return dz, x, pads

    def to_inference(self, srcs, new_vid):
        """[a Pad for 'same'] then a Matmul (1x1, stride 1), Window or Depthwise step."""
        depthwise = self._depthwise
        kernel = (self.depthwise_kernel if depthwise else self.kernel).value
        if not depthwise and kernel.shape[:2] == (1, 1) and self.strides == (1, 1):
            return [Matmul(srcs, new_vid(), self, kernel.reshape(kernel.shape[2:]))]
        before, src = [], srcs[0]
        if self.padding == "same":
            before.append(Pad([src], new_vid(), lambda spatial: kernels.window_pads(
                spatial, kernel.shape[:2], self.strides, self.dilation_rate, "same")))
            src = before[0].output
        return before + [(Depthwise if depthwise else Window)([src], new_vid(), self, kernel)]

    def to_onnx(self, graph, xs, shapes):
        if self._depthwise:                     # (kh, kw, C, M) -> (C*M, 1, kh, kw), group C
            kernel = self.depthwise_kernel.value
            weight = kernel.transpose(2, 3, 0, 1).reshape((-1, 1) + kernel.shape[:2])
            group = kernel.shape[2]
        else:                                   # HWIO -> OIHW
            kernel = self.kernel.value
            weight, group = kernel.transpose(3, 2, 0, 1), 1
        inputs = [xs[0], graph.constant(f"{self.name}/kernel", weight)]
        if self.bias is not None:
            inputs.append(graph.constant(f"{self.name}/bias", self.bias.value))
        y = graph.node("Conv", inputs, self.name, kernel_shape=list(kernel.shape[:2]),
                       strides=list(self.strides), dilations=list(self.dilation_rate),
                       group=group, **graph.pads(self.padding, shapes[0], kernel.shape[:2],
                                                 self.strides, self.dilation_rate))
        return graph.activation(self.activation.name, y, 4, self.name)

    def compute_output_shape(self, input_shape):
        spatial = [kernels.output_length(n, k, s, d, self.padding) for n, k, s, d in
                   zip(input_shape[1:3], self.kernel_size, self.strides, self.dilation_rate)]
        if any(n is not None and n <= 0 for n in spatial):
            raise ShapeError(f"Layer {self.name!r}: a {self.kernel_size} window with "
                             f"dilation {self.dilation_rate} does not fit a 'valid' input of "
                             f"{tuple(input_shape[1:3])}. Use padding='same' or a larger input.")
        return (input_shape[0], *spatial, self._out_channels(input_shape[-1]))

    def get_config(self):
        return {**super().get_config(), "kernel_size": list(self.kernel_size),
                "strides": list(self.strides), "padding": self.padding,
                "data_format": self.data_format, "dilation_rate": list(self.dilation_rate),
                "activation": self.activation.name, "use_bias": self.use_bias,
                "bias_initializer": self.bias_initializer}


@register
class Conv2D(_BaseConv):
    """2-D convolution: (N, H, W, C) -> (N, Ho, Wo, filters), kernel (kh, kw, C, filters).
    'same' pads as TF does, the odd extra row/column at the bottom/right."""
    torch_weights = {"kernel": ("weight", (2, 3, 1, 0)), "bias": ("bias", None)}  # OIHW

    def __init__(self, filters, kernel_size, strides=(1, 1), padding="valid", data_format=None,
                 dilation_rate=(1, 1), groups=1, activation=None, use_bias=True,
                 kernel_initializer="glorot_uniform", bias_initializer="zeros", **kwargs):
        super().__init__(kernel_size, strides, padding, data_format, dilation_rate, activation,
                         use_bias, bias_initializer, **kwargs)
        self.filters = positive_int("Conv2D", "filters", filters)
        if groups != 1:
            raise ConfigError(f"Conv2D: grouped convolution is not supported. "
                              f"Received: groups={groups!r}. Use groups=1.")
        self.kernel_initializer = check_initializer("Conv2D", "kernel_initializer",
                                                    kernel_initializer)

    def build(self, input_shape):
        check_rank(self, input_shape, 4)
        self.compute_output_shape(input_shape)
        self.kernel = self.add_weight("kernel", self.kernel_size + (input_shape[-1], self.filters),
                                      self.kernel_initializer)
        if self.use_bias:
            self.bias = self.add_weight("bias", (self.filters,), self.bias_initializer)

    def forward(self, x, training=False):
        check_channels(self, x, self.kernel.shape[2])
        pads = self._pads(x)
        z = kernels.conv2d_forward(x, self.kernel.value, self.strides, self.dilation_rate, pads)
        return self._finish(x, pads, z)

    def backward(self, dy):
        dz, x, pads = self._start_backward(dy)
        dx, dkernel = kernels.conv2d_backward(dz, x, self.kernel.value, self.strides,
                                              self.dilation_rate, pads, self.trainable)
        if self.trainable:
            self.kernel.grad += dkernel
        return dx

    def _out_channels(self, in_channels):
        return self.filters

    def get_config(self):
        return {**super().get_config(), "filters": self.filters, "groups": 1,
                "kernel_initializer": self.kernel_initializer}


@register
class DepthwiseConv2D(_BaseConv):
    """Per-channel convolution: (N, H, W, C) -> (N, Ho, Wo, C*depth_multiplier), weight
    `depthwise_kernel` (kh, kw, C, M); output channel c*M + m uses depthwise_kernel[:, :, c, m]."""
    torch_weights = {"depthwise_kernel": ("weight", (2, 3, 0, 1)),   # (C, 1, kh, kw)
                     "bias": ("bias", None)}
    _depthwise = True

    def __init__(self, kernel_size, strides=(1, 1), padding="valid", depth_multiplier=1,
                 data_format=None, dilation_rate=(1, 1), activation=None, use_bias=True,
                 depthwise_initializer="glorot_uniform", bias_initializer="zeros", **kwargs):
        super().__init__(kernel_size, strides, padding, data_format, dilation_rate, activation,
                         use_bias, bias_initializer, **kwargs)
        self.depth_multiplier = positive_int("DepthwiseConv2D", "depth_multiplier",
                                             depth_multiplier)
        self.depthwise_initializer = check_initializer("DepthwiseConv2D",
                                                       "depthwise_initializer",
                                                       depthwise_initializer)

    def build(self, input_shape):
        check_rank(self, input_shape, 4)
        self.compute_output_shape(input_shape)
        shape = self.kernel_size + (input_shape[-1], self.depth_multiplier)
        self.depthwise_kernel = self.add_weight("depthwise_kernel", shape,
                                                self.depthwise_initializer)
        if self.use_bias:
            self.bias = self.add_weight("bias", (input_shape[-1] * self.depth_multiplier,),
                                        self.bias_initializer)

    def forward(self, x, training=False):
        check_channels(self, x, self.depthwise_kernel.shape[2])
        pads = self._pads(x)
        z = kernels.depthwise_conv2d_forward(x, self.depthwise_kernel.value, self.strides,
                                             self.dilation_rate, pads)
        return self._finish(x, pads, z)

    def backward(self, dy):
        dz, x, pads = self._start_backward(dy)
        dx, dkernel = kernels.depthwise_conv2d_backward(
            dz, x, self.depthwise_kernel.value, self.strides, self.dilation_rate, pads,
            self.trainable)
        if self.trainable:
            self.depthwise_kernel.grad += dkernel
        return dx

    def _out_channels(self, in_channels):
        return None if in_channels is None else in_channels * self.depth_multiplier

    def get_config(self):
        return {**super().get_config(), "depth_multiplier": self.depth_multiplier,
                "depthwise_initializer": self.depthwise_initializer}


@register
class ZeroPadding2D(Layer):
    """Pad H and W with zeros: padding = p | (ph, pw) | ((top, bottom), (left, right))."""

    def __init__(self, padding=(1, 1), data_format=None, **kwargs):
        super().__init__(**kwargs)
        self.data_format = check_data_format("ZeroPadding2D", data_format)
        self.padding = self._normalize(padding)

    @staticmethod
    def _normalize(padding):
        pairs = padding
        if isinstance(padding, (int, np.integer)):
            pairs = ((padding, padding), (padding, padding))
        elif isinstance(padding, (list, tuple)) and all(isinstance(p, (int, np.integer))
                                                        for p in padding):
            pairs = tuple((p, p) for p in padding)
        valid = (isinstance(pairs, (list, tuple)) and len(pairs) == 2 and all(
            isinstance(pair, (list, tuple)) and len(pair) == 2 and all(
                isinstance(p, (int, np.integer)) and not isinstance(p, bool) and p >= 0
                for p in pair) for pair in pairs))
        if not valid:
            raise ConfigError("ZeroPadding2D: `padding` must be an int, (height, width) or "
                              f"((top, bottom), (left, right)) of non-negative ints. "
                              f"Received: padding={padding!r}.")
        return tuple((int(a), int(b)) for a, b in pairs)

    def build(self, input_shape):
        check_rank(self, input_shape, 4)

    def forward(self, x, training=False):
        return kernels.pad2d_forward(x, self.padding)

    def backward(self, dy):
        return kernels.pad2d_backward(dy, self.padding)

    def to_inference(self, srcs, new_vid):
        return [Pad(srcs, new_vid(), lambda spatial: self.padding)]

    def to_onnx(self, graph, xs, shapes):
        (top, bottom), (left, right) = self.padding
        pads = graph.constant(f"{self.name}/pads", [0, 0, top, left, 0, 0, bottom, right],
                              np.int64)
        return graph.node("Pad", [xs[0], pads], self.name)

    def compute_output_shape(self, input_shape):
        (top, bottom), (left, right) = self.padding
        h, w = input_shape[1:3]
        return (input_shape[0], None if h is None else h + top + bottom,
                None if w is None else w + left + right, input_shape[3])

    def get_config(self):
        return {**super().get_config(), "padding": [list(p) for p in self.padding],
                "data_format": self.data_format}
