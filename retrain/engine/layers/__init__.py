"""Every layer class. Each registers itself (`layer.register`) in LAYERS, the map from a
Keras `class_name` to its class that model files are read through; each module's `__all__`
names its classes, so a new layer kind is written in its module alone."""
from ..layer import LAYERS
from . import conv, core, merging, normalization, pooling
from .conv import *            # noqa: F401,F403
from .core import *            # noqa: F401,F403
from .merging import *         # noqa: F401,F403
from .normalization import *   # noqa: F401,F403
from .pooling import *         # noqa: F401,F403

__all__ = [name for module in (core, conv, pooling, normalization, merging)
           for name in module.__all__] + ["LAYERS"]
