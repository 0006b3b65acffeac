"""Core layers: InputLayer (and the Input function)."""
import numpy as np

from ..errors import ShapeError
from ..layer import KerasTensor, Layer


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
