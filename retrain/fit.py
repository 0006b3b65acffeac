"""Train the classifier on cached backbone outputs: a new head, and optionally the top
blocks of the backbone (fine-tuning), on plain and augmented views.

The frozen part of the backbone runs once per image and view (features.py); what trains
here starts at the cut point, so an epoch costs the top blocks' forward and backward passes
on 7x7 activations, never the whole backbone, and no image is decoded.

The recipe (README, "Fine-tuning and augmentation", for the measurements behind it):
- AdamW with decoupled weight decay; a cosine schedule after a linear warmup (Keras's
  CosineDecay); label smoothing as in TF Hub's make_image_classifier.
- Two learning rates, as fastai's discriminative rates: the new head's, and a lower one for
  the pretrained blocks, which should move less.
- BatchNorm inside the trained blocks stays in inference mode, as the Keras transfer-
  learning guide says (it calls the base model with training=False): its moving mean and
  variance are ImageNet's and stay so, since statistics of 32-image batches of a small
  dataset are noisy and would shift what the layers above expect. Its gamma and beta do
  train: with the statistics fixed they are one per-channel scale and shift, which adapts
  the block to the new data cheaply.
- Fine-tuning comes in two phases, as in the Keras guide and fastai's `fine_tune`: the new
  head alone first (`freeze_epochs`, at the head's rate), so that the blocks never see the
  gradients of a random head; then the blocks with the head, the head at half its rate
  (fastai halves it too) and the blocks at theirs, for `epochs` epochs on a fresh
  warmup-and-cosine schedule.
- Each epoch trains on a different view of each image (plain, then augmented ones in turn);
  validation uses the plain view. The head alone stops early on validation loss and keeps
  the best epoch. Fine-tuning by default runs its short schedule to the end and keeps the
  last epoch: restoring the best val-loss epoch picked an early, noisy one (README).
"""
from dataclasses import dataclass, replace

import numpy as np

from .engine import (AdamW, Callback, CosineDecay, Dense, Dropout, EarlyStopping, Input,
                     LearningRateSchedule, Model, MultiOptimizer, Sequential,
                     SparseCategoricalCrossentropy, set_random_seed)
from .errors import ConfigError, DataError
from .options import AUTO, check, default, record
from .progress import progress_bar

__all__ = ["AUTO", "HeadOptions", "build_classifier", "build_head", "balanced_class_weights",
           "train_head"]


@dataclass
class HeadOptions:
    """How the classifier is built and trained. `patience` epochs without a better val_loss
    stop training, and the best epoch's weights are restored (None: no early stopping, the
    last epoch's weights are kept). `fine_tune` backbone blocks (0: the head alone) train at
    `backbone_learning_rate` after `freeze_epochs` epochs of the head alone; `augment` views
    of each training image besides the plain one (`flip`: mirrored views allowed).
    `epochs` and `patience` default to AUTO: 50 and 5 for the head alone, 15 and None when
    fine-tuning (chosen by measurement: README, "Fine-tuning and augmentation")."""
    epochs: object = default("epochs")
    batch_size: int = default("batch_size")
    learning_rate: float = default("learning_rate")
    patience: object = default("patience")
    hidden_units: int = default("hidden_units")   # 0: softmax alone; >0: Dense(relu), Dropout
    dropout: float = default("dropout")
    seed: int = default("seed")
    fine_tune: int = default("fine_tune")
    augment: int = default("augment")
    flip: bool = default("flip")
    backbone_learning_rate: float = default("backbone_learning_rate")
    weight_decay: float = default("weight_decay")
    warmup_epochs: int = default("warmup_epochs")
    label_smoothing: float = default("label_smoothing")
    freeze_epochs: int = default("freeze_epochs")

    def resolved(self):
        """A copy with AUTO replaced by the value for this kind of training."""
        tuning = self.fine_tune > 0 if isinstance(self.fine_tune, int) else False
        epochs = (15 if tuning else 50) if self.epochs == AUTO else self.epochs
        patience = (None if tuning else 5) if self.patience == AUTO else self.patience
        return replace(self, epochs=epochs, patience=patience)

    @property
    def tuning_head_rate(self):
        """The head's rate once the blocks train with it: half `learning_rate` after a
        head-alone phase (fastai halves it too), else `learning_rate`."""
        return self.learning_rate / 2 if self.freeze_epochs > 0 else self.learning_rate

    def validate(self):
        """The resolved options (see `resolved`), or OptionError naming the bad one (the
        constraints are options.OPTIONS')."""
        return check(self).resolved()


def build_head(num_features, num_classes, hidden_units=default("hidden_units"),
               dropout=default("dropout")):
    """features (N, num_features) -> class probabilities (N, num_classes).

    The layer names are fixed ("head_dense", "head_dropout", "predictions") so the exported
    model reads the same in every run, whatever else was built in the process."""
    layers = [Input((num_features,))]
    if hidden_units:
        layers += [Dense(hidden_units, activation="relu", name="head_dense"),
                   Dropout(dropout, name="head_dropout")]
    layers.append(Dense(num_classes, activation="softmax", name="predictions"))
    return Sequential(layers, name="head")


def balanced_class_weights(targets, num_classes):
    """{class: n / (k * count)}: every class weighs the same in the loss in total, as
    scikit-learn's class_weight='balanced'. Equal counts give 1.0 everywhere."""
    counts = np.bincount(np.asarray(targets, np.int64), minlength=num_classes)
    return {c: float(len(targets) / (num_classes * counts[c])) for c in range(num_classes)}


class _EpochBar(Callback):
    """One tqdm bar over the epochs (of both phases) showing the latest losses and
    accuracies; train_head closes it."""

    def __init__(self, epochs, progress):
        super().__init__()
        self.bar = progress_bar(total=epochs, desc="fit", unit="epoch", disable=not progress)

    def on_epoch_end(self, epoch, logs=None):
        self.bar.set_postfix({k: f"{v:.4f}" for k, v in (logs or {}).items()}, refresh=False)
        self.bar.update(1)


class _StopWhenNotFinite(Callback):
    """A diverged run (--lr 1e38) ends with a clear error, not a model of NaN weights."""

    def __init__(self, learning_rate):
        super().__init__()
        self.learning_rate = learning_rate

    def on_epoch_end(self, epoch, logs=None):
        bad = {k: v for k, v in (logs or {}).items() if "loss" in k and not np.isfinite(v)}
        if bad:
            raise ConfigError(f"Training diverged: after epoch {epoch + 1} the loss is "
                              f"{', '.join(f'{k}={v}' for k, v in bad.items())}.",
                              hint=f"Lower --lr (now {self.learning_rate:g}), e.g. to "
                                   f"{self.learning_rate / 10:g}.")


def build_classifier(head, top=None):
    """The trained model: `head` alone, or, with fine-tuned `top` blocks, one functional
    model of the two. As Keras's transfer-learning guide calls `base_model(inputs,
    training=False)`, the top always runs in inference mode (BatchNorm on its moving
    statistics; gamma and beta still train) while the head runs in the model's mode (its
    Dropout)."""
    if top is None:
        return head
    inputs = Input(top.inputs[0].shape[1:], name="cut")
    return Model(inputs, head(top(inputs, training=False)), name="classifier")


class _Views:
    """The training batches of one epoch, as a batch source for `fit` (Keras's PyDataset):
    image i appears once per epoch, in view (epoch + offset_i) mod (views + 1), view 0 being
    the plain one, so consecutive epochs see different views of every image. Augmented
    views are stored float16 and become float32 here, one batch at a time."""

    def __init__(self, plain, views, targets, shape, batch_size, seed):
        self.plain, self.views, self.targets = plain, views, np.asarray(targets)
        self.shape, self.batch_size = tuple(shape), batch_size
        self.rng = np.random.default_rng(seed)
        count = len(self.targets)
        self.offset = self.rng.integers(0, views.shape[1] + 1, count)
        self.epoch = 0
        self.order = self.rng.permutation(count)

    def __len__(self):
        return -(-len(self.targets) // self.batch_size)

    def __getitem__(self, step):
        index = self.order[step * self.batch_size:(step + 1) * self.batch_size]
        view = (self.epoch + self.offset[index]) % (self.views.shape[1] + 1)
        x = np.empty((len(index), int(np.prod(self.shape))), np.float32)
        plain = view == 0
        x[plain] = self.plain[index[plain]]
        x[~plain] = self.views[index[~plain], view[~plain] - 1]
        return x.reshape((len(index),) + self.shape), self.targets[index]

    def on_epoch_end(self):
        self.epoch += 1
        self.order = self.rng.permutation(len(self.targets))


def _optimizer(options, top, head, steps_per_epoch, head_rate=None, epochs=None):
    """AdamW on a cosine schedule with warmup over `epochs` (default options.epochs); the
    head at `head_rate` (default options.learning_rate), the `top` blocks, while they train,
    at their own, lower rate."""
    epochs = options.epochs if epochs is None else epochs
    warmup = min(options.warmup_epochs, epochs - 1) * steps_per_epoch
    decay = max(1, epochs * steps_per_epoch - warmup)

    def adamw(rate):
        return AdamW(learning_rate=CosineDecay(0.0 if warmup else rate, decay, warmup_target=(
            rate if warmup else None), warmup_steps=warmup), weight_decay=options.weight_decay)

    head_optimizer = adamw(options.learning_rate if head_rate is None else head_rate)
    if top is None or not top.trainable:
        return head_optimizer
    return MultiOptimizer([(head_optimizer, head.trainable_weights),
                           (adamw(options.backbone_learning_rate), top.trainable_weights)])


def train_head(train, val, num_classes, options, progress=True, top=None, views=None):
    """Train a new head (and the fine-tuned `top` blocks, if given) on (inputs, targets)
    pairs `train` and `val` (val may be empty). Inputs are flat per image: pooled features,
    or the activations at the cut point below `top`. `views`, if given, holds the training
    images' augmented views, (n, K, D) float16.

    With `top`, the head trains alone for `freeze_epochs` epochs first, then with the top
    for `epochs` (see the module doc). Returns (model, history): the model is the head, or
    the head on the top blocks (build_classifier), which are frozen again once trained, as
    the backbone they came from; history maps "loss",
    "accuracy", "val_loss", "val_accuracy" to per-epoch lists over both phases, plus
    "best_epoch" (1-based, the epoch whose weights were kept), "epochs_run",
    "epochs_planned", "freeze_epochs", "restored_best", "class_weight" and "training": how
    it was trained (`training_record`). With an empty
    val set there is nothing to stop early on, so all epochs run."""
    options = options.validate()
    x, y = train
    counts = np.bincount(np.asarray(y, np.int64), minlength=num_classes)
    if (counts == 0).any():
        missing = [int(c) for c in np.flatnonzero(counts == 0)]
        raise DataError(f"Class index(es) {missing} have no training images.",
                        hint="Add images to those classes or lower --val-percent/--test-percent.")
    set_random_seed(options.seed)
    shape = top.inputs[0].shape[1:] if top is not None else (x.shape[1],)
    features = top.outputs[0].shape[-1] if top is not None else x.shape[1]
    head = build_head(features, num_classes, options.hidden_units, options.dropout)
    model = build_classifier(head, top)
    if views is not None and views.shape[1]:
        batches = _Views(x, views, y, shape, options.batch_size, options.seed)
        data = {"x": batches}
    else:
        batches = None
        data = {"x": x.reshape((len(x),) + shape), "y": y, "shuffle": True}
    steps = len(batches) if batches else -(-len(x) // options.batch_size)
    freeze = options.freeze_epochs if top is not None else 0
    bar = _EpochBar(freeze + options.epochs, progress)
    validation = (val[0].reshape((len(val[0]),) + shape), val[1]) if len(val[1]) else None
    common = dict(**data, batch_size=options.batch_size, verbose=0, validation_data=validation,
                  class_weight=balanced_class_weights(y, num_classes))
    try:
        logs, stopper = _train_phases(model, top, options, common, steps, bar)
    finally:
        bar.bar.close()
    record = {k: [float(v) for log in logs for v in log[k]] for k in logs[-1]}
    record["epochs_run"] = len(record["loss"])
    record["epochs_planned"] = freeze + options.epochs
    record["freeze_epochs"] = freeze
    record["restored_best"] = stopper is not None
    record["best_epoch"] = freeze + (stopper.best_epoch + 1 if stopper
                                     else len(logs[-1]["loss"]))
    record["class_weight"] = [common["class_weight"][c] for c in range(num_classes)]
    record["training"] = training_record(options, model, steps, record)
    if top is not None:
        top.trainable = False
    return model, record


def _train_phases(model, top, options, common, steps, bar):
    """Phase 1 (freeze_epochs of the head alone, with a `top`), then phase 2 (the head with
    the top, if any). Returns ([history per phase], phase 2's EarlyStopping or None)."""
    logs, head = [], model if top is None else model.get_layer("head")
    freeze = options.freeze_epochs if top is not None else 0
    if freeze:          # phase 1: the head alone, the top frozen (and skipped by backward)
        top.trainable = False
        try:
            _compile(model, options, _optimizer(options, top, head, steps, epochs=freeze))
            logs.append(model.fit(**common, epochs=freeze, seed=options.seed, callbacks=[
                _StopWhenNotFinite(options.learning_rate), bar]).history)
        finally:
            top.trainable = True
    head_rate = options.tuning_head_rate if top is not None else options.learning_rate
    _compile(model, options, _optimizer(options, top, head, steps, head_rate=head_rate))
    callbacks = [_StopWhenNotFinite(options.learning_rate), bar]
    stopper = None
    if common["validation_data"] is not None and options.patience is not None:
        stopper = EarlyStopping(monitor="val_loss", patience=options.patience,
                                restore_best_weights=True)
        callbacks.insert(0, stopper)
    logs.append(model.fit(**common, epochs=options.epochs, callbacks=callbacks,
                               seed=None if freeze else options.seed).history)
    return logs, stopper


def training_record(options, model, steps_per_epoch, history):
    """How `model` was trained, for metrics.json, the report and the model file: what the
    optimizer of its last phase says of itself (its class, weight decay, each group's peak
    rate, its schedule), the options it was given (options.record: those the table marks),
    and `history`'s epoch counts.
    `trainable_params`: the head's and the fine-tuned blocks' (the exported model's layers
    are frozen, so only this record knows)."""
    optimizer = model.optimizer
    groups = [o for o, _ in optimizer.pairs] if isinstance(optimizer, MultiOptimizer) \
        else [optimizer]
    head, blocks = groups[0], groups[1] if len(groups) > 1 else None
    restarted = ", restarted for the fine-tuning phase" if history["freeze_epochs"] else ""
    return {"trainable_params": sum(int(w.value.size) for w in model.trainable_weights),
            **record(options), "backbone_learning_rate": _peak_rate(blocks) if blocks else None,
            "fine_tune_head_learning_rate": _peak_rate(head) if blocks else None,
            "freeze_epochs": history["freeze_epochs"],
            "optimizer": " + ".join(dict.fromkeys(type(o).__name__ for o in groups)),
            "weight_decay": head.weight_decay,
            "schedule": _schedule_text(head.learning_rate, steps_per_epoch) + restarted,
            "epochs": history["epochs_planned"], "epochs_run": history["epochs_run"],
            "best_epoch": history["best_epoch"]}


def _peak_rate(optimizer):
    """The highest rate of `optimizer`'s schedule: the warmup's target, else its start."""
    rate = optimizer.learning_rate
    return getattr(rate, "warmup_target", None) or getattr(rate, "initial_learning_rate", rate)


def _schedule_text(schedule, steps_per_epoch):
    if isinstance(schedule, CosineDecay):
        warmup = schedule.warmup_steps // steps_per_epoch if schedule.warmup_target else 0
        return f"cosine decay after {warmup} warmup epoch(s)"
    return type(schedule).__name__ if isinstance(schedule, LearningRateSchedule) \
        else "constant rate"


def _compile(model, options, optimizer):
    model.compile(optimizer=optimizer, metrics=["accuracy"],
                       loss=SparseCategoricalCrossentropy(label_smoothing=options.label_smoothing))
