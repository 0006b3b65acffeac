"""The Layer base: build-on-first-call, weights, trainable flag, config and lowerings; and the
registries model files are read through (LAYERS, MODELS). No math."""
import contextlib
import contextvars
from typing import Callable, List, Optional, Sequence

import numpy as np

from . import initializers
from .errors import ConfigError, ShapeError
from .naming import to_snake_case, unique_name
from .tape import record_call, should_record
from .tensor import Variable

Shape = tuple           # (None, H, W, C): a layer's shapes, None for the batch
# Every layer class a model file may name: Keras class_name -> class (see `register`).
LAYERS = {}
# The model classes a model file may name, by Keras class_name ("Functional", "Sequential"):
# serialization rebuilds models through it, and so needs no import of model.py.
MODELS = {}
# Weight values that add_weight may still create (None: no limit); see weight_budget.
_budget = contextvars.ContextVar("weight_budget", default=None)


@contextlib.contextmanager
def weight_budget(values):
    """Layers built inside create at most `values` weight values in all, or ConfigError: a
    model file's config may not make the loader allocate more than the file stores."""
    token = _budget.set([values])
    try:
        yield
    finally:
        _budget.reset(token)


def register_model(class_name):
    """Class decorator: the model class that model files call `class_name` (MODELS)."""
    def decorate(cls):
        MODELS[class_name] = cls
        return cls
    return decorate


def register(cls):
    """Class decorator: make `cls` a layer kind that model files may name (LAYERS). Nothing
    else lists layer kinds: what a kind is, it says itself (Layer's lowerings)."""
    if cls.__name__ in LAYERS:
        raise ConfigError(f"Two layer classes are named {cls.__name__!r}.")
    LAYERS[cls.__name__] = cls
    return cls


class KerasTensor:
    """A symbolic tensor: a shape (batch axis None) and the layer call that produced it."""

    def __init__(self, shape, layer=None, index=0):
        self.shape = tuple(shape)
        self.layer = layer
        self.index = index

    def __repr__(self):
        producer = self.layer.name if self.layer else None
        return f"<KerasTensor shape={self.shape} from={producer}>"


class Layer:
    """Base of every layer. Subclasses define, in this order: `__init__` (validate arguments),
    `build(input_shape)` (create weights with `add_weight`), `forward(x, training)` (store what
    backward needs in `self._cache`), `backward(dy)` (return dx, and *add* into each weight's
    `.grad`), the lowerings `to_inference` and `to_onnx` (and `inference_epilogue` where a
    step before it may absorb it), `compute_output_shape(input_shape)` and `get_config()`.
    `torch_weights` maps each weight to its PyTorch parameter, for weight converters.

    Layers with several inputs (Add) receive and return lists in forward/backward.
    """
    # weight name -> (PyTorch parameter name, axes permutation to Keras's layout, or None)
    torch_weights = {}

    def __init__(self, name: Optional[str] = None, trainable: bool = True,
                 dtype: str = "float32", input_shape: Optional[Shape] = None,
                 batch_input_shape: Optional[Shape] = None, batch_shape: Optional[Shape] = None,
                 **kwargs: object) -> None:
        if kwargs:
            raise ConfigError(f"{type(self).__name__} got unexpected argument(s): "
                              f"{', '.join(sorted(kwargs))}.")
        self.name = name or unique_name(to_snake_case(type(self).__name__))
        self._trainable = bool(trainable)
        self.dtype = "float32"
        shape = batch_shape or batch_input_shape
        self._batch_input_shape = tuple(shape) if shape else (
            (None,) + tuple(input_shape) if input_shape is not None else None)
        self.built = False
        self._trainable_weights = []
        self._non_trainable_weights = []
        self._cache = None
        self.inbound = []        # KerasTensors this layer was called on (graph models)
        self.outbound = None     # the KerasTensor that call produced
        self.call_training = None   # that call's `training`: None follows the model's mode
        self.input_shape = None
        self.output_shape = None

    # -- weights -------------------------------------------------------------------------
    def add_weight(self, name: str, shape: Shape, initializer: str = "zeros",
                   trainable: bool = True) -> Variable:
        """Create a weight. Only `build` calls this; the order of calls is the file order."""
        shape = tuple(int(s) for s in shape)
        left = _budget.get()
        if left is not None:
            left[0] -= int(np.prod(shape, dtype=object))
            if left[0] < 0:
                raise ConfigError(f"Layer {self.name!r} weight {name!r} of shape {shape} takes "
                                  "the model past the number of parameters its file stores.")
        value = initializers.get(initializer)(shape)
        variable = Variable(value, trainable, name)
        (self._trainable_weights if trainable else self._non_trainable_weights).append(variable)
        return variable

    @property
    def trainable(self):
        return self._trainable

    @trainable.setter
    def trainable(self, value):
        self._trainable = bool(value)

    @property
    def trainable_weights(self):
        return list(self._trainable_weights) if self._trainable else []

    @property
    def non_trainable_weights(self):
        if self._trainable:
            return list(self._non_trainable_weights)
        return self._trainable_weights + self._non_trainable_weights

    @property
    def weights(self):
        """All weights in Keras's order: trainable ones first, each group in creation order."""
        return self._trainable_weights + self._non_trainable_weights

    def get_weights(self) -> List[np.ndarray]:
        """The weights' values: trainable ones first, in creation order (Keras's)."""
        return [w.value.copy() for w in self.weights]

    def set_weights(self, values: Sequence[np.ndarray]) -> None:
        """Set the weights, in get_weights' order; ShapeError names a wrong shape."""
        weights = self.weights
        if len(values) != len(weights):
            raise ShapeError(f"Layer {self.name!r} has {len(weights)} weights "
                             f"({', '.join(w.name for w in weights)}). Received: {len(values)} arrays.")
        for w, v in zip(weights, values):
            if np.shape(v) != w.shape:
                raise ShapeError(f"Layer {self.name!r} weight {w.name!r} has shape {w.shape}. "
                                 f"Received: shape={np.shape(v)}.")
            w.assign(v)

    def count_params(self) -> int:
        """How many numbers the weights hold."""
        return int(sum(w.value.size for w in self.weights))

    def zero_grads(self) -> None:
        """Reset each weight's `.grad` before a backward pass adds into it."""
        for w in self.weights:
            w.grad[...] = 0.0

    # -- building and calling ------------------------------------------------------------
    def build(self, input_shape: Shape) -> None:
        """Create weights for `input_shape` (batch axis included, possibly None)."""

    def maybe_build(self, input_shape: Shape) -> None:
        """Build on the first call only (Keras's build-on-first-call)."""
        if not self.built:
            self.build(input_shape)
            self.built = True

    @property
    def outputs(self):
        """[the KerasTensor this layer's call produced], or [] before it is called."""
        return [] if self.outbound is None else [self.outbound]

    def __call__(self, inputs, training=None):
        """Symbolic call on KerasTensor(s) wires the graph; a call on arrays runs forward;
        a call on Tensors, or inside a GradientTape, is also recorded (tape.py).

        `training` in a symbolic call pins this layer's mode in the graph (True or False;
        None: the mode the model runs in), as `base_model(x, training=False)` in Keras's
        transfer-learning guide; on arrays, None means inference."""
        items = inputs if isinstance(inputs, (list, tuple)) else [inputs]
        if all(isinstance(t, KerasTensor) for t in items):
            return self._call_symbolic(inputs, training)
        training = bool(training)
        if should_record(items):
            return record_call(self, inputs, training, [self], self._call_arrays,
                               lambda dy, _: self.backward(dy))
        return self._call_arrays(inputs, training)

    def _call_arrays(self, inputs, training):
        if isinstance(inputs, (list, tuple)):
            arrays = [np.asarray(t, np.float32) for t in inputs]
            self.maybe_build([a.shape for a in arrays])
            return self.forward(arrays, training=training)
        x = np.asarray(inputs, np.float32)
        self.maybe_build(x.shape)
        return self.forward(x, training=training)

    def _call_symbolic(self, inputs, training=None):
        if self.inbound:
            raise ConfigError(f"Layer {self.name!r} is already used in a graph; sharing a layer "
                              "between two calls is not supported. Create a second layer.")
        multi = isinstance(inputs, (list, tuple))
        shape = [t.shape for t in inputs] if multi else inputs.shape
        self.maybe_build(shape)
        self.inbound = list(inputs) if multi else [inputs]
        self.call_training = None if training is None else bool(training)
        self.input_shape = shape
        self.output_shape = tuple(self.compute_output_shape(shape))
        self.outbound = KerasTensor(self.output_shape, self)
        return self.outbound

    def forward(self, x: np.ndarray, training: bool = False) -> np.ndarray:
        """The output for input `x` (a batch); keeps in one cache what backward needs."""
        raise NotImplementedError

    def backward(self, dy: np.ndarray) -> np.ndarray:
        """dx for the output gradient `dy`; adds (+=) into each trainable weight's grad."""
        raise NotImplementedError

    # -- lowerings: the same math for the inference plan and for ONNX --------------------
    def to_inference(self, srcs: List[int], new_vid: Callable[[], int]) -> Optional[list]:
        """The inference plan's steps (engine/inference_steps.py) computing this layer from
        the value ids `srcs`, each new value numbered by `new_vid()`; [] for the identity.
        None: no lowering, the plan runs `forward` (and warns that it is slower)."""
        return None

    def inference_epilogue(self) -> Optional[dict]:
        """What a fused step (a convolution, a sum) whose output only this layer reads may
        take over: {"affine": (factor, shift)}, epilogue stages ({} for the identity), or
        {"residual": True} for a sum. None: nothing, the layer stays a step of its own."""
        return None

    def to_onnx(self, graph: object, xs: List[str], shapes: List[Shape]) -> Optional[str]:
        """ONNX nodes computing this layer, added through `graph` (the exporter's builder:
        node, constant, activation, pads, channels_last, channels_first) from the values
        named `xs` (4-D ones NCHW) of Keras shapes `shapes`; returns the output's name.
        None: the layer has no ONNX form."""
        return None

    def compute_output_shape(self, input_shape: Shape) -> Shape:
        """The output shape for `input_shape` (the batch dimension None)."""
        return input_shape

    # -- config --------------------------------------------------------------------------
    def get_config(self) -> dict:
        """The constructor's arguments: `type(layer)(**layer.get_config())` rebuilds it."""
        config = {"name": self.name, "trainable": self.trainable, "dtype": self.dtype}
        if self._batch_input_shape is not None:
            config["batch_input_shape"] = list(self._batch_input_shape)
        return config

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    def __repr__(self):
        return f"<{type(self).__name__} name={self.name}>"
