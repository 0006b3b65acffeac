"""SGD, Adam and AdamW with Keras 3's exact update rules. State is kept per variable.

All arithmetic runs in float32, the variables' dtype, in the order Keras's update_step uses,
so three Adam steps reproduce Keras to ~1e-7.
"""
from typing import Iterable, Optional, Sequence, Tuple, Union

import numpy as np

from .errors import ConfigError, ShapeError
from .schedules import LearningRateSchedule
from .tensor import Variable

Rate = Union[float, LearningRateSchedule]     # a constant rate, or one per step

_F32 = np.float32


class Optimizer:
    """Base: the step counter, per-variable state and decoupled weight decay.

    `apply_gradients([(grad, variable), ...])` updates each variable's `.value`;
    `apply(variables)` does the same with each variable's accumulated `.grad`.
    """

    def __init__(self, learning_rate: Rate, weight_decay: Optional[float] = None,
                 name: Optional[str] = None) -> None:
        if not isinstance(learning_rate, LearningRateSchedule):
            _check_positive("learning_rate", learning_rate, self)
            learning_rate = float(learning_rate)
        if weight_decay is not None and weight_decay < 0:
            raise ConfigError(f"{type(self).__name__}: weight_decay must be >= 0 or None. "
                              f"Received: weight_decay={weight_decay}.")
        self.learning_rate = learning_rate      # a float or a LearningRateSchedule
        self.weight_decay = None if weight_decay is None else float(weight_decay)
        self.name = name or type(self).__name__.lower()
        self.iterations = 0
        self._slots = {}     # id(variable) -> (variable, dict of state arrays)

    def apply(self, variables: Sequence[Variable]) -> None:
        """One step on `variables` using the gradients accumulated in their `.grad`."""
        self.apply_gradients([(v.grad, v) for v in variables])

    def apply_gradients(self, grads_and_vars: Iterable[Tuple[np.ndarray, Variable]]) -> None:
        """One step: weight decay (if any), then the update rule, then iterations += 1.

        The gradients may be arrays or what GradientTape.gradient returns; a variable whose
        gradient is None (the loss does not depend on it) is left alone, as in Keras."""
        pairs = [(np.asarray(g, _F32), v) for g, v in grads_and_vars if g is not None]
        if not pairs:
            raise ConfigError("No gradients provided for any variable. Check that the loss "
                              "was computed inside the GradientTape from these variables.")
        for grad, variable in pairs:
            if grad.shape != variable.value.shape:
                raise ShapeError(f"Gradient for {variable.name!r} has shape {grad.shape}, but "
                                 f"the variable has shape {variable.value.shape}.")
        lr = _F32(self.current_learning_rate)
        for grad, variable in pairs:
            if self.weight_decay:
                # Keras's _apply_weight_decay: w -= w * wd * lr, before the gradient step.
                variable.value = variable.value - variable.value * _F32(self.weight_decay) * lr
            variable.value = self._update(grad, variable.value, self._state(variable), lr)
        self.iterations += 1

    @property
    def current_learning_rate(self):
        """The rate of the next step: the schedule's value at `iterations`, or the constant."""
        rate = self.learning_rate
        return float(rate(self.iterations)) if callable(rate) else rate

    def _state(self, variable):
        if id(variable) not in self._slots:
            self._slots[id(variable)] = (variable, {name: np.zeros_like(variable.value)
                                                    for name in self._slot_names()})
        return self._slots[id(variable)][1]

    def _slot_names(self):
        return ()

    def _update(self, grad, value, state, lr):
        """The new value of one variable; may update `state` in place."""
        raise NotImplementedError

    def get_config(self) -> dict:
        """The constructor's arguments, as Keras's get_config."""
        rate = self.learning_rate
        if isinstance(rate, LearningRateSchedule):
            rate = {"class_name": type(rate).__name__, "config": rate.get_config()}
        return {"name": self.name, "learning_rate": rate, "weight_decay": self.weight_decay}

    @classmethod
    def from_config(cls, config):
        return cls(**config)


class SGD(Optimizer):
    """Gradient descent with optional (Nesterov) momentum, as keras.optimizers.SGD:
    v = momentum * v - lr * g, then w += v, or w += momentum * v - lr * g with nesterov.
    Step 1 with momentum therefore equals plain SGD."""

    def __init__(self, learning_rate: Rate = 0.01, momentum: float = 0.0, nesterov: bool = False,
                 weight_decay: Optional[float] = None, name: str = "SGD") -> None:
        super().__init__(learning_rate, weight_decay, name)
        if not 0.0 <= momentum <= 1.0:
            raise ConfigError("SGD: momentum must be a float in [0, 1]. "
                              f"Received: momentum={momentum}.")
        self.momentum = float(momentum)
        self.nesterov = bool(nesterov)

    def _slot_names(self):
        return ("momentum",) if self.momentum else ()

    def _update(self, grad, value, state, lr):
        if not self.momentum:
            return value - grad * lr
        momentum = _F32(self.momentum)
        state["momentum"] = state["momentum"] * momentum - grad * lr
        if self.nesterov:
            return value + (state["momentum"] * momentum - grad * lr)
        return value + state["momentum"]

    def get_config(self) -> dict:
        """The constructor's arguments."""
        return {**super().get_config(), "momentum": self.momentum, "nesterov": self.nesterov}


class Adam(Optimizer):
    """Adam as keras.optimizers.Adam. Keras adds epsilon to the *uncorrected* sqrt(v) and
    folds both bias corrections into the step size:
    alpha = lr * sqrt(1 - b2^t) / (1 - b1^t);  w -= alpha * m / (sqrt(v) + eps).
    (The paper's eps + sqrt(v_hat) differs by ~1e-2 on weights whose gradients are ~1e-7.)"""

    def __init__(self, learning_rate: Rate = 0.001, beta_1: float = 0.9, beta_2: float = 0.999,
                 epsilon: float = 1e-7, amsgrad: bool = False,
                 weight_decay: Optional[float] = None, name: str = "adam") -> None:
        super().__init__(learning_rate, weight_decay, name)
        for arg, value in (("beta_1", beta_1), ("beta_2", beta_2)):
            if not 0.0 <= value < 1.0:
                raise ConfigError(f"{type(self).__name__}: {arg} must be in [0, 1). "
                                  f"Received: {arg}={value}.")
        _check_positive("epsilon", epsilon, self)
        self.beta_1 = float(beta_1)
        self.beta_2 = float(beta_2)
        self.epsilon = float(epsilon)
        self.amsgrad = bool(amsgrad)

    def _slot_names(self):
        names = ("momentum", "velocity")
        return names + ("velocity_hat",) if self.amsgrad else names

    def _update(self, grad, value, state, lr):
        step = _F32(self.iterations + 1)
        beta_1, beta_2 = _F32(self.beta_1), _F32(self.beta_2)
        alpha = lr * np.sqrt(1 - beta_2 ** step) / (1 - beta_1 ** step)
        state["momentum"] = state["momentum"] + (grad - state["momentum"]) * (1 - beta_1)
        state["velocity"] = state["velocity"] + (np.square(grad) - state["velocity"]) * (1 - beta_2)
        velocity = state["velocity"]
        if self.amsgrad:
            state["velocity_hat"] = np.maximum(state["velocity_hat"], velocity)
            velocity = state["velocity_hat"]
        return value - (state["momentum"] * alpha) / (np.sqrt(velocity) + _F32(self.epsilon))

    def get_config(self) -> dict:
        """The constructor's arguments."""
        return {**super().get_config(), "beta_1": self.beta_1, "beta_2": self.beta_2,
                "epsilon": self.epsilon, "amsgrad": self.amsgrad}


class AdamW(Adam):
    """Adam with decoupled weight decay (Loshchilov & Hutter), as keras.optimizers.AdamW:
    each step first shrinks w by w * weight_decay * lr, then takes the Adam step."""

    def __init__(self, learning_rate: Rate = 0.001, weight_decay: float = 0.004,
                 beta_1: float = 0.9, beta_2: float = 0.999, epsilon: float = 1e-7,
                 amsgrad: bool = False, name: str = "adamw") -> None:
        if weight_decay is None:
            raise ConfigError("AdamW: weight_decay must be a float. Received: weight_decay=None. "
                              "Use Adam for no weight decay.")
        super().__init__(learning_rate, beta_1, beta_2, epsilon, amsgrad, weight_decay, name)


class MultiOptimizer:
    """Several optimizers, each for its own variables: TensorFlow Addons' MultiOptimizer,
    and the way to give fastai-style discriminative learning rates (a low rate for a
    pretrained backbone's top, a higher one for a new head).

    `optimizers_and_variables` is [(optimizer, variables), ...]; a model's trainable
    variables are routed to the optimizer that owns them, and each optimizer counts its
    own steps (so each has its own schedule)."""

    def __init__(self, optimizers_and_variables: Sequence[tuple]) -> None:
        self.pairs = [(get(optimizer), list(variables))
                      for optimizer, variables in optimizers_and_variables]
        self._owner = {}
        for index, (_, variables) in enumerate(self.pairs):
            for variable in variables:
                if id(variable) in self._owner:
                    raise ConfigError(f"MultiOptimizer: variable {variable.name!r} is given "
                                      "to two optimizers. Give each variable to one.")
                self._owner[id(variable)] = index
        self.name = "multi_optimizer"

    def apply(self, variables: Sequence[Variable]) -> None:
        """One step of every optimizer on the `variables` it owns (their `.grad`)."""
        groups = [[] for _ in self.pairs]
        for variable in variables:
            if id(variable) not in self._owner:
                raise ConfigError(f"MultiOptimizer: no optimizer was given {variable.name!r}.")
            groups[self._owner[id(variable)]].append(variable)
        for (optimizer, _), group in zip(self.pairs, groups):
            if group:
                optimizer.apply(group)

    def get_config(self) -> dict:
        """Its name and each optimizer's config."""
        return {"name": self.name, "optimizers": [o.get_config() for o, _ in self.pairs]}


def _check_positive(arg, value, optimizer):
    if not isinstance(value, (int, float, np.floating)) or value <= 0:
        raise ConfigError(f"{type(optimizer).__name__}: {arg} must be a positive number. "
                          f"Received: {arg}={value!r}.")


_OPTIMIZERS = {"sgd": SGD, "adam": Adam, "adamw": AdamW}


def get(identifier):
    """Resolve 'adam' / 'sgd' / 'adamw' (any case) or an Optimizer instance."""
    if isinstance(identifier, (Optimizer, MultiOptimizer)):
        return identifier
    if isinstance(identifier, str) and identifier.lower() in _OPTIMIZERS:
        return _OPTIMIZERS[identifier.lower()]()
    raise ConfigError(f"Unknown optimizer. Received: optimizer={identifier!r}. Use one of "
                      f"{sorted(_OPTIMIZERS)} or an instance such as Adam(learning_rate=1e-3).")
