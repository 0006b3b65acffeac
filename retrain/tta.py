"""Test-time augmentation, `--tta N`: the class probabilities of an image are the mean over
its plain view and N fixed views (augment.tta_views: the mirror image where the
model's recipe allows it, then crops), as fastai's `Learner.tta` and timm's TTA average.

The model file records N and whether mirrors are allowed (metadata "tta"), so classify,
evaluate, serve and fit's own test figures all average the same views; `--tta N` on a
consumer overrides the record (0: the plain view alone). Mirrors are allowed unless the
model was trained with --no-flip: a digit or a letter mirrored is another class or none."""
import itertools

import numpy as np

from .augment import MAX_TTA_VIEWS, tta_views
from .options import OPTIONS

__all__ = ["check_tta", "flip_allowed", "model_tta", "tta_record", "spread", "collapse",
           "mean_over_views"]


def check_tta(count):
    """`count` as an int from 0 to MAX_TTA_VIEWS, or OptionError (options.OPTIONS["tta"])."""
    return OPTIONS["tta"].check(count)


def flip_allowed(metadata):
    """Whether the model's recipe allows mirrored views: its augmentation's "flip", else
    the --no-flip it was trained with (provenance.head.flip), else yes."""
    augmentation = (metadata.get("training") or {}).get("augmentation") or {}
    if "flip" in augmentation:
        return bool(augmentation["flip"])
    head = (metadata.get("provenance") or {}).get("head") or {}
    return bool(head.get("flip", True))


def tta_record(count, flip):
    """What the model file records: {"views": N, "flip": mirrors allowed}."""
    return {"views": check_tta(count), "flip": bool(flip)}


def model_tta(metadata, override=None):
    """The test-time views (their parameters) a consumer of a model averages over: the
    model's record, or `override` views where given (None: the record; 0: none)."""
    record = metadata.get("tta") or {}
    count = record.get("views", 0) if override is None else check_tta(override)
    return tta_views(count, record.get("flip", flip_allowed(metadata)))


def spread(paths, views):
    """(paths, views) for preprocess.iter_batches: each path once per view, the plain view
    (None) first, lazily (paths may be a generator)."""
    k = len(views) + 1
    return ((path for path in paths for _ in range(k)),
            itertools.cycle([None] + list(views)))


def collapse(done, probabilities, k):
    """One iter_batches batch of spread files back to one entry per file: `done` (path,
    reason) per view, `probabilities` (usable views, C) -> (done per file, the mean over
    each usable file's k views). A file with any view unusable is unusable, with the first
    reason. The batch must hold whole files (a batch size that is a multiple of k)."""
    if k == 1:
        return done, probabilities
    usable = np.array([reason is None for _, reason in done], bool)
    rows = np.full((len(done), probabilities.shape[1]), np.nan)
    rows[usable] = probabilities
    whole = usable.reshape(-1, k).all(axis=1)
    files = [(done[i][0], None if whole[i // k] else
              next(reason for _, reason in done[i:i + k] if reason))
             for i in range(0, len(done), k)]
    return files, rows.reshape(-1, k, rows.shape[1]).mean(axis=1)[whole]


def mean_over_views(predict, plain, views, shape):
    """The mean of predict(x) over `plain` (n, D) and each view of `views` (n, N, D) (the
    cached test-time views), each reshaped to `shape`; views None: predict(plain)."""
    total = np.asarray(predict(plain.reshape(shape)), np.float64)
    for k in range(0 if views is None else views.shape[1]):
        total = total + predict(views[:, k].astype(np.float32).reshape(shape))
    return total / (1 + (0 if views is None else views.shape[1]))
