"""The options that choose how a model answers and how a recipe is chosen: --min-confidence
(classify, evaluate, serve), --tta, and `retrain lr-find`, kept apart from cli.py so that it stays within its budget:
parsing and formatting only, no printing."""
import argparse
from pathlib import Path

from .augment import MAX_TTA_VIEWS
from .backbones import BACKBONES, DEFAULT_BACKBONE
from .cli_usage import HelpFormatter, int_from_to, path_argument, percent
from .features import default_cache_dir
from .files import atomic_write_text
from .fit import HeadOptions
from .lr_find import lr_find, lr_find_page
from .pipeline import RunOptions, cached_split
from .search import DEFAULT_BUDGET_S, TABLE_HEADER, table_rows

__all__ = ["add_lr_find_parser", "add_min_confidence_option", "add_search_options",
           "add_tta_option", "coverage_lines", "run_lr_find", "search_lines"]


def _confidence(text):
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number; got {text!r}") from None
    if not 0.0 <= value < 1.0:
        raise argparse.ArgumentTypeError(f"must be a probability in [0, 1); got {text}")
    return value


def add_min_confidence_option(p):
    p.add_argument("--min-confidence", type=_confidence, default=None, metavar="P",
                   help="answer \"unknown\" where the most probable class has a probability "
                        "below P (`retrain evaluate` prints what each P leaves: coverage "
                        "and accuracy)")


def add_tta_option(p, fit=False):
    """--tta N: on fit, what the model records (default 0); on its consumers, an override
    of the record (default: the record)."""
    views = (f"average the class probabilities over the plain view and N fixed views (up to "
             f"{MAX_TTA_VIEWS}: the mirror image unless trained with --no-flip, then "
             "crops)")
    p.add_argument("--tta", type=int_from_to(0, MAX_TTA_VIEWS), metavar="N",
                   default=0 if fit else None,
                   help=f"{views}; the model records N, and classify, evaluate and serve "
                        "then do the same" if fit else
                        f"{views} (default: the N the model records; 0: the plain view)")


def coverage_lines(metrics):
    """`retrain evaluate`'s coverage table: per threshold, the share answered and the
    accuracy of the answers with its 95% interval."""
    rows = metrics.get("coverage") or []
    if not rows or not metrics["count"]:
        return []
    lines = ["", "min confidence  coverage  answered  accuracy (95% CI)"]
    for row in rows:
        accuracy = ("-" if row["accuracy"] is None else
                    f"{row['accuracy']:.4f} ({row['accuracy_interval'][0]:.3f}-"
                    f"{row['accuracy_interval'][1]:.3f})")
        lines.append(f"{row['threshold']:14.2f}  {row['coverage']:8.4f}  "
                     f"{row['answered']:8d}  {accuracy}")
    return lines


def add_lr_find_parser(commands, func):
    p = commands.add_parser(
        "lr-find", formatter_class=HelpFormatter, help="suggest the head's learning rate",
        description="fastai's learning-rate finder on the cached features of DATA's training "
                    "split: a new head trains while the rate grows from 1e-7 to 10; the page "
                    "shows the loss against the rate, and the suggested rate (fastai's "
                    "valley: two thirds down the longest fall of the loss) is printed. `fit --lr auto` does the same.")
    p.add_argument("data", metavar="DATA", help="folder of class folders of images")
    p.add_argument("--out", metavar="PAGE", type=path_argument, default=Path("lr_find.html"),
                   help="the page to write (default: lr_find.html)")
    p.add_argument("--backbone", default=DEFAULT_BACKBONE, choices=sorted(BACKBONES))
    p.add_argument("--hidden-units", type=int_from_to(0, 16384), default=0)
    p.add_argument("--batch-size", type=int_from_to(1, 4096), default=32)
    p.add_argument("--val-percent", type=percent, default=10)
    p.add_argument("--test-percent", type=percent, default=10)
    p.add_argument("--cache", metavar="DIR", type=path_argument, default=default_cache_dir())
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=func)


def run_lr_find(args, say):
    """`retrain lr-find`: the sweep, the page, the suggestion printed; exit status 0."""
    head = HeadOptions(hidden_units=args.hidden_units, batch_size=args.batch_size)
    dataset, features, parts = cached_split(args.data, RunOptions(
        backbone=args.backbone, val_percent=args.val_percent, test_percent=args.test_percent,
        cache_dir=args.cache, progress=not args.quiet, head=head))
    train = parts.indices("train")
    found = lr_find(features[train], [dataset.records[i][1] for i in train],
                    len(dataset.classes), head)
    atomic_write_text(args.out, lr_find_page(found, f"retrain lr-find: {Path(args.data).name}"))
    say(f"suggested learning rate {found['suggestion']:.3g} (the loss is lowest at "
        f"{found['minimum']:.3g}); the curve: {args.out}")
    say(f"use it: retrain fit {args.data} --lr {found['suggestion']:.3g} (or --lr auto)")
    return 0


def _seconds(text):
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number of seconds; got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be more than 0 seconds; got {text}")
    return value


def add_search_options(p):
    p.add_argument("--search", action="store_true",
                   help="try a small grid of recipes (search.py): the head alone at 3 rates, "
                        "with and without 256 hidden units, then fine-tuning the top 1, 2 "
                        "and 3 blocks on 4 augmented views, all on inputs cached once; "
                        "scored by val loss, or by 5-fold cross-validation under 1,000 "
                        "train+val images; the first recipe within one standard error of "
                        "the best is chosen, retrained on train+val and scored once on test")
    p.add_argument("--search-budget", type=_seconds, default=DEFAULT_BUDGET_S, metavar="S",
                   help="seconds the search may spend trying recipes: one whose estimated "
                        "cost does not fit in what is left is skipped (and listed); the "
                        "first always runs; the final training comes after")


def search_lines(search):
    """fit's table of the recipes --search tried (score, interval, seconds, the chosen one
    marked) and skipped (with their estimated seconds), search.table_rows."""
    if not search:
        return []
    widths = (1, 7, 6, 6, 5, 7, 17, 6, 7)
    lines = [f"search: {len(search['tried'])} recipe(s) tried, {len(search.get('skipped', []))}"
             f" skipped, chosen by {search['by']}; {search.get('rule', 'the best score')}"]
    for row in [list(TABLE_HEADER)] + table_rows(search):
        lines.append("  " + "  ".join(cell.ljust(w) if n < 5 or n == 6 else cell.rjust(w)
                                      for n, (cell, w) in enumerate(zip(row, widths))).rstrip())
    return lines
