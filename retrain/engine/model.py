"""Models: a graph of layers run forward in topological order and backward in reverse.

`Model(inputs, outputs)` is Keras's functional model; `Sequential` is a thin Model that wires
its layers one after the other. Gradients accumulate with `+=` per tensor, which is what makes
a residual `Add` (one tensor feeding two layers) correct.

A Model is itself a Layer, as in Keras 3: called on a tensor of another graph it becomes one
node of it (a backbone plus a head is one model), and `model(x, training=False)` there pins
it to inference mode whatever mode the outer model runs in.
"""
from typing import Callable, List, Optional, Sequence, Union

import numpy as np

from .atomic import PathLike
from .errors import ConfigError, ShapeError
from .inference_steps import compile_graph
from .layer import KerasTensor, Layer, Shape, register_model
from .naming import unique_name
from .layers.core import Input, InputLayer
from .tape import record_call, should_record
from .training import Trainer

Arrays = Union[np.ndarray, List[np.ndarray]]      # one array, or one per input or output
Tensors = Union[KerasTensor, Sequence[KerasTensor]]


def _topological_order(outputs):
    """The graph's layers in Keras's order (`map_graph` in keras/src/ops/function.py): by depth,
    the longest path to an output, deepest first; ties broken by first visit in a depth-first
    walk from the outputs. It is a valid execution order, and the order Keras's positional
    readers rely on (legacy `layer_names`, Keras 3 `.weights.h5` keys), which a plain
    post-order would break for parallel branches."""
    visit_index, post_order = {}, []
    for t in outputs:
        # Depth-first with an explicit stack (a chain of thousands of layers is legitimate,
        # and deeper than Python's recursion limit): (layer, index of the next input to visit).
        stack = [] if id(t.layer) in visit_index else [(t.layer, 0)]
        if stack:
            visit_index[id(t.layer)] = len(visit_index)
        while stack:
            layer, next_input = stack.pop()
            if next_input == len(layer.inbound):
                post_order.append(layer)
                continue
            stack.append((layer, next_input + 1))
            child = layer.inbound[next_input].layer
            if id(child) not in visit_index:
                visit_index[id(child)] = len(visit_index)
                stack.append((child, 0))
    depth = {id(layer): 0 for layer in post_order}
    for layer in reversed(post_order):  # consumers before producers
        for t in layer.inbound:
            depth[id(t.layer)] = max(depth[id(t.layer)], depth[id(layer)] + 1)
    return sorted(post_order, key=lambda layer: (-depth[id(layer)], visit_index[id(layer)]))


@register_model("Functional")
class Model(Trainer, Layer):
    """A functional model: `Model(inputs, outputs)`, inputs being `Input(...)` tensors."""

    def __init__(self, inputs: Tensors, outputs: Tensors, name: Optional[str] = None,
                 trainable: bool = True) -> None:
        Layer.__init__(self, name=name or unique_name("functional"))
        self._init_training()
        self._wire(inputs, outputs)
        if not trainable:
            self.trainable = False

    def _wire(self, inputs, outputs):
        self._multi_input = isinstance(inputs, (list, tuple))
        self._multi_output = isinstance(outputs, (list, tuple))
        self.inputs = list(inputs) if self._multi_input else [inputs]
        self._outputs = list(outputs) if self._multi_output else [outputs]
        self.built = True
        for t in self.inputs + self.outputs:
            if not isinstance(t, KerasTensor):
                raise ConfigError(f"Model {self.name!r}: inputs and outputs must be symbolic "
                                  f"tensors from Input(...) and layer calls. Received: {t!r}.")
        self._graph = _topological_order(self.outputs)
        missing = [l.name for l in self._graph if isinstance(l, InputLayer)
                   and l.outbound not in self.inputs]
        if missing:
            raise ConfigError(f"Model {self.name!r}: outputs depend on input(s) {missing} that "
                              "are not in `inputs`.")

    @property
    def outputs(self):
        """The model's output tensors (in its own graph; `outbound` is its node's output in
        a graph that calls it)."""
        return list(self._outputs)

    # -- layers and weights --------------------------------------------------------------
    @property
    def layers(self):
        return list(self._graph)

    def get_layer(self, name: str) -> Layer:
        """The layer called `name`."""
        for layer in self._graph:
            if layer.name == name:
                return layer
        raise ConfigError(f"Model {self.name!r} has no layer named {name!r}.")

    @property
    def trainable(self):
        return any(l.trainable for l in self._graph if l.weights) or not any(
            l.weights for l in self._graph)

    @trainable.setter
    def trainable(self, value):
        for layer in self._graph:
            layer.trainable = value

    @property
    def weights(self):
        return [w for l in self.layers for w in l.weights]

    @property
    def trainable_weights(self):
        return [w for l in self.layers for w in l.trainable_weights]

    @property
    def non_trainable_weights(self):
        return [w for l in self.layers for w in l.non_trainable_weights]

    def get_weights(self) -> List[np.ndarray]:
        """Every weight's value, layer by layer (Keras's order)."""
        return [w.value.copy() for w in self.weights]

    def set_weights(self, values: Sequence[np.ndarray]) -> None:
        """Set every weight, in get_weights' order."""
        weights = self.weights
        if len(values) != len(weights):
            raise ShapeError(f"Model {self.name!r} has {len(weights)} weights. "
                             f"Received: {len(values)} arrays.")
        for w, v in zip(weights, values):
            w.assign(v)

    def count_params(self) -> int:
        """How many numbers the weights hold."""
        return sum(l.count_params() for l in self.layers)

    def zero_grads(self) -> None:
        """Reset every weight's `.grad` before a backward pass adds into it."""
        for layer in self._graph:
            layer.zero_grads()

    # -- forward and backward ------------------------------------------------------------
    def forward(self, x: Arrays, training: bool = False) -> Arrays:
        """The outputs for inputs `x` (one array, or one per input), in topological order."""
        xs = list(x) if self._multi_input else [x]
        if len(xs) != len(self.inputs):
            raise ShapeError(f"Model {self.name!r} expects {len(self.inputs)} input(s). "
                             f"Received: {len(xs)}.")
        values = {id(t): np.asarray(v, np.float32) for t, v in zip(self.inputs, xs)}
        for layer in self._graph:
            if isinstance(layer, InputLayer):
                values[id(layer.outbound)] = layer.forward(values[id(layer.outbound)])
                continue
            args = [values[id(t)] for t in layer.inbound]
            pinned = layer.call_training     # the call's `training`, if it gave one
            values[id(layer.outbound)] = layer.forward(
                args if isinstance(layer.input_shape, list) else args[0],
                training=training if pinned is None else pinned)
        outs = [values[id(t)] for t in self.outputs]
        return outs if self._multi_output else outs[0]

    def _needs_backward(self, input_grad):
        """Which layers backward must visit: those with trainable weights at or above them.
        Backward stops below the lowest trainable layer unless the input gradient is asked for."""
        needed = {}
        for layer in self._graph:
            needed[id(layer)] = input_grad or bool(layer.trainable_weights) or any(
                needed[id(t.layer)] for t in layer.inbound)
        return needed

    def backward(self, dy: Arrays, input_grad: bool = False) -> Optional[Arrays]:
        """Propagate dLoss/dOutput back, adding into each trainable weight's `.grad`.

        Returns dLoss/dInput (a list for several inputs) when `input_grad`, else None."""
        dys = list(dy) if self._multi_output else [dy]
        grads = {}
        for t, g in zip(self.outputs, dys):
            grads[id(t)] = np.asarray(g, np.float32)
        needed = self._needs_backward(input_grad)
        for layer in reversed(self._graph):
            g = grads.get(id(layer.outbound))
            if g is None or isinstance(layer, InputLayer) or not needed[id(layer)]:
                continue
            if isinstance(layer, Model):      # a nested model computes dx only if asked
                dx = layer.backward(g, any(needed[id(t.layer)] for t in layer.inbound))
            else:
                dx = layer.backward(g)
            dxs = dx if isinstance(layer.input_shape, list) else [dx]
            for t, d in zip(layer.inbound, dxs):
                if needed[id(t.layer)] and d is not None:
                    grads[id(t)] = grads[id(t)] + d if id(t) in grads else d
        if not input_grad:
            return None
        dins = [grads.get(id(t), np.zeros((1,) + t.shape[1:], np.float32)) for t in self.inputs]
        return dins if self._multi_input else dins[0]

    def __call__(self, x, training=None):
        """The model's output for x; on Tensors, or inside a GradientTape, also recorded.
        On KerasTensors, a node of the graph they belong to (see Layer.__call__)."""
        items = x if isinstance(x, (list, tuple)) else [x]
        if all(isinstance(t, KerasTensor) for t in items):
            return self._call_symbolic(x, training)
        if should_record(items):
            return record_call(self, x, bool(training), self._leaf_layers(), self.forward,
                               lambda dy, input_grad: self.backward(dy, input_grad=input_grad))
        return self.forward(x, training=bool(training))

    def _leaf_layers(self):
        """The layers whose per-call caches backward reads, nested models' own included."""
        return [leaf for l in self.layers for leaf in getattr(l, "_leaf_layers", lambda: [l])()]

    # -- as a layer of another model -----------------------------------------------------
    def compute_output_shape(self, input_shape: Shape) -> Shape:
        """Its output's shape, for inputs of `input_shape` (those of its Input(s))."""
        if self._multi_output:
            raise ConfigError(f"Model {self.name!r} has {len(self.outputs)} outputs; a model "
                              "called as a layer must have one.")
        expected = [t.shape for t in self.inputs]
        given = [tuple(s) for s in (input_shape if self._multi_input else [input_shape])]
        if [len(s) for s in given] != [len(e) for e in expected] or any(
                None not in (a, b) and a != b for s, e in zip(given, expected)
                for a, b in zip(s[1:], e[1:])):
            raise ShapeError(f"Model {self.name!r} expects input shape(s) {expected}. "
                             f"Received: {input_shape}.")
        return self.outputs[0].shape

    def to_inference(self, srcs: List[int], new_vid: Callable[[], int]) -> Optional[list]:
        """Its graph's steps, run on the values `srcs` (the inference plan inlines it)."""
        steps, _, outputs = compile_graph(self, srcs, new_vid)
        return steps if outputs[0] == (steps[-1].output if steps else srcs[0]) else None

    # -- reporting and files (implemented in summary.py and saving.py) -------------------
    def summary(self, print_fn: Callable[[str], None] = print) -> None:
        """Keras's summary table, line by line to `print_fn`."""
        from .summary import summary_table
        print_fn(summary_table(self))

    def save(self, path: PathLike, metadata: Optional[dict] = None) -> None:
        """The model, its weights and `metadata` as one .h5 file, written atomically."""
        from .saving import save_model
        save_model(self, path, metadata=metadata)

    def load_weights(self, path: PathLike) -> None:
        """Weights from an .h5 file (ours or Keras's), matched by layer name."""
        from .saving import load_weights
        load_weights(self, path)

    def save_weights(self, path: PathLike) -> None:
        """The weights alone as an .h5 file Keras reads, written atomically."""
        from .saving import save_weights
        save_weights(self, path)


@register_model("Sequential")
class Sequential(Model):
    """Layers applied one after the other. The first may be `Input(shape)`, an `InputLayer`,
    or a layer given `input_shape=`; otherwise the graph is wired at the first forward call."""

    def __init__(self, layers: Optional[Sequence[Layer]] = None, name: Optional[str] = None,
                 trainable: bool = True) -> None:
        Layer.__init__(self, name=name or unique_name("sequential"))
        self._init_training()
        self._input = None
        self.inputs, self._outputs = [], []
        self._layers = []
        self._graph = []
        for layer in layers or []:
            self.add(layer, wire=False)
        if self._input is not None:
            self._wire_layers()     # once: wiring after each add is quadratic in the layers
        if not trainable:
            self.trainable = False

    def add(self, layer: Layer, wire: bool = True) -> None:
        """Append `layer` (Keras's Sequential.add); `wire`: rewire the graph through it now,
        where the input is known."""
        if isinstance(layer, KerasTensor):
            layer = layer.layer
        if isinstance(layer, InputLayer):
            if self._layers or self._input is not None:
                raise ConfigError(f"Sequential {self.name!r}: an Input must come first.")
            self._input = layer.outbound
            return
        if not isinstance(layer, Layer):
            raise ConfigError(f"Sequential.add expects a layer. Received: {layer!r}.")
        if not self._layers and self._input is None and layer._batch_input_shape is not None:
            self._input = Input(layer._batch_input_shape[1:])
        self._layers.append(layer)
        if self._input is not None and wire:
            self._wire_layers()

    def _wire_layers(self):
        x = self._input
        for layer in self._layers:
            x = layer.outbound if layer.inbound else layer(x)
        self._wire(self._input, x)

    def build(self, input_shape: Shape) -> None:
        """Wire the graph for inputs of `input_shape` (batch axis included)."""
        if self._input is None:
            self._input = Input(tuple(input_shape)[1:])
            self._wire_layers()

    @property
    def layers(self):
        return list(self._layers)

    def forward(self, x: Arrays, training: bool = False) -> Arrays:
        """The output for `x`, built from its shape on the first call."""
        if self._input is None:
            self.build(np.shape(x))
        return super().forward(x, training=training)
