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
- Each epoch trains on a different view of each image (plain, then augmented ones in turn);
  validation uses the plain view. Early stopping on validation loss keeps the best epoch.
"""
from dataclasses import dataclass

import numpy as np

from .engine import (AdamW, Callback, CosineDecay, Dense, Dropout, EarlyStopping, Input,
                     MultiOptimizer, Sequential, SparseCategoricalCrossentropy, Trainer,
                     set_random_seed)
from .errors import ConfigError, DataError
from .progress import progress_bar

__all__ = ["HeadOptions", "Classifier", "build_head", "balanced_class_weights", "train_head"]


@dataclass
class HeadOptions:
    """How the classifier is built and trained. `patience` epochs without a better val_loss
    stop training, and the best epoch's weights are restored. `fine_tune` backbone blocks
    (0: the head alone) train at `backbone_learning_rate`; `augment` views of each training
    image besides the plain one (`flip`: mirrored views allowed)."""
    epochs: int = 50
    batch_size: int = 32
    learning_rate: float = 0.002
    patience: int = 5
    hidden_units: int = 0          # 0: a single softmax Dense; >0: Dense(relu)+Dropout first
    dropout: float = 0.2
    seed: int = 0
    fine_tune: int = 0
    augment: int = 0
    flip: bool = True
    backbone_learning_rate: float = 0.001
    weight_decay: float = 0.01
    warmup_epochs: int = 1
    label_smoothing: float = 0.0

    def validate(self):
        for name in ("epochs", "batch_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ConfigError(f"{name} must be a positive integer. "
                                  f"Received: {name}={value!r}.")
        for name in ("fine_tune", "augment", "warmup_epochs"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 0:
                raise ConfigError(f"{name} must be an integer >= 0. "
                                  f"Received: {name}={value!r}.")
        for name in ("learning_rate", "backbone_learning_rate"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"{name} must be positive. "
                                  f"Received: {name}={getattr(self, name)!r}.")
        if not self.weight_decay >= 0:
            raise ConfigError(f"weight_decay must be >= 0. "
                              f"Received: weight_decay={self.weight_decay!r}.")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ConfigError(f"label_smoothing must be in [0, 1). "
                              f"Received: label_smoothing={self.label_smoothing!r}.")
        if self.patience < 0 or self.hidden_units < 0:
            raise ConfigError("patience and hidden_units must be >= 0. Received: "
                              f"patience={self.patience}, hidden_units={self.hidden_units}.")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"dropout must be in [0, 1). Received: dropout={self.dropout!r}.")
        return self


def build_head(num_features, num_classes, hidden_units=0, dropout=0.2):
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
    """One tqdm bar over the epochs showing the latest losses and accuracies."""

    def __init__(self, epochs, progress):
        super().__init__()
        self.bar = progress_bar(total=epochs, desc="fit", unit="epoch", disable=not progress)

    def on_epoch_end(self, epoch, logs=None):
        self.bar.set_postfix({k: f"{v:.4f}" for k, v in (logs or {}).items()}, refresh=False)
        self.bar.update(1)

    def on_train_end(self, logs=None):
        self.bar.close()


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


class Classifier(Trainer):
    """The trained part: the fine-tuned `top` blocks (None when only the head trains) and
    the `head`. Like Keras's `base_model(inputs, training=False)` in the transfer-learning
    guide, the top always runs in inference mode (BatchNorm on its moving statistics, gamma
    and beta trainable) while the head runs in the mode asked for (its Dropout)."""

    def __init__(self, top, head):
        self.name = "classifier"
        self._init_training()
        self.top, self.head = top, head
        self._parts = [top, head] if top is not None else [head]

    @property
    def input_shape(self):
        return (self.top or self.head).inputs[0].shape[1:]

    @property
    def weights(self):
        return [w for part in self._parts for w in part.weights]

    @property
    def trainable_weights(self):
        return [w for part in self._parts for w in part.trainable_weights]

    def get_weights(self):
        return [w.value.copy() for w in self.weights]

    def set_weights(self, values):
        for weight, value in zip(self.weights, values, strict=True):
            weight.assign(value)

    def zero_grads(self):
        for part in self._parts:
            part.zero_grads()

    def forward(self, x, training=False):
        if self.top is not None:
            x = self.top.forward(x, training=False)
        return self.head.forward(x, training=training)

    def backward(self, dy):
        dx = self.head.backward(dy, input_grad=self.top is not None)
        if self.top is not None:
            self.top.backward(dx)

    def predict(self, x, batch_size=None, verbose=0):
        """Class probabilities, by the fast inference plan of the top and head in one graph."""
        from .export import combine
        if self.top is None:
            return self.head.predict(x, batch_size=batch_size)
        return combine(self.top, self.head).predict(x, batch_size=batch_size)


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


def _optimizer(options, classifier, steps_per_epoch):
    """AdamW on a cosine schedule with warmup; the top blocks at their own, lower rate."""
    warmup = min(options.warmup_epochs, options.epochs - 1) * steps_per_epoch
    decay = max(1, options.epochs * steps_per_epoch - warmup)

    def adamw(rate):
        return AdamW(learning_rate=CosineDecay(0.0 if warmup else rate, decay, warmup_target=(
            rate if warmup else None), warmup_steps=warmup), weight_decay=options.weight_decay)

    head = adamw(options.learning_rate)
    if classifier.top is None:
        return head
    return MultiOptimizer([(head, classifier.head.trainable_weights),
                           (adamw(options.backbone_learning_rate),
                            classifier.top.trainable_weights)])


def train_head(train, val, num_classes, options, progress=True, top=None, views=None):
    """Train a new head (and the fine-tuned `top` blocks, if given) on (inputs, targets)
    pairs `train` and `val` (val may be empty). Inputs are flat per image: pooled features,
    or the activations at the cut point below `top`. `views`, if given, holds the training
    images' augmented views, (n, K, D) float16.

    Returns (classifier, history): history maps "loss", "accuracy", "val_loss",
    "val_accuracy" to per-epoch lists, plus "best_epoch" (1-based), "epochs_run" and
    "class_weight". With an empty val set there is nothing to stop early on, so all epochs
    run."""
    options.validate()
    x, y = train
    counts = np.bincount(np.asarray(y, np.int64), minlength=num_classes)
    if (counts == 0).any():
        missing = [int(c) for c in np.flatnonzero(counts == 0)]
        raise DataError(f"Class index(es) {missing} have no training images.",
                        hint="Add images to those classes or lower --val-percent/--test-percent.")
    set_random_seed(options.seed)
    shape = top.inputs[0].shape[1:] if top is not None else (x.shape[1],)
    features = top.outputs[0].shape[-1] if top is not None else x.shape[1]
    classifier = Classifier(top, build_head(features, num_classes, options.hidden_units,
                                            options.dropout))
    if views is not None and views.shape[1]:
        batches = _Views(x, views, y, shape, options.batch_size, options.seed)
        data = {"x": batches}
    else:
        batches = None
        data = {"x": x.reshape((len(x),) + shape), "y": y, "shuffle": True}
    steps = len(batches) if batches else -(-len(x) // options.batch_size)
    classifier.compile(optimizer=_optimizer(options, classifier, steps),
                       loss=SparseCategoricalCrossentropy(
                           label_smoothing=options.label_smoothing),
                       metrics=["accuracy"])
    weights = balanced_class_weights(y, num_classes)
    callbacks = [_StopWhenNotFinite(options.learning_rate), _EpochBar(options.epochs, progress)]
    stopper = None
    if len(val[1]):
        stopper = EarlyStopping(monitor="val_loss", patience=options.patience,
                                restore_best_weights=True)
        callbacks.insert(0, stopper)
    validation = (val[0].reshape((len(val[0]),) + shape), val[1]) if stopper else None
    history = classifier.fit(**data, batch_size=options.batch_size, epochs=options.epochs,
                             verbose=0, validation_data=validation, class_weight=weights,
                             callbacks=callbacks, seed=options.seed)
    record = {k: [float(v) for v in vals] for k, vals in history.history.items()}
    record["epochs_run"] = len(record["loss"])
    record["best_epoch"] = (stopper.best_epoch if stopper else len(record["loss"]) - 1) + 1
    record["class_weight"] = [weights[c] for c in range(num_classes)]
    return classifier, record
