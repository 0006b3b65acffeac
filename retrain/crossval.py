"""`retrain fit --cv K`: K-fold cross-validation of the head on the cached features.

On small data one test split says little (on digits, 39 test images said that fine-tuning
helped where 100 held-out ones said it hurt), so a user comparing recipes needs every
image scored once, by a head that did not train on it: K heads, each trained on K-1 folds
and scored on the last, give K accuracies, their mean and their spread.

Only the head is cross-validated: it trains in about a second on cached features, where
fine-tuning the backbone K times would cost K full runs, so --cv is refused with
--fine-tune and --augment. Folds are stratified and stable: each class's images, ordered
by the hash of their relative path (split.hash_percentage), are dealt to folds 1..K in turn,
so adding images moves few others. Inside the K-1 training folds, one image in
round(100 / val_percent) (by the same order) is set aside for validation, as a run's val
split is: early stopping never sees the scored fold."""
import numpy as np

from .errors import DataError
from .evaluate import evaluate_predictions, wilson_interval
from .fit import train_head
from .split import hash_percentage

__all__ = ["assign_folds", "cross_validate"]


def assign_folds(relatives, labels, folds):
    """(fold, row) per image: class by class, images in hash order are dealt to folds
    0..folds-1 in turn; `row` counts an image's round of dealing."""
    labels = np.asarray(labels)
    rank = np.empty(len(labels), np.int64)
    for label in np.unique(labels):
        members = sorted(np.flatnonzero(labels == label),
                         key=lambda i: (hash_percentage(relatives[i]), relatives[i]))
        rank[members] = np.arange(len(members))
    return rank % folds, rank // folds


def cross_validate(features, targets, relatives, classes, head, folds, val_percent, top=None,
                   views=None):
    """K-fold cross-validation of a head trained with `head` (fit.HeadOptions) on pooled
    `features` (N, D) with class indices `targets`; `relatives` order the folds. With `top`
    (a factory of fresh fine-tuned blocks, search_cuts.fresh_top), `features` are the
    activations at their cut and each fold fine-tunes its own copy, on `views` (N, K, D)
    of the images as well if given. Returns
    the JSON-ready record: per fold its count, accuracy and interval; the mean and sample
    standard deviation of the fold accuracies; the pooled accuracy of all N images."""
    targets = np.asarray(targets, np.int64)
    counts = np.bincount(targets, minlength=len(classes))
    few = [f"{name!r} has {int(n)}" for name, n in zip(classes, counts) if n < 2]
    if few:
        raise DataError(f"--cv needs at least 2 images in each class: {', '.join(few)}.",
                        hint="Add images to those classes, or leave out --cv.")
    if counts.max() < folds:
        raise DataError(f"--cv {folds} leaves folds empty: the largest class has "
                        f"{int(counts.max())} images.", hint="Give fewer folds.")
    fold, row = assign_folds(relatives, targets, folds)
    step = round(100 / val_percent) if val_percent else 0
    per_fold, right = [], 0
    for k in range(folds):
        test = np.flatnonzero(fold == k)
        val_mask = (fold != k) & (row % step == step - 1) if step else np.zeros(len(fold), bool)
        train = np.flatnonzero((fold != k) & ~val_mask)
        val = np.flatnonzero(val_mask)
        classifier, history = train_head((features[train], targets[train]),
                                         (features[val], targets[val]), len(classes), head,
                                         progress=False, top=top and top(),
                                         views=None if views is None else views[train])
        probabilities = classifier.predict(features[test].reshape(
            (len(test),) + tuple(classifier.inputs[0].shape[1:])))
        scored = evaluate_predictions(probabilities, targets[test], classes)
        right += int(np.sum(np.argmax(probabilities, axis=1) == targets[test]))
        per_fold.append({"fold": k + 1, "count": len(test), "train": len(train),
                         "val": len(val), "accuracy": scored["accuracy"],
                         "accuracy_interval": scored["accuracy_interval"],
                         "epochs_run": history["epochs_run"]})
    accuracies = np.array([f["accuracy"] for f in per_fold])
    return {"folds": folds, "what": "the head alone, on cached features" if top is None
            else "the head with fine-tuned blocks, on cached activations",
            "mean_accuracy": float(accuracies.mean()),
            "std_accuracy": float(accuracies.std(ddof=1)),
            "min_accuracy": float(accuracies.min()), "max_accuracy": float(accuracies.max()),
            "pooled": {"count": len(targets), "accuracy": right / len(targets),
                       "accuracy_interval": wilson_interval(right, len(targets))},
            "per_fold": per_fold}
