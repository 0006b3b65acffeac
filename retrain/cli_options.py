"""The `retrain fit` options that say how the classifier trains (fit.HeadOptions), kept
apart from cli.py so that each stays readable: parsing only, no printing."""
import argparse
from pathlib import Path

from .cli_usage import HelpFormatter, fraction, non_negative_int, positive_int
from .errors import AccuracyBelowThreshold, ConfigError
from .fit import HeadOptions

__all__ = ["add_export_parser", "add_training_options", "check_accuracy", "training_options"]


def add_training_options(p):
    p.add_argument("--fine-tune", type=non_negative_int, default=0, metavar="N",
                   help="train the top N blocks of the backbone with the head (0: the head "
                        "alone; for EfficientNet-Lite the last 1x1 conv is the first block)")
    p.add_argument("--augment", type=non_negative_int, default=0, metavar="K",
                   help="K augmented views of each training image (random resized crop, "
                        "flip, brightness/contrast), cached like the plain one")
    p.add_argument("--no-flip", dest="flip", action="store_false",
                   help="no mirrored views (for data where a mirror image changes the class: "
                        "text, digits)")
    p.add_argument("--epochs", type=positive_int, default=50,
                   help="most passes over the training images")
    p.add_argument("--batch-size", type=positive_int, default=32,
                   help="images per training step")
    p.add_argument("--lr", "--learning-rate", type=float, default=0.002,
                   help="the head's peak learning rate (AdamW, cosine schedule)")
    p.add_argument("--backbone-lr", type=float, default=0.001,
                   help="peak learning rate of the fine-tuned blocks")
    p.add_argument("--weight-decay", type=float, default=0.01, help="AdamW weight decay")
    p.add_argument("--warmup-epochs", type=non_negative_int, default=1,
                   help="epochs of linear learning-rate warmup before the cosine decay")
    p.add_argument("--label-smoothing", type=float, default=0.0,
                   help="label smoothing of the crossentropy (make_image_classifier uses 0.1; 0 measured better here: README)")
    p.add_argument("--assert-accuracy-at-least", type=fraction, default=None, metavar="X",
                   help="exit with status 3 if the test accuracy is below X (a CI gate)")


def training_options(args):
    """HeadOptions from the parsed `retrain fit` arguments."""
    return HeadOptions(epochs=args.epochs, batch_size=args.batch_size, learning_rate=args.lr,
                       patience=args.patience, hidden_units=args.hidden_units,
                       dropout=args.dropout, seed=args.seed, fine_tune=args.fine_tune,
                       augment=args.augment, flip=args.flip,
                       backbone_learning_rate=args.backbone_lr, weight_decay=args.weight_decay,
                       warmup_epochs=args.warmup_epochs, label_smoothing=args.label_smoothing)


def check_accuracy(test, least):
    """make_image_classifier's CI gate: AccuracyBelowThreshold (exit status 3) when the
    test split's accuracy is below `least` (None: no gate)."""
    if least is None:
        return
    if not test["count"]:
        raise ConfigError("--assert-accuracy-at-least needs test images; the test split is "
                          "empty.", hint="Raise --test-percent, or add a test/ folder.")
    if test["accuracy"] < least:
        raise AccuracyBelowThreshold(f"test accuracy {test['accuracy']:.4f} is below "
                                     f"--assert-accuracy-at-least {least:g}",
                                     hint="the run is complete: see its report.html")


def add_export_parser(commands, func):
    """`retrain export MODEL --format onnx [--out FILE]`, which runs func(args)."""
    p = commands.add_parser(
        "export", formatter_class=HelpFormatter, help="write a model file in another format",
        description="Write MODEL (a model file from `retrain fit`, or a pretrained backbone) "
                    "as an ONNX file for ONNX Runtime, OpenVINO and others: float32 NHWC input "
                    "made by the preprocessing recipe, which travels with the labels in the "
                    "file's metadata_props. Needs the onnx package: pip install "
                    "'retrain[onnx]'.")
    p.add_argument("model", metavar="MODEL", help="model file (.h5)")
    p.add_argument("--format", choices=("onnx",), required=True, default=argparse.SUPPRESS,
                   help="the format to write")
    p.add_argument("--out", metavar="FILE", type=Path, default=argparse.SUPPRESS,
                   help="the file to write (default: MODEL with the suffix .onnx)")
    p.set_defaults(func=func)
