"""The `retrain fit` options that say how the classifier trains (fit.HeadOptions), and
`--dask` (fit, evaluate, classify), kept apart from cli.py so that each stays readable:
parsing only, no printing."""
import argparse
import contextlib
import functools

from .cli_usage import (HelpFormatter, auto_or, dask_address, fraction, int_from_to,
                        non_negative_int, path_argument, positive_int)
from .distribution import pip_install
from .errors import AccuracyBelowThreshold, ConfigError
from .fit import AUTO, HeadOptions
from .cli_text import runtime_lines
from .runtimes import PRECISIONS, RUNTIMES, describe_runtimes

__all__ = ["add_dask_option", "add_export_parser", "add_runtime_choice", "add_runtime_options",
           "add_runtimes_parser", "add_training_options", "check_accuracy", "open_cluster",
           "training_options"]
DASK_INSTALL = pip_install("dask")


def add_runtime_options(p):
    """evaluate's and classify's options for running the model: batch size, threads, --dask."""
    p.add_argument("--batch-size", type=positive_int, default=32, help="images per forward pass")
    p.add_argument("--workers", type=positive_int, default=2,
                   help="threads decoding and resizing images")
    add_runtime_choice(p)
    add_dask_option(p)


def add_runtime_choice(p):
    """--runtime and --precision (runtimes.py), for every command that runs a frozen model:
    parsed here, checked by runtimes.resolve_runtime when the model is loaded."""
    p.add_argument("--runtime", choices=("auto",) + RUNTIMES, default="auto",
                   help="what runs the frozen model's forward passes: auto (the fastest "
                        "installed, see `retrain runtimes`), numpy (the engine itself), "
                        "openvino or onnxruntime (the extras of the same names, which `make "
                        "install` installs)")
    p.add_argument("--precision", choices=PRECISIONS, default="f32",
                   help="f32, or bf16 where the runtime and the CPU support it (OpenVINO on "
                        "CPUs with AVX512_BF16 or AMX): faster, features differ slightly and "
                        "are cached apart")


def add_runtimes_parser(commands, func):
    """`retrain runtimes [--json]`, which runs func(args, describe_runtimes, runtime_lines)."""
    p = commands.add_parser(
        "runtimes", formatter_class=HelpFormatter, help="list the runtimes --runtime can use",
        description="Per runtime: installed or not (and how to install it), its version, the "
                    "precisions it has on this CPU, and images/s here (from `make bench`). "
                    "--runtime auto takes the fastest installed.")
    p.add_argument("--json", action="store_true", help="print one JSON list")
    p.set_defaults(func=functools.partial(func, describe=describe_runtimes, lines=runtime_lines))


def add_dask_option(p):
    p.add_argument("--dask", metavar="ADDRESS", type=dask_address,
                   default=argparse.SUPPRESS,
                   help="run the backbone on a Dask cluster: its scheduler's address "
                        "(tcp://HOST:8786), or local:N for N worker processes here; workers "
                        f"must see the images at the same paths (needs {DASK_INSTALL})")


@contextlib.contextmanager
def open_cluster(address):
    """The cluster.Cluster of `--dask ADDRESS` for the command's duration (None without:
    the option's default is left out of the parsed arguments, hence getattr in cli.main)."""
    if address is None:
        yield None
        return
    try:
        from . import cluster
    except ImportError as error:
        if (error.name or "").split(".")[0] not in ("dask", "distributed"):
            raise
        raise ConfigError(f"--dask needs Dask's distributed scheduler, which is not installed "
                          f"here (no module named {error.name!r}).",
                          hint=f"Install it with: {DASK_INSTALL}") from None
    with cluster.connect(address) as connected:
        yield connected


def add_training_options(p):
    p.add_argument("--fine-tune", type=non_negative_int, default=0, metavar="N",
                   help="train the top N blocks of the backbone with the head (0: the head "
                        "alone; for EfficientNet-Lite the last 1x1 conv is the first block)")
    p.add_argument("--augment", type=non_negative_int, default=0, metavar="K",
                   help="K augmented views of each training image (random resized crop, "
                        "flip, brightness/contrast), cached like the plain one")
    p.add_argument("--cv", type=int_from_to(2, 100), default=0, metavar="K",
                   help="also cross-validate the head alone on the cached features, K folds "
                        "of every usable image: prints each fold's accuracy, their mean and "
                        "spread (for comparing recipes on small data; not with --fine-tune "
                        "or --augment, whose cost would be K full runs)")
    p.add_argument("--no-flip", dest="flip", action="store_false",
                   help="no mirrored views (for data where a mirror image changes the class: "
                        "text, digits)")
    p.add_argument("--no-jpeg-draft", dest="jpeg_draft", action="store_false",
                   help="decode JPEGs at full size before the resize, not by DCT scaling to "
                        "about the input size (slower on photos; the model file records it)")
    p.add_argument("--epochs", type=auto_or(positive_int), default=AUTO,
                   help="most passes over the training images (auto: 50 for the head alone; "
                        "15 when fine-tuning, after --freeze-epochs)")
    p.add_argument("--patience", type=auto_or(non_negative_int), default=AUTO,
                   help="epochs without a better val loss before stopping, the best epoch's "
                        "weights kept (auto: 5 for the head alone; when fine-tuning, none)")
    p.add_argument("--freeze-epochs", type=non_negative_int, default=3,
                   help="with --fine-tune: epochs of the head alone before the blocks train "
                        "with it (as fastai's fine_tune and the Keras guide)")
    p.add_argument("--batch-size", type=positive_int, default=32,
                   help="images per training step")
    p.add_argument("--lr", "--learning-rate", type=auto_or(float), default=0.002,
                   help="the head's peak learning rate (AdamW, cosine schedule); auto: the "
                        "rate `retrain lr-find` suggests, its curve in RUN/lr_find.html")
    p.add_argument("--backbone-lr", type=float, default=0.0005,
                   help="peak learning rate of the fine-tuned blocks (the head trains with "
                        "them at half --lr after --freeze-epochs, else at --lr)")
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
                       warmup_epochs=args.warmup_epochs, label_smoothing=args.label_smoothing,
                       freeze_epochs=args.freeze_epochs)


def check_accuracy(test, least):
    """make_image_classifier's CI gate: AccuracyBelowThreshold (exit status 3) when the
    test split's accuracy is below `least` (None: no gate)."""
    if least is None:
        return
    if not test["count"]:
        raise ConfigError("--assert-accuracy-at-least needs test images; the test split is "
                          "empty.", hint="Raise --test-percent, or add a test/ folder.")
    if test["accuracy"] < least:
        low, high = test["accuracy_interval"]
        raise AccuracyBelowThreshold(f"test accuracy {test['accuracy']:.4f} (95% CI "
                                     f"{low:.3f}-{high:.3f}) is below "
                                     f"--assert-accuracy-at-least {least:g}",
                                     hint="the run is complete: see its report.html")


def add_export_parser(commands, func):
    """`retrain export MODEL --format onnx [--out FILE]`, which runs func(args)."""
    p = commands.add_parser(
        "export", formatter_class=HelpFormatter, help="write a model file in another format",
        description="Write MODEL (a model file from `retrain fit`, or a pretrained backbone) "
                    "as an ONNX file for ONNX Runtime, OpenVINO and others: float32 NHWC input "
                    "made by the preprocessing recipe, which travels with the labels in the "
                    f"file's metadata_props. Needs the onnx package: {pip_install('onnx')}")
    p.add_argument("model", metavar="MODEL", help="model file (.h5)")
    p.add_argument("--format", choices=("onnx",), required=True, default=argparse.SUPPRESS,
                   help="the format to write")
    p.add_argument("--out", metavar="FILE", type=path_argument, default=argparse.SUPPRESS,
                   help="the file to write (default: RUN.onnx beside the run folder for a "
                        "RUN/model.h5, so that the next fit into RUN is not refused; else "
                        "MODEL with the suffix .onnx)")
    p.set_defaults(func=func)
