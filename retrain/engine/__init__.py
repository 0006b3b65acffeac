"""retrain.engine: a numpy deep-learning engine that reproduces Keras.

It knows nothing of images, folders or the pipeline: arrays in, arrays out.
"""
from .atomic import atomic_write, check_replaceable, fsync_directory, remove_stale_temps
from .errors import (ConfigError, EngineError, GradientError, ModelFileError, ShapeError,
                     UnsupportedLayerError, WeightsError)
from .initializers import set_random_seed
from .layer import KerasTensor, Layer
from .naming import clear_session
from .tensor import Tensor, Variable, constant
from .tape import GradientTape
from .layers import *  # noqa: F401,F403  (the layer classes; see layers.__all__)
from .layers import __all__ as _layer_names
from . import losses, ops, optimizers
from .callbacks import Callback, EarlyStopping, History
from .activations import softmax
from .inference import DEFAULT_BATCH_SIZE, one_blas_thread
from .losses import (CategoricalCrossentropy, SparseCategoricalCrossentropy,
                     categorical_crossentropy, sparse_categorical_crossentropy)
from .model import Model, Sequential
from .cloning import clone_model
from .training import Trainer
from .optimizers import SGD, Adam, AdamW, MultiOptimizer, Optimizer
from .schedules import CosineDecay, LearningRateSchedule
from .saving import load_model, model_from_config, model_to_config, read_metadata

__all__ = ["ConfigError", "EngineError", "ModelFileError", "ShapeError", "UnsupportedLayerError",
           "WeightsError", "set_random_seed", "KerasTensor", "Layer", "Variable",
           "clear_session", "Model", "Sequential", "clone_model", "Trainer", "losses", "optimizers",
           "Callback",
           "EarlyStopping", "History", "CategoricalCrossentropy", "SparseCategoricalCrossentropy",
           "categorical_crossentropy", "sparse_categorical_crossentropy", "SGD", "Adam", "AdamW",
           "Optimizer", "MultiOptimizer", "CosineDecay", "LearningRateSchedule", "load_model",
           "read_metadata", "model_from_config", "model_to_config",
           "DEFAULT_BATCH_SIZE", "one_blas_thread", "atomic_write", "check_replaceable",
           "fsync_directory",
           "remove_stale_temps", "softmax", "GradientError", "GradientTape", "Tensor",
           "constant", "ops"] + list(_layer_names)
