"""Augmented views of a training image: the stage beside preprocessing that `--augment K` adds.

View 0 of an image is the plain one (preprocess.crop_and_resize). View k >= 1
(preprocess.crop_and_resize_view, with the parameters drawn here) is a random resized crop of the decoded image, resized to the model's input size with the recipe's
filter, maybe mirrored, with a small brightness and contrast change. Its random numbers come
from the image's content hash and k alone, never from a global generator: a view is the same
in every run and on every machine, so its backbone activations are cached like the plain
view's, a second run finds every view in the cache, and raising K computes only the new
views. (TensorFlow's retrain.py drew fresh distortions every step, which is why its
augmentation flags switched off its bottleneck cache.)

An augmentation recipe looks like
    {"scale": [0.5, 1.0], "ratio": [0.75, 1.3333], "flip": True,
     "brightness": 0.2, "contrast": 0.2}
scale bounds the crop's area as a fraction of the plain view's square crop (so 1.0 is the
plain crop's area), ratio its width/height; brightness multiplies every pixel by a factor
in [1 - b, 1 + b], contrast scales the distance from the image's mean grey by [1 - c, 1 + c].
"""
import hashlib
import json
import math

import numpy as np
from .errors import ConfigError

__all__ = ["DEFAULT_AUGMENTATION", "MAX_TTA_VIEWS", "augmentation_recipe",
           "augmentation_hash", "tta_recipe", "tta_views", "view_parameters"]

# Chosen by measurement (README, "Fine-tuning and augmentation").
DEFAULT_AUGMENTATION = {"scale": [0.5, 1.0], "ratio": [0.75, 4 / 3], "flip": True,
                        "brightness": 0.2, "contrast": 0.2}
_VERSION = 1        # bump when the meaning of a recipe's numbers changes


def augmentation_recipe(flip=True, **overrides):
    """The default recipe with `flip` (and any field in `overrides`) set, validated."""
    recipe = dict(DEFAULT_AUGMENTATION, flip=bool(flip), **overrides)
    for key in ("scale", "ratio"):
        low, high = recipe[key]
        if not 0.0 < low <= high or (key == "scale" and high > 1.0):
            raise ConfigError(f"Augmentation {key} must be 0 < low <= high"
                              f"{' <= 1' if key == 'scale' else ''}. Received: {key}="
                              f"{recipe[key]!r}.")
    for key in ("brightness", "contrast"):
        if not 0.0 <= recipe[key] < 1.0:
            raise ConfigError(f"Augmentation {key} must be in [0, 1). "
                              f"Received: {key}={recipe[key]!r}.")
    return recipe


def augmentation_hash(recipe):
    """sha256 of the recipe (and this module's version): part of the views' cache keys."""
    text = json.dumps({"v": _VERSION, **recipe}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


# Test-time augmentation (`--tta N`, tta.py) averages over the plain view and the first N of
# these fixed views: the mirror image first (where the recipe allows it), then crops of 80%
# of the plain crop's area (centre, corners), each with its mirror image. Fixed, not drawn,
# so that classify, evaluate, serve and fit give one image the same answer.
_TEST_TIME_CROPS = ((0.8, 0.5, 0.5), (0.8, 0.0, 0.0), (0.8, 1.0, 1.0), (0.8, 1.0, 0.0),
                    (0.8, 0.0, 1.0), (0.64, 0.5, 0.5), (0.9, 0.5, 0.5), (0.7, 0.5, 0.5))
MAX_TTA_VIEWS = 8


def tta_recipe(flip):
    """The "augmentation recipe" of the test-time views: it names them in the cache."""
    return {"test_time": 1, "flip": bool(flip)}


def tta_views(count, flip):
    """The parameters (as view_parameters') of the first `count` test-time views."""
    views = []
    if flip:
        views.append(_fixed(1.0, 0.5, 0.5, True))
    for area, x, y in _TEST_TIME_CROPS:
        views += [_fixed(area, x, y, False)] + ([_fixed(area, x, y, True)] if flip else [])
    return views[:count]


def _fixed(area, x, y, flip):
    return {"area": area, "ratio": 1.0, "x": x, "y": y, "flip": flip, "brightness": 1.0,
            "contrast": 1.0}


def view_parameters(content_key, view, recipe):
    """The random choices of view `view` (>= 1) of the image whose content hash is
    `content_key`: a dict of crop area fraction, aspect ratio, crop centre (as fractions of
    the free room), flip, brightness and contrast factors. Pure: same inputs, same view.
    For a tta_recipe, the fixed test-time view `view` instead."""
    if "test_time" in recipe:
        return tta_views(view, recipe["flip"])[view - 1]
    seed = hashlib.sha256(f"{content_key}:{view}".encode("ascii")).digest()
    rng = np.random.default_rng(int.from_bytes(seed[:8], "little"))
    log_low, log_high = (math.log(r) for r in recipe["ratio"])
    return {"area": float(rng.uniform(*recipe["scale"])),
            "ratio": float(math.exp(rng.uniform(log_low, log_high))),
            "x": float(rng.uniform()), "y": float(rng.uniform()),
            "flip": bool(recipe["flip"] and rng.uniform() < 0.5),
            "brightness": float(1.0 + rng.uniform(-1, 1) * recipe["brightness"]),
            "contrast": float(1.0 + rng.uniform(-1, 1) * recipe["contrast"])}
