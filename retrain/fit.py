"""Build the classification head and train it on cached backbone features.

The backbone stays frozen, so its features are computed once (features.py) and the head
trains on them in milliseconds per epoch; no image is touched here."""
from dataclasses import dataclass

import numpy as np

from .engine import (Adam, Callback, Dense, Dropout, EarlyStopping, Input, Sequential,
                     set_random_seed)
from .errors import ConfigError, DataError
from .progress import progress_bar

__all__ = ["HeadOptions", "build_head", "balanced_class_weights", "train_head"]


@dataclass
class HeadOptions:
    """How the head is built and trained. `patience` epochs without a better val_loss stop
    training, and the best epoch's weights are restored."""
    epochs: int = 50
    batch_size: int = 32
    learning_rate: float = 0.001
    patience: int = 5
    hidden_units: int = 0          # 0: a single softmax Dense; >0: Dense(relu)+Dropout first
    dropout: float = 0.2
    seed: int = 0

    def validate(self):
        for name in ("epochs", "batch_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ConfigError(f"{name} must be a positive integer. "
                                  f"Received: {name}={value!r}.")
        if not self.learning_rate > 0:
            raise ConfigError("learning_rate must be positive. "
                              f"Received: learning_rate={self.learning_rate!r}.")
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


def train_head(train, val, num_classes, options, progress=True):
    """Train a new head on (features, targets) pairs `train` and `val` (val may be empty).

    Returns (head, history): history maps "loss", "accuracy", "val_loss", "val_accuracy" to
    per-epoch lists, plus "best_epoch" (1-based) and "class_weight". With an empty val set
    there is nothing to stop early on, so all epochs run."""
    options.validate()
    x, y = train
    counts = np.bincount(np.asarray(y, np.int64), minlength=num_classes)
    if (counts == 0).any():
        missing = [int(c) for c in np.flatnonzero(counts == 0)]
        raise DataError(f"Class index(es) {missing} have no training images.",
                        hint="Add images to those classes or lower --val-percent/--test-percent.")
    set_random_seed(options.seed)
    head = build_head(x.shape[1], num_classes, options.hidden_units, options.dropout)
    head.compile(optimizer=Adam(learning_rate=options.learning_rate),
                 loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    weights = balanced_class_weights(y, num_classes)
    callbacks = [_StopWhenNotFinite(options.learning_rate), _EpochBar(options.epochs, progress)]
    stopper = None
    if len(val[1]):
        stopper = EarlyStopping(monitor="val_loss", patience=options.patience,
                                restore_best_weights=True)
        callbacks.insert(0, stopper)
    history = head.fit(x, y, batch_size=options.batch_size, epochs=options.epochs, verbose=0,
                       validation_data=tuple(val) if stopper else None, shuffle=True,
                       class_weight=weights, callbacks=callbacks, seed=options.seed)
    record = {k: [float(v) for v in vals] for k, vals in history.history.items()}
    record["best_epoch"] = (stopper.best_epoch if stopper else len(record["loss"]) - 1) + 1
    record["class_weight"] = [weights[c] for c in range(num_classes)]
    return head, record
