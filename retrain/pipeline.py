"""The retraining pipeline: `run(data, out, options)` runs the stages of PIPELINE in turn.

ingest -> features (cached; decoding validates) -> skip the bad files -> split ->
augmented views of the training images (cached) -> fit -> evaluate -> report -> export.
With fine-tuning, "features" are the backbone's activations at the cut point below the
trained blocks (backbones/cut.py), and fit trains those blocks with the head. Decoding
happens only for cache misses: an image whose content is cached decoded fine before, so a
second run decodes and forwards nothing. The split comes after the bad files are set
aside, so that they never count towards a class's share of val/test images;
`evaluate_model` (scoring.py) repeats these steps for model files that do not record the
content of their training images.

Each stage takes the run's context (RunContext), reads what earlier stages filled in and
fills in its own fields; progress goes to tqdm bars and the `on_stage` callback, never to
print."""
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable

import numpy as np

from .crossval import cross_validate
from .errors import ConfigError, DataError
from .evaluate import evaluate_predictions, small_sample_warnings
from .export import export_model, model_metadata
from .extraction import (BackboneCut, augmented_views, cut_backbone, plain_features,
                         test_time_views)
from .feature_cache import SET_ASIDE_SUFFIX
from .features import default_cache_dir
from .files import atomic_write_json
from .fit import HeadOptions, train_head
from .ingest import ingest
from .options import AUTO, check, default, values_from
from .report import write_report
from .runtimes import resolve_runtime, runtime_record
from .run_folder import check_cache_outside, run_folder
from .scoring import evaluate_model    # `retrain evaluate`, re-exported under its old home
from .search import choose_recipe
from .search_cuts import validated_head, view_request
from .skipped import set_aside_failures
from .split import SPLITS, check_percentages, seen_record, split, write_split
from .tta import mean_over_views

__all__ = ["RunOptions", "RunResult", "RunContext", "PIPELINE", "STAGES", "STAGE_TEXT", "run",
           "cached_split", "evaluate_model"]


@dataclass
class RunOptions:
    """Everything `run` can be told; the defaults are those of `retrain fit`."""
    backbone: str = default("backbone")
    val_percent: float = default("val_percent")
    test_percent: float = default("test_percent")
    cache_dir: Path = default("cache_dir")    # None: default_cache_dir(), shared by all runs
    extract_batch_size: int = default("extract_batch_size")
    workers: int = default("workers")
    progress: bool = default("progress")
    cluster: object = None           # cluster.Cluster: forward passes on its Dask workers
    runtime: str = default("runtime")   # runtimes.py: what runs the frozen forward passes
    precision: str = default("precision")
    jpeg_draft: bool = default("jpeg_draft")  # the recipe's "jpeg_draft" (preprocess.py)
    crop_fraction: float = default("crop_fraction")   # None: the backbone recipe's own
    head: HeadOptions = field(default_factory=HeadOptions)
    cv: int = default("cv")          # K > 1: also cross-validate the head (crossval.py)
    tta: int = default("tta")        # test-time views averaged over (tta.py)
    search: bool = default("search")    # try search.GRID's recipes, keep the best
    search_budget: float = default("search_budget")

    @classmethod
    def from_args(cls, args):
        """The options a command line parsed into `args` (argparse's namespace) holds,
        the head's among them; the others keep their defaults."""
        return cls(head=HeadOptions(**values_from(args, HeadOptions)), **values_from(args, cls))

    def validate(self):
        """Refuse bad settings before any image is read; "auto" becomes the runtime it is."""
        check(self)
        check_percentages(self.val_percent, self.test_percent)
        if self.cv and (self.head.fine_tune or self.head.augment):
            raise ConfigError("--cv cross-validates the head alone on cached features; it "
                              "cannot be combined with --fine-tune or --augment.",
                              hint="Compare head recipes with --cv, then fine-tune without it.")
        if self.search and (self.head.fine_tune or self.head.augment or self.cv):
            raise ConfigError("--search chooses the blocks to fine-tune and the views itself; "
                              "it cannot be combined with --fine-tune, --augment or --cv.",
                              hint="Leave those out with --search.")
        if self.head.learning_rate == AUTO and self.head.fine_tune:
            raise ConfigError("--lr auto finds the head's rate on pooled features; it cannot "
                              "be combined with --fine-tune yet.",
                              hint="Run `retrain lr-find DATA`, then give its rate to --lr.")
        return replace(self, head=validated_head(self),
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


@dataclass
class RunContext:
    """What a run knows so far. Stages fill in the fields below `cut` in PIPELINE's order:
    ingest the dataset; features `found` (features.FeatureSet); skip the `features` and
    `keys` (content hashes) of the usable images; split the `parts`; augment the `views`
    and `tta` views; fit the `model` and its `history` (and `searched`, --search's record);
    evaluate the `metrics`; report and export their paths."""
    data: Path
    folder: Path                     # where the run's files are staged (run_folder.py)
    options: RunOptions
    cut: BackboneCut
    dataset: object = None
    found: object = None
    features: np.ndarray = None
    keys: list = None
    parts: object = None
    views: object = None             # extraction.AugmentedViews or None
    tta: object = None               # extraction.TestTimeViews or None
    searched: dict = None
    model: object = None
    history: dict = None
    metrics: dict = None
    report_path: Path = None
    model_path: Path = None

    def targets(self):
        return np.array([label for _, label in self.dataset.records], np.int64)

    def paths(self, index):
        """(the files, their content keys) of the records at `index`."""
        return [self.dataset.path(i) for i in index], [self.keys[i] for i in index]


@dataclass(frozen=True)
class Stage:
    name: str
    text: str                        # what `retrain fit` prints as the stage begins
    run: Callable[[RunContext], None]


def _ingest(run):
    run.dataset = ingest(run.data)


def _features(run):
    run.found = plain_features([run.dataset.path(i) for i in range(len(run.dataset.records))],
                               run.options, run.cut)


def _skip(run):
    run.dataset, run.features, run.keys = set_aside_failures(run.dataset, run.found,
                                                             run.folder)


def _split(run):
    dataset, options = run.dataset, run.options
    parts = split(dataset, options.val_percent, options.test_percent)
    trained = {dataset.records[i][1] for i in parts.indices("train")}
    untrained = [name for label, name in enumerate(dataset.classes) if label not in trained]
    if untrained:                    # refused before anything of this run is written
        raise DataError(f"No training images for class(es) {', '.join(untrained)} in "
                        f"{dataset.root}.",
                        hint="Add images to those classes (to train/ if DATA has train/, "
                             "val/, test/ folders), or lower --val-percent/--test-percent.")
    write_split(run.folder / "split.json", parts, dataset)
    labels = [label for _, label in dataset.records]
    parts.warnings += small_sample_warnings(
        {name: len(parts.indices(name)) for name in ("val", "test")},
        {name: labels.count(label) for label, name in enumerate(dataset.classes)})
    run.parts = parts


def _augment(run):
    count, index = view_request(run.options, run.parts, run.cut.top)
    run.views = augmented_views(*run.paths(index), count, run.options, run.cut)
    run.tta = test_time_views({name: run.paths(run.parts.indices(name))
                               for name in ("val", "test")}, run.options, run.cut)


def _fit(run):
    """The model; after --search, trained on train+val (the val split's figures then
    describe images it trained on)."""
    run.options, run.searched, run.features, run.views, run.tta, run.cut = choose_recipe(
        run.dataset, run.features, run.views, run.tta, run.parts, run.cut, run.options,
        run.folder)
    targets, features = run.targets(), run.features
    train, val = run.parts.indices("train"), run.parts.indices("val")
    if run.searched is not None:
        train, val = train + val, []
    run.model, run.history = train_head(
        (features[train], targets[train]), (features[val], targets[val]),
        len(run.dataset.classes), run.options.head, progress=run.options.progress,
        top=run.cut.top, views=run.views.views if run.views else None)
    if run.searched is not None:
        run.history["search"] = run.searched
    atomic_write_json(run.folder / "history.json",
                      {k: v for k, v in run.history.items() if k != "training"})


def _evaluate(run):
    """metrics.json: each split's metrics (probabilities averaged over its --tta views),
    how the model was trained (fit's record, and what the pipeline fed it), the cache's
    counts; with --cv, the cross-validation of the head alone."""
    views, options = run.views, run.options
    run.metrics = {"classes": list(run.dataset.classes),
                   "backbone": run.cut.backbone.metadata["backbone"],
                   "runtime": runtime_record(run.cut.runner),
                   "cache": {"hits": run.found.hits, "misses": run.found.misses,
                             "view_hits": views.hits if views else 0,
                             "view_misses": views.misses if views else 0},
                   "skipped": len(run.dataset.skipped),
                   "training": dict(run.history["training"], cut=run.cut.cut,
                                    augment=options.head.augment,
                                    augmentation=views.augmentation if views else None,
                                    tta=options.tta, search=run.history.get("search"))}
    shape, targets = (-1,) + tuple(run.model.inputs[0].shape[1:]), run.targets()
    for name in SPLITS:
        index = run.parts.indices(name)
        probabilities = (mean_over_views(run.model.predict, run.features[index],
                                         run.tta.of(name) if run.tta else None, shape)
                         if index else np.empty((0, len(run.dataset.classes))))
        run.metrics[name] = evaluate_predictions(
            probabilities, targets[index], run.dataset.classes,
            paths=[run.dataset.records[i][0] for i in index])
    if options.cv:
        run.metrics["cross_validation"] = cross_validate(
            run.features, list(targets), [relative for relative, _ in run.dataset.records],
            run.dataset.classes, options.head, options.cv, options.val_percent)
    atomic_write_json(run.folder / "metrics.json", run.metrics)


def _report(run):
    run.report_path = write_report(run.folder / "report.html", run.metrics, run.history,
                                   run.dataset.root, title=f"retrain: {Path(run.data).name}",
                                   skipped=run.dataset.skipped)


def _export(run):
    metadata = model_metadata(run.data, run.cut.backbone, run.options, run.metrics,
                              run.dataset, seen_record(run.keys, run.parts))
    run.model_path = export_model(run.folder, run.cut.bottom, run.model, run.dataset.classes,
                                  metadata)


PIPELINE = (
    Stage("ingest", "finding the images", _ingest),
    Stage("features", "computing backbone features", _features),
    Stage("skip", "setting aside the files that failed to decode", _skip),
    Stage("split", "splitting into train, val and test", _split),
    Stage("augment", "computing augmented views of the training images", _augment),
    Stage("fit", "training the classifier", _fit),
    Stage("evaluate", "scoring train, val and test", _evaluate),
    Stage("report", "writing report.html", _report),
    Stage("export", "writing model.h5 and labels.txt", _export),
)
STAGES = tuple(stage.name for stage in PIPELINE)
STAGE_TEXT = {stage.name: stage.text for stage in PIPELINE}


def run(data, out, options=None, on_stage=None):
    """Train a classifier on the image folders in `data`; write everything to folder `out`.

    `on_stage(name)` is called as each of STAGES begins. Writes RUN/split.json,
    skipped.tsv, history.json, metrics.json, report.html, model.h5 and labels.txt, each
    atomically, and all of them at once (run_folder.py): RUN holds one run's outputs."""
    options = (options or RunOptions()).validate()
    check_cache_outside(options.cache_dir or default_cache_dir(), out)
    # a bad --fine-tune is refused before any image is read; the runtime starts loading
    with cut_backbone(options) as cut, run_folder(out) as staging:
        context = RunContext(data, staging, options, cut)
        for stage in PIPELINE:
            (on_stage or (lambda name: None))(stage.name)
            stage.run(context)
    run_dir = Path(out)
    return RunResult(run_dir, run_dir / context.model_path.name,
                     run_dir / context.report_path.name, context.metrics, context.history,
                     context.dataset.skipped, _warnings(context))


def _warnings(run):
    set_aside = run.found.discarded + (run.views.set_aside if run.views else [])
    discarded = [f"set aside the damaged or foreign cache file {path} as "
                 f"{Path(path).name}{SET_ASIDE_SUFFIX} ({reason}); its features were computed "
                 "again" for path, reason in set_aside]
    cache = [run.found.cache_warning] if run.found.cache_warning else []
    if run.found.recomputed:
        cache.append(f"the features of {run.found.recomputed} images were lost from the cache "
                     "during the run (was it deleted?) and computed again")
    return run.dataset.warnings + run.parts.warnings + discarded + cache


def cached_split(data, options=None):
    """`run`'s stages up to the split, without a run folder (what they record goes to a
    scratch folder): (dataset, features, parts), the features cached. For `retrain
    lr-find`, which needs the training images' features and nothing else."""
    options = (options or RunOptions()).validate()
    with tempfile.TemporaryDirectory() as scratch, cut_backbone(options) as cut:
        context = RunContext(data, Path(scratch), options, cut)
        for stage in PIPELINE[:STAGES.index("split") + 1]:
            stage.run(context)
    return context.dataset, context.features, context.parts

