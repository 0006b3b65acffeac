"""Named cut points: where a backbone splits into a frozen bottom and a fine-tuned top.

A backbone's blocks are its registry record's rule (registry.block_names), read from its
layer names, so every variant of a backbone works alike (EfficientNet-Lite's MBConv block
`block6d` is every layer named `block6d_*`). Fine-tuning N blocks cuts at the input of the
first layer of the N-th block from the top; the bottom's output there is what the feature
cache stores per image.
"""
from ..engine import Model, clone_model
from ..errors import ConfigError
from .registry import block_layers, block_names

__all__ = ["split_backbone"]


def split_backbone(backbone, blocks):
    """(bottom, top, cut) for training the top `blocks` blocks of `backbone`.

    bottom: the frozen layers up to the cut, sharing `backbone`'s layers (its outputs are
    what the cache stores). top: trainable copies of the layers above the cut (clone_model),
    from a new input of the cut's shape to the backbone's output. cut: the name of the lowest trained
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
    top = clone_model(backbone, start=cut, name=f"{backbone.name}_from_{lowest}")
    top.trainable = True
    return bottom, top, lowest
