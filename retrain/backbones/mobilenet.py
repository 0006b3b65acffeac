"""MobileNet (v1, Howard et al. 2017) and MobileNetV2 (Sandler et al. 2018), layer for layer
as Keras Applications builds them (keras/src/applications/mobilenet.py, mobilenet_v2.py):
the same layer names, widths, paddings and argument checks, so Keras's published weight
files (`mobilenet_1_0_224_tf_no_top.h5`, `mobilenet_v2_weights_tf_dim_ordering_tf_kernels_
1.0_224_no_top.h5`, ...) load by name. Inputs are preprocessed as x / 127.5 - 1.

weights='imagenet' looks for the Keras file under `pretrained_dir()`: this project has no
network access at run time and does not ship them; copy the file there to use it.

MobileNetV2 is also a registered backbone (`--backbone mobilenet_v2`): its plug-in rules are
here, `v2_block_of` (the block of a layer by its Keras name: its 17 inverted residual
blocks, then `top`) and `convert_keras_file`, its weight converter, which reads a Keras
Applications file given with `retrain pretrained --backbone mobilenet_v2 --wheel FILE`.
"""
import warnings

from ..engine import (Activation, Add, BatchNormalization, Conv2D, DepthwiseConv2D, Dense,
                      Dropout, Flatten, GlobalAveragePooling2D, GlobalMaxPooling2D, Input, Model,
                      ReLU, ZeroPadding2D)
from ..errors import ConfigError, WeightsError
from ..files import sha256_file
from .weights import read_labels, resolve_weights

__all__ = ["mobilenet", "mobilenet_v2", "make_divisible", "keras_weights_file", "PREPROCESSING",
           "v2_block_of", "convert_keras_file", "V2_HOW_TO_GET"]

# Keras `preprocess_input` mode 'tf': x / 127.5 - 1; the whole image, resized.
PREPROCESSING = {"input_size": [224, 224], "crop": "center", "crop_fraction": 1.0,
                 "resize_filter": "bicubic", "mean": [127.5, 127.5, 127.5],
                 "std": [127.5, 127.5, 127.5], "channel_order": "RGB"}

_KERAS_URL = "https://storage.googleapis.com/tensorflow/keras-applications/"
_V1_ALPHAS = (0.25, 0.50, 0.75, 1.0)
_V1_SIZES = (128, 160, 192, 224)
_V2_ALPHAS = (0.35, 0.50, 0.75, 1.0, 1.3, 1.4)
_V2_SIZES = (96, 128, 160, 192, 224)
# (pointwise filters, strides) of MobileNet's 13 depthwise-separable blocks, block_id 1..13.
_V1_BLOCKS = [(64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2), (512, 1), (512, 1),
              (512, 1), (512, 1), (512, 1), (1024, 2), (1024, 1)]
# (filters, stride, expansion) of MobileNetV2's 17 inverted residual blocks, block_id 0..16.
_V2_BLOCKS = [(16, 1, 1), (24, 2, 6), (24, 1, 6), (32, 2, 6), (32, 1, 6), (32, 1, 6),
              (64, 2, 6), (64, 1, 6), (64, 1, 6), (64, 1, 6), (96, 1, 6), (96, 1, 6),
              (96, 1, 6), (160, 2, 6), (160, 1, 6), (160, 1, 6), (320, 1, 6)]


def mobilenet(alpha=1.0, input_shape=None, include_top=False, pooling=None, weights=None,
              classes=1000, dropout=1e-3):
    """MobileNet v1 (depth_multiplier 1): (N, H, W, 3) -> (N, H/32, W/32, 1024*alpha),
    pooled (pooling='avg'/'max') or class probabilities (include_top)."""
    rows, input_shape = _check_arguments("MobileNet", alpha, input_shape, include_top, pooling,
                                         weights, classes, alphas=_V1_ALPHAS, sizes=_V1_SIZES)
    weights_path = _resolve("mobilenet", weights, alpha, rows, include_top)
    inputs = Input(input_shape)
    x = Conv2D(int(32 * alpha), 3, strides=2, padding="same", use_bias=False,
               name="conv1")(inputs)
    x = BatchNormalization(name="conv1_bn")(x)
    x = ReLU(6.0, name="conv1_relu")(x)
    for block_id, (filters, strides) in enumerate(_V1_BLOCKS, start=1):
        x = _depthwise_conv_block(x, int(filters * alpha), strides, block_id)
    if include_top:
        x = GlobalAveragePooling2D(keepdims=True)(x)
        x = Dropout(dropout, name="dropout")(x)
        x = Conv2D(classes, 1, padding="same", name="conv_preds")(x)
        # Keras uses Reshape((classes,)); the engine has no Reshape, and flattening the
        # (N, 1, 1, classes) logits is the same operation. Keras's name is kept.
        x = Flatten(name="reshape_2")(x)
        x = Activation("softmax", name="predictions")(x)
    else:
        x = _pool(x, pooling)
    model = Model(inputs, x, name=f"mobilenet_{alpha:0.2f}_{rows}")
    if weights_path is not None:
        model.load_weights(str(weights_path))
    return model


def _depthwise_conv_block(inputs, filters, strides, block_id):
    """Depthwise 3x3 + BN + ReLU6, then pointwise 1x1 + BN + ReLU6. Stride 2 pads
    ((0, 1), (0, 1)) whatever the input size (Keras v1's choice) before a 'valid' depthwise."""
    x = inputs
    if strides == 2:
        x = ZeroPadding2D(((0, 1), (0, 1)), name=f"conv_pad_{block_id}")(x)
    x = DepthwiseConv2D(3, strides=strides, padding="same" if strides == 1 else "valid",
                        use_bias=False, name=f"conv_dw_{block_id}")(x)
    x = BatchNormalization(name=f"conv_dw_{block_id}_bn")(x)
    x = ReLU(6.0, name=f"conv_dw_{block_id}_relu")(x)
    x = Conv2D(filters, 1, padding="same", use_bias=False, name=f"conv_pw_{block_id}")(x)
    x = BatchNormalization(name=f"conv_pw_{block_id}_bn")(x)
    return ReLU(6.0, name=f"conv_pw_{block_id}_relu")(x)


def mobilenet_v2(alpha=1.0, input_shape=None, include_top=False, pooling=None, weights=None,
                 classes=1000):
    """MobileNetV2: (N, H, W, 3) -> (N, H/32, W/32, 1280 or more for alpha > 1), pooled
    (pooling='avg'/'max') or class probabilities (include_top)."""
    rows, input_shape = _check_arguments("MobileNetV2", alpha, input_shape, include_top,
                                         pooling, weights, classes, alphas=_V2_ALPHAS,
                                         sizes=_V2_SIZES)
    weights_path = _resolve("mobilenet_v2", weights, alpha, rows, include_top)
    inputs = Input(input_shape)
    x = Conv2D(make_divisible(32 * alpha, 8), 3, strides=2, padding="same", use_bias=False,
               name="Conv1")(inputs)
    x = _bn_v2(x, "bn_Conv1")
    x = ReLU(6.0, name="Conv1_relu")(x)
    for block_id, (filters, stride, expansion) in enumerate(_V2_BLOCKS):
        x = _inverted_res_block(x, expansion, stride, alpha, filters, block_id)
    # No alpha on the last conv unless alpha > 1, as in the paper.
    last_filters = make_divisible(1280 * alpha, 8) if alpha > 1.0 else 1280
    x = Conv2D(last_filters, 1, use_bias=False, name="Conv_1")(x)
    x = _bn_v2(x, "Conv_1_bn")
    x = ReLU(6.0, name="out_relu")(x)
    if include_top:
        x = GlobalAveragePooling2D()(x)
        x = Dense(classes, activation="softmax", name="predictions")(x)
    else:
        x = _pool(x, pooling)
    model = Model(inputs, x, name=f"mobilenetv2_{alpha:0.2f}_{rows}")
    if weights_path is not None:
        model.load_weights(str(weights_path))
    return model


def _inverted_res_block(inputs, expansion, stride, alpha, filters, block_id):
    """[expand 1x1 + BN + ReLU6] -> (pad) depthwise 3x3 + BN + ReLU6 -> project 1x1 + BN
    [+ input when stride 1 and the width is kept]. Block 0 has no expansion and is named
    `expanded_conv_*`, as in Keras."""
    in_channels = inputs.shape[-1]
    pointwise_filters = make_divisible(int(filters * alpha), 8)
    x = inputs
    prefix = f"block_{block_id}_"
    if block_id:
        x = Conv2D(expansion * in_channels, 1, padding="same", use_bias=False,
                   name=f"{prefix}expand")(x)
        x = _bn_v2(x, f"{prefix}expand_BN")
        x = ReLU(6.0, name=f"{prefix}expand_relu")(x)
    else:
        prefix = "expanded_conv_"
    if stride == 2:
        x = ZeroPadding2D(_correct_pad(x.shape[1:3], 3), name=f"{prefix}pad")(x)
    x = DepthwiseConv2D(3, strides=stride, use_bias=False,
                        padding="same" if stride == 1 else "valid", name=f"{prefix}depthwise")(x)
    x = _bn_v2(x, f"{prefix}depthwise_BN")
    x = ReLU(6.0, name=f"{prefix}depthwise_relu")(x)
    x = Conv2D(pointwise_filters, 1, padding="same", use_bias=False, name=f"{prefix}project")(x)
    x = _bn_v2(x, f"{prefix}project_BN")
    if in_channels == pointwise_filters and stride == 1:
        return Add(name=f"{prefix}add")([inputs, x])
    return x


def _bn_v2(x, name):
    return BatchNormalization(epsilon=1e-3, momentum=0.999, name=name)(x)


def make_divisible(v, divisor, min_value=None):
    """Round `v` to the nearest multiple of `divisor` (at least `min_value`), never more than
    10% below `v`: MobileNetV2's channel rounding."""
    if min_value is None:
        min_value = divisor
    new_v = max(min_value, int(v + divisor / 2) // divisor * divisor)
    if new_v < 0.9 * v:
        new_v += divisor
    return new_v


def _correct_pad(spatial, kernel_size):
    """Keras `correct_pad`: TF-'same' pads for a stride-2 window, ((0, 1), (0, 1)) for k=3 on
    even or unknown sizes and ((1, 1), (1, 1)) on odd ones."""
    pads = []
    for size in spatial:
        adjust = 1 if size is None else 1 - size % 2
        pads.append((kernel_size // 2 - adjust, kernel_size // 2))
    return tuple(pads)


def _pool(x, pooling):
    if pooling == "avg":
        return GlobalAveragePooling2D()(x)
    if pooling == "max":
        return GlobalMaxPooling2D()(x)
    return x


def keras_weights_file(arch, alpha, rows, include_top):
    """The name Keras Applications gives the ImageNet weights of `arch` ('mobilenet' or
    'mobilenet_v2') at width `alpha` and input size `rows`."""
    suffix = "" if include_top else "_no_top"
    if arch == "mobilenet":
        alpha_text = {1.0: "1_0", 0.75: "7_5", 0.50: "5_0", 0.25: "2_5"}[alpha]
        return f"mobilenet_{alpha_text}_{rows}_tf{suffix}.h5"
    return f"mobilenet_v2_weights_tf_dim_ordering_tf_kernels_{float(alpha)}_{rows}{suffix}.h5"


def _resolve(arch, weights, alpha, rows, include_top):
    """The weights file to load (None for random initialisation); see `resolve_weights`."""
    if weights != "imagenet":
        return resolve_weights(weights, None, None)
    keras_file = keras_weights_file(arch, alpha, rows, include_top)
    return resolve_weights(weights, keras_file,
                           f"Download {_KERAS_URL}{arch}/{keras_file} (Keras Applications) into "
                           "the pretrained folder, or pass weights=<path of a weights file>.")


def _check_arguments(arch, alpha, input_shape, include_top, pooling, weights, classes, *,
                     alphas, sizes):
    """Keras Applications' checks (`obtain_input_shape` included). Returns (rows, input_shape):
    rows names the weight file; input_shape is (H, W, C), H and W possibly None."""
    if pooling not in (None, "avg", "max"):
        raise ConfigError(f"{arch}: pooling must be None, 'avg' or 'max'. "
                          f"Received: pooling={pooling!r}.")
    if weights == "imagenet" and include_top and classes != 1000:
        raise ConfigError(f"{arch}: with weights='imagenet' and include_top=True, classes "
                          f"must be 1000. Received: classes={classes}.")
    default_size = 224
    if input_shape is not None:
        input_shape = tuple(input_shape)
        if len(input_shape) != 3:
            raise ConfigError(f"{arch}: input_shape must be a tuple of three integers "
                              f"(H, W, C). Received: input_shape={input_shape}.")
        if input_shape[0] == input_shape[1] and input_shape[0] in sizes:
            default_size = input_shape[0]
    input_shape = _obtain_input_shape(arch, input_shape, default_size, include_top, weights)
    rows = input_shape[0]
    if weights == "imagenet":
        if alpha not in alphas:
            raise ConfigError(f"{arch}: with weights='imagenet', alpha must be one of "
                              f"{', '.join(map(str, alphas))}. Received: alpha={alpha}.")
        if rows != input_shape[1] or rows not in sizes:
            rows = 224
            warnings.warn(f"{arch}: `input_shape` is undefined or non-square, or `rows` is "
                          f"not in {list(sizes)}. Weights for input shape (224, 224) will be "
                          "loaded as the default.", stacklevel=3)
    return rows, input_shape


def _obtain_input_shape(arch, input_shape, default_size, include_top, weights):
    """Keras `imagenet_utils.obtain_input_shape` for channels_last and min_size 32."""
    channels = 3
    if weights != "imagenet" and input_shape is not None:
        channels = input_shape[-1]
        if channels not in (1, 3):
            warnings.warn(f"{arch} usually expects 1 or 3 input channels. Received: "
                          f"input_shape={input_shape}.", stacklevel=4)
    default_shape = (default_size, default_size, channels)
    if weights == "imagenet" and include_top:
        if input_shape is not None and input_shape != default_shape:
            raise ConfigError(f"{arch}: with include_top=True and weights='imagenet', "
                              f"input_shape must be {default_shape}. "
                              f"Received: input_shape={input_shape}.")
        return default_shape
    if input_shape is None:
        input_shape = default_shape if include_top else (None, None, 3)
    elif input_shape[-1] != 3 and weights == "imagenet":
        raise ConfigError(f"{arch}: the input must have 3 channels. "
                          f"Received: input_shape={input_shape}.")
    elif any(size is not None and size < 32 for size in input_shape[:2]):
        raise ConfigError(f"{arch}: input size must be at least 32x32. "
                          f"Received: input_shape={input_shape}.")
    if include_top and None in input_shape:
        raise ConfigError(f"{arch}: include_top=True needs a static input_shape. "
                          f"Received: input_shape={input_shape}.")
    return input_shape


# -- MobileNetV2 as a registered backbone: its block rule and its weight converter -----------
_V2_TOP = ("Conv_1", "Conv_1_bn", "out_relu")
V2_HOW_TO_GET = ("retrain pretrained --backbone mobilenet_v2 --wheel FILE, FILE downloaded "
                 f"from {_KERAS_URL}mobilenet_v2/mobilenet_v2_weights_tf_dim_ordering_tf_kernels"
                 "_1.0_224_no_top.h5")


def v2_block_of(layer_name):
    """Keras's names: block 0 is `expanded_conv_*`, block k `block_k_*`; `top` the last conv."""
    if layer_name in _V2_TOP:
        return "top"
    if layer_name.startswith("expanded_conv_"):
        return "expanded_conv"
    parts = layer_name.split("_")
    if len(parts) > 2 and parts[0] == "block" and parts[1].isdigit():
        return f"block_{parts[1]}"
    return None


def convert_keras_file(record, source, out_path):
    """MobileNetV2's weight converter: a Keras Applications file (no-top, or with the top)
    -> `out_path`, the network below the top with the registry's recipe and the ImageNet
    labels in its metadata, written atomically."""
    model = record.builder(include_top=False, weights=None)
    try:
        model.load_weights(str(source))
    except WeightsError:        # the file holds the top too: take the layers below it
        full = record.builder(include_top=True, weights=str(source))
        for layer in (l for l in model.layers if l.weights):
            layer.set_weights(full.get_layer(layer.name).get_weights())
    model.save(str(out_path), metadata={
        "backbone": record.name, "labels": read_labels(), "outputs": "features",
        "preprocessing": record.preprocessing,
        "provenance": {"source": f"Keras Applications file {source}",
                       "source_sha256": sha256_file(source),
                       "converter": "retrain.backbones.mobilenet"}})
