"""Tensor and Variable, with TensorFlow's names: the values a GradientTape records.

A Tensor wraps a numpy array that no one changes. A Variable is a Tensor whose value is
assigned: the engine's weights are Variables (a Dense kernel is one, with the `.grad` its
layer's backward adds into), and so are the `W` and `b` of a hand-written model. Python's
operators on either are the differentiable ops of ops.py, which sets them on Tensor (as
tinygrad does), so that this module needs nothing above it: no tensor -> ops -> tape ->
tensor import cycle.
"""
from typing import Optional

import numpy as np

from .errors import ShapeError


class Tensor:
    """An immutable value. `numpy()` gives it as an array; numpy functions see an array."""

    # numpy hands mixed expressions back to us (np.float32(2) * t calls t.__rmul__), so
    # they stay Tensors and stay on the tape instead of silently becoming arrays.
    __array_ufunc__ = None

    def __init__(self, value: np.ndarray) -> None:
        self.value = value

    @property
    def shape(self):
        return self.value.shape

    @property
    def dtype(self):
        return self.value.dtype

    @property
    def ndim(self):
        return self.value.ndim

    def numpy(self) -> np.ndarray:
        """The value as a numpy array (a copy)."""
        return np.array(self.value)

    def __array__(self, dtype=None, copy=None):
        return np.array(self.value, dtype=dtype, copy=copy)

    def __float__(self):
        return float(self.value)

    def __format__(self, spec):     # f"{loss:.4f}", as a TensorFlow scalar allows
        return format(self.value, spec)

    def __len__(self):
        return len(self.value)

    def __repr__(self):
        return (f"<retrain.{type(self).__name__} shape={self.shape} dtype={self.dtype} "
                f"numpy={np.array2string(np.asarray(self.value), threshold=20)}>")


class Variable(Tensor):
    """A named float32 value that can be assigned: a layer's weight or a variable of one's
    own, `Variable(initial_value, trainable=True, name=...)` as tf.Variable. A tape watches
    trainable Variables by itself. `.grad` is where a layer's backward adds its gradient."""

    def __init__(self, initial_value: object, trainable: bool = True,
                 name: str = "Variable") -> None:
        super().__init__(np.array(initial_value, np.float32))
        self.name = name
        self.grad = np.zeros_like(self.value)
        self.trainable = bool(trainable)

    def assign(self, value: object) -> "Variable":
        """Set the value in place (the same shape), as TensorFlow's assign."""
        value = np.array(value, np.float32)
        if value.shape != self.value.shape:
            raise ShapeError(f"Weight {self.name!r} expects shape {self.value.shape}. "
                             f"Received: shape={value.shape}.")
        self.value = value
        return self

    def assign_add(self, delta: object) -> "Variable":
        """value += delta."""
        return self.assign(self.value + np.asarray(delta, np.float32))

    def assign_sub(self, delta: object) -> "Variable":
        """value -= delta."""
        return self.assign(self.value - np.asarray(delta, np.float32))

    def __repr__(self):
        return f"<Variable {self.name} shape={self.shape} trainable={self.trainable}>"


def constant(value: object, dtype: Optional[np.dtype] = None) -> Tensor:
    """A Tensor of `value`. Python numbers and lists become float32 (TensorFlow keeps ints
    as int32; here every value is one that can be differentiated); numpy arrays keep their
    dtype unless `dtype` is given."""
    if isinstance(value, Tensor):
        value = value.value
    elif dtype is None and not isinstance(value, (np.ndarray, np.generic)):
        dtype = np.float32
    return Tensor(np.array(value, dtype=dtype))

