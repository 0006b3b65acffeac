"""Every error retrain raises on purpose. Each subclass also inherits the matching builtin,
so callers can catch `RetrainError` or plain `ValueError`/`OSError`. The CLI turns them
into one line with a hint; the library never prints."""
from .engine.errors import (ConfigError, EngineError, GradientError, ModelFileError,
                            ShapeError, UnsupportedLayerError, WeightsError)

RetrainError = EngineError


class UsageError(ConfigError):
    """The command line itself is wrong: an unknown option, a bad value, a missing one."""


class Interrupted(KeyboardInterrupt):
    """Ctrl-C or SIGTERM stopped feature extraction after the features computed so far were
    written to the cache: `kept` of the `total` images that needed the backbone. A
    KeyboardInterrupt, so that whatever catches Ctrl-C still does."""

    def __init__(self, kept, total):
        super().__init__(f"interrupted after {kept} of {total} images")
        self.kept, self.total = kept, total


class AccuracyBelowThreshold(RetrainError, ValueError):
    """`fit --assert-accuracy-at-least X` and the test accuracy is below X: the run is
    complete and written, and the CLI exits with status 3 (a CI gate)."""
    exit_status = 3


class DataError(RetrainError, ValueError):
    """The dataset folder cannot be used as given (too few classes, an empty class...)."""


class ImageError(RetrainError, ValueError):
    """One image file cannot be decoded safely (corrupt, truncated, a decompression bomb...)."""


class UnsafeFileError(RetrainError, ValueError):
    """A file asks to run code or import something a weight file never needs."""


class ClusterError(RetrainError, ConnectionError):
    """The Dask cluster of `--dask` cannot be reached, or lost the work it was given."""


class PretrainedMissingError(RetrainError, FileNotFoundError):
    """Pretrained weights are not on disk yet."""


class RequestRefused(RetrainError, ValueError):
    """`retrain serve` refuses one request (too large, not an image, too busy...): `status`
    is the HTTP status it answers with, `message` the reason in its JSON; the server goes on.
    `retry_after` (seconds) is set when trying again later will do."""

    def __init__(self, status, message, hint=None, retry_after=None):
        super().__init__(message, hint=hint)
        self.status, self.retry_after = status, retry_after


__all__ = ["RetrainError", "ConfigError", "GradientError", "ModelFileError", "ShapeError",
           "UnsupportedLayerError", "WeightsError", "UsageError", "Interrupted", "DataError", "ImageError",
           "UnsafeFileError", "PretrainedMissingError", "ClusterError", "RequestRefused"]
