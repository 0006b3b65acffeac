"""Crossentropy losses. Each computes its value and its gradient together.

Shapes: `y_pred` is (N, C), probabilities or logits. Sparse labels are (N,) or (N, 1)
integers in [0, C). One-hot (or soft) labels are (N, C). The reduction is Keras's
"sum_over_batch_size": sum_i(w_i * loss_i) / N. N counts samples, not the sum of the weights.
"""
import numpy as np

from .activations import log_softmax
from .errors import ConfigError, ShapeError
from .naming import to_snake_case
from .tape import record_once
from .tensor import Tensor

EPSILON = 1e-7  # keras.backend.epsilon(): the clip applied to probabilities


def _crossentropy(target, y_pred, from_logits):
    """Per-sample loss (N,) and d loss_i / d y_pred_i (N, C) for a target distribution (N, C).

    From probabilities Keras first renormalises each row (q = p / sum p), then clips q to
    [eps, 1 - eps]. A clipped entry gets no gradient, exactly as tf.clip_by_value's gradient.
    """
    if from_logits:
        log_p = log_softmax(y_pred)
        loss = -np.sum(target * log_p, axis=-1)
        grad = np.exp(log_p) * np.sum(target, axis=-1, keepdims=True) - target
        return loss, grad
    eps = np.asarray(EPSILON, y_pred.dtype)
    total = np.sum(y_pred, axis=-1, keepdims=True)
    q = y_pred / total
    clipped = np.clip(q, eps, 1 - eps)
    loss = -np.sum(target * np.log(clipped), axis=-1)
    inside = (q >= eps) & (q <= 1 - eps)
    grad_q = np.where(inside, -target / clipped, 0)
    # Chain through q = p / sum(p): dq_k/dp_j = (delta_kj - q_k) / sum(p).
    grad = (grad_q - np.sum(grad_q * q, axis=-1, keepdims=True)) / total
    return loss, grad


def _smooth(target, label_smoothing):
    """Keras label smoothing: y * (1 - s) + s / C."""
    if not label_smoothing:
        return target
    return target * (1 - label_smoothing) + label_smoothing / target.shape[-1]


def _as_predictions(y_pred):
    y_pred = np.asarray(y_pred)
    if y_pred.dtype != np.float64:
        y_pred = y_pred.astype(np.float32)
    if y_pred.ndim != 2:
        raise ShapeError("A crossentropy expects predictions of shape (samples, classes). "
                         f"Received: y_pred.shape={y_pred.shape}.")
    return y_pred


def _one_hot(y_true, y_pred):
    """Sparse integer labels (N,) or (N, 1) -> one-hot (N, C), with range and shape checks."""
    y_true = np.asarray(y_true)
    if y_true.ndim == 2 and y_true.shape[1] == 1:
        y_true = y_true[:, 0]
    num_samples, num_classes = y_pred.shape
    if y_true.shape != (num_samples,):
        raise ShapeError(f"Sparse labels must have shape ({num_samples},), one integer class "
                         f"per sample. Received: y_true.shape={y_true.shape}. For one-hot labels "
                         "use categorical_crossentropy.")
    labels = y_true.astype(np.int64)
    if np.any(labels != y_true) or np.any(labels < 0) or np.any(labels >= num_classes):
        raise ConfigError(f"Sparse labels must be integers in [0, {num_classes}). Received: "
                          f"labels from {y_true.min()} to {y_true.max()}. Check the label "
                          "encoding against the number of output units.")
    target = np.zeros(y_pred.shape, y_pred.dtype)
    target[np.arange(num_samples), labels] = 1
    return target


def _dense_target(y_true, y_pred):
    target = np.asarray(y_true, y_pred.dtype)
    if target.shape != y_pred.shape:
        raise ShapeError(f"One-hot labels must have the shape of the predictions {y_pred.shape}. "
                         f"Received: y_true.shape={target.shape}. For integer labels use "
                         "sparse_categorical_crossentropy.")
    return target


def categorical_crossentropy(y_true: np.ndarray, y_pred: np.ndarray, from_logits: bool = False,
                             label_smoothing: float = 0.0) -> np.ndarray:
    """Per-sample crossentropy (N,) between one-hot/soft labels (N, C) and predictions (N, C)."""
    return _per_sample(_dense_target, y_true, y_pred, from_logits, label_smoothing)


def sparse_categorical_crossentropy(y_true: np.ndarray, y_pred: np.ndarray,
                                    from_logits: bool = False,
                                    label_smoothing: float = 0.0) -> np.ndarray:
    """Per-sample crossentropy (N,) between integer labels (N,) and predictions (N, C).

    `label_smoothing` is an extension (Keras's sparse loss has none); it smooths the one-hot
    target exactly as categorical_crossentropy does."""
    return _per_sample(_one_hot, y_true, y_pred, from_logits, label_smoothing)


def _per_sample(encode, y_true, y_pred, from_logits, label_smoothing):
    """The per-sample loss (N,); on a Tensor y_pred, an op the GradientTapes record (with
    the crossentropy's own gradient, so it is differentiable once)."""
    p = _as_predictions(y_pred.value if isinstance(y_pred, Tensor) else y_pred)
    loss, grad = _crossentropy(_smooth(encode(y_true, p), label_smoothing), p, from_logits)
    if isinstance(y_pred, Tensor):
        return record_once([y_pred], loss, lambda g: [g[:, None] * grad], "A crossentropy")
    return loss


class Loss:
    """A crossentropy with Keras's mean reduction; `value_and_grad` also returns dLoss/dy_pred."""

    sparse = False

    def __init__(self, from_logits=False, label_smoothing=0.0, name=None):
        if not 0.0 <= label_smoothing < 1.0:
            raise ConfigError("label_smoothing must be in [0, 1). "
                              f"Received: label_smoothing={label_smoothing}.")
        self.from_logits = bool(from_logits)
        self.label_smoothing = float(label_smoothing)
        self.name = name or to_snake_case(type(self).__name__)

    def _target(self, y_true, y_pred):
        target = _one_hot(y_true, y_pred) if self.sparse else _dense_target(y_true, y_pred)
        return _smooth(target, self.label_smoothing)

    def value_and_grad(self, y_true, y_pred, sample_weight=None):
        """(mean loss as a float, dLoss/dy_pred with the shape and dtype of y_pred)."""
        y_pred = _as_predictions(y_pred)
        per_sample, grad = _crossentropy(self._target(y_true, y_pred), y_pred, self.from_logits)
        weights = self._weights(sample_weight, len(y_pred), y_pred.dtype)
        count = max(len(y_pred), 1)
        loss = float(np.sum(weights * per_sample) / count)
        return loss, (grad * (weights / count)[:, None]).astype(y_pred.dtype)

    def __call__(self, y_true, y_pred, sample_weight=None):
        """The mean loss; on a Tensor y_pred, an op the GradientTapes record (differentiable
        once: its gradient is value_and_grad's)."""
        if isinstance(y_pred, Tensor):
            loss, grad = self.value_and_grad(y_true, y_pred.value, sample_weight)
            return record_once([y_pred], np.asarray(loss, grad.dtype), lambda g: [g * grad],
                               f"Loss {self.name!r}")
        return self.value_and_grad(y_true, y_pred, sample_weight)[0]

    @staticmethod
    def _weights(sample_weight, num_samples, dtype):
        if sample_weight is None:
            return np.ones(num_samples, dtype)
        weights = np.asarray(sample_weight, dtype).reshape(-1)
        if weights.shape != (num_samples,):
            raise ShapeError(f"sample_weight must hold one weight per sample ({num_samples}). "
                             f"Received: sample_weight.shape={np.shape(sample_weight)}.")
        return weights

    def get_config(self):
        return {"name": self.name, "from_logits": self.from_logits,
                "label_smoothing": self.label_smoothing}


class CategoricalCrossentropy(Loss):
    """Crossentropy for one-hot (or soft) labels of shape (N, C)."""


class SparseCategoricalCrossentropy(Loss):
    """Crossentropy for integer labels of shape (N,)."""

    sparse = True


_LOSSES = {"categorical_crossentropy": CategoricalCrossentropy,
           "sparse_categorical_crossentropy": SparseCategoricalCrossentropy}


def get(identifier):
    """Resolve a Keras loss name ('sparse_categorical_crossentropy') or a Loss instance."""
    if isinstance(identifier, Loss):
        return identifier
    if isinstance(identifier, str) and identifier in _LOSSES:
        return _LOSSES[identifier]()
    raise ConfigError(f"Unknown loss. Received: loss={identifier!r}. Use one of "
                      f"{sorted(_LOSSES)} or a Loss instance such as "
                      "SparseCategoricalCrossentropy(from_logits=True).")
