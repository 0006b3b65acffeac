"""--search's fine-tuning recipes, all from one cache.

With --search the backbone is cut below the deepest block any recipe of the grid
fine-tunes (DEEPEST blocks from the top, fewer if the backbone has fewer): the pipeline
caches every image's activations there, and VIEWS augmented views of each train and val
image, once for the whole search. Every shallower cut's activations (a recipe fine-tuning
fewer blocks) and the pooled features the head recipes train on are computed from those by
the frozen blocks in between (`Ladder.lift`): no image is decoded, and no image goes
through the bottom of the backbone, again, whatever the recipes tried.

A fine-tuning recipe's cost is estimated before it runs (`tuning_estimate`): the top's
forward pass and one training epoch timed on a few cached activations, times the passes
its schedule makes, corrected by what the recipes run before it took against their own
estimates."""
import time
from dataclasses import replace

import numpy as np

from .backbones.cut import split_backbone
from .backbones.registry import block_layers, block_names
from .engine import Model, clone_model
from .fit import train_head
from .progress import progress_bar

__all__ = ["DEEPEST", "VIEWS", "Ladder", "cut_blocks", "validated_head", "view_request",
           "tuning_estimate", "fresh_top", "apply_choice"]

DEEPEST = 3        # the most blocks a recipe fine-tunes: the cut the cache holds
VIEWS = 4          # augmented views of each train and val image, cached for the search


def cut_blocks(options, backbone):
    """Where the pipeline cuts `backbone` (pipeline.RunOptions `options`): --fine-tune's
    blocks, or with --search the deepest cut its grid can use (0 if it has no blocks)."""
    if not options.search:
        return options.head.fine_tune
    return min(DEEPEST, len(block_names(backbone)))


def validated_head(options):
    """RunOptions `options`' head checked (fit.HeadOptions.validate), AUTO resolved, except
    with --search: there AUTO epochs and patience stay, each recipe resolving them for its
    kind (50 epochs and early stopping for the head alone, 15 and none when fine-tuning)."""
    head = options.head.validate()
    return options.head if options.search else head


def view_request(options, parts, top):
    """(views per image, the images' indices) for the pipeline's augmentation stage:
    --augment's views of the training images, or with --search (and a backbone it can
    fine-tune: `top`) VIEWS views of train and val, in that order, since the search
    cross-validates over both and the chosen recipe retrains on both."""
    if options.search and top is not None:
        return VIEWS, parts.indices("train") + parts.indices("val")
    return options.head.augment, parts.indices("train")


class Ladder:
    """The frozen blocks of `backbone` above the cut that fine-tunes `deepest` blocks:
    `lift(x, blocks)` turns activations cached at that cut into those at the cut that
    fine-tunes `blocks` blocks (0: the pooled features)."""

    def __init__(self, backbone, deepest, progress=True):
        self.backbone, self.deepest, self.progress = backbone, deepest, progress
        self.start = _cut_tensor(backbone, deepest)
        self._models = {}

    def model(self, blocks):
        if blocks not in self._models:
            end = (self.backbone if blocks == 0 else
                   Model(self.backbone.inputs[0], _cut_tensor(self.backbone, blocks)))
            self._models[blocks] = clone_model(end, start=self.start,
                                               name=f"search_lift_{blocks}")
        return self._models[blocks]

    def lift(self, x, blocks, batch_size=128):
        """Flat activations at the deepest cut, (n, D) or views (n, K, D), at `blocks`'
        cut: (n, D') or (n, K, D'), in x's dtype. None stays None."""
        if x is None or blocks == self.deepest or not len(x):
            return x
        model = self.model(blocks)
        flat = np.asarray(x).reshape((-1,) + tuple(self.start.shape[1:]))
        width = int(np.prod(model.outputs[0].shape[1:]))
        out = np.empty((len(flat), width), x.dtype)
        steps = range(0, len(flat), batch_size)
        with progress_bar(total=len(flat), desc=f"search: activations for {blocks} block(s)",
                          unit="image", disable=not self.progress, leave=False) as bar:
            for start in steps:
                chunk = flat[start:start + batch_size].astype(np.float32)
                out[start:start + len(chunk)] = model.predict(chunk).reshape(len(chunk), -1)
                bar.update(len(chunk))
        return out.reshape(x.shape[:-1] + (width,))


def _cut_tensor(backbone, blocks):
    """The input tensor of the lowest of the top `blocks` blocks (backbones/cut.py)."""
    return block_layers(backbone, block_names(backbone)[-blocks])[0].inbound[0]


def fresh_top(backbone, blocks):
    """A factory of trainable copies of the top `blocks` blocks, each from the pretrained
    weights: every fold and recipe starts from ImageNet's, not from another's training."""
    return lambda: split_backbone(backbone, blocks)[1]


def tuning_estimate(top, x, options, trained, scored, runs, calibration=1.0):
    """Seconds a fine-tuning recipe (fit.HeadOptions `options`, resolved) should take:
    `runs` trainings on `trained` images each (validation and scoring on `scored` more).
    Timed on up to 64 of the activations `x`: the top's forward pass (the head-alone
    epochs and scoring), and one epoch of training the top with a head (forward, backward
    and update: for a depthwise block the backward pass costs far more than twice the
    forward one, so it is measured, not assumed), times `calibration` (measured over
    estimated for the recipes run before)."""
    sample = np.asarray(x[:min(64, len(x))], np.float32)
    shaped = sample.reshape((-1,) + tuple(top.inputs[0].shape[1:]))
    top.predict(shaped[:1])                      # the inference plan, built once
    began = time.monotonic()
    top.predict(shaped)
    forward = (time.monotonic() - began) / len(sample)
    began = time.monotonic()
    train_head((sample, np.arange(len(sample)) % 2), (sample[:0], np.zeros(0, np.int64)), 2,
               replace(options, epochs=1, freeze_epochs=0, warmup_epochs=0, patience=None,
                       augment=0), progress=False, top=top)
    step = (time.monotonic() - began) / len(sample)
    per_run = (trained * (options.epochs * step + options.freeze_epochs * forward)
               + scored * (options.epochs + options.freeze_epochs) * forward)
    return runs * per_run * calibration


def apply_choice(recipe, ladder, backbone, features, views, tta, extractor):
    """The pipeline's inputs for the chosen `recipe`: features, views
    (extraction.AugmentedViews), --tta views (extraction.TestTimeViews) and the extractor
    (extraction.BackboneCut: top and cut), moved from the deepest cut to the recipe's (the
    pooled features for a head recipe, which trains on no views); the extractor's bottom is
    the one the exported model is wired onto."""
    blocks = recipe.get("fine_tune", 0)
    features = ladder.lift(features, blocks)
    tta = tta and replace(tta, **{name: ladder.lift(getattr(tta, name), blocks)
                                  for name in ("val", "test")})
    if views is not None:
        lifted = (ladder.lift(views.views[:, :recipe["augment"]], blocks) if blocks
                  else None)
        views = replace(views, views=lifted, augmentation=views.augmentation if blocks
                        else None)
    bottom, top, cut = split_backbone(backbone, blocks)
    return features, views, tta, replace(extractor, bottom=bottom, top=top, cut=cut)
