"""Where pretrained weights live, and the `weights=` argument every builder shares."""
import os
from pathlib import Path

from ..errors import ModelFileError, PretrainedMissingError

__all__ = ["pretrained_dir", "resolve_weights", "BENCH_FILE"]

# retrain/backbones/weights.py -> the repository root, where `make pretrained` writes.
_REPO_ROOT = Path(__file__).resolve().parents[2]
# Where `make bench` writes its measurements (read by `retrain backbones`).
BENCH_FILE = _REPO_ROOT / "bench.json"


def pretrained_dir():
    """`$RETRAIN_PRETRAINED_DIR` if set, else `pretrained/` in the repository root."""
    override = os.environ.get("RETRAIN_PRETRAINED_DIR")
    return Path(override) if override else _REPO_ROOT / "pretrained"


def resolve_weights(weights, imagenet_file, how_to_get):
    """The file a `weights=` value names: None for None, `pretrained_dir()/imagenet_file`
    for 'imagenet' (PretrainedMissingError with `how_to_get` as the hint when absent), or
    the given path (ModelFileError when absent)."""
    if weights is None:
        return None
    if weights == "imagenet":
        path = pretrained_dir() / imagenet_file
        if not path.is_file():
            raise PretrainedMissingError(f"ImageNet weights are not on disk: {path} is missing.",
                                         hint=how_to_get)
        return path
    path = Path(weights)
    if not path.is_file():
        raise ModelFileError(f"Weights file not found. Received: weights={str(weights)!r}.",
                             hint="Pass None, 'imagenet', or the path of an existing .h5 file.")
    return path

