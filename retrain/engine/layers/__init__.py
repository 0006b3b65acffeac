"""Every layer class, and the registry that maps a Keras `class_name` to its class."""
from .conv import Conv2D, DepthwiseConv2D, ZeroPadding2D
from .core import Activation, Dense, Dropout, Flatten, Input, InputLayer, ReLU, Softmax
from .merging import Add
from .normalization import BatchNormalization
from .pooling import (AveragePooling2D, GlobalAveragePooling2D, GlobalMaxPooling2D,
                      MaxPooling2D)

LAYERS = {cls.__name__: cls for cls in (
    InputLayer, Dense, Flatten, Dropout, Activation, ReLU, Softmax, Conv2D, DepthwiseConv2D,
    ZeroPadding2D, MaxPooling2D, AveragePooling2D, GlobalAveragePooling2D, GlobalMaxPooling2D,
    BatchNormalization, Add)}

__all__ = ["Input", "InputLayer", "Dense", "Flatten", "Dropout", "Activation", "ReLU",
           "Softmax", "Conv2D", "DepthwiseConv2D", "ZeroPadding2D", "MaxPooling2D",
           "AveragePooling2D", "GlobalAveragePooling2D", "GlobalMaxPooling2D",
           "BatchNormalization", "Add", "LAYERS"]
