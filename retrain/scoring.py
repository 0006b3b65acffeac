"""`retrain evaluate`: score an exported model on a folder of class folders.

Which images are scored is the point here. A model file from `retrain fit` records the
content (sha256) of the images it trained and validated on (split.seen_record), so a
folder is scored by content: every image of a folder the model never saw, and in its
training folder the images it did not learn from, whatever their names. Older model files
record only the split's percentages; for them the split is recomputed from the file
names, exactly as `run` made it, which is right only in the folder it was trained on."""
import numpy as np

from .classify import model_labels, predict_probabilities
from .confidence import check_min_confidence, coverage_at, coverage_table
from .errors import DataError
from .evaluate import evaluate_predictions
from .files import sha256_file
from .ingest import exclude, ingest, validate
from .options import default
from .runtimes import load_runtime
from .tta import model_tta
from .split import seen_role, split

__all__ = ["evaluate_model"]


def evaluate_model(model, data, split_name="test", batch_size=default("batch_size"),
                   workers=default("workers"), cluster=None,
                   runtime="numpy", precision="f32", min_confidence=None, tta=None):
    """Metrics of an exported model on the images of `data` chosen by `split_name`.

    A model that records the content of the images it learnt from (metadata "seen", see
    split.seen_record) is scored by content: "test" is every image it neither trained nor
    validated on (all of a folder it never saw), "val" and "train" those it used so, "all"
    every image. Files that cannot be decoded are skipped and listed. An older model file
    has its split recomputed from the file names with its own percentages (right only in
    the folder it was trained on), after setting aside the files `run` set aside. With
    `cluster`, its workers run the model; on `runtime` in `precision` (runtimes.py).
    Returns the dict shaped as a split's entry in
    metrics.json, plus "selection": which images were scored, and why, and "coverage":
    what answering "unknown" below a few thresholds (and `min_confidence`) would leave
    (confidence.coverage_table; "min_confidence" holds the row of the one asked for).
    Probabilities are averaged over the test-time views of `tta` (None: the model's)."""
    labels = model_labels(model)
    model_tta(model.metadata, tta)             # a bad --tta is refused before any work
    if min_confidence is not None:
        min_confidence = check_min_confidence(min_confidence)
    dataset = ingest(data, min_classes=1)      # a model can be scored on one of its classes
    if model.metadata.get("seen") is not None:
        index, selection = _select_by_content(dataset, model.metadata["seen"], split_name)
    else:
        dataset, index, selection = _select_by_name(dataset, model.metadata, split_name,
                                                    workers)
    unknown = sorted(set(dataset.classes) - set(labels))
    if unknown:
        raise DataError(f"The data has class folder(s) the model does not know: {unknown}.",
                        hint=f"The model's classes are {labels}.")
    runner = load_runtime(model, runtime, precision, wait=False)
    index, probabilities, skipped = _predict(runner, dataset, index, batch_size, workers,
                                             cluster, tolerate=selection["by"] == "content",
                                             tta=tta)
    targets = np.array([labels.index(dataset.classes[dataset.records[i][1]]) for i in index],
                       np.int64)
    metrics = evaluate_predictions(probabilities, targets, labels,
                                   paths=[dataset.records[i][0] for i in index])
    selection["skipped"] = [{"path": path, "reason": reason}
                            for path, reason in selection.pop("unreadable") + skipped]
    selection["scored"] = len(index)
    metrics["coverage"] = coverage_table(probabilities, targets, extra=min_confidence)
    metrics["tta"] = len(model_tta(model.metadata, tta))
    if min_confidence is not None:
        metrics["min_confidence"] = coverage_at(probabilities, targets, min_confidence)
    return dict(metrics, selection=selection)


def _select_by_content(dataset, record, split_name):
    """The records to score, by what the model did with each image's content."""
    record = {name: set(record[name]) for name in ("train", "val")}
    roles, unreadable = [], []
    for i, (relative, _) in enumerate(dataset.records):
        try:
            roles.append(seen_role(sha256_file(dataset.path(i)), record))
        except OSError as error:
            roles.append(None)
            unreadable.append((relative, f"cannot be read: {error.strerror or error}"))
    wanted = {"test": "unseen", "val": "val", "train": "train"}.get(split_name)
    index = [i for i, role in enumerate(roles)
             if role is not None and (wanted is None or role == wanted)]
    counts = {name: roles.count(name) for name in ("train", "val", "unseen")}
    return index, {"by": "content", "split": split_name, "images": len(roles),
                   "trained_on": counts["train"], "validated_on": counts["val"],
                   "unseen": counts["unseen"], "unreadable": unreadable}


def _select_by_name(dataset, metadata, split_name, workers):
    """An older model file's split, recomputed from the file names (see evaluate_model)."""
    settings = metadata.get("split") or {}
    if split_name != "all" and not {"val_percent", "test_percent"} <= set(settings):
        raise DataError("The model file does not record how its data was split.",
                        hint="Use --split all, or a model exported by `retrain fit`.")
    set_aside = settings.get("set_aside")
    images = len(dataset.records)
    dataset = (validate(dataset, workers=workers, min_classes=1) if set_aside is None else
               exclude(dataset, {relative: "set aside when the model was trained"
                                 for relative in set_aside}, min_classes=1))
    if split_name == "all":
        index = list(range(len(dataset.records)))
    else:
        index = split(dataset, settings["val_percent"], settings["test_percent"]).indices(
            split_name)
    return dataset, index, {"by": "name", "split": split_name, "images": images,
                            "unreadable": []}


def _predict(runner, dataset, index, batch_size, workers, cluster, tolerate, tta=None):
    """(the records scored, their probabilities, [(relative path, reason)] skipped), the
    model run by `runner` (runtimes.Runtime). Without `tolerate`, a file that fails to
    decode is an error (it was decoded before)."""
    model = runner.model
    labels = model_labels(model)
    blocks, scored, skipped = [], [], []
    position = {str(dataset.path(i)): i for i in index}
    paths = [dataset.path(i) for i in index]
    for done, probabilities in predict_probabilities(model, paths, batch_size, workers,
                                                     cluster, runner, tta=tta):
        for path, reason in done:
            if reason and not tolerate:
                raise DataError(f"{path} can no longer be decoded ({reason}); was it changed "
                                "during the evaluation?", hint="Run it again.")
            if reason:
                skipped.append((dataset.records[position[str(path)]][0], reason))
            else:
                scored.append(position[str(path)])
        blocks.append(probabilities)
    probabilities = np.concatenate(blocks) if blocks else np.empty((0, len(labels)))
    return scored, probabilities, skipped
