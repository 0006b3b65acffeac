"""Open a model file for info, classify and evaluate: the engine reads the layers and
weights safely; here the retrain metadata (labels, recipe, metrics...) is checked before
anything uses it. Every problem is a ModelFileError naming the file."""
import re

from .augment import MAX_TTA_VIEWS
from .engine import load_model
from .errors import ConfigError, ModelFileError
from .preprocess import validate_recipe
from .split import SEEN_DIGITS

__all__ = ["load_model_file", "check_metadata"]

# Without a fixed input size in the model, the recipe's own limit (the engine bounds every
# layer's output for fixed sizes).
_MAX_INPUT_SIDE = 2048
_NUMERIC_METRICS = ("count", "accuracy", "top_k", "top_k_accuracy", "loss", "macro_f1")
_HEX = re.compile(f"[0-9a-f]{{{SEEN_DIGITS}}}")
_HINT = "The file's metadata is damaged or was not written by `retrain fit`."


def load_model_file(path):
    """The model in `path`, with `model.metadata` checked by `check_metadata`."""
    model = load_model(path)
    check_metadata(model, path)
    return model


def check_metadata(model, path):
    """Types and sizes of everything retrain reads from the metadata, against the model."""
    try:
        _check(model, model.metadata)
    except ConfigError as error:
        raise ModelFileError(f"{path}: {error}", hint=error.hint or _HINT) from None


def _check(model, metadata):
    labels = metadata.get("labels")
    units = model.outputs[0].shape[-1]
    if labels is not None:
        if not isinstance(labels, list) or not all(isinstance(l, str) for l in labels):
            raise ConfigError(f"labels must be a list of strings. Received: {_short(labels)}.")
        if len(labels) != units:
            raise ConfigError(f"the model has {units} outputs but its metadata lists "
                              f"{len(labels)} labels.", hint="Export the model again.")
    if metadata.get("preprocessing") is not None:
        _check_recipe(model, validate_recipe(metadata["preprocessing"]))
    for key, kind in (("backbone", str), ("outputs", str), ("provenance", dict),
                      ("split", dict), ("metrics", dict), ("seen", dict)):
        if metadata.get(key) is not None and not isinstance(metadata[key], kind):
            raise ConfigError(f"{key} must be a {kind.__name__}. "
                              f"Received: {_short(metadata[key])}.")
    if metadata.get("outputs") not in (None, "probabilities", "logits"):
        raise ConfigError(f"outputs must be 'probabilities' or 'logits'. "
                          f"Received: {_short(metadata['outputs'])}.")
    _check_seen(metadata.get("seen"))
    _check_tta(metadata.get("tta"))
    backbone_provenance = (metadata.get("provenance") or {}).get("backbone_provenance")
    if backbone_provenance is not None and not isinstance(backbone_provenance, dict):
        raise ConfigError("provenance.backbone_provenance must be a dict. "
                          f"Received: {_short(backbone_provenance)}.")
    for split, values in (metadata.get("metrics") or {}).items():
        if not isinstance(values, dict):
            raise ConfigError(f"metrics[{split!r}] must be a dict. Received: {_short(values)}.")
        for key in _NUMERIC_METRICS:
            value = values.get(key)
            # null stands for a non-finite number, but never for a count or an accuracy
            if (value is not None or key in ("count", "accuracy") and key in values) and (
                    isinstance(value, bool) or not isinstance(value, (int, float))):
                raise ConfigError(f"metrics[{split!r}][{key!r}] must be a number. "
                                  f"Received: {_short(value)}.")
        _check_confusion(values.get("confusion_matrix"), units, split)


def _check_confusion(matrix, units, split):
    """None, or `units` rows of `units` counts (the page of `retrain serve` draws it)."""
    if matrix is None:
        return
    if not (isinstance(matrix, list) and len(matrix) == units and all(
            isinstance(row, list) and len(row) == units and all(
                isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in row)
            for row in matrix)):
        raise ConfigError(f"metrics[{split!r}]['confusion_matrix'] must be {units} rows of "
                          f"{units} counts. Received: {_short(matrix)}.")


def _check_seen(seen):
    """The content record of the training and validation images (split.seen_record):
    lists of hex digests, which evaluate compares with the sha256 of each file it scores."""
    for name in ("train", "val") if seen is not None else ():
        digests = seen.get(name)
        if not isinstance(digests, list) or not all(
                isinstance(d, str) and _HEX.fullmatch(d) for d in digests):
            raise ConfigError(f"seen[{name!r}] must be a list of hex digests of "
                              f"{SEEN_DIGITS} digits. Received: {_short(digests)}.")


def _check_tta(record):
    """None, or {"views": 0..MAX_TTA_VIEWS, "flip": bool} (tta.tta_record)."""
    if record is None:
        return
    views = record.get("views") if isinstance(record, dict) else None
    if not (isinstance(views, int) and not isinstance(views, bool)
            and 0 <= views <= MAX_TTA_VIEWS and isinstance(record.get("flip"), bool)):
        raise ConfigError(f"tta must be {{'views': 0 to {MAX_TTA_VIEWS}, 'flip': true "
                          f"or false}}. Received: {_short(record)}.")


def _check_recipe(model, recipe):
    """The recipe resizes images to the model's own input size (a 30000x30000 recipe for a
    224x224 model would allocate gigabytes per image before the model could object)."""
    size = tuple(recipe["input_size"])
    expected = tuple(model.inputs[0].shape[1:3])
    if all(isinstance(side, int) for side in expected):
        if size != expected:
            raise ConfigError(f"preprocessing input_size {list(size)} differs from the model's "
                              f"input size {list(expected)}.")
    elif max(size) > _MAX_INPUT_SIDE:
        raise ConfigError(f"preprocessing input_size {list(size)} exceeds {_MAX_INPUT_SIDE} "
                          "pixels a side.")


def _short(value, limit=80):
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."
