"""Pooling layers: MaxPooling2D, AveragePooling2D and the two global poolings (NHWC)."""
import numpy as np

from .. import kernels
from ..inference_steps import Whole
from ..layer import Layer, register
from .core import check_data_format, check_padding, check_rank, int_pair

__all__ = ["MaxPooling2D", "AveragePooling2D", "GlobalAveragePooling2D", "GlobalMaxPooling2D"]


class _Pooling2D(Layer):
    """Window arguments shared by MaxPooling2D and AveragePooling2D; strides default to
    pool_size, as in Keras."""

    def __init__(self, pool_size=(2, 2), strides=None, padding="valid", data_format=None,
                 **kwargs):
        super().__init__(**kwargs)
        label = type(self).__name__
        self.pool_size = int_pair(label, "pool_size", pool_size)
        self.strides = self.pool_size if strides is None else int_pair(label, "strides", strides)
        self.padding = check_padding(label, padding)
        self.data_format = check_data_format(label, data_format)

    def build(self, input_shape):
        check_rank(self, input_shape, 4)

    def _pads(self, x):
        return kernels.window_pads(x.shape[1:3], self.pool_size, self.strides, (1, 1),
                                   self.padding)


    def to_inference(self, srcs, new_vid):
        forward = self._kernel_forward

        def pool(x, out):
            out[...] = forward(x, self.pool_size, self.strides, self._pads(x))
        return [Whole(srcs, new_vid(), self, pool)]

    def to_onnx(self, graph, xs, shapes):
        mean = self._onnx_op == "AveragePool"     # TF: the mean of the real (unpadded) cells
        return graph.node(self._onnx_op, xs, self.name, kernel_shape=list(self.pool_size),
                          strides=list(self.strides), **({"count_include_pad": 0} if mean
                                                         else {}),
                          **graph.pads(self.padding, shapes[0], self.pool_size, self.strides,
                                       (1, 1)))

    def compute_output_shape(self, input_shape):
        spatial = [kernels.output_length(n, k, s, 1, self.padding)
                   for n, k, s in zip(input_shape[1:3], self.pool_size, self.strides)]
        return (input_shape[0], *spatial, input_shape[3])

    def get_config(self):
        return {**super().get_config(), "pool_size": list(self.pool_size),
                "padding": self.padding, "strides": list(self.strides),
                "data_format": self.data_format}


@register
class MaxPooling2D(_Pooling2D):
    """Max over each window: (N, H, W, C) -> (N, Ho, Wo, C). 'same' pads with -inf, and the
    backward routes each window's gradient to its first maximum (row-major), as TF does."""
    _kernel_forward, _onnx_op = staticmethod(kernels.max_pool2d_forward), "MaxPool"

    def forward(self, x, training=False):
        pads = self._pads(x)
        self._cache = (x, pads)
        return kernels.max_pool2d_forward(x, self.pool_size, self.strides, pads)

    def backward(self, dy):
        x, pads = self._cache
        return kernels.max_pool2d_backward(dy, x, self.pool_size, self.strides, pads)


@register
class AveragePooling2D(_Pooling2D):
    """Mean over each window: (N, H, W, C) -> (N, Ho, Wo, C). 'same' divides each window by
    its number of real (unpadded) cells, as TF does."""
    _kernel_forward, _onnx_op = staticmethod(kernels.avg_pool2d_forward), "AveragePool"

    def forward(self, x, training=False):
        pads = self._pads(x)
        self._cache = (x, pads)
        return kernels.avg_pool2d_forward(x, self.pool_size, self.strides, pads)

    def backward(self, dy):
        x, pads = self._cache
        return kernels.avg_pool2d_backward(dy, x, self.pool_size, self.strides, pads)


class _GlobalPooling2D(Layer):
    """(N, H, W, C) -> (N, C), or (N, 1, 1, C) with keepdims=True."""

    def __init__(self, data_format=None, keepdims=False, **kwargs):
        super().__init__(**kwargs)
        self.data_format = check_data_format(type(self).__name__, data_format)
        self.keepdims = bool(keepdims)

    def build(self, input_shape):
        check_rank(self, input_shape, 4)

    def to_inference(self, srcs, new_vid):
        reduce, keepdims = self._reduce, self.keepdims
        return [Whole(srcs, new_vid(), self, lambda x, out: reduce(
            x, axis=(1, 2), keepdims=keepdims, out=out))]

    def to_onnx(self, graph, xs, shapes):
        y = graph.node(self._onnx_op, xs, self.name if self.keepdims else f"{self.name}/pool")
        return y if self.keepdims else graph.node("Flatten", [y], self.name, axis=1)

    def compute_output_shape(self, input_shape):
        if self.keepdims:
            return (input_shape[0], 1, 1, input_shape[3])
        return (input_shape[0], input_shape[3])

    def get_config(self):
        return {**super().get_config(), "data_format": self.data_format,
                "keepdims": self.keepdims}


@register
class GlobalAveragePooling2D(_GlobalPooling2D):
    """Mean over H and W."""
    _reduce, _onnx_op = staticmethod(np.mean), "GlobalAveragePool"

    def forward(self, x, training=False):
        self._cache = x.shape
        return x.mean(axis=(1, 2), keepdims=self.keepdims)

    def backward(self, dy):
        n, h, w, c = self._cache
        share = dy.reshape(n, 1, 1, c) * (1 / (h * w))
        return np.broadcast_to(share, self._cache).copy()


@register
class GlobalMaxPooling2D(_GlobalPooling2D):
    """Max over H and W. Backward splits the gradient evenly between tied maxima, as TF's
    reduce_max gradient does (unlike MaxPooling2D, which picks the first)."""
    _reduce, _onnx_op = staticmethod(np.max), "GlobalMaxPool"

    def forward(self, x, training=False):
        y = x.max(axis=(1, 2), keepdims=True)
        self._cache = (x, y)
        return y if self.keepdims else y.reshape(y.shape[0], y.shape[3])

    def backward(self, dy):
        x, y = self._cache
        winners = x == y
        counts = winners.sum(axis=(1, 2), keepdims=True, dtype=dy.dtype)
        return winners * (dy.reshape(y.shape) / counts)
