"""compile / fit / evaluate / predict: the training loops that Model inherits (Keras's Trainer).

One training step: zero the grads, forward with training=True, loss value and dLoss/dOutput
together, backward, then the optimizer updates the trainable weights only.
"""
import math
from typing import Mapping, Optional, Sequence, Union

import numpy as np
from tqdm import tqdm

from . import inference, initializers, losses, optimizers
from .callbacks import Callback, History
from .errors import ConfigError, ShapeError

# Metric name -> label encoding it assumes (None: decided from the labels' shape, as Keras does).
_ACCURACY_METRICS = {"accuracy": None, "acc": None,
                     "sparse_categorical_accuracy": "sparse",
                     "categorical_accuracy": "categorical"}

Data = Union[np.ndarray, Sequence[np.ndarray]]     # one input array, or one per model input

class Trainer:
    """Training loop methods mixed into Model. `fit`, `evaluate` and `train_on_batch` need
    `compile` first; `predict` does not."""

    def _init_training(self):
        self.optimizer = None
        self.loss = None
        self.metrics_names = []
        self.stop_training = False
        self.history = None

    def compile(self, optimizer: Union[str, optimizers.Optimizer] = "adam",
                loss: Union[str, losses.Loss, None] = None,
                metrics: Sequence[str] = ("accuracy",)) -> None:
        """Choose the optimizer ('adam', 'sgd', 'adamw' or an instance), the loss
        ('sparse_categorical_crossentropy', 'categorical_crossentropy' or a Loss instance)
        and the metrics ('accuracy' and its Keras aliases)."""
        if loss is None:
            raise ConfigError(f"Model {self.name!r}: compile needs a loss. Received: loss=None. "
                              "Pass loss='sparse_categorical_crossentropy' for integer labels.")
        metrics = list(metrics or [])
        unknown = [m for m in metrics if m not in _ACCURACY_METRICS]
        if unknown:
            raise ConfigError(f"Unknown metric(s). Received: metrics={unknown}. "
                              f"Use any of {sorted(_ACCURACY_METRICS)}.")
        self.optimizer = optimizers.get(optimizer)
        self.loss = losses.get(loss)
        self.metrics_names = ["loss"] + metrics

    def _check_compiled(self, method):
        if self.optimizer is None or self.loss is None:
            raise ConfigError(f"Model {self.name!r} must be compiled before calling {method}(). "
                              "Call model.compile(optimizer='adam', "
                              "loss='sparse_categorical_crossentropy') first.")

    # -- one batch --------------------------------------------------------------------------
    def _train_step(self, x, y, sample_weight):
        """Update the trainable weights on one batch; return (loss, predictions before it)."""
        self.zero_grads()
        y_pred = self.forward(x, training=True)
        loss, dy = self.loss.value_and_grad(y, y_pred, sample_weight)
        self.backward(dy)
        self.optimizer.apply(self.trainable_weights)
        return loss, y_pred

    def train_on_batch(self, x: Data, y: np.ndarray, sample_weight: Optional[np.ndarray] = None,
                       class_weight: Optional[Mapping[int, float]] = None,
                       return_dict: bool = False) -> Union[float, list, dict]:
        """One optimizer step on (x, y). Returns the loss (and metrics) computed before the step."""
        self._check_compiled("train_on_batch")
        x, y = _check_data(x, y)
        tracker = _Tracker(self.metrics_names)
        tracker.update(*self._train_step(x, y, _sample_weights(y, sample_weight, class_weight)), y)
        return _format_logs(tracker.result(), return_dict)

    # -- fit --------------------------------------------------------------------------------
    def fit(self, x: Optional[Data] = None, y: Optional[np.ndarray] = None, batch_size: int = 32,
            epochs: int = 1, verbose: Union[str, int] = "auto",
            callbacks: Optional[Sequence[Callback]] = None, validation_split: float = 0.0,
            validation_data: Optional[tuple] = None, shuffle: bool = True,
            class_weight: Optional[Mapping[int, float]] = None,
            sample_weight: Optional[np.ndarray] = None, initial_epoch: int = 0,
            seed: Optional[int] = None) -> History:
        """Train for `epochs` passes over (x, y) and return the History.

        validation_split takes the *last* fraction of the samples, before shuffling (as
        Keras does); validation_data=(x_val, y_val) takes precedence over it. class_weight
        maps a class index to a loss weight (missing classes weigh 1). seed, when given,
        reseeds the engine's generator, so shuffling and dropout repeat exactly. verbose=0
        is silent; 1 or 2 show one tqdm bar per epoch (on stderr).
        """
        self._check_compiled("fit")
        _check_batch_size(batch_size)
        if seed is not None:
            initializers.set_random_seed(seed)
        if is_batch_source(x):       # it yields its own labels; class_weight rides along
            if y is not None or sample_weight is not None or validation_split:
                raise ConfigError("fit received a batch source (a Sequence-like x) and also y, "
                                  "sample_weight or validation_split. Pass validation_data.")
            data, steps = (x, None, class_weight), len(x)
            validation = _split_validation((None,), 0.0, validation_data)[1]
        else:
            x, y = _check_data(x, y)
            (x, y, sample_weight), validation = _split_validation(
                (x, y, None if sample_weight is None else np.asarray(sample_weight, np.float32)),
                validation_split, validation_data)
            data = (x, y, _sample_weights(y, sample_weight, class_weight))
            steps = math.ceil(_num_samples(x) / batch_size)
        history = History()
        callbacks = [history] + list(callbacks or [])
        for callback in callbacks:
            callback.set_model(self)
            callback.set_params({"epochs": epochs, "steps": steps, "verbose": verbose})
        self.stop_training = False
        _notify(callbacks, "on_train_begin")
        logs = {}
        for epoch in range(initial_epoch, epochs):
            _notify(callbacks, "on_epoch_begin", epoch)
            with _progress(verbose, steps, f"Epoch {epoch + 1}/{epochs}") as bar:
                logs = self._train_epoch(data, batch_size, shuffle, callbacks, bar)
                if validation is not None:
                    val_logs = self._evaluate_logs(*validation, batch_size=batch_size)
                    logs.update({"val_" + k: v for k, v in val_logs.items()})
                    bar.set_postfix(logs)
            _notify(callbacks, "on_epoch_end", epoch, logs)
            if self.stop_training:
                break
        _notify(callbacks, "on_train_end", logs)
        self.history = history
        return history

    def _train_epoch(self, data, batch_size, shuffle, callbacks, bar):
        tracker = _Tracker(self.metrics_names)
        for step, (x, y, weights) in enumerate(_epoch_batches(data, batch_size, shuffle)):
            _notify(callbacks, "on_train_batch_begin", step)
            loss, y_pred = self._train_step(x, y, weights)
            tracker.update(loss, y_pred, y)
            logs = tracker.result()
            bar.set_postfix(logs, refresh=False)
            bar.update()
            _notify(callbacks, "on_train_batch_end", step, logs)
        return tracker.result()

    # -- evaluate and predict -----------------------------------------------------------------
    def evaluate(self, x: Optional[Data] = None, y: Optional[np.ndarray] = None,
                 batch_size: int = 32, verbose: Union[str, int] = "auto",
                 sample_weight: Optional[np.ndarray] = None,
                 return_dict: bool = False) -> Union[float, list, dict]:
        """Loss and metrics over (x, y) in inference mode: [loss, accuracy], or the loss
        alone without metrics, or a dict with return_dict=True."""
        self._check_compiled("evaluate")
        x, y = _check_data(x, y)
        _check_batch_size(batch_size)
        logs = self._evaluate_logs(x, y, sample_weight, batch_size=batch_size, verbose=verbose)
        return _format_logs(logs, return_dict)

    def _evaluate_logs(self, x, y, sample_weight=None, batch_size=32, verbose=0):
        weights = _sample_weights(y, sample_weight, None)
        count = _num_samples(x)
        tracker = _Tracker(self.metrics_names)
        with _progress(verbose, math.ceil(count / batch_size), "Evaluate") as bar:
            for start in range(0, count, batch_size):
                index = slice(start, start + batch_size)
                y_pred = self.forward(_take(x, index), training=False)
                batch_weights = None if weights is None else weights[index]
                tracker.update(self.loss(y[index], y_pred, batch_weights), y_pred, y[index])
                bar.set_postfix(tracker.result(), refresh=False)
                bar.update()
        return tracker.result()

    def predict(self, x: Data, batch_size: Optional[int] = None,
                verbose: Union[str, int] = 0) -> Union[np.ndarray, list]:
        """Outputs for x in inference mode, computed `batch_size` samples at a time (None:
        inference.DEFAULT_BATCH_SIZE) by the model's fast inference plan (inference.py)."""
        x = _as_inputs(x)
        batch_size = inference.DEFAULT_BATCH_SIZE if batch_size is None else batch_size
        _check_batch_size(batch_size)
        count = _num_samples(x)
        if count == 0:
            raise ShapeError(f"Model {self.name!r}: predict received 0 samples. Pass at least one.")
        outputs = []
        with _progress(verbose, math.ceil(count / batch_size), "Predict") as bar:
            for start in range(0, count, batch_size):
                run = inference.inference_function(self)
                outputs.append(run(_take(x, slice(start, start + batch_size))))
                bar.update()
        if isinstance(outputs[0], list):
            return [np.concatenate(parts) for parts in zip(*outputs)]
        return np.concatenate(outputs)


class _Tracker:
    """Epoch averages: the loss weighted by batch size, accuracy over all samples seen."""

    def __init__(self, names):
        self.names = names
        self.count = 0
        self.loss_sum = 0.0
        self.correct = dict.fromkeys(names[1:], 0)

    def update(self, loss, y_pred, y_true):
        batch = len(y_true)
        self.count += batch
        self.loss_sum += loss * batch
        for name in self.correct:
            self.correct[name] += int(np.sum(_correct(y_true, y_pred, _ACCURACY_METRICS[name])))

    def result(self):
        logs = {"loss": self.loss_sum / max(self.count, 1)}
        logs.update({name: hits / max(self.count, 1) for name, hits in self.correct.items()})
        return logs


def _correct(y_true, y_pred, encoding):
    """Per-sample hits: argmax(y_pred) equals the label (sparse) or argmax(y_true) (one-hot)."""
    y_true = np.asarray(y_true)
    if encoding is None:
        sparse = y_true.ndim < y_pred.ndim or y_true.shape[-1] == 1
        encoding = "sparse" if sparse else "categorical"
    labels = y_true.reshape(len(y_true)) if encoding == "sparse" else np.argmax(y_true, axis=-1)
    return np.argmax(y_pred, axis=-1) == labels


def _format_logs(logs, return_dict):
    if return_dict:
        return logs
    values = list(logs.values())
    return values[0] if len(values) == 1 else values


def _notify(callbacks, hook, *args):
    for callback in callbacks:
        getattr(callback, hook)(*args)


def _progress(verbose, total, description):
    if verbose not in (0, 1, 2, "auto"):
        raise ConfigError(f"verbose must be 0, 1, 2 or 'auto'. Received: verbose={verbose!r}.")
    return tqdm(total=total, desc=description, unit="step", disable=verbose == 0, leave=True)


# -- data helpers --------------------------------------------------------------------------
def is_batch_source(x):
    """A Sequence-like batch source, as Keras's PyDataset: `len(x)` batches per epoch,
    `x[i]` is batch i as (inputs, labels) or (inputs, labels, sample_weight), and an
    optional `x.on_epoch_end()` runs after each epoch (to reshuffle, or pick new views)."""
    return (hasattr(x, "__getitem__") and hasattr(x, "__len__")
            and not isinstance(x, (np.ndarray, list, tuple)))


def _epoch_batches(data, batch_size, shuffle):
    """One epoch's (x, y, sample_weight) batches: from a batch source in its own order, or
    slices of arrays in a fresh permutation (from the engine's seeded generator)."""
    x, y, weights = data
    if is_batch_source(x):
        for step in range(len(x)):
            bx, by, *bw = x[step]
            bx, by = _check_data(bx, by)
            yield bx, by, _sample_weights(by, bw[0] if bw else None, weights)
        getattr(x, "on_epoch_end", lambda: None)()
        return
    order = initializers.rng().permutation(len(y)) if shuffle else np.arange(len(y))
    for start in range(0, len(y), batch_size):
        index = order[start:start + batch_size]
        yield _take(x, index), y[index], None if weights is None else weights[index]


def _as_inputs(x):
    if x is None:
        raise ConfigError("No input data. Received: x=None. Pass an array of samples.")
    if isinstance(x, (list, tuple)):
        return [np.asarray(part, np.float32) for part in x]
    return np.asarray(x, np.float32)


def _num_samples(x):
    return len(x[0]) if isinstance(x, list) else len(x)


def _take(x, index):
    return [part[index] for part in x] if isinstance(x, list) else x[index]


def _check_data(x, y):
    x = _as_inputs(x)
    if y is None:
        raise ConfigError("No labels. Received: y=None. Pass one label per sample.")
    y = np.asarray(y)
    count = _num_samples(x)
    sizes = [len(part) for part in x] if isinstance(x, list) else [count]
    if count == 0 or len(set(sizes)) != 1 or len(y) != count:
        raise ShapeError(f"x and y must hold the same, nonzero number of samples. Received: "
                         f"x sizes {sizes}, y size {len(y)}.")
    return x, y


def _check_batch_size(batch_size):
    if not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ConfigError("batch_size must be a positive integer. "
                          f"Received: batch_size={batch_size!r}.")


def _split_validation(data, validation_split, validation_data):
    """((x, y, w) to train on, (x_val, y_val, w_val) or None). Keras takes the last
    floor(n * validation_split) samples, before any shuffling."""
    if validation_data is not None:
        if len(validation_data) not in (2, 3):
            raise ConfigError("validation_data must be (x_val, y_val) or (x_val, y_val, "
                              f"sample_weight_val). Received: a tuple of {len(validation_data)}.")
        x_val, y_val = _check_data(validation_data[0], validation_data[1])
        weights = validation_data[2] if len(validation_data) == 3 else None
        return data, (x_val, y_val, weights)
    if not validation_split:
        return data, None
    count = _num_samples(data[0])
    split_at = int(math.floor(count * (1.0 - validation_split)))
    if not 0.0 < validation_split < 1.0 or split_at in (0, count):
        raise ConfigError(f"validation_split={validation_split} cannot split {count} samples "
                          "into nonempty training and validation sets. Use a value in (0, 1) "
                          "or more data.")
    head, tail = slice(0, split_at), slice(split_at, count)
    split = [(None, None) if part is None else (_take(part, head), _take(part, tail))
             for part in data]
    return tuple(s[0] for s in split), tuple(s[1] for s in split)


def _sample_weights(y, sample_weight, class_weight):
    """Per-sample loss weights (class_weight[label] times sample_weight), or None for all ones."""
    if sample_weight is None and not class_weight:
        return None
    count = len(y)
    weights = (np.ones(count, np.float32) if sample_weight is None
               else np.asarray(sample_weight, np.float32).reshape(-1))
    if weights.shape != (count,):
        raise ShapeError(f"sample_weight must hold one weight per sample ({count}). "
                         f"Received: shape={np.shape(sample_weight)}.")
    if class_weight:
        y = np.asarray(y)
        sparse = y.ndim == 1 or y.shape[-1] == 1
        labels = y.reshape(count) if sparse else np.argmax(y, axis=-1)
        classes = range(int(labels.max()) + 1)
        lookup = np.array([class_weight.get(label, 1.0) for label in classes], np.float32)
        weights = weights * lookup[labels.astype(np.int64)]
    return weights
