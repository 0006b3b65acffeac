"""Activation functions, each next to its derivative, with Keras 3's names and formulas.

A forward takes x and returns y; a backward takes (dy, x, y) and returns dx, using whichever
of x and y is cheaper. Both keep the input dtype: constants are Python floats, which numpy
does not let promote a float32 array.
"""
import math
from dataclasses import dataclass
from typing import Callable

import numpy as np

from .errors import ConfigError

SELU_ALPHA = 1.6732632423543772848170429916717
SELU_SCALE = 1.0507009873554804934193349852946


@dataclass(frozen=True)
class ActivationFunction:
    """A named activation: `forward(x) -> y` and `backward(dy, x, y) -> dx`."""
    name: str
    forward: Callable
    backward: Callable


def linear(x):
    return x


def linear_backward(dy, x, y):
    return dy


def relu(x, negative_slope=0.0, max_value=None, threshold=0.0):
    """Keras's relu: max_value if x >= max_value, x if threshold < x < max_value, and
    negative_slope * (x - threshold) otherwise."""
    if negative_slope == 0.0 and threshold == 0.0:
        y = np.maximum(x, 0)
    else:
        y = np.where(x > threshold, x, negative_slope * (x - threshold))
    return y if max_value is None else np.minimum(y, max_value)


def relu_backward(dy, x, y=None, negative_slope=0.0, max_value=None, threshold=0.0):
    passes = x > threshold
    if max_value is not None:
        passes &= x < max_value
    dx = dy * passes
    if negative_slope != 0.0:
        dx += dy * (x <= threshold) * negative_slope
    return dx


def relu6(x):
    return relu(x, max_value=6.0)


def relu6_backward(dy, x, y):
    return relu_backward(dy, x, max_value=6.0)


def sigmoid(x):
    """1 / (1 + exp(-x)), computed from exp(-|x|) so that it never overflows."""
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1 / (1 + e), e / (1 + e))


def sigmoid_backward(dy, x, y):
    return dy * y * (1 - y)


def tanh(x):
    return np.tanh(x)


def tanh_backward(dy, x, y):
    return dy * (1 - y * y)


def softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    """exp(x) / sum(exp(x)) after subtracting the max: logits of 125 would overflow float32.
    The one softmax: layers, the inference plan and `retrain classify` all use it."""
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def log_softmax(x, axis=-1):
    """log(softmax(x)) without forming softmax (whose zeros would give -inf): the
    crossentropy from logits uses it."""
    shifted = x - np.max(x, axis=axis, keepdims=True)
    return shifted - np.log(np.sum(np.exp(shifted), axis=axis, keepdims=True))


def softmax_backward(dy, x, y, axis=-1):
    return y * (dy - (dy * y).sum(axis=axis, keepdims=True))


def silu(x):
    """x * sigmoid(x); Keras calls it both swish and silu."""
    return x * sigmoid(x)


def silu_backward(dy, x, y):
    s = sigmoid(x)
    return dy * s * (1 + x * (1 - s))


def elu(x):
    """x if x > 0 else exp(x) - 1 (alpha = 1, Keras's default)."""
    return np.where(x > 0, x, np.expm1(np.minimum(x, 0)))


def elu_backward(dy, x, y):
    return dy * np.where(x > 0, 1, y + 1)


def selu(x):
    return SELU_SCALE * np.where(x > 0, x, SELU_ALPHA * np.expm1(np.minimum(x, 0)))


def selu_backward(dy, x, y):
    return dy * np.where(x > 0, SELU_SCALE, y + SELU_SCALE * SELU_ALPHA)


def erf(x):
    """The error function to float64 accuracy (numpy has none).

    |x| < 2.5: the all-positive series erf(z) = 2/sqrt(pi) exp(-z^2) sum_n (2z^2)^n z /
    (1*3*...*(2n+1)), which has no cancellation; beyond, 1 - erfc(z) with erfc's continued
    fraction. Computed in float64 and returned in x's dtype.
    """
    x = np.asarray(x)
    z = np.abs(x).astype(np.float64)
    out = np.empty_like(z)
    small = z < 2.5
    zs = z[small]
    term, total = zs.copy(), zs.copy()
    for n in range(1, 50):
        term *= 2 * zs * zs / (2 * n + 1)
        total += term
    out[small] = 2 / math.sqrt(math.pi) * np.exp(-zs * zs) * total
    zl = z[~small]
    fraction = zl.copy()
    for k in range(60, 0, -1):           # z + (1/2)/(z + 1/(z + (3/2)/(z + ...)))
        fraction = zl + (k / 2) / fraction
    out[~small] = 1 - np.exp(-zl * zl) / (math.sqrt(math.pi) * fraction)
    return (np.sign(x) * out).astype(x.dtype)


def gelu(x):
    """The exact GELU, x * Phi(x) = 0.5 x (1 + erf(x / sqrt 2)) (Keras's approximate=False)."""
    return 0.5 * x * (1 + erf(x / math.sqrt(2)))


def gelu_backward(dy, x, y):
    cdf = 0.5 * (1 + erf(x / math.sqrt(2)))
    return dy * (cdf + x * np.exp(-0.5 * x * x) / math.sqrt(2 * math.pi))


def hard_sigmoid(x):
    """Keras 3's relu6(x + 3) / 6. (Keras 2 used clip(0.2x + 0.5, 0, 1), which differs.)"""
    return np.clip(x + 3, 0, 6) / 6


def hard_sigmoid_backward(dy, x, y):
    return dy * ((x > -3) & (x < 3)) / 6


def softplus(x):
    """log(1 + exp(x)) = max(x, 0) + log1p(exp(-|x|)), which never overflows."""
    return np.maximum(x, 0) + np.log1p(np.exp(-np.abs(x)))


def softplus_backward(dy, x, y):
    return dy * sigmoid(x)


def softsign(x):
    return x / (1 + np.abs(x))


def softsign_backward(dy, x, y):
    return dy / np.square(1 + np.abs(x))


def exponential(x):
    return np.exp(x)


def exponential_backward(dy, x, y):
    return dy * y


_PAIRS = {
    "linear": (linear, linear_backward),
    "relu": (relu, relu_backward),
    "relu6": (relu6, relu6_backward),
    "sigmoid": (sigmoid, sigmoid_backward),
    "tanh": (tanh, tanh_backward),
    "softmax": (softmax, softmax_backward),
    "silu": (silu, silu_backward),
    "swish": (silu, silu_backward),
    "elu": (elu, elu_backward),
    "selu": (selu, selu_backward),
    "gelu": (gelu, gelu_backward),
    "hard_sigmoid": (hard_sigmoid, hard_sigmoid_backward),
    "softplus": (softplus, softplus_backward),
    "softsign": (softsign, softsign_backward),
    "exponential": (exponential, exponential_backward),
}

NAMES = sorted(_PAIRS)


def get(identifier):
    """Resolve a Keras activation name ('relu', 'swish', ...; None means 'linear')."""
    if isinstance(identifier, ActivationFunction):
        return identifier
    name = "linear" if identifier is None else identifier
    if not isinstance(name, str) or name not in _PAIRS:
        raise ConfigError(f"Unknown activation. Received: activation={identifier!r}. "
                          f"Use one of {NAMES} (or None for linear).")
    forward, backward = _PAIRS[name]
    return ActivationFunction(name, forward, backward)
