"""clone_model, as keras.models.clone_model: copies of a model's layers (same config, names
and weights) wired as they are, onto a fresh input or onto a tensor of another graph.

A layer sits in one graph only, so the copies are independent: training them leaves the
original untouched. Fine-tuning trains a copy of a backbone's top blocks, and an export
wires a copy of the trained head onto the backbone's output."""
from typing import Optional, Sequence

from .errors import ConfigError
from .layer import KerasTensor
from .layers.core import Input, InputLayer
from .model import Model

__all__ = ["clone_model"]


def clone_model(model: Model, input_tensors: Optional[Sequence[KerasTensor]] = None,
                start: Optional[KerasTensor] = None, name: Optional[str] = None) -> Model:
    """A new Model computing what `model` computes from its tensor `start` (default: its
    input) to its outputs, from copies of the layers in between.

    The copy reads `input_tensors` if given, a tensor of another model's graph (the new
    Model then runs from that graph's inputs, and a copied name that graph already has is
    refused), else a fresh Input of `start`'s shape. Every copied layer must depend on
    `start` alone: a skip connection from below it (a residual Add across a cut) is refused,
    since the copy could not compute it. A model nested in `model` is inlined: its layers'
    copies join the new graph, each keeping the mode the nested call pinned (training=False
    stays so), which makes the copy one flat graph that model files can hold."""
    start = model.inputs[0] if start is None else start
    if input_tensors is None:
        fresh = start in model.inputs
        source = Input(start.shape[1:], name=start.layer.name if fresh
                       else f"{start.layer.name}_output")
    else:
        source = input_tensors
    taken = _names_above(source) if input_tensors is not None else set()
    mapped = _copy_layers(model, {id(start): source}, taken, None)
    if len(mapped) == 1 or any(id(t) not in mapped for t in model.outputs):
        raise ConfigError(f"Model {model.name!r}: its outputs do not depend on "
                          f"{start.layer.name!r}'s output; nothing to clone above it.")
    outputs = [mapped[id(t)] for t in model.outputs]
    inputs = _graph_inputs(source) if input_tensors is not None else [source]
    return Model(inputs if len(inputs) > 1 else inputs[0],
                 outputs if len(outputs) > 1 else outputs[0],
                 name=name or f"{model.name}_clone")


def _copy_layers(model, mapped, taken, pin):
    """Copy `model`'s layers above the tensors in `mapped` (id -> the tensor its copy reads)
    into the graph of those tensors; returns `mapped` with every copied output added. `pin`:
    the mode an enclosing nested call pinned (None: none), which a layer's own pin overrides."""
    for layer in model.layers:
        if isinstance(layer, InputLayer) or not layer.inbound:
            continue
        known = [id(t) in mapped for t in layer.inbound]
        if not any(known):
            continue
        if not all(known):
            raise ConfigError(f"Model {model.name!r}: layer {layer.name!r} also reads a tensor "
                              "from below the start; the model cannot be cut there.")
        inputs = [mapped[id(t)] for t in layer.inbound]
        mode = pin if layer.call_training is None else layer.call_training
        if isinstance(layer, Model):
            inner = _copy_layers(layer, {id(t): x for t, x in zip(layer.inputs, inputs)},
                                 taken, mode)
            mapped[id(layer.outbound)] = inner[id(layer.outputs[0])]
            continue
        if layer.name in taken:
            raise ConfigError(f"Layer name {layer.name!r} of {model.name!r} is already in the "
                              "graph it is wired onto.",
                              hint="Rename the layer; names must be unique in a model.")
        copy = type(layer).from_config(layer.get_config())
        output = copy(inputs if isinstance(layer.input_shape, list) else inputs[0],
                      training=mode)
        copy.set_weights(layer.get_weights())
        mapped[id(layer.outbound)] = output
    return mapped


def _walk_up(tensor):
    """The layers that `tensor` is computed from, itself included, each once."""
    seen, stack, layers = set(), [tensor.layer], []
    while stack:
        layer = stack.pop()
        if id(layer) in seen:
            continue
        seen.add(id(layer))
        layers.append(layer)
        stack.extend(t.layer for t in layer.inbound)
    return layers


def _names_above(tensor):
    return {layer.name for layer in _walk_up(tensor)}


def _graph_inputs(tensor):
    """The Input tensors `tensor` is computed from, in the order a depth-first walk meets
    them."""
    return [layer.outbound for layer in reversed(_walk_up(tensor))
            if isinstance(layer, InputLayer)]
