"""Weight initializers with Keras names, drawing from one engine-wide seeded generator."""
from typing import Optional

import numpy as np

from .errors import ConfigError
from .naming import to_snake_case

_rng = np.random.default_rng()


def set_random_seed(seed: Optional[int]) -> None:
    """Seed every random choice the engine makes (initializers, dropout, shuffling)."""
    global _rng
    _rng = np.random.default_rng(seed)


def rng():
    """The engine's generator; library code draws from it, never from np.random's global state."""
    return _rng


def _fans(shape):
    if len(shape) < 2:
        return shape[0] if shape else 1, shape[0] if shape else 1
    receptive = int(np.prod(shape[:-2]))
    return shape[-2] * receptive, shape[-1] * receptive


def zeros(shape):
    return np.zeros(shape, np.float32)


def ones(shape):
    return np.ones(shape, np.float32)


def glorot_uniform(shape):
    fan_in, fan_out = _fans(shape)
    limit = np.sqrt(6.0 / (fan_in + fan_out))
    return _rng.uniform(-limit, limit, shape).astype(np.float32)


def he_normal(shape):
    fan_in, _ = _fans(shape)
    std = np.sqrt(2.0 / fan_in)
    return np.clip(_rng.normal(0, std, shape), -2 * std, 2 * std).astype(np.float32)


_INITIALIZERS = {"zeros": zeros, "ones": ones, "glorot_uniform": glorot_uniform,
                 "he_normal": he_normal}


def get(identifier):
    """Resolve a Keras initializer name (or a Keras config dict) to a function shape -> array."""
    if callable(identifier):
        return identifier
    if isinstance(identifier, dict):
        identifier = identifier.get("class_name", "")
    key = to_snake_case(str(identifier))
    if key not in _INITIALIZERS:
        raise ConfigError(f"Unknown initializer. Received: initializer={identifier!r}. "
                          f"Use one of {sorted(_INITIALIZERS)}.")
    return _INITIALIZERS[key]

