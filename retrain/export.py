"""Backbone + trained head -> one model file (RUN/model.h5) and RUN/labels.txt.

The model file is self-describing: its metadata carries the labels, the preprocessing
recipe, the provenance (backbone, weights hash, data, seed), the split settings and the
metrics, so `retrain classify/evaluate/info` need nothing but the file."""
import datetime
import platform
from pathlib import Path

from .engine import clone_model
from .files import atomic_write_text
from .options import record
from .split import SPLITS
from .tta import tta_record
from .version import __version__

__all__ = ["export_model", "model_metadata", "describe"]


def export_model(run_dir, bottom, model, labels, metadata):
    """Write RUN/model.h5 (the trained `model` on the backbone's `bottom`, + `metadata` +
    labels) and RUN/labels.txt.

    `model` (fit.build_classifier's: the head, or the head on the fine-tuned top blocks)
    reads `bottom`'s output; clone_model wires it there, inlining the top, so the file holds
    one plain graph with the backbone's layer names."""
    exported = clone_model(model, input_tensors=bottom.outputs[0], name="retrain_classifier")
    exported.metadata = dict(metadata, labels=list(labels), outputs="probabilities")
    model_path = run_dir / "model.h5"
    exported.save(model_path, metadata=exported.metadata)
    atomic_write_text(run_dir / "labels.txt", "".join(f"{label}\n" for label in labels))
    return model_path


def model_metadata(data, backbone, options, metrics, dataset, seen):
    """The model file's record of a run (pipeline.RunOptions `options`): the backbone and
    preprocessing recipe, provenance, how it trained, the split, the training images'
    content (`seen`), --tta and a summary of the metrics."""
    summary_keys = ("count", "accuracy", "accuracy_interval", "top_k", "top_k_accuracy",
                    "top_k_accuracy_interval", "loss", "macro_f1",
                    "confusion_matrix")     # drawn by `retrain serve`'s page
    return {"backbone": backbone.metadata["backbone"],
            "preprocessing": backbone.metadata["preprocessing"],
            "provenance": {"backbone": backbone.metadata["backbone"],
                           "backbone_provenance": backbone.metadata.get("provenance", {}),
                           "weights_sha256": backbone.metadata.get("provenance", {})
                           .get("weights_sha256"),
                           "data": str(Path(data).resolve()),
                           "created": datetime.datetime.now(datetime.timezone.utc)
                           .isoformat(timespec="seconds"),
                           "retrain_version": __version__,
                           "python": platform.python_version(),
                           "runtime": metrics["runtime"],
                           "head": record(options.head)},
            "training": metrics["training"],
            "split": {"val_percent": options.val_percent, "test_percent": options.test_percent,
                      "set_aside": [relative for relative, _ in dataset.skipped]},
            "seen": seen,
            "tta": tta_record(options.tta, options.head.flip),
            "metrics": {name: {k: metrics[name][k] for k in summary_keys} for name in SPLITS}}


def describe(model):
    """What `retrain info` shows: layers, parameters, input, recipe, labels, provenance."""
    metadata = getattr(model, "metadata", None) or {}
    training = metadata.get("training") or {}
    trainable = training.get("trainable_params",     # the head and any fine-tuned blocks
                             sum(int(w.value.size) for w in model.trainable_weights))
    total = model.count_params()
    return {"name": model.name,
            "layers": len(model.layers),
            "layer_types": _count_types(model.layers),
            "params": {"total": total, "trainable": trainable, "non_trainable": total - trainable},
            "input_shape": list(model.inputs[0].shape[1:]),
            "output_shape": list(model.outputs[0].shape[1:]),
            "outputs": metadata.get("outputs"),
            "preprocessing": metadata.get("preprocessing"),
            "labels": metadata.get("labels"),
            "backbone": metadata.get("backbone"),
            "provenance": metadata.get("provenance"),
            "split": metadata.get("split"),
            "seen": ({name: len(metadata["seen"][name]) for name in ("train", "val")}
                     if metadata.get("seen") else None),
            "epochs_run": training.get("epochs_run"),
            "metrics": metadata.get("metrics")}


def _count_types(layers):
    counts = {}
    for layer in layers:
        counts[type(layer).__name__] = counts.get(type(layer).__name__, 0) + 1
    return counts
