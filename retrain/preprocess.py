"""The model file's preprocessing recipe applied to decoded images -> float32 NHWC batch.

No recipe is hard-coded here: it travels in every model file's metadata ("preprocessing"),
so training, evaluation and classification cannot drift apart. A recipe looks like
    {"input_size": [224, 224], "crop": "center", "crop_fraction": 0.875,
     "resize_filter": "bicubic", "mean": [127.0]*3, "std": [128.0]*3, "channel_order": "RGB",
     "jpeg_draft": true}
"jpeg_draft" (optional, false if absent, as in model files made before it): JPEGs are
decoded by DCT-domain scaling to the smallest size whose shorter side is still at least the
input size (images.decode_image's `draft`), then cropped and resized as always. A 640x480
photo for a 224x224 model decodes at 320x240: about a third less work per photo, for pixels
that differ from the full decode's resize (the accuracy cost is in docs/runtimes.md).
"""
import hashlib
import itertools
import json
import math
from collections import deque
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from PIL import Image

from .errors import ConfigError, ImageError
from .images import decode_image

FILTERS = {"nearest": Image.Resampling.NEAREST, "box": Image.Resampling.BOX,
            "bilinear": Image.Resampling.BILINEAR, "hamming": Image.Resampling.HAMMING,
            "bicubic": Image.Resampling.BICUBIC, "lanczos": Image.Resampling.LANCZOS}
_KEYS = ("input_size", "crop", "crop_fraction", "resize_filter", "mean", "std", "channel_order")
# Keys added later, with the value that means what a recipe without them always meant: a
# recipe holding that value hashes, and decodes, as one without the key.
_OPTIONAL = {"jpeg_draft": False}
# Images decoded ahead before the first batch (iter_batches), while a compiled runtime loads
# (0.35 s on one core: two threads decode 450 small images or 100 photos meanwhile), up to
# START_AHEAD_BYTES of model-size uint8 images (445 of 224x224).
START_AHEAD, START_AHEAD_BYTES = 512, 64 << 20

__all__ = ["validate_recipe", "recipe_hash", "draft_side", "crop_and_resize", "crop_and_resize_view", "normalize", "preprocess_batch",
           "iter_batches"]


def validate_recipe(recipe):
    """Check a recipe read from a model file; returns it unchanged or raises ConfigError."""
    if not isinstance(recipe, dict):
        raise ConfigError(f"The preprocessing recipe must be a dict. Received: {recipe!r}.",
                          hint="The model file's metadata is damaged; export the model again.")
    missing = [k for k in _KEYS if k not in recipe]
    if missing:
        raise ConfigError(f"The preprocessing recipe lacks {missing}. Received: {recipe!r}.",
                          hint="Export the model again with `retrain fit`.")
    size = recipe["input_size"]
    if (not isinstance(size, (list, tuple)) or len(size) != 2
            or not all(isinstance(s, int) and s > 0 for s in size)):
        raise ConfigError(f"input_size must be two positive integers [height, width]. "
                          f"Received: input_size={size!r}.")
    if recipe["crop"] != "center":
        raise ConfigError(f"Only a centre crop is supported. Received: crop={recipe['crop']!r}.",
                          hint='Use "crop": "center" (with crop_fraction 1.0 for no cropping).')
    if not _is_number(recipe["crop_fraction"]) or not 0.0 < recipe["crop_fraction"] <= 1.0:
        raise ConfigError("crop_fraction must be in (0, 1]. "
                          f"Received: crop_fraction={recipe['crop_fraction']!r}.")
    if recipe["resize_filter"] not in FILTERS:
        raise ConfigError(f"Unknown resize_filter. Received: resize_filter="
                          f"{recipe['resize_filter']!r}. Use one of {sorted(FILTERS)}.")
    for key in ("mean", "std"):
        if not isinstance(recipe[key], (list, tuple)) or len(recipe[key]) != 3 \
                or not all(_is_number(v) for v in recipe[key]):
            raise ConfigError(f"{key} needs one number per channel. "
                              f"Received: {key}={recipe[key]!r}.")
    if any(float(s) == 0.0 for s in recipe["std"]):
        raise ConfigError(f"std must not contain 0. Received: std={recipe['std']!r}.")
    if recipe["channel_order"] not in ("RGB", "BGR"):
        raise ConfigError("channel_order must be 'RGB' or 'BGR'. "
                          f"Received: channel_order={recipe['channel_order']!r}.")
    if not isinstance(recipe.get("jpeg_draft", False), bool):
        raise ConfigError("jpeg_draft must be true or false. "
                          f"Received: jpeg_draft={recipe['jpeg_draft']!r}.")
    return recipe


def _is_number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def recipe_hash(recipe):
    """sha256 of the recipe's canonical JSON: part of every feature-cache key."""
    canonical = {k: recipe[k] for k in _KEYS}
    canonical.update({k: recipe[k] for k, absent in _OPTIONAL.items()
                      if recipe.get(k, absent) != absent})
    text = json.dumps(canonical, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def draft_side(recipe):
    """The `draft` side for images.decode_image under `recipe`: its input size's larger
    side where the recipe asks for "jpeg_draft", else None (decode in full)."""
    return max(recipe["input_size"]) if recipe.get("jpeg_draft") else None


def crop_and_resize(image, recipe):
    """uint8 (H, W, 3) RGB -> uint8 (h, w, 3): centre crop then a PIL resize to input_size.
    `image` may also be a PIL image of mode RGB or L (images.decode_image(pil=True)): the
    same pixels, cropped and resized without copies through numpy. A grey image (L, or
    (H, W)) is resized as one channel, then repeated: PIL resizes each channel alike, so
    this is the RGB image's result bit for bit, at a third of the work (stacked thrice: 44 us
    a 224x224 image, against 72 us for np.repeat).

    The crop side is int(crop_fraction * min(H, W)) and an odd margin puts the extra pixel
    at the top/left ((H - c) + 1) // 2, as TF's EfficientNet eval crop does."""
    if isinstance(image, Image.Image):
        width, height = image.size
    else:
        height, width = image.shape[:2]
    side = max(1, int(float(recipe["crop_fraction"]) * min(height, width)))
    top, left = ((height - side) + 1) // 2, ((width - side) + 1) // 2
    if isinstance(image, Image.Image):
        crop = image.crop((left, top, left + side, top + side))
    else:
        crop = Image.fromarray(np.ascontiguousarray(image[top:top + side, left:left + side]))
    out_h, out_w = recipe["input_size"]
    resized = np.asarray(crop.resize((out_w, out_h), FILTERS[recipe["resize_filter"]]),
                         dtype=np.uint8)
    return np.stack((resized,) * 3, axis=-1) if resized.ndim == 2 else resized


def crop_and_resize_view(image, recipe, params):
    """uint8 (H, W, 3) -> uint8 (h, w, 3) of the preprocessing `recipe`'s input size: the
    view's crop (area params["area"] times the plain square crop's, width/height
    params["ratio"], clipped to the image), resized, mirrored, brightness and contrast."""
    height, width = image.shape[:2]
    side = float(recipe["crop_fraction"]) * min(height, width)
    area = params["area"] * side * side
    crop_w = int(round(min(width, max(1.0, math.sqrt(area * params["ratio"])))))
    crop_h = int(round(min(height, max(1.0, math.sqrt(area / params["ratio"])))))
    left = int(round(params["x"] * (width - crop_w)))
    top = int(round(params["y"] * (height - crop_h)))
    crop = np.ascontiguousarray(image[top:top + crop_h, left:left + crop_w])
    out_h, out_w = recipe["input_size"]
    resized = Image.fromarray(crop).resize((out_w, out_h), FILTERS[recipe["resize_filter"]])
    x = np.asarray(resized, np.float32)
    if params["flip"]:
        x = x[:, ::-1]
    mean = x.mean()
    x = ((x - mean) * params["contrast"] + mean) * params["brightness"]
    return np.clip(np.rint(x), 0, 255).astype(np.uint8)


def normalize(batch_uint8, recipe):
    """uint8 (N, h, w, 3) RGB -> float32 (x - mean) / std; mean and std are given in the
    model input's channel order (after the swap to BGR, where the recipe asks for it).

    With the same mean and std for every channel (EfficientNet's 127 and 128), one
    subtraction into a new float32 array and a division in place: 1.2 ms for 32 images of
    224x224, against 5.5 ms for the table below. Otherwise a uint8 pixel has 256 values, so
    each channel's results are computed once, with the same float32 arithmetic, into a
    256-entry table, and the batch is one lookup: bit for bit the arithmetic's result, at a
    quarter of its cost when the arithmetic allocated at each of its three passes (9 ms
    against 10 ms for one pass and a division in place, with ImageNet's means and stds)."""
    x = np.asarray(batch_uint8)
    if recipe["channel_order"] == "BGR":
        x = x[..., ::-1]
    mean = np.asarray(recipe["mean"], np.float32)
    std = np.asarray(recipe["std"], np.float32)
    if x.dtype != np.uint8:
        return np.ascontiguousarray((x.astype(np.float32) - mean) / std, dtype=np.float32)
    if (mean == mean[0]).all() and (std == std[0]).all():     # one pass, then in place
        out = np.subtract(x, mean[0], dtype=np.float32)
        return np.divide(out, std[0], out=out)
    table = (np.arange(256, dtype=np.float32)[:, None] - mean) / std      # (256, channels)
    if (table == table[:, :1]).all():
        return table[:, 0][x]
    out = np.empty(x.shape, np.float32)
    for channel in range(x.shape[-1]):
        np.take(table[:, channel], x[..., channel], out=out[..., channel])
    return out


def preprocess_batch(images, recipe):
    """A list of uint8 (H, W, 3) RGB images of any sizes -> float32 (N, h, w, 3) model input."""
    out_h, out_w = recipe["input_size"]
    batch = np.empty((len(images), out_h, out_w, 3), np.uint8)
    for i, image in enumerate(images):
        batch[i] = crop_and_resize(image, recipe)
    return normalize(batch, recipe)


def _load_for_model(path, recipe, view=None, sha256=None):
    """One file -> (uint8 model-size image, None), or (None, the reason it cannot be used).
    `view`: None for the plain view, else an augmented view's parameters (augment.py);
    `sha256`: the content hash the decoded bytes must have (decode_image)."""
    try:
        image = decode_image(path, sha256=sha256, draft=draft_side(recipe), pil=view is None)
        if view is None:
            return crop_and_resize(image, recipe), None
        return crop_and_resize_view(image, recipe, view), None
    except ImageError as exc:
        return None, str(exc)
    except OSError as exc:
        return None, f"cannot read the file: {exc.strerror or exc}"


def iter_batches(paths, recipe, batch_size=32, workers=2, views=None, hashes=None):
    """Stream files as model input: yield (done, inputs) per batch, in the order of `paths`.
    `views`, if given, holds for each path None (the plain view) or an augmented view's
    parameters (augment.view_parameters); a path may then appear once per view. `hashes`,
    if given, the sha256 each file had when it was hashed: a file whose bytes differ now
    is done with a reason, not decoded.

    `done` lists (path, reason) for up to `batch_size` files, reason None for the usable
    ones; `inputs` is the float32 (n_usable, h, w, 3) batch of those, in the same order.
    Worker threads decode and resize up to two batches ahead while the caller runs the
    model: PIL and numpy release the GIL in their heavy loops, so the two overlap. The
    first START_AHEAD images (at most START_AHEAD_BYTES; two batches, if more) are decoded
    ahead at once, while a runtime is still loading in its thread (runtimes.load_runtime(
    wait=False)); then at most two batches of model-size uint8 images are in memory."""
    out_h, out_w = recipe["input_size"]
    ahead = max(2 * batch_size, min(START_AHEAD, START_AHEAD_BYTES // (out_h * out_w * 3)))
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        pending = deque()
        for path, view, sha256 in zip(paths, itertools.repeat(None) if views is None else views,
                                      itertools.repeat(None) if hashes is None else hashes):
            pending.append((path, pool.submit(_load_for_model, path, recipe, view, sha256)))
            while len(pending) >= ahead:
                yield _next_batch(pending, batch_size, recipe, (out_h, out_w))
                ahead = 2 * batch_size
        while pending:
            yield _next_batch(pending, batch_size, recipe, (out_h, out_w))


def _next_batch(pending, batch_size, recipe, size):
    done, images = [], []
    while pending and len(done) < batch_size:
        path, future = pending.popleft()
        image, reason = future.result()
        done.append((path, reason))
        if image is not None:
            images.append(image)
    batch = np.stack(images) if images else np.empty((0,) + size + (3,), np.uint8)
    return done, normalize(batch, recipe)
