"""The retraining pipeline: `run(data, out, options)` reads like its stage list.

ingest -> features (cached; decoding validates) -> skip the bad files -> split ->
augmented views of the training images (cached) -> fit -> evaluate -> report -> export.
With fine-tuning, "features" are the backbone's activations at the cut point below the
trained blocks (backbones/cut.py), and fit trains those blocks with the head. Decoding happens only for cache misses: an image whose
content is cached decoded fine before, so a second run decodes and forwards nothing.
The split comes after the bad files are set aside, so that they never count towards a
class's share of val/test images; `evaluate_model` (scoring.py) repeats these steps for
model files that do not record the content of their training images.

Stages take and return plain data; progress goes to tqdm bars and the `on_stage`
callback, never to print."""
import datetime
import os
import platform
import tempfile
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from . import backbones
from .version import __version__
from .crossval import cross_validate
from .errors import ConfigError, DataError
from .evaluate import evaluate_predictions, small_sample_warnings
from .export import export_model
from .augment import augmentation_recipe, tta_recipe
from .backbones.cut import split_backbone
from .feature_cache import SET_ASIDE_SUFFIX
from .features import (FeatureCache, cache_namespace, default_cache_dir, extract_features,
                       extract_views)
from .files import atomic_write_json, atomic_write_text
from .fit import AUTO, HeadOptions, train_head
from .search import DEFAULT_BUDGET_S, choose_recipe, cut_blocks, view_request
from .ingest import exclude, ingest
from .report import write_report
from .runtimes import load_runtime, resolve_runtime, runtime_record
from .run_folder import check_cache_outside, run_folder
from .scoring import evaluate_model    # `retrain evaluate`, re-exported under its old home
from .split import SPLITS, check_percentages, seen_record, split, write_split
from .tta import check_tta, mean_over_views, tta_record

__all__ = ["RunOptions", "RunResult", "run", "cached_split", "evaluate_model"]

STAGES = ("ingest", "features", "skip", "split", "augment", "fit", "evaluate", "report",
          "export")


@dataclass
class RunOptions:
    """Everything `run` can be told; the defaults are those of `retrain fit`."""
    backbone: str = "efficientnet_lite0"
    val_percent: float = 10
    test_percent: float = 10
    cache_dir: Path = None           # None: default_cache_dir(), shared by all runs
    extract_batch_size: int = 32
    workers: int = 2
    progress: bool = True
    cluster: object = None           # cluster.Cluster: forward passes on its Dask workers
    runtime: str = "numpy"           # runtimes.py: what runs the frozen forward passes
    precision: str = "f32"
    jpeg_draft: bool = True          # the recipe's "jpeg_draft" (preprocess.py)
    head: HeadOptions = field(default_factory=HeadOptions)
    cv: int = 0                      # K > 1: also cross-validate the head (crossval.py)
    tta: int = 0                     # test-time views averaged over (tta.py)
    search: bool = False             # try search.GRID's head recipes, keep the best
    search_budget: float = DEFAULT_BUDGET_S

    def validate(self):
        """Refuse bad settings before any image is read; "auto" becomes the runtime it is."""
        check_percentages(self.val_percent, self.test_percent)
        if self.cv and (isinstance(self.cv, bool) or not isinstance(self.cv, int)
                        or not 2 <= self.cv <= 100):
            raise ConfigError(f"cv must be an integer from 2 to 100 (or 0: none). "
                              f"Received: cv={self.cv!r}")
        if self.cv and (self.head.fine_tune or self.head.augment):
            raise ConfigError("--cv cross-validates the head alone on cached features; it "
                              "cannot be combined with --fine-tune or --augment.",
                              hint="Compare head recipes with --cv, then fine-tune without it.")
        check_tta(self.tta)
        if self.search and (self.head.fine_tune or self.head.augment or self.cv):
            raise ConfigError("--search chooses the blocks to fine-tune and the views itself; "
                              "it cannot be combined with --fine-tune, --augment or --cv.",
                              hint="Leave those out with --search.")
        if self.head.learning_rate == AUTO and self.head.fine_tune:
            raise ConfigError("--lr auto finds the head's rate on pooled features; it cannot "
                              "be combined with --fine-tune yet.",
                              hint="Run `retrain lr-find DATA`, then give its rate to --lr.")
        return replace(self, head=self.head.validate(),
                       runtime=resolve_runtime(self.runtime, self.precision))


@dataclass
class RunResult:
    run_dir: Path
    model_path: Path
    report_path: Path
    metrics: dict
    history: dict
    skipped: list                    # (relative path, reason)
    warnings: list


def run(data, out, options=None, on_stage=None):
    """Train a classifier on the image folders in `data`; write everything to folder `out`.

    `on_stage(name)` is called as each of STAGES begins. Writes RUN/split.json,
    skipped.tsv, history.json, metrics.json, report.html, model.h5 and labels.txt, each
    atomically, and all of them at once (run_folder.py): RUN holds one run's outputs."""
    options = (options or RunOptions()).validate()
    check_cache_outside(options.cache_dir or default_cache_dir(), out)
    cut = _cut(options)              # a bad --fine-tune is refused before any image is read
    with run_folder(out) as staging:
        result = _run(data, staging, options, on_stage or (lambda name: None), cut)
    run_dir = Path(out)
    return replace(result, run_dir=run_dir, model_path=run_dir / result.model_path.name,
                   report_path=run_dir / result.report_path.name)


def _run(data, run_dir, options, announce, cut):
    announce("ingest")
    dataset = ingest(data)
    announce("features")
    extractor, found = _features(dataset, options, cut)
    announce("skip")
    dataset, features, keys = _set_aside_failures(dataset, found, run_dir)
    announce("split")
    parts = _split(dataset, options, run_dir)
    announce("augment")
    views = _views(dataset, keys, parts, extractor, options)
    tta = _tta_views(dataset, keys, parts, extractor, options)
    announce("fit")
    options, searched, features, views, tta, extractor = choose_recipe(
        dataset, features, views, tta, parts, extractor, options, run_dir)
    classifier, history = _fit(dataset, features, views, parts, extractor, options, run_dir,
                               searched)
    announce("evaluate")
    metrics = _evaluate(dataset, features, parts, classifier, extractor, found, views, history,
                        options, run_dir, tta)
    if options.cv:
        metrics["cross_validation"] = cross_validate(
            features, [label for _, label in dataset.records],
            [relative for relative, _ in dataset.records], dataset.classes, options.head,
            options.cv, options.val_percent)
        atomic_write_json(run_dir / "metrics.json", metrics)
    announce("report")
    report_path = write_report(run_dir / "report.html", metrics, history, dataset.root,
                               title=f"retrain: {Path(data).name}", skipped=dataset.skipped)
    announce("export")
    backbone = extractor.backbone
    model_path = export_model(run_dir, extractor.bottom, classifier, dataset.classes,
                              _model_metadata(data, backbone, options, metrics, dataset,
                                              seen_record(keys, parts)))
    set_aside = found.discarded + (views["set_aside"] if views else [])
    discarded = [f"set aside the damaged or foreign cache file {path} as "
                 f"{Path(path).name}{SET_ASIDE_SUFFIX} ({reason}); its features were computed "
                 "again" for path, reason in set_aside]
    cache = [found.cache_warning] if found.cache_warning else []
    if found.recomputed:
        cache.append(f"the features of {found.recomputed} images were lost from the cache "
                     "during the run (was it deleted?) and computed again")
    return RunResult(run_dir, model_path, report_path, metrics, history, dataset.skipped,
                     dataset.warnings + parts.warnings + discarded + cache)


def cached_split(data, options=None):
    """`run`'s stages up to the split, without a run folder (what they record goes to a
    scratch folder): (dataset, features, parts), the features cached. For `retrain
    lr-find`, which needs the training images' features and nothing else."""
    options = (options or RunOptions()).validate()
    cut = _cut(options)
    dataset = ingest(data)
    extractor, found = _features(dataset, options, cut)
    with tempfile.TemporaryDirectory() as scratch:
        dataset, features, _ = _set_aside_failures(dataset, found, Path(scratch))
        parts = _split(dataset, options, Path(scratch))
    return dataset, features, parts


@dataclass
class _Extractor:
    """The backbone split at the cut point: `bottom` runs once per image and view (its
    outputs are cached) on `runner` (runtimes.Runtime), `top` (None without fine-tuning)
    trains with the head, on numpy."""
    backbone: object
    bottom: object
    top: object
    cut: str
    recipe: dict
    runner: object


def _cut(options):
    """(backbone, bottom, top, cut): the backbone loaded and split at --fine-tune's cut,
    which refuses more blocks than it has (ConfigError) before any image is read."""
    backbone = backbones.load_backbone(options.backbone)
    # This run's recipe: the backbone's own, plus how JPEGs are decoded. Set on the freshly
    # loaded backbone, so that the cache key, the export and the model file all see it.
    backbone.metadata["preprocessing"] = dict(backbone.metadata["preprocessing"],
                                              jpeg_draft=options.jpeg_draft)
    return (backbone,) + tuple(split_backbone(backbone, cut_blocks(options, backbone)))


def _features(dataset, options, cut):
    backbone, bottom, top, cut = cut
    extractor = _Extractor(backbone, bottom, top, cut, backbone.metadata["preprocessing"],
                           load_runtime(bottom, options.runtime, options.precision, wait=False))
    cache = FeatureCache(options.cache_dir or default_cache_dir(),
                         cache_namespace(bottom, extractor.recipe, precision=options.precision))
    paths = [dataset.path(i) for i in range(len(dataset.records))]
    found = extract_features(paths, extractor.runner, extractor.recipe, cache,
                             batch_size=options.extract_batch_size, workers=options.workers,
                             progress=options.progress, cluster=options.cluster)
    return extractor, found


def _views(dataset, keys, parts, extractor, options):
    """The views of search_cuts.view_request (None without any), and their cache counts."""
    count, train = view_request(options, parts, extractor.top)
    if not count:
        return None
    augmentation = augmentation_recipe(flip=options.head.flip)
    cache = FeatureCache(options.cache_dir or default_cache_dir(),
                         cache_namespace(extractor.bottom, extractor.recipe, augmentation,
                                         precision=options.precision))
    views, hits, misses = extract_views(
        [dataset.path(i) for i in train], [keys[i] for i in train], extractor.runner,
        extractor.recipe, cache, count, augmentation,
        batch_size=options.extract_batch_size, workers=options.workers,
        progress=options.progress, cluster=options.cluster)
    return {"views": views, "hits": hits, "misses": misses, "augmentation": augmentation,
            "set_aside": list(cache.set_aside)}


def _tta_views(dataset, keys, parts, extractor, options):
    """{"val": (n, N, D), "test": (n, N, D)}: the cached outputs of the --tta views of the
    val and test images (tta.py), over which their probabilities are averaged; None
    without --tta. The train split's figures stay on the plain view."""
    if not options.tta:
        return None
    cache = FeatureCache(options.cache_dir or default_cache_dir(),
                         cache_namespace(extractor.bottom, extractor.recipe,
                                         tta_recipe(options.head.flip),
                                         precision=options.precision))
    found = {}
    for name in ("val", "test"):
        index = parts.indices(name)
        found[name] = index and extract_views(
            [dataset.path(i) for i in index], [keys[i] for i in index], extractor.runner,
            extractor.recipe, cache, options.tta, tta_recipe(options.head.flip),
            batch_size=options.extract_batch_size, workers=options.workers,
            progress=options.progress, cluster=options.cluster)[0]
    return found


def _set_aside_failures(dataset, found, run_dir):
    """Drop the files that could not be read or decoded; write RUN/skipped.tsv (all skipped
    files: those ingest refused and these). Returns the smaller dataset and its features."""
    before = [relative for relative, _ in dataset.records]
    relative_of = {str(dataset.path(i)): relative for i, relative in enumerate(before)}
    failed = {relative_of[path]: reason for path, reason in found.skipped}
    try:
        dataset = exclude(dataset, failed)
    except DataError as error:       # the staging folder goes: keep the list beside RUN
        kept = _keep_skipped(dataset.skipped + list(failed.items()), run_dir.parent)
        raise DataError(f"{error} All skipped files are listed in {kept}.",
                        hint=error.hint) from error
    row_of = {before[i]: row for row, i in enumerate(found.kept)}
    rows = [row_of[relative] for relative, _ in dataset.records]
    # Without failures, no copy: at a fine-tuning cut this array can hold hundreds of MB.
    features = found.features if rows == list(range(len(found.kept))) else found.features[rows]
    keys = [found.keys[row] for row in rows]
    lines = ["path\treason\n"] + [f"{_tsv(path)}\t{_tsv(reason)}\n"
                                  for path, reason in dataset.skipped]
    atomic_write_text(run_dir / "skipped.tsv", "".join(lines))
    return dataset, features, keys


def _keep_skipped(skipped, folder):
    """A failed run's skipped.tsv, written atomically into a new file of its own in `folder`
    (never a name that exists: no user's file is replaced); its path."""
    handle, path = tempfile.mkstemp(prefix="retrain-skipped-", suffix=".tsv", dir=folder)
    os.close(handle)
    atomic_write_text(path, "".join(["path\treason\n"] + [f"{_tsv(p)}\t{_tsv(r)}\n"
                                                           for p, r in skipped]))
    return Path(path)


def _tsv(text):
    """A TSV field that names the file exactly: backslash, tab, newline and CR escaped as
    \\\\, \\t, \\n and \\r (the README shows how to read them back)."""
    return str(text).translate({ord("\\"): "\\\\", ord("\t"): "\\t", ord("\n"): "\\n",
                                ord("\r"): "\\r"})


def _split(dataset, options, run_dir):
    parts = split(dataset, options.val_percent, options.test_percent)
    trained = {dataset.records[i][1] for i in parts.indices("train")}
    untrained = [name for label, name in enumerate(dataset.classes) if label not in trained]
    if untrained:                    # refused before anything of this run is written
        raise DataError(f"No training images for class(es) {', '.join(untrained)} in "
                        f"{dataset.root}.",
                        hint="Add images to those classes (to train/ if DATA has train/, "
                             "val/, test/ folders), or lower --val-percent/--test-percent.")
    write_split(run_dir / "split.json", parts, dataset)
    labels = [label for _, label in dataset.records]
    parts.warnings += small_sample_warnings(
        {name: len(parts.indices(name)) for name in ("val", "test")},
        {name: labels.count(label) for label, name in enumerate(dataset.classes)})
    return parts


def _fit(dataset, features, views, parts, extractor, options, run_dir, searched=None):
    """The classifier; after --search (`searched`), trained on train+val (the val split's
    figures then describe images it trained on)."""
    targets = np.array([label for _, label in dataset.records], np.int64)
    train, val = parts.indices("train"), parts.indices("val")
    if searched is not None:
        train, val = train + val, []
    classifier, history = train_head((features[train], targets[train]),
                                     (features[val], targets[val]),
                                     len(dataset.classes), options.head,
                                     progress=options.progress, top=extractor.top,
                                     views=views["views"] if views else None)
    if searched is not None:
        history["search"] = searched
    atomic_write_json(run_dir / "history.json", history)
    return classifier, history


def _training_record(options, extractor, views, history, classifier):
    """How the classifier was trained, for metrics.json, the report and the model file;
    `trainable_params`: the head's and the fine-tuned blocks' (the exported model's layers
    are all frozen, so only this record knows)."""
    head = options.head
    return {"trainable_params": history["trainable_params"],
            "fine_tune": head.fine_tune, "cut": extractor.cut, "augment": head.augment,
            "augmentation": views["augmentation"] if views else None,
            "learning_rate": head.learning_rate,
            "backbone_learning_rate": head.backbone_learning_rate if head.fine_tune else None,
            "fine_tune_head_learning_rate": head.tuning_head_rate if head.fine_tune else None,
            "freeze_epochs": history["freeze_epochs"],
            "optimizer": "AdamW", "weight_decay": head.weight_decay,
            "schedule": f"cosine decay after {head.warmup_epochs} warmup epoch(s)"
                        + (", restarted for the fine-tuning phase" if head.fine_tune else ""),
            "label_smoothing": head.label_smoothing, "epochs": history["epochs_planned"],
            "patience": head.patience, "epochs_run": history["epochs_run"],
            "best_epoch": history["best_epoch"], "tta": options.tta,
            "search": history.get("search")}


def _evaluate(dataset, features, parts, classifier, extractor, found, views, history, options,
              run_dir, tta=None):
    targets = np.array([label for _, label in dataset.records], np.int64)
    shape = (-1,) + tuple(classifier.inputs[0].shape[1:])
    metrics = {"classes": list(dataset.classes),
               "backbone": extractor.backbone.metadata["backbone"],
               "runtime": runtime_record(extractor.runner),
               "cache": {"hits": found.hits, "misses": found.misses,
                         "view_hits": views["hits"] if views else 0,
                         "view_misses": views["misses"] if views else 0},
               "skipped": len(dataset.skipped),
               "training": _training_record(options, extractor, views, history,
                                                        classifier)}
    for name in SPLITS:
        index = parts.indices(name)
        probabilities = (mean_over_views(classifier.predict, features[index],
                                         (tta or {}).get(name), shape) if index
                         else np.empty((0, len(dataset.classes))))
        metrics[name] = evaluate_predictions(probabilities, targets[index], dataset.classes,
                                             paths=[dataset.records[i][0] for i in index])
    atomic_write_json(run_dir / "metrics.json", metrics)
    return metrics


def _model_metadata(data, backbone, options, metrics, dataset, seen):
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
                           "head": asdict(options.head)},
            "training": metrics["training"],
            "split": {"val_percent": options.val_percent, "test_percent": options.test_percent,
                      "set_aside": [relative for relative, _ in dataset.skipped]},
            "seen": seen,
            "tta": tta_record(options.tta, options.head.flip),
            "metrics": {name: {k: metrics[name][k] for k in summary_keys} for name in SPLITS}}
