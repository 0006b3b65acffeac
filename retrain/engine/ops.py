"""Differentiable ops with TensorFlow's names: `retrain.ops.matmul`, `reduce_mean`, ...

Each op computes its value with numpy and records, right below, the gradient of each of its
inputs given the gradient `g` of its output. Those gradients are written with these same
ops, so a tape recording around another tape's `gradient` differentiates them again (second
derivatives). Inputs may be Tensors, Variables, numpy arrays or Python numbers; numbers
take the dtype of the Tensor they meet. Broadcasting follows numpy, and the gradient of a
broadcast input is summed back to its shape (`_sum_to`).
"""
import numbers

import numpy as np

from . import activations
from .errors import ConfigError, ShapeError
from . import tape
from .tensor import Tensor, Variable, constant

__all__ = ["add", "subtract", "multiply", "divide", "negative", "power", "square", "sqrt",
           "exp", "log", "matmul", "transpose", "reshape", "broadcast_to", "reduce_sum",
           "reduce_mean", "relu", "sigmoid", "softmax"]


def _tensor(x, like=None):
    """x as a Tensor. A Variable is read: the op sees its value now, as TensorFlow's
    ReadVariableOp, and a later `assign` does not change what the tape recorded."""
    if isinstance(x, Variable):
        return tape.record([x], x.value, lambda g: [g])
    if isinstance(x, Tensor):
        return x
    dtype = like.dtype if isinstance(x, numbers.Number) and like is not None else None
    return constant(x, dtype)


def _pair(a, b):
    like = a if isinstance(a, Tensor) else b if isinstance(b, Tensor) else None
    return _tensor(a, like), _tensor(b, like)


def _sum_to(g, shape):
    """The gradient of an input broadcast to g's shape: g summed over the axes that
    broadcasting added in front or stretched from 1."""
    if g.shape == shape:
        return g
    lead = g.ndim - len(shape)
    axes = tuple(range(lead)) + tuple(lead + i for i, n in enumerate(shape)
                                      if n == 1 and g.shape[lead + i] != 1)
    return reshape(reduce_sum(g, axis=axes, keepdims=True), shape)


def add(a, b):
    a, b = _pair(a, b)
    return tape.record([a, b], a.value + b.value,
                       lambda g: [_sum_to(g, a.shape), _sum_to(g, b.shape)])


def subtract(a, b):
    a, b = _pair(a, b)
    return tape.record([a, b], a.value - b.value,
                       lambda g: [_sum_to(g, a.shape), _sum_to(-g, b.shape)])


def multiply(a, b):
    a, b = _pair(a, b)
    return tape.record([a, b], a.value * b.value,
                       lambda g: [_sum_to(g * b, a.shape), _sum_to(g * a, b.shape)])


def divide(a, b):
    a, b = _pair(a, b)
    return tape.record([a, b], a.value / b.value,
                       lambda g: [_sum_to(g / b, a.shape), _sum_to(-g * a / (b * b), b.shape)])


def negative(x):
    x = _tensor(x)
    return tape.record([x], -x.value, lambda g: [-g])


def power(x, exponent):
    """x ** exponent for a number `exponent` (a tensor exponent is not supported)."""
    if not isinstance(exponent, numbers.Real):
        raise ConfigError("The exponent of ** must be a number. Received: "
                          f"{type(exponent).__name__}. Use exp(b * log(x)) for a tensor b.")
    x = _tensor(x)

    def backward(g):     # stops at x ** 1: no x ** 0 (and its 0 * x ** -1) in the tape
        return [g * exponent if exponent == 1 else g * exponent * x ** (exponent - 1)]
    return tape.record([x], x.value ** exponent, backward)


def square(x):
    x = _tensor(x)
    return tape.record([x], np.square(x.value), lambda g: [g * 2 * x])


def sqrt(x):
    x = _tensor(x)
    y = tape.record([x], np.sqrt(x.value), lambda g: [g / (2 * y)])
    return y


def exp(x):
    x = _tensor(x)
    y = tape.record([x], np.exp(x.value), lambda g: [g * y])
    return y


def log(x):
    x = _tensor(x)
    return tape.record([x], np.log(x.value), lambda g: [g / x])


def matmul(a, b):
    """Matrix product of the last two axes; leading axes broadcast (a batch of matrices)."""
    a, b = _pair(a, b)
    if a.ndim < 2 or b.ndim < 2:
        raise ShapeError(f"matmul needs tensors of rank >= 2. Received: shapes {a.shape} and "
                         f"{b.shape}. Reshape a vector v to (1, n) or (n, 1) first.")
    return tape.record([a, b], np.matmul(a.value, b.value),
                       lambda g: [_sum_to(matmul(g, _swap_last(b)), a.shape),
                                  _sum_to(matmul(_swap_last(a), g), b.shape)])


def _swap_last(x):
    axes = list(range(x.ndim))
    axes[-2:] = axes[-1], axes[-2]
    return transpose(x, axes)


def transpose(x, perm=None):
    x = _tensor(x)
    perm = tuple(range(x.ndim))[::-1] if perm is None else tuple(perm)
    return tape.record([x], np.transpose(x.value, perm),
                       lambda g: [transpose(g, tuple(np.argsort(perm)))])


def reshape(x, shape):
    x = _tensor(x)
    return tape.record([x], np.reshape(x.value, shape), lambda g: [reshape(g, x.shape)])


def broadcast_to(x, shape):
    x = _tensor(x)
    return tape.record([x], np.broadcast_to(x.value, shape), lambda g: [_sum_to(g, x.shape)])


def _kept_shape(shape, axis):
    """The shape of a reduction over `axis` with keepdims (None: every axis)."""
    if axis is None:
        return (1,) * len(shape)
    axes = {int(a) % len(shape) for a in np.atleast_1d(axis)}
    return tuple(1 if i in axes else n for i, n in enumerate(shape))


def reduce_sum(x, axis=None, keepdims=False):
    x = _tensor(x)
    axis = tuple(axis) if isinstance(axis, list) else axis
    kept = _kept_shape(x.shape, axis)
    return tape.record([x], np.sum(x.value, axis=axis, keepdims=keepdims),
                       lambda g: [broadcast_to(reshape(g, kept), x.shape)])


def reduce_mean(x, axis=None, keepdims=False):
    x = _tensor(x)
    count = x.value.size // max(int(np.prod(_kept_shape(x.shape, axis))), 1)
    return reduce_sum(x, axis, keepdims) / count


def relu(x):
    x = _tensor(x)
    return tape.record([x], activations.relu(x.value),
                       lambda g: [g * (x.value > 0).astype(x.dtype)])


def sigmoid(x):
    x = _tensor(x)
    y = tape.record([x], activations.sigmoid(x.value), lambda g: [g * y * (1 - y)])
    return y


def softmax(x, axis=-1):
    """The differentiable softmax: activations.softmax forward, its backward in ops."""
    x = _tensor(x)
    y = tape.record([x], activations.softmax(x.value, axis),
                    lambda g: [y * (g - reduce_sum(g * y, axis=axis, keepdims=True))])
    return y


def _reflected(op):
    return lambda self, other: op(other, self)


# Python's operators on Tensors (and Variables) are the ops above: set here, beside them, so
# that tensor.py imports nothing it is built on. retrain.engine imports this module, so any
# Tensor has them.
for _name, _op in {"add": add, "sub": subtract, "mul": multiply, "truediv": divide,
                   "matmul": matmul}.items():
    setattr(Tensor, f"__{_name}__", _op)
    setattr(Tensor, f"__r{_name}__", _reflected(_op))
Tensor.__pow__ = power
Tensor.__neg__ = negative
