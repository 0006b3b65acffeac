"""ImageNet backbones built from the engine's layers, and the frozen feature extractors the
pipeline uses. `load_backbone(name)` is the one entry point the stages need; the registry
(registry.py) is the one list of backbones."""
import json
from pathlib import Path

from ..engine import read_metadata
from ..errors import PretrainedMissingError
from ..files import sha256_file
from .efficientnet_lite import (efficientnet_lite, efficientnet_lite0, efficientnet_lite1,
                                efficientnet_lite2)
from .mobilenet import mobilenet, mobilenet_v2
from .registry import (BACKBONES, DEFAULT_BACKBONE, Backbone, block_layers, block_names,
                       get_backbone)
from .weights import BENCH_FILE, pretrained_dir

__all__ = ["BACKBONES", "DEFAULT_BACKBONE", "Backbone", "get_backbone", "load_backbone",
           "weights_path", "describe_backbones", "block_names", "block_layers", "pretrained_dir",
           "efficientnet_lite", "efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2",
           "mobilenet", "mobilenet_v2"]


def weights_path(name):
    """Where backbone `name`'s converted ImageNet weights live (present or not)."""
    return pretrained_dir() / get_backbone(name).weights_file


def load_backbone(name, weights=None):
    """The frozen ImageNet feature extractor `name`: (N, S, S, 3) images preprocessed by its
    recipe (S its own input size) -> (N, features) pooled features, with the weights of its
    pretrained file, or of the file `weights` names (ours, or Keras's by layer name).
    `model.metadata` holds "backbone", "preprocessing" and "provenance" (with the weights
    file's "weights_sha256")."""
    record = get_backbone(name)
    path = weights_path(name) if weights is None else Path(weights)
    if not path.is_file():
        raise PretrainedMissingError(
            f"The ImageNet weights of backbone {name} are not on disk: {path} is missing.",
            hint=f"Run `{record.how_to_get}`.")
    size = tuple(record.preprocessing["input_size"])       # what its recipe makes
    model = record.builder(include_top=False, pooling="avg", weights=str(path),
                           input_shape=size + (3,))
    model.trainable = False
    provenance = dict(read_metadata(path).get("provenance") or {"source": "retrain pretrained"})
    provenance.update(weights_file=path.name, weights_sha256=sha256_file(path))
    # The registry's recipe, not the file's: one source of truth for every backbone.
    model.metadata = {"backbone": name, "preprocessing": dict(record.preprocessing),
                      "provenance": provenance}
    return model


def describe_backbones(bench_file=BENCH_FILE):
    """One dict per registered backbone, for choosing one: name, params (with the ImageNet
    top), input_size, top1 and top1_source (as published), images_per_s (the backbone
    section of `make bench`'s bench.json at the engine's default batch size; None if not
    measured), weights_file, weights_present and how_to_get (the command that makes it)."""
    measured = _bench_speeds(bench_file)
    return [{"name": b.name, "params": b.params, "input_size": b.preprocessing["input_size"],
             "top1": b.top1, "top1_source": b.top1_source,
             "images_per_s": measured.get(b.name), "weights_file": str(weights_path(b.name)),
             "weights_present": weights_path(b.name).is_file(),
             "how_to_get": b.how_to_get}
            for b in BACKBONES.values()]


def _bench_speeds(bench_file):
    """{backbone: images/s} from bench.json; {} when it is absent or not as bench.py writes."""
    try:
        models = json.loads(bench_file.read_text(encoding="utf-8"))["backbone"]["models"]
        return {name: float(m["at_batch_size"]["images_per_s"]) for name, m in models.items()}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return {}
