"""ImageNet backbones built from the engine's layers, and the frozen feature extractors the
pipeline uses. `load_backbone(name)` is the one entry point the stages need."""
from ..engine import read_metadata
from ..errors import ConfigError
from ..files import sha256_file
from .efficientnet_lite import PREPROCESSING as EFFICIENTNET_PREPROCESSING
from .efficientnet_lite import WEIGHTS_FILE, efficientnet_lite0
from .mobilenet import PREPROCESSING as MOBILENET_PREPROCESSING
from .mobilenet import keras_weights_file, mobilenet, mobilenet_v2
from .weights import pretrained_dir

__all__ = ["BACKBONES", "load_backbone", "pretrained_dir", "efficientnet_lite0", "mobilenet",
           "mobilenet_v2"]

BACKBONES = {"efficientnet_lite0": efficientnet_lite0, "mobilenet": mobilenet,
             "mobilenet_v2": mobilenet_v2}

# What load_backbone needs beyond the builder: the ImageNet file it loads, and the recipe and
# provenance to use when that file carries none (Keras Applications files do not).
_FEATURE_EXTRACTORS = {
    "efficientnet_lite0": (WEIGHTS_FILE, EFFICIENTNET_PREPROCESSING,
                           "retrain.backbones.convert (make pretrained)"),
    "mobilenet": (keras_weights_file("mobilenet", 1.0, 224, include_top=False),
                  MOBILENET_PREPROCESSING, "Keras Applications"),
    "mobilenet_v2": (keras_weights_file("mobilenet_v2", 1.0, 224, include_top=False),
                     MOBILENET_PREPROCESSING, "Keras Applications"),
}


def load_backbone(name):
    """The frozen ImageNet feature extractor `name`: (N, 224, 224, 3) preprocessed images ->
    (N, features) pooled features. `model.metadata` holds "backbone", "preprocessing" and
    "provenance" (with the weights file's "weights_sha256")."""
    if name not in BACKBONES:
        raise ConfigError(f"Unknown backbone. Received: name={name!r}. "
                          f"Choose one of {sorted(BACKBONES)}.")
    weights_file, preprocessing, source = _FEATURE_EXTRACTORS[name]
    model = BACKBONES[name](include_top=False, pooling="avg", weights="imagenet",
                            input_shape=(224, 224, 3))
    model.trainable = False
    path = pretrained_dir() / weights_file
    stored = read_metadata(path)
    provenance = dict(stored.get("provenance") or {"source": source})
    provenance.update(weights_file=weights_file, weights_sha256=sha256_file(path))
    model.metadata = {"backbone": name,
                      "preprocessing": stored.get("preprocessing") or dict(preprocessing),
                      "provenance": provenance}
    return model
