"""The run's backbone outputs: the backbone loaded and split at the cut point, and what its
frozen bottom computes, through the feature cache (features.py), for each image's plain
view, the training images' augmented views (--augment) and the val and test images'
test-time views (--tta). A view that is in the cache is never decoded again."""
from dataclasses import dataclass

import numpy as np

from . import backbones
from .augment import augmentation_recipe, tta_recipe
from .backbones.cut import split_backbone
from .features import (FeatureCache, cache_namespace, default_cache_dir, extract_features,
                       extract_views)
from .runtimes import load_runtime, start_runtime
from .search_cuts import cut_blocks

__all__ = ["BackboneCut", "AugmentedViews", "TestTimeViews", "cut_backbone", "plain_features",
           "augmented_views", "test_time_views"]


@dataclass
class BackboneCut:
    """The backbone split at the cut point: `bottom` runs once per image and view (its
    outputs are cached) on `runner` (runtimes.Runtime, loading from cut_backbone on); `top`
    (None without fine-tuning) trains with the head, on numpy; `cut` names its lowest block.

    Used as a context (`with cut_backbone(options) as cut:`): a run that fails before its
    first use of the runtime still waits for the loading to end on leaving, so that numpy
    gets its OpenBLAS threads back (runtimes._Loading), and the run's own error is raised,
    not the runtime's."""
    backbone: object
    bottom: object
    top: object
    cut: str
    recipe: dict
    runner: object = None

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        try:
            self.runner = self.runner.wait()
        except Exception:       # noqa: BLE001  said at its first use, or moot after an error
            pass


@dataclass
class AugmentedViews:
    """The training images' augmented views, (n, K, D) float16, and their cache counts."""
    views: np.ndarray
    hits: int
    misses: int
    augmentation: dict              # the augmentation recipe (augment.py)
    set_aside: list                 # (cache file, reason): damaged files set aside


@dataclass
class TestTimeViews:
    """The --tta views of the val and test images, (n, N, D) each (None for no images)."""
    val: np.ndarray = None
    test: np.ndarray = None

    def of(self, split_name):
        """The views of split `split_name` (None for the train split: its figures stay on
        the plain view)."""
        return getattr(self, split_name) if split_name in ("val", "test") else None


def cut_backbone(options):
    """The backbone (options.backbone) loaded and split at --fine-tune's cut, or --search's
    deepest (search_cuts.cut_blocks): a BackboneCut, whose runtime (--runtime) starts
    loading in a thread before the backbone is built (runtimes.start_runtime: what an
    earlier run compiled is restored meanwhile), and is checked against numpy once it is,
    or at its first use. More blocks than it has are refused (ConfigError) before any image
    is read."""
    loading = _start_runtime(options)               # meanwhile the backbone loads
    try:
        backbone = backbones.load_backbone(options.backbone)
        # This run's recipe: the backbone's own, plus how JPEGs are decoded and
        # --crop-fraction. Set on the freshly loaded backbone, so that the cache key, the
        # export and the model file all see it.
        recipe = dict(backbone.metadata["preprocessing"], jpeg_draft=options.jpeg_draft)
        if options.crop_fraction is not None:
            recipe["crop_fraction"] = float(options.crop_fraction)
        backbone.metadata["preprocessing"] = recipe
        bottom, top, cut = split_backbone(backbone, cut_blocks(options, backbone))
    except BaseException:
        if loading is not None:
            loading.provide(None)                   # its thread ends
        raise
    runner = load_runtime(bottom, "numpy", options.precision) if loading is None else \
        loading.provide(bottom)
    return BackboneCut(backbone, bottom, top, cut, backbone.metadata["preprocessing"], runner)


def _start_runtime(options):
    """runtimes.start_runtime for the bottom that cut_backbone will build, named by the
    backbone, its weights file and the cut (--fine-tune's blocks, or --search's)."""
    record = backbones.get_backbone(options.backbone)
    cut = "search" if options.search else options.head.fine_tune
    shape = tuple(record.preprocessing["input_size"]) + (3,)
    return start_runtime((f"backbone {record.name}", f"cut {cut}", f"input {shape}"),
                         [backbones.weights_path(record.name)], shape, options.runtime,
                         options.precision)


def _batch(options, cut):
    return options.extract_batch_size or cut.runner.batch_size


def _cache(options, cut, views_recipe=None):
    return FeatureCache(options.cache_dir or default_cache_dir(),
                        cache_namespace(cut.bottom, cut.recipe, views_recipe,
                                        precision=options.precision))


def plain_features(paths, options, cut):
    """features.FeatureSet of the images at `paths` (the bottom's outputs, plain view), on
    `cut.runner`, which runs the bottom for every later view too."""
    features = extract_features(paths, cut.runner, cut.recipe, _cache(options, cut),
                                batch_size=_batch(options, cut), workers=options.workers,
                                progress=options.progress, cluster=options.cluster)
    cut.runner = cut.runner.wait()      # loaded before training starts, even on cached features
    return features


def augmented_views(paths, keys, count, options, cut):
    """AugmentedViews, `count` of each image (`paths`, content hashes `keys`): the
    training images' for --augment, train and val for --search (search_cuts.view_request);
    None for a count of 0."""
    if not count:
        return None
    augmentation = augmentation_recipe(flip=options.head.flip)
    cache = _cache(options, cut, augmentation)
    views, hits, misses = extract_views(
        paths, keys, cut.runner, cut.recipe, cache, count, augmentation,
        batch_size=_batch(options, cut), workers=options.workers,
        progress=options.progress, cluster=options.cluster)
    return AugmentedViews(views, hits, misses, augmentation, list(cache.set_aside))


def test_time_views(images, options, cut):
    """TestTimeViews of the val and test images (`images`: {split: (paths, keys)}), over
    which their probabilities are averaged (tta.py); None without --tta."""
    if not options.tta:
        return None
    recipe = tta_recipe(options.head.flip)
    cache, found = _cache(options, cut, recipe), TestTimeViews()
    for name, (paths, keys) in images.items():
        setattr(found, name, paths and extract_views(
            paths, keys, cut.runner, cut.recipe, cache, options.tta, recipe,
            batch_size=_batch(options, cut), workers=options.workers,
            progress=options.progress, cluster=options.cluster)[0])
    return found
