"""retrain: a transfer-learning image classifier whose engine is numpy alone.

    import retrain
    m = retrain.load("runs/shoes/model.h5")
    m.predict("photo.jpg")                     # api.py: files, folders, PIL images, arrays
    retrain.train("shoes/", out="runs/shoes")  # what `retrain fit` does

and the engine's Keras-like API (Sequential, Model, layers, load_model...)."""
from .engine import *  # noqa: F401,F403
from .engine import __all__ as _engine_all

__version__ = "0.1.0"

# After __version__, which the pipeline behind api.py records in every model file.
from .api import ImageClassifier, Prediction, load, train  # noqa: E402

__all__ = list(_engine_all) + ["ImageClassifier", "Prediction", "load", "train"]
