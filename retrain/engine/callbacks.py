"""Training callbacks with Keras's hooks: Callback, History and EarlyStopping."""
import warnings
from typing import Dict, Optional

import numpy as np

from .errors import ConfigError

Logs = Optional[Dict[str, float]]      # an epoch's or a batch's metrics by name


class Callback:
    """Base class. `fit` calls set_model/set_params, then the hooks below; `logs` is a dict
    of floats such as {"loss": .., "accuracy": .., "val_loss": .., "val_accuracy": ..}."""

    def __init__(self) -> None:
        self.model = None
        self.params = {}

    def set_model(self, model: object) -> None:
        """The model being trained (fit calls it first)."""
        self.model = model

    def set_params(self, params: dict) -> None:
        """fit's settings: epochs, steps per epoch, verbosity."""
        self.params = params

    def on_train_begin(self, logs: Logs = None) -> None:
        """Called once before the first epoch."""

    def on_train_end(self, logs: Logs = None) -> None:
        """Called once after the last epoch (also after an early stop)."""

    def on_epoch_begin(self, epoch: int, logs: Logs = None) -> None:
        """Called before epoch `epoch` (0-based)."""

    def on_epoch_end(self, epoch: int, logs: Logs = None) -> None:
        """Called after the epoch's training and validation, with that epoch's logs."""

    def on_train_batch_begin(self, batch: int, logs: Logs = None) -> None:
        """Called before each training batch."""

    def on_train_batch_end(self, batch: int, logs: Logs = None) -> None:
        """Called after each training batch with the running epoch averages."""


class History(Callback):
    """Records every epoch's logs: `history["loss"]` is the list of epoch losses; `epoch`
    the list of epoch indices. `fit` always adds one and returns it."""

    def __init__(self) -> None:
        super().__init__()
        self.history = {}
        self.epoch = []

    def on_train_begin(self, logs: Logs = None) -> None:
        """A fresh record."""
        self.history = {}
        self.epoch = []

    def on_epoch_end(self, epoch: int, logs: Logs = None) -> None:
        """Append the epoch's logs."""
        self.epoch.append(epoch)
        for key, value in (logs or {}).items():
            self.history.setdefault(key, []).append(value)


class EarlyStopping(Callback):
    """Stop training when `monitor` has not improved for `patience` epochs (Keras semantics).

    An epoch improves when it beats the best value by more than `min_delta`. Epochs before
    `start_from_epoch` are ignored. With `restore_best_weights`, the weights of the best
    epoch are put back when training ends (whether it stopped early or ran out of epochs).
    `mode='auto'` minimises losses and maximises accuracies.
    """

    def __init__(self, monitor: str = "val_loss", min_delta: float = 0, patience: int = 0,
                 mode: str = "auto", baseline: Optional[float] = None,
                 restore_best_weights: bool = False, start_from_epoch: int = 0) -> None:
        super().__init__()
        if mode not in ("auto", "min", "max"):
            raise ConfigError("EarlyStopping: mode must be 'auto', 'min' or 'max'. "
                              f"Received: mode={mode!r}.")
        if patience < 0 or start_from_epoch < 0:
            raise ConfigError("EarlyStopping: patience and start_from_epoch must be >= 0. "
                              f"Received: patience={patience}, "
                              f"start_from_epoch={start_from_epoch}.")
        self.monitor = monitor
        self.min_delta = abs(min_delta)
        self.patience = patience
        self.mode = mode
        self.baseline = baseline
        self.restore_best_weights = restore_best_weights
        self.start_from_epoch = start_from_epoch
        self._direction = self._resolve_direction()

    def _resolve_direction(self):
        """+1 when larger is better, -1 when smaller is."""
        if self.mode != "auto":
            return 1 if self.mode == "max" else -1
        name = self.monitor.removeprefix("val_")
        if name == "loss" or name.endswith("_loss") or name.endswith("crossentropy"):
            return -1
        if "acc" in name:
            return 1
        raise ConfigError(f"EarlyStopping received monitor={self.monitor!r} but cannot tell "
                          "whether it should be minimised or maximised. Pass mode='min' or "
                          "mode='max'.")

    def on_train_begin(self, logs: Logs = None) -> None:
        """Reset the wait and the best value."""
        self.wait = 0
        self.stopped_epoch = 0
        self.best = -np.inf * self._direction
        self.best_weights = None
        self.best_epoch = 0

    def _is_improvement(self, value, reference):
        return self._direction * (value - reference) > self.min_delta

    def on_epoch_end(self, epoch: int, logs: Logs = None) -> None:
        """Stop training after `patience` epochs without a better `monitor`."""
        current = (logs or {}).get(self.monitor)
        if current is None:
            warnings.warn(f"EarlyStopping conditioned on metric {self.monitor!r}, which is not "
                          f"available. Available metrics are: {', '.join(logs or {})}.",
                          stacklevel=2)
            return
        if epoch < self.start_from_epoch:
            return
        if self.restore_best_weights and self.best_weights is None:
            self.best_weights = self.model.get_weights()
            self.best_epoch = epoch
        self.wait += 1
        if self._is_improvement(current, self.best):
            self.best = current
            self.best_epoch = epoch
            if self.restore_best_weights:
                self.best_weights = self.model.get_weights()
            # The wait restarts only when the epoch also beats the baseline.
            if self.baseline is None or self._is_improvement(current, self.baseline):
                self.wait = 0
            return
        if self.wait >= self.patience and epoch > 0:
            self.stopped_epoch = epoch
            self.model.stop_training = True

    def on_train_end(self, logs: Logs = None) -> None:
        """Restore the best epoch's weights where asked."""
        if self.restore_best_weights and self.best_weights is not None:
            self.model.set_weights(self.best_weights)
