"""Typed engine errors. Each also inherits the matching builtin (as scikit-learn's do), so
callers may catch either `EngineError` or plain `ValueError`/`OSError`."""


class EngineError(Exception):
    """Base of every error the engine raises on purpose. `hint` says what to do."""

    def __init__(self, message, hint=None):
        super().__init__(message)
        self.hint = hint


class ConfigError(EngineError, ValueError):
    """A layer, model or optimizer was given an invalid argument."""


class ShapeError(EngineError, ValueError):
    """An input or weight has the wrong shape."""


class WeightsError(EngineError, ValueError):
    """A weight file does not fit the model: a missing layer, a wrong shape."""


class ModelFileError(EngineError, OSError):
    """A model or weight file is missing, corrupt, truncated or malformed."""


class UnsupportedLayerError(EngineError, ValueError):
    """A model file names a layer type the engine does not implement (e.g. Lambda)."""


class GradientError(EngineError, RuntimeError):
    """A gradient cannot be computed: a non-persistent tape asked twice, or a second
    derivative through a layer or loss that is differentiable once."""
