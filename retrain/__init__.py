"""retrain: a transfer-learning image classifier whose engine is numpy alone.

    import retrain
    m = retrain.load("runs/shoes/model.h5")
    m.predict("photo.jpg")                     # api.py: files, folders, PIL images, arrays
    retrain.train("shoes/", out="runs/shoes")  # what `retrain fit` does

and the engine's Keras-like API (Sequential, Model, layers, load_model...):

>>> import numpy as np, retrain
>>> retrain.set_random_seed(0)
>>> model = retrain.Sequential([retrain.Input((4,)), retrain.Dense(3, activation="softmax")])
>>> probabilities = model.predict(np.ones((2, 4), np.float32))
>>> probabilities.shape, bool(np.allclose(probabilities.sum(axis=1), 1))
((2, 3), True)
"""
from .engine import *  # noqa: F401,F403
from .engine import __all__ as _engine_all

from .version import __version__
from .api import ImageClassifier, Prediction, load, train

__all__ = list(_engine_all) + ["ImageClassifier", "Prediction", "load", "train"]
