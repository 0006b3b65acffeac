"""retrain: a transfer-learning image classifier whose engine is numpy alone."""
from .engine import *  # noqa: F401,F403
from .engine import __all__ as _engine_all

__version__ = "0.1.0"
__all__ = list(_engine_all)
