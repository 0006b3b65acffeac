"""Classify image files with an exported model: stream files in batches -> top-k records.

Everything the model needs (labels, preprocessing recipe, whether it outputs logits)
comes from the model file's metadata. No terminal formatting here: the CLI does that."""
from pathlib import Path

import numpy as np

from .confidence import check_min_confidence, mark_unknown
from .engine import softmax
from .errors import ConfigError, DataError
from .evaluate import top_predictions
from .images import is_image_file
from .options import default
from .preprocess import iter_batches, validate_recipe
from .runtimes import Runtime, load_runtime, predict_batches
from .tta import collapse, model_tta, spread

__all__ = ["iter_image_files", "model_labels", "predict_probabilities", "model_probabilities",
           "top_or_error", "classify"]

def iter_image_files(paths):
    """Files given directly (whatever their name), and for each folder its image files
    (by extension, as ingest picks them) found recursively, sorted, hidden entries skipped.
    Every path is checked before any is read: one that does not exist raises DataError."""
    paths = [Path(p) for p in paths]
    for path in paths:
        if not path.exists():
            raise DataError(f"No such file or folder: {str(path)!r}.",
                            hint="Check the path; folders are searched recursively.")
    return (found for path in paths for found in _expand(path))


def _expand(path):
    if not path.is_dir():
        yield path
        return
    for found in sorted(path.rglob("*")):
        hidden = any(part.startswith(".") for part in found.relative_to(path).parts)
        if found.is_file() and not hidden and is_image_file(found):
            yield found


def model_labels(model):
    """The class names from the model file, checked against the model's output width."""
    metadata = getattr(model, "metadata", None) or {}
    labels = metadata.get("labels")
    units = model.outputs[0].shape[-1]
    if not labels:
        raise ConfigError("The model file has no class labels in its metadata.",
                          hint="Use a model exported by `retrain fit` (RUN/model.h5).")
    if len(labels) != units:
        raise ConfigError(f"The model has {units} outputs but its metadata lists "
                          f"{len(labels)} labels.", hint="Export the model again.")
    if "preprocessing" not in metadata:
        raise ConfigError("The model file has no preprocessing recipe in its metadata.",
                          hint="Use a model exported by `retrain fit` (RUN/model.h5).")
    validate_recipe(metadata["preprocessing"])
    return list(labels)


def predict_probabilities(model, paths, batch_size=32, workers=2, cluster=None,
                          runtime="numpy", precision="f32", tta=None):
    """Yield (done, probabilities) per batch: `done` = [(path, reason or None)] in order, and
    the (n_usable, C) class probabilities of the usable files, in the same order, the model
    run on `runtime` in `precision` (runtimes.py; `runtime` may also be a loaded
    runtimes.Runtime of `model`). With `cluster` (cluster.Cluster), its workers run this per
    chunk of files, in order. Each file's probabilities are the mean over its test-time
    views (tta.py): the model's record, or `tta` views where given."""
    model_labels(model)
    views = model_tta(model.metadata, tta)
    loaded = runtime if isinstance(runtime, Runtime) else None
    if cluster is not None and views:
        raise ConfigError("Test-time augmentation does not run on a Dask cluster yet.",
                          hint="Give --tta 0, or leave out --dask.")
    if cluster is not None:
        if loaded is not None:
            runtime, precision = loaded.name, loaded.precision
        yield from cluster.probabilities(model, paths, batch_size, runtime, precision)
        return
    recipe = model.metadata["preprocessing"]
    runner = loaded or load_runtime(model, runtime, precision, wait=False)
    k = len(views) + 1
    paths, views = spread(paths, views)
    batches = iter_batches(paths, recipe, batch_size * k, workers, views)
    for done, outputs in predict_batches(runner, batches):   # the next batch decodes meanwhile
        yield collapse(done, _probabilities(model, outputs), k)


def model_probabilities(model, inputs, runner=None):
    """The (N, C) float64 class probabilities of one preprocessed float32 batch (N may be
    0): one forward pass on `runner` (a runtimes.Runtime of `model`; None: the numpy engine),
    and a softmax where the model file says it outputs logits."""
    if not len(inputs):
        return _probabilities(model, None)
    return _probabilities(model, (runner or model).predict(inputs, batch_size=len(inputs)))


def _probabilities(model, outputs):
    """The model's outputs (None: no image) as float64 probabilities (N, C)."""
    if outputs is None:
        return np.empty((0, model.outputs[0].shape[-1]), np.float64)
    out = np.asarray(outputs, np.float64)
    logits = model.metadata.get("outputs", "probabilities") == "logits"
    return softmax(out) if logits else out


def top_or_error(probabilities, labels, top_k):
    """Per row of (N, C) probabilities: {"top": [{"label", "probability"}, ...]}, or
    {"error": why} where the model's output is not finite."""
    finite = np.isfinite(probabilities).all(axis=1)
    return [{"top": top} if ok else
            {"error": "the model's output for it is not finite (NaN or infinity)"}
            for top, ok in zip(top_predictions(probabilities, labels, top_k), finite)]


def classify(model, paths, top_k=default("top_k"), batch_size=default("batch_size"),
             workers=default("workers"), cluster=None, runtime="numpy",
             precision="f32", min_confidence=None, tta=None):
    """Yield {"path", "top": [{"label", "probability"}, ...]} or {"path", "error"} for every
    image file in `paths` (files, or folders searched recursively), in order; with
    `cluster`, computed by its workers (the files listed first, then sent in chunks);
    averaged over the test-time views of `tta` (None: the model's record). With
    `min_confidence`, each answer also has "prediction": its label, or "unknown" below it
    (confidence.mark_unknown)."""
    labels = model_labels(model)
    files = iter_image_files(paths)
    for done, probabilities in predict_probabilities(model, files, batch_size, workers,
                                                     cluster, runtime, precision, tta):
        answers = top_or_error(probabilities, labels, top_k)
        answers = iter(answers if min_confidence is None else
                       mark_unknown(answers, check_min_confidence(min_confidence)))
        for path, reason in done:
            yield {"path": str(path), **(next(answers) if reason is None else {"error": reason})}
