"""`--min-confidence P`: answer "unknown" where the most probable class is below P, and the
coverage table `retrain evaluate` prints so that the user can choose P.

A classifier always names a class, even for an image of none of them; a threshold on its
top probability trades answers for accuracy. What it buys is data-dependent, so evaluate
measures it on the images it scores: per threshold, the share answered (coverage) and the
accuracy of those answers, with its 95% Wilson interval (selective classification's
risk-coverage curve, Geifman and El-Yaniv 2017)."""
import numpy as np

from .options import OPTIONS
from .evaluate import wilson_interval

__all__ = ["UNKNOWN", "COVERAGE_THRESHOLDS", "check_min_confidence", "mark_unknown",
           "coverage_table", "coverage_at"]

UNKNOWN = "unknown"
COVERAGE_THRESHOLDS = (0.0, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99)


def check_min_confidence(value):
    """`value` (not None: callers skip the threshold then) as a float in [0, 1), or
    OptionError (options.OPTIONS["min_confidence"])."""
    return float(OPTIONS["min_confidence"].check(value))


def mark_unknown(records, min_confidence):
    """Each classify record (top_or_error's) gains "prediction": its top label, or UNKNOWN
    where the top probability is below `min_confidence`; the top list stays as it is, so
    the user still sees what the model thought. Error records are left alone."""
    for record in records:
        if "top" in record:
            best = record["top"][0]
            record["prediction"] = (best["label"] if best["probability"] >= min_confidence
                                    else UNKNOWN)
    return records


def coverage_at(probabilities, targets, threshold):
    """{"threshold", "answered", "coverage", "accuracy", "accuracy_interval"}: the images
    whose top probability is at least `threshold`, and how many of those are right
    (accuracy None where none is answered)."""
    probabilities = np.asarray(probabilities, np.float64)
    targets = np.asarray(targets, np.int64)
    count = len(targets)
    answered = (probabilities.max(axis=1) >= threshold) if count else np.zeros(0, bool)
    right = int(np.sum(np.argmax(probabilities[answered], axis=1) == targets[answered])
                ) if answered.any() else 0
    n = int(answered.sum())
    return {"threshold": float(threshold), "answered": n,
            "coverage": n / count if count else None,
            "accuracy": right / n if n else None,
            "accuracy_interval": wilson_interval(right, n)}


def coverage_table(probabilities, targets, thresholds=COVERAGE_THRESHOLDS, extra=None):
    """coverage_at for each threshold (and `extra`, the user's own, if given), ascending."""
    chosen = sorted(set(thresholds) | ({float(extra)} if extra is not None else set()))
    return [coverage_at(probabilities, targets, t) for t in chosen]
