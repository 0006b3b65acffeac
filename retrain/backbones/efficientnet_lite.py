"""EfficientNet-Lite0, Lite1 and Lite2 (Tan & Le 2019; the "lite" variants for mobile
accelerators), built from the published scaling coefficients.

Lite differs from EfficientNet-B0 in three ways: ReLU6 instead of swish, no squeeze-excite,
and a stem (32) and head (1280) that are not scaled. Layer names follow Keras Applications'
EfficientNet (`stem_conv`, `block2a_expand_conv`, `block2a_dwconv_pad`, `block2a_dwconv`,
`block2a_bn`, `block2a_project_bn`, `block2b_add`, `top_conv`, `avg_pool`, `predictions`),
so `convert.py` can map the PyTorch names onto them and `load_weights` can match them by name.
Block `block{stage}{letter}` is lukemelas' `_blocks.N`, counted in the same order.

Padding is TF 'same'. For stride 2, as in Keras, an explicit ZeroPadding2D (the extra row and
column at the bottom/right for even sizes) precedes a 'valid' convolution.
"""
import math

from ..engine import (Add, BatchNormalization, Conv2D, DepthwiseConv2D, Dense, Dropout,
                      GlobalAveragePooling2D, Input, Model, ReLU, ZeroPadding2D)
from ..errors import ConfigError, WeightsError
from .weights import resolve_weights

__all__ = ["efficientnet_lite", "efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2",
           "block_specs", "block_of", "preprocessing", "VARIANTS",
           "DEFAULT_BLOCKS_ARGS", "WEIGHTS_FILE", "PREPROCESSING"]

# The official EfficientNet-Lite table (tensorflow/tpu efficientnet_lite_builder.py):
# name -> (width coefficient, depth coefficient, input resolution, dropout rate).
VARIANTS = {
    "efficientnet_lite0": (1.0, 1.0, 224, 0.2),
    "efficientnet_lite1": (1.0, 1.1, 240, 0.2),
    "efficientnet_lite2": (1.1, 1.2, 260, 0.3),
}

# The TF lite builder strings r1_k3_s11_e1_i32_o16 ... r1_k3_s11_e6_i192_o320 (Lite0, before
# scaling), as named fields.
DEFAULT_BLOCKS_ARGS = [
    {"kernel_size": 3, "repeats": 1, "filters_in": 32, "filters_out": 16, "expand_ratio": 1,
     "strides": 1},
    {"kernel_size": 3, "repeats": 2, "filters_in": 16, "filters_out": 24, "expand_ratio": 6,
     "strides": 2},
    {"kernel_size": 5, "repeats": 2, "filters_in": 24, "filters_out": 40, "expand_ratio": 6,
     "strides": 2},
    {"kernel_size": 3, "repeats": 3, "filters_in": 40, "filters_out": 80, "expand_ratio": 6,
     "strides": 2},
    {"kernel_size": 5, "repeats": 3, "filters_in": 80, "filters_out": 112, "expand_ratio": 6,
     "strides": 1},
    {"kernel_size": 5, "repeats": 4, "filters_in": 112, "filters_out": 192, "expand_ratio": 6,
     "strides": 2},
    {"kernel_size": 3, "repeats": 1, "filters_in": 192, "filters_out": 320, "expand_ratio": 6,
     "strides": 1},
]
STEM_FILTERS = 32
HEAD_FILTERS = 1280
DEPTH_DIVISOR = 8
BN_EPSILON = 1e-3      # TF's default. 28 BN layers of Lite0 have channels with variance 0.
BN_MOMENTUM = 0.99     # TF 0.99 (= torch 0.01); only matters when fine-tuning.
CLASSES = 1000
TOP = "top"            # the head conv + BN + ReLU6, the topmost block for fine-tuning
WEIGHTS_FILE = "efficientnet_lite0.h5"


def _variant(name):
    if name not in VARIANTS:
        raise ConfigError(f"Unknown EfficientNet-Lite variant. Received: name={name!r}. "
                          f"Choose one of {sorted(VARIANTS)}.")
    return VARIANTS[name]


def preprocessing(name="efficientnet_lite0"):
    """TF EfficientNet-Lite's eval recipe at the variant's own size S (tests/fixtures/effnet/
    PREPROCESS.md): a centre crop of S/(S+32) of the short side, bicubic resize to SxS,
    (x - 127) / 128 on RGB. int(S/(S+32) * m) equals int(S*m/(S+32)) exactly for S = 224, 240,
    260 and every side m below 20,000, so the fraction is stored as a float."""
    size = _variant(name)[2]
    return {"input_size": [size, size], "crop": "center", "crop_fraction": size / (size + 32),
            "resize_filter": "bicubic", "mean": [127.0, 127.0, 127.0],
            "std": [128.0, 128.0, 128.0], "channel_order": "RGB"}


PREPROCESSING = preprocessing("efficientnet_lite0")


def block_specs(name="efficientnet_lite0"):
    """One dict per MBConv block of variant `name`, in order (index i = lukemelas `_blocks.i`):
    name, filters_in, filters_out, kernel_size, strides, expand_ratio.

    Lite scaling ("fix_head_stem"): channels are rounded to multiples of 8 after the width
    coefficient, repeats rounded up after the depth coefficient, except the first and last
    stages, whose single block is never repeated; stem and head are not scaled."""
    width, depth = _variant(name)[:2]
    specs = []
    last = len(DEFAULT_BLOCKS_ARGS) - 1
    for stage, args in enumerate(DEFAULT_BLOCKS_ARGS):
        filters_in = _round_filters(args["filters_in"], width)
        filters_out = _round_filters(args["filters_out"], width)
        repeats = args["repeats"] if stage in (0, last) else math.ceil(depth * args["repeats"])
        for repeat in range(repeats):
            specs.append({
                "name": f"block{stage + 1}{chr(ord('a') + repeat)}",
                "filters_in": filters_in if repeat == 0 else filters_out,
                "filters_out": filters_out,
                "kernel_size": args["kernel_size"],
                "strides": args["strides"] if repeat == 0 else 1,
                "expand_ratio": args["expand_ratio"],
            })
    return specs


def block_of(layer_name):
    """The block a layer belongs to, by its name: `blockNx` for an MBConv block's layers,
    'top' for top_conv, top_bn and top_activation, None for the stem and what is above."""
    if layer_name in ("top_conv", "top_bn", "top_activation"):
        return TOP
    head, _, _ = layer_name.partition("_")
    if head.startswith("block") and head[5:6].isdigit() and layer_name != head:
        return head
    return None


def efficientnet_lite(name, include_top=True, pooling=None, weights="imagenet",
                      input_shape=None):
    """EfficientNet-Lite variant `name` ('efficientnet_lite0', '_lite1', '_lite2'):
    (N, H, W, 3) preprocessed as (x - 127) / 128 -> (N, 1000) logits (include_top),
    (N, 1280) (pooling='avg'), or (N, ceil(H/32), ceil(W/32), 1280).

    input_shape: (H, W, 3), by default the variant's own size (224, 240, 260).
    weights: 'imagenet' (pretrained/<name>.h5, see `make pretrained`), the path of a weights
    file, or None (random initialisation)."""
    dropout = _variant(name)[3]
    input_shape = _check_arguments(name, pooling, input_shape)
    weights_path = resolve_weights(weights, f"{name}.h5",
                                   f"Run `retrain pretrained --backbone {name}` (or `make "
                                   "pretrained`, which converts every backbone).")
    inputs = Input(input_shape)
    x = ZeroPadding2D(_same_pads(input_shape, 3), name="stem_conv_pad")(inputs)
    x = Conv2D(STEM_FILTERS, 3, strides=2, padding="valid", use_bias=False,
               name="stem_conv")(x)
    x = _bn(x, "stem_bn")
    x = ReLU(max_value=6.0, name="stem_activation")(x)
    for spec in block_specs(name):
        x = _mbconv_block(x, **spec)
    x = Conv2D(HEAD_FILTERS, 1, padding="same", use_bias=False, name="top_conv")(x)
    x = _bn(x, "top_bn")
    x = ReLU(max_value=6.0, name="top_activation")(x)
    if include_top:
        x = GlobalAveragePooling2D(name="avg_pool")(x)
        x = Dropout(dropout, name="top_dropout")(x)
        x = Dense(CLASSES, name="predictions")(x)  # logits: the softmax is the caller's
    elif pooling == "avg":
        x = GlobalAveragePooling2D(name="avg_pool")(x)
    model = Model(inputs, x, name=name)
    if weights_path is not None and include_top:
        model.load_weights(str(weights_path))
    elif weights_path is not None:
        _load_without_top(model, name, weights_path, input_shape)
    return model


def efficientnet_lite0(include_top=True, pooling=None, weights="imagenet", input_shape=None):
    """EfficientNet-Lite0 (224x224, 4,652,008 parameters with the top): see efficientnet_lite."""
    return efficientnet_lite("efficientnet_lite0", include_top, pooling, weights, input_shape)


def efficientnet_lite1(include_top=True, pooling=None, weights="imagenet", input_shape=None):
    """EfficientNet-Lite1 (240x240, 5,416,680 parameters with the top): see efficientnet_lite."""
    return efficientnet_lite("efficientnet_lite1", include_top, pooling, weights, input_shape)


def efficientnet_lite2(include_top=True, pooling=None, weights="imagenet", input_shape=None):
    """EfficientNet-Lite2 (260x260, 6,092,072 parameters with the top): see efficientnet_lite."""
    return efficientnet_lite("efficientnet_lite2", include_top, pooling, weights, input_shape)



def _check_arguments(name, pooling, input_shape):
    if pooling not in (None, "avg"):
        raise ConfigError(f"{name}: pooling must be None or 'avg'. "
                          f"Received: pooling={pooling!r}.")
    if input_shape is None:
        size = _variant(name)[2]
        return (size, size, 3)
    input_shape = tuple(input_shape)
    if len(input_shape) != 3 or input_shape[2] != 3:
        raise ConfigError(f"{name} takes RGB images (H, W, 3). "
                          f"Received: input_shape={input_shape}.")
    if any(s is None or s < 32 for s in input_shape[:2]):
        raise ConfigError(f"{name} needs a fixed input of at least 32x32. "
                          f"Received: input_shape={input_shape}.")
    return input_shape


def _round_filters(filters, width):
    """TF `round_filters`: scale, round to the nearest multiple of 8, never more than 10% down."""
    scaled = filters * width
    rounded = max(DEPTH_DIVISOR, int(scaled + DEPTH_DIVISOR / 2) // DEPTH_DIVISOR * DEPTH_DIVISOR)
    if rounded < 0.9 * scaled:
        rounded += DEPTH_DIVISOR
    return int(rounded)


def _mbconv_block(inputs, name, filters_in, filters_out, kernel_size, strides, expand_ratio):
    """Inverted residual: [expand 1x1 + BN + ReLU6] -> depthwise kxk + BN + ReLU6 ->
    project 1x1 + BN (linear) [+ input when the shape is kept]. Drop-connect, which acts only
    in training, is left out: the pretrained backbone is used frozen."""
    x = inputs
    if expand_ratio != 1:
        x = Conv2D(filters_in * expand_ratio, 1, padding="same", use_bias=False,
                   name=f"{name}_expand_conv")(x)
        x = _bn(x, f"{name}_expand_bn")
        x = ReLU(max_value=6.0, name=f"{name}_expand_activation")(x)
    if strides == 2:
        x = ZeroPadding2D(_same_pads(x.shape[1:3], kernel_size), name=f"{name}_dwconv_pad")(x)
    x = DepthwiseConv2D(kernel_size, strides=strides, padding="valid" if strides == 2 else "same",
                        use_bias=False, name=f"{name}_dwconv")(x)
    x = _bn(x, f"{name}_bn")
    x = ReLU(max_value=6.0, name=f"{name}_activation")(x)
    x = Conv2D(filters_out, 1, padding="same", use_bias=False, name=f"{name}_project_conv")(x)
    x = _bn(x, f"{name}_project_bn")
    if strides == 1 and filters_in == filters_out:
        x = Add(name=f"{name}_add")([x, inputs])
    return x


def _load_without_top(model, name, path, input_shape):
    """A file of the layers below the top (a no-top model's) loads as it is; one of the whole
    network (as `retrain pretrained` writes it) is loaded whole, since the engine loads
    strictly by name, and the layers this model has are copied from it."""
    try:
        model.load_weights(str(path))
        return
    except WeightsError:       # the file holds the top too
        pass
    full = efficientnet_lite(name, include_top=True, weights=path, input_shape=input_shape)
    for layer in model.layers:
        if layer.weights:
            layer.set_weights(full.get_layer(layer.name).get_weights())


def _bn(x, name):
    return BatchNormalization(epsilon=BN_EPSILON, momentum=BN_MOMENTUM, name=name)(x)


def _same_pads(spatial, kernel_size):
    """Keras `correct_pad`: TF 'same' for a stride-2 window, as explicit (before, after) pads.
    Even sizes get one row/column more at the bottom/right; odd sizes are symmetric."""
    half = kernel_size // 2
    return tuple((half - (1 - size % 2), half) for size in spatial[:2])
