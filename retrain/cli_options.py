"""The command line's options beyond options.OPTIONS: `--dask` (fit, evaluate, classify) and
its cluster, fit's accuracy gate, `retrain export` and `retrain runtimes`; kept apart from
cli.py so that each stays readable: parsing only, no printing."""
import argparse
import contextlib
import functools

from .cli_usage import HelpFormatter, dask_address, path_argument
from .distribution import pip_install
from .errors import AccuracyBelowThreshold, ConfigError
from .cli_text import runtime_lines
from .runtimes import describe_runtimes

__all__ = ["add_dask_option", "add_export_parser", "add_runtimes_parser", "check_accuracy",
           "open_cluster"]
DASK_INSTALL = pip_install("dask")


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
