"""Named cut points: where a backbone splits into a frozen bottom and a fine-tuned top.

A backbone's blocks are its registry record's rule (registry.block_names), read from its
layer names, so every variant of a backbone works alike (EfficientNet-Lite's MBConv block
`block6d` is every layer named `block6d_*`). Fine-tuning N blocks cuts at the input of the
first layer of the N-th block from the top; the bottom's output there is what the feature
cache stores per image.
"""
from ..engine import Input, InputLayer, Model
from ..errors import ConfigError
from .registry import block_layers, block_names

__all__ = ["clone_top", "split_backbone"]


def split_backbone(backbone, blocks):
    """(bottom, top, cut) for training the top `blocks` blocks of `backbone`.

    bottom: the frozen layers up to the cut, sharing `backbone`'s layers (its outputs are
    what the cache stores). top: trainable copies of the layers above the cut, from a new
    input of the cut's shape to the backbone's output. cut: the name of the lowest trained
    block. blocks=0 is (backbone, None, None): nothing is fine-tuned."""
    if blocks == 0:
        return backbone, None, None
    names = block_names(backbone)
    if not names:
        raise ConfigError(f"The backbone {backbone.name!r} has no named blocks to fine-tune.",
                          hint="Use --fine-tune 0 with it, or a registered backbone "
                               "(`retrain backbones`).")
    if not 0 < blocks <= len(names):
        raise ConfigError(f"--fine-tune must be between 0 and {len(names)} (the blocks of "
                          f"{backbone.name}). Received: {blocks}.",
                          hint="Fine-tuning 1 to 3 blocks is what pays on small datasets.")
    lowest = names[-blocks]
    cut = block_layers(backbone, lowest)[0].inbound[0]
    bottom = Model(backbone.inputs[0], cut, name=f"{backbone.name}_below_{lowest}")
    top = clone_top(backbone, cut, name=f"{backbone.name}_from_{lowest}")
    top.trainable = True
    return bottom, top, lowest


def clone_top(model, start, name=None):
    """A new Model from tensor `start` of `model` to its outputs: a fresh Input of `start`'s
    shape, then a copy of every layer above it (same config, names and weights), wired the
    same way. The copies are independent layers (a layer sits in one graph only), so
    training them leaves `model` untouched until their weights are copied back.

    Every layer above `start` must depend on `start` alone: a skip connection from below it
    (a residual Add across the cut) is refused, since the copy could not compute it."""
    mapped = {id(start): Input(start.shape[1:], name=f"{start.layer.name}_output")}
    reached = False
    for layer in model.layers:
        if isinstance(layer, InputLayer) or not layer.inbound:
            continue
        known = [id(t) in mapped for t in layer.inbound]
        if not any(known):
            continue
        if not all(known):
            raise ConfigError(f"Model {model.name!r}: layer {layer.name!r} also reads a tensor "
                              f"from below {start.layer.name!r}; the model cannot be cut there.")
        copy = type(layer).from_config(layer.get_config())
        inputs = [mapped[id(t)] for t in layer.inbound]
        output = copy(inputs if isinstance(layer.input_shape, list) else inputs[0])
        copy.set_weights(layer.get_weights())
        mapped[id(layer.outputs[0])] = output
        reached = True
    if not reached or any(id(t) not in mapped for t in model.outputs):
        raise ConfigError(f"Model {model.name!r}: its outputs do not depend on "
                          f"{start.layer.name!r}'s output; nothing to clone above it.")
    outputs = [mapped[id(t)] for t in model.outputs]
    return Model(mapped[id(start)], outputs if len(model.outputs) > 1 else outputs[0],
                 name=name or f"{model.name}_top")
