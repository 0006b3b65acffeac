"""Learning-rate schedules: a callable step -> learning rate, as keras.optimizers.schedules.

An optimizer given a schedule as its `learning_rate` asks it for the rate of each step
(`optimizer.iterations`, counted from 0)."""
import math

from typing import Optional

from .errors import ConfigError

__all__ = ["LearningRateSchedule", "CosineDecay"]


class LearningRateSchedule:
    """Base: `schedule(step)` is the learning rate of optimizer step `step` (0-based), and
    `get_config()` the constructor's arguments."""


class CosineDecay(LearningRateSchedule):
    """keras.optimizers.schedules.CosineDecay, warmup included.

    Without warmup: lr(step) = initial * ((1 - alpha) * cos_term + alpha), where
    cos_term = 0.5 * (1 + cos(pi * min(step, decay_steps) / decay_steps)).
    With warmup_target: the rate rises linearly from initial_learning_rate to warmup_target
    over warmup_steps, then decays from warmup_target by the same cosine over decay_steps
    (counted after the warmup) to alpha * warmup_target."""

    def __init__(self, initial_learning_rate: float, decay_steps: int, alpha: float = 0.0,
                 name: str = "CosineDecay", warmup_target: Optional[float] = None,
                 warmup_steps: int = 0) -> None:
        peak = initial_learning_rate if warmup_target is None else warmup_target
        if not (peak > 0 and initial_learning_rate >= 0 and isinstance(decay_steps, int)
                and decay_steps >= 1 and isinstance(warmup_steps, int) and warmup_steps >= 0):
            raise ConfigError("CosineDecay needs a positive peak rate (initial_learning_rate, "
                              "or warmup_target), decay_steps >= 1 and warmup_steps >= 0. "
                              f"Received: initial_learning_rate={initial_learning_rate!r}, "
                              f"warmup_target={warmup_target!r}, decay_steps={decay_steps!r}, "
                              f"warmup_steps={warmup_steps!r}.")
        self.initial_learning_rate = float(initial_learning_rate)
        self.decay_steps, self.alpha, self.name = decay_steps, float(alpha), name
        self.warmup_target = None if warmup_target is None else float(warmup_target)
        self.warmup_steps = warmup_steps

    def __call__(self, step: int) -> float:
        """The rate at optimizer step `step` (0-based): warmup, then the cosine."""
        if self.warmup_target is None:
            return self._decay(step, self.initial_learning_rate)
        if step < self.warmup_steps:
            start = self.initial_learning_rate
            return start + step / self.warmup_steps * (self.warmup_target - start)
        return self._decay(step - self.warmup_steps, self.warmup_target)

    def _decay(self, step, start):
        done = min(step, self.decay_steps) / self.decay_steps
        cosine = 0.5 * (1.0 + math.cos(math.pi * done))
        return start * ((1.0 - self.alpha) * cosine + self.alpha)

    def get_config(self) -> dict:
        """The constructor's arguments."""
        return {"initial_learning_rate": self.initial_learning_rate,
                "decay_steps": self.decay_steps, "alpha": self.alpha, "name": self.name,
                "warmup_target": self.warmup_target, "warmup_steps": self.warmup_steps}
