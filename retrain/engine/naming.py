"""Keras's automatic names: the snake-case rule and the per-session counters."""
import re

__all__ = ["to_snake_case", "unique_name", "clear_session"]

_name_counts = {}


def to_snake_case(name):
    """Keras's auto-name rule: Conv2D -> conv2d, ReLU -> re_lu, BatchNormalization -> batch_normalization."""
    name = re.sub(r"\W+", "", name)
    name = re.sub("(.)([A-Z][a-z]+)", r"\1_\2", name)
    return re.sub("([a-z])([A-Z])", r"\1_\2", name).lower()


def unique_name(base):
    """conv2d, conv2d_1, conv2d_2, ... as Keras names layers (counted per session)."""
    count = _name_counts.get(base, 0)
    _name_counts[base] = count + 1
    return base if count == 0 else f"{base}_{count}"


def clear_session() -> None:
    """Reset the auto-name counters (Keras's `clear_session`)."""
    _name_counts.clear()
