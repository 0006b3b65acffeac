"""Classification metrics from predicted probabilities. Pure computation: no I/O, no printing.

The result is the plain dict stored per split in metrics.json and printed by
`retrain evaluate --json`, so both have one shape."""
import numpy as np

from .engine import sparse_categorical_crossentropy

__all__ = ["MIN_CLASS_IMAGES", "MIN_SPLIT_IMAGES", "Z95", "evaluate_predictions",
           "small_sample_warnings", "top_predictions", "wilson_interval"]

# Below these, a split's accuracy or a class's scores say little: 29 of 29 right still has
# a 95% interval reaching down to 0.88, and 9 of 9 to 0.70.
MIN_SPLIT_IMAGES = 30
MIN_CLASS_IMAGES = 5

# The standard normal quantile of 0.975: a two-sided 95% interval.
Z95 = 1.959963984540054


def wilson_interval(successes, count, z=Z95):
    """Wilson's score interval [low, high] for a proportion: the 95% interval printed and
    recorded next to every accuracy (None for no images).

    Why Wilson and not p +- z*sqrt(p(1-p)/n): on small splits, where it matters, that
    normal interval collapses to [1, 1] for 9 of 9 right and can leave [0, 1]; Wilson's
    stays inside [0, 1] and keeps its coverage near 95% (Newcombe 1998, Brown, Cai and
    DasGupta 2001). 9 of 9 right gives [0.701, 1]."""
    if not count:
        return None
    p, z2 = successes / count, z * z
    centre = (p + z2 / (2 * count)) / (1 + z2 / count)
    half = z * np.sqrt(p * (1 - p) / count + z2 / (4 * count * count)) / (1 + z2 / count)
    return [float(max(0.0, centre - half)), float(min(1.0, centre + half))]


def small_sample_warnings(split_counts, class_counts):
    """Warnings for each split ({name: images}) holding fewer than MIN_SPLIT_IMAGES images
    (none for an empty one: other warnings name those) and each class ({name: images})
    holding fewer than MIN_CLASS_IMAGES."""
    warnings = []
    for name, count in split_counts.items():
        if 0 < count < MIN_SPLIT_IMAGES:
            low, high = wilson_interval(count, count)
            warnings.append(f"the {name} split holds {count} image(s), fewer than "
                            f"{MIN_SPLIT_IMAGES}: its accuracy is uncertain (all {count} right "
                            f"would still give a 95% interval of {low:.2f}-{high:.2f}); add "
                            "images, or compare recipes with --cv K")
    for name, count in class_counts.items():
        if 0 < count < MIN_CLASS_IMAGES:
            warnings.append(f"class {name!r} has {count} image(s), fewer than "
                            f"{MIN_CLASS_IMAGES}: its scores rest on too few images to mean "
                            "much")
    return warnings


def top_predictions(probabilities, labels, k):
    """Row-wise top-k as [[{"label", "probability"}, ...], ...], most probable first."""
    probabilities = np.asarray(probabilities)
    k = min(k, probabilities.shape[1])
    order = np.argsort(-probabilities, axis=1, kind="stable")[:, :k]
    return [[{"label": labels[j], "probability": float(row[j])} for j in idx]
            for row, idx in zip(probabilities, order)]


def _per_class(confusion, labels):
    true_positive = np.diag(confusion).astype(np.float64)
    predicted = confusion.sum(axis=0)
    support = confusion.sum(axis=1)
    # A class never predicted (or absent) has precision (recall) 0, as scikit-learn reports.
    precision = np.divide(true_positive, predicted, out=np.zeros_like(true_positive),
                          where=predicted > 0)
    recall = np.divide(true_positive, support, out=np.zeros_like(true_positive),
                       where=support > 0)
    denominator = precision + recall
    f1 = np.divide(2 * precision * recall, denominator, out=np.zeros_like(true_positive),
                   where=denominator > 0)
    return {name: {"precision": float(p), "recall": float(r), "f1": float(f),
                   "support": int(s)}
            for name, p, r, f, s in zip(labels, precision, recall, f1, support)}


def evaluate_predictions(probabilities, targets, labels, paths=None, top_k=3):
    """Metrics for one split.

    Args:
        probabilities: (N, C) class probabilities, column j = labels[j].
        targets: (N,) true class indices.
        labels: the C class names.
        paths: the N file names, listed with each mistake when given.
        top_k: k for the top-k accuracy, reported only for k < C (it is always 1 for
            k >= C): top_k and top_k_accuracy are None otherwise.
    Returns a JSON-ready dict: count, accuracy, top_k, top_k_accuracy (each accuracy with
    its 95% Wilson interval, `*_interval`: [low, high]), loss (mean
    crossentropy as Keras computes it, the val_loss of training), macro_f1, per_class {label: precision/recall/f1/support},
    confusion_matrix (rows = true class, columns = predicted) and misclassified
    (worst first: most confident wrong answers)."""
    probabilities = np.asarray(probabilities, np.float64)
    targets = np.asarray(targets, np.int64)
    count, classes = len(targets), len(labels)
    k = top_k if top_k < classes else None
    if count == 0:
        return {"count": 0, "accuracy": None, "accuracy_interval": None, "top_k": k,
                "top_k_accuracy": None, "top_k_accuracy_interval": None,
                "loss": None, "macro_f1": None,
                "per_class": _per_class(np.zeros((classes, classes), np.int64), labels),
                "confusion_matrix": np.zeros((classes, classes), np.int64).tolist(),
                "misclassified": []}
    predicted = np.argmax(probabilities, axis=1)
    confusion = np.zeros((classes, classes), np.int64)
    np.add.at(confusion, (targets, predicted), 1)
    top = np.argsort(-probabilities, axis=1, kind="stable")[:, :k or classes]
    per_class = _per_class(confusion, labels)
    true_probability = probabilities[np.arange(count), targets]
    wrong = np.flatnonzero(predicted != targets)
    wrong = wrong[np.argsort(-probabilities[wrong, predicted[wrong]], kind="stable")]
    tops = top_predictions(probabilities[wrong], labels, top_k)
    misclassified = [{"path": None if paths is None else str(paths[i]),
                      "label": labels[targets[i]], "predicted": labels[predicted[i]],
                      "probability": float(probabilities[i, predicted[i]]),
                      "label_probability": float(true_probability[i]), "top": t}
                     for i, t in zip(wrong, tops)]
    right = int(np.sum(predicted == targets))
    top_right = int(np.sum(np.any(top == targets[:, None], axis=1)))
    return {"count": int(count),
            "accuracy": right / count,
            "accuracy_interval": wilson_interval(right, count),
            "top_k": k,
            "top_k_accuracy": top_right / count if k else None,
            "top_k_accuracy_interval": wilson_interval(top_right, count) if k else None,
            "loss": float(np.mean(sparse_categorical_crossentropy(targets, probabilities))),
            "macro_f1": _macro_f1(per_class, confusion),
            "per_class": per_class,
            "confusion_matrix": confusion.tolist(),
            "misclassified": misclassified}


def _macro_f1(per_class, confusion):
    """Mean F1 over the classes that occur, as true labels or predictions (scikit-learn's
    rule): a class absent from the images scored must not count as an F1 of 0."""
    present = (confusion.sum(axis=0) + confusion.sum(axis=1)) > 0
    scores = [c["f1"] for c, keep in zip(per_class.values(), present) if keep]
    return float(np.mean(scores)) if scores else 0.0
