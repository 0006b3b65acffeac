"""Every layer class, and the registry that maps a Keras `class_name` to its class."""
from .core import Input, InputLayer

LAYERS = {cls.__name__: cls for cls in (InputLayer,)}

__all__ = ["Input", "InputLayer", "LAYERS"]
