"""GradientTape: record the ops run on watched tensors, then walk them backwards.

Every op of ops.py computes its value with numpy and gives `record` its inputs and a
backward function, itself written with ops. A tape inside its `with` block that tracks one
of the inputs (a watched tensor, a trainable Variable, or the output of an op it recorded)
keeps the op. `gradient` runs the backward functions in the reverse order of recording and
adds up the gradients of each tensor. An enclosing tape that is recording meanwhile records
the backward functions' ops: that is how two nested tapes give a second derivative (and a
persistent tape asked inside its own block records them itself, as in TensorFlow).

A layer, a model or a loss called on Tensors is recorded as one op whose backward is the
engine's own (`record_call`, `record_once`). Those backward passes are numpy, so they are
differentiable once: asking an outer tape to differentiate through them is a GradientError.
"""
import threading
from typing import Sequence, Union

import numpy as np

from .errors import ConfigError, GradientError
from .tensor import Tensor, Variable, constant

_local = threading.local()     # each thread has its own tapes, as in TensorFlow


def _active():
    """This thread's tapes inside their `with` block, outermost first."""
    if not hasattr(_local, "tapes"):
        _local.tapes = []
    return _local.tapes


class GradientTape:
    """`with GradientTape() as tape: ...` then `tape.gradient(target, sources)`, as in
    TensorFlow. `persistent=True` allows several `gradient` calls on one recording."""

    def __init__(self, persistent: bool = False, watch_accessed_variables: bool = True) -> None:
        self.persistent = bool(persistent)
        self.watch_accessed_variables = bool(watch_accessed_variables)
        self._tracked = {}     # id -> tensor: watched tensors and outputs of recorded ops
        self._ops = []         # (inputs, output, backward) in the order they ran
        self._recording = False
        self._used = False

    def __enter__(self):
        _active().append(self)
        self._recording = True
        return self

    def __exit__(self, *exc_info):
        _active().remove(self)
        self._recording = False

    def watch(self, tensor: Union[Tensor, Sequence[Tensor]]) -> None:
        """Track `tensor` (a Tensor or Variable, or a list of them) from now on."""
        for t in _flatten(tensor):
            if not isinstance(t, Tensor):
                raise ConfigError(f"GradientTape.watch expects Tensors or Variables. Received: "
                                  f"{type(t).__name__}. Wrap arrays with retrain.constant(...).")
            self._tracked[id(t)] = t

    def _tracks(self, t):
        if id(t) in self._tracked:
            return True
        if self.watch_accessed_variables and isinstance(t, Variable) and t.trainable:
            self._tracked[id(t)] = t
            return True
        return False

    def gradient(self, target: Union[Tensor, Sequence[Tensor]], sources: object) -> object:
        """d sum(target) / d source for each source, in the structure of `sources` (a tensor,
        or nested lists, tuples and dicts of them); None for a source the target does not
        depend on, as TensorFlow."""
        if self._used and not self.persistent:
            raise GradientError("A non-persistent GradientTape computes gradients once. Create "
                                "it with GradientTape(persistent=True) to call gradient again.")
        self._used = True
        for t in _flatten(sources) + _flatten(target):
            if not isinstance(t, Tensor):
                raise ConfigError("GradientTape.gradient expects Tensors and Variables as target "
                                  f"and sources. Received: {type(t).__name__}.")
        # As TensorFlow: a persistent tape inside its `with` block records its own gradient
        # computation (so it can differentiate it again); a plain one pauses meanwhile.
        recording = self._recording
        self._recording = recording and self.persistent
        try:
            grads = self._backpropagate(_flatten(target))
        finally:
            self._recording = recording
        if not self.persistent:
            self._ops = []
        return _pack(sources, iter([grads.get(id(s)) for s in _flatten(sources)]))

    def _backpropagate(self, targets):
        grads = {}
        for t in targets:
            _accumulate(grads, t, constant(np.ones_like(t.value)))
        for inputs, output, backward in reversed(self._ops):
            g = grads.get(id(output))
            if g is None:
                continue
            for x, gx in zip(inputs, backward(g)):
                if gx is not None and id(x) in self._tracked:
                    _accumulate(grads, x, gx)
        return grads


def _accumulate(grads, x, g):
    """grads[x] += g, with an op, so that an enclosing tape sees the sum (fan-out)."""
    grads[id(x)] = g if id(x) not in grads else grads[id(x)] + g


def record(inputs, value, backward):
    """The output Tensor of an op; every recording tape that tracks one of `inputs` keeps
    the op. `backward(g)` returns the gradient of each input (or None), made with ops."""
    out = Tensor(value)
    for tape in _active():
        if tape._recording and any([tape._tracks(x) for x in inputs]):
            tape._ops.append((inputs, out, backward))
            tape._tracked[id(out)] = out
    return out


def recording(tensors):
    """Whether a tape records now and tracks one of `tensors`."""
    return any(tape._recording and any([tape._tracks(t) for t in tensors]) for tape in _active())


def record_once(inputs, value, vjp, what):
    """Record an op whose backward `vjp(g_array) -> [array or None per input]` is numpy:
    its gradients are right, and differentiating them again raises GradientError."""
    def backward(g):
        def refuse(_):
            raise GradientError(f"{what} is differentiable once: a second derivative (a tape "
                                "around the gradient of another) cannot pass through it. Write "
                                "the computation with retrain.ops for higher derivatives.")
        return [None if a is None else record(inputs + [g], a, refuse) for a in vjp(g.value)]
    return record(inputs, value, backward)


def should_record(inputs):
    """Whether a layer or model called on `inputs` returns a Tensor and is recorded: when
    one of them is a Tensor, or a tape is recording (its weights are watched Variables)."""
    return any(isinstance(t, Tensor) for t in inputs) or any(t._recording for t in _active())


def record_call(model_or_layer, inputs, training, layers, forward, backward):
    """Run a layer or model (`forward(arrays, training)`) and record it once, through its
    own backward.

    `layers` are those whose per-call cache backward reads, and `backward(dy, input_grad)`
    returns dx. The caches and the weights' values are kept with the op, so a layer called
    twice, or a weight assigned before `gradient`, still gets the gradient of this call."""
    multi = isinstance(inputs, (list, tuple))
    xs = [t if isinstance(t, Tensor) else constant(t) for t in (inputs if multi else [inputs])]
    value = forward([x.value for x in xs] if multi else xs[0].value, training=training)
    if isinstance(value, list):
        raise ConfigError(f"{model_or_layer.name!r} has several outputs; a GradientTape records "
                          "single-output models only. Call the model on arrays instead.")
    weights = model_or_layer.trainable_weights
    input_grad = recording(xs)
    saved = [(layer, layer._cache) for layer in layers], [(w, w.value) for w in weights]

    def vjp(dy):
        current = ([(layer, layer._cache) for layer in layers],
                   [(w, w.value, w.grad) for w in weights])
        for layer, cache in saved[0]:
            layer._cache = cache
        for w, value in saved[1]:
            w.value, w.grad = value, np.zeros_like(value)
        try:
            dx = backward(dy, input_grad)
            weight_grads = [w.grad for w in weights]
        finally:
            for layer, cache in current[0]:
                layer._cache = cache
            for w, value, grad in current[1]:
                w.value, w.grad = value, grad
        if dx is None:      # a model asked for no input gradient
            return [None] * len(xs) + weight_grads
        return (list(dx) if multi else [dx]) + weight_grads
    return record_once(xs + weights, value, vjp,
                       f"{type(model_or_layer).__name__} {model_or_layer.name!r}")


def _flatten(structure):
    if isinstance(structure, dict):
        return [t for key in structure for t in _flatten(structure[key])]
    if isinstance(structure, (list, tuple)):
        return [t for item in structure for t in _flatten(item)]
    return [structure]


def _pack(structure, flat):
    """`structure` with each leaf replaced by the next item of the iterator `flat`."""
    if isinstance(structure, dict):
        return {key: _pack(structure[key], flat) for key in structure}
    if isinstance(structure, (list, tuple)):
        packed = [_pack(item, flat) for item in structure]
        return tuple(packed) if isinstance(structure, tuple) else packed
    return next(flat)
