"""The options that choose how a model answers and how a recipe is chosen: --min-confidence
(classify, evaluate, serve), kept apart from cli.py so that it stays within its budget:
parsing and formatting only, no printing."""
import argparse

from .augment import MAX_TTA_VIEWS
from .cli_usage import int_from_to

__all__ = ["add_min_confidence_option", "add_tta_option", "coverage_lines"]


def _confidence(text):
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number; got {text!r}") from None
    if not 0.0 <= value < 1.0:
        raise argparse.ArgumentTypeError(f"must be a probability in [0, 1); got {text}")
    return value


def add_min_confidence_option(p):
    p.add_argument("--min-confidence", type=_confidence, default=None, metavar="P",
                   help="answer \"unknown\" where the most probable class has a probability "
                        "below P (`retrain evaluate` prints what each P leaves: coverage "
                        "and accuracy)")


def add_tta_option(p, fit=False):
    """--tta N: on fit, what the model records (default 0); on its consumers, an override
    of the record (default: the record)."""
    views = (f"average the class probabilities over the plain view and N fixed views (up to "
             f"{MAX_TTA_VIEWS}: the mirror image unless trained with --no-flip, then "
             "crops)")
    p.add_argument("--tta", type=int_from_to(0, MAX_TTA_VIEWS), metavar="N",
                   default=0 if fit else None,
                   help=f"{views}; the model records N, and classify, evaluate and serve "
                        "then do the same" if fit else
                        f"{views} (default: the N the model records; 0: the plain view)")


def coverage_lines(metrics):
    """`retrain evaluate`'s coverage table: per threshold, the share answered and the
    accuracy of the answers with its 95% interval."""
    rows = metrics.get("coverage") or []
    if not rows or not metrics["count"]:
        return []
    lines = ["", "min confidence  coverage  answered  accuracy (95% CI)"]
    for row in rows:
        accuracy = ("-" if row["accuracy"] is None else
                    f"{row['accuracy']:.4f} ({row['accuracy_interval'][0]:.3f}-"
                    f"{row['accuracy_interval'][1]:.3f})")
        lines.append(f"{row['threshold']:14.2f}  {row['coverage']:8.4f}  "
                     f"{row['answered']:8d}  {accuracy}")
    return lines
