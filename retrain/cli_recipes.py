"""How a recipe is chosen and what it answers, on the command line: `retrain lr-find`, the
lines of fit's --search and of evaluate's --min-confidence coverage; kept apart from cli.py
so that it stays readable: parsing and formatting only, no printing."""
from pathlib import Path

from .cli_usage import HelpFormatter, path_argument
from .files import atomic_write_text
from .lr_find import lr_find, lr_find_page
from .options import add_options
from .pipeline import RunOptions, cached_split
from .search import TABLE_HEADER, table_rows

__all__ = ["add_lr_find_parser", "coverage_lines", "run_lr_find", "search_lines"]


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
                    "valley: two thirds down the longest fall of the loss) is printed. "
                    "`fit --lr auto` does the same.")
    p.add_argument("data", metavar="DATA", help="folder of class folders of images")
    p.add_argument("--out", metavar="PAGE", type=path_argument, default=Path("lr_find.html"),
                   help="the page to write (default: lr_find.html)")
    # the options that fix the features, as fit has them, so that they are fit's features
    add_options(p, ("backbone", "crop_fraction", "jpeg_draft", "hidden_units", "batch_size",
                    "val_percent", "test_percent", "cache_dir", "runtime", "precision",
                    "quiet_bars"))
    p.set_defaults(func=func)


def run_lr_find(args, say):
    """`retrain lr-find`: the sweep, the page, the suggestion printed; exit status 0."""
    options = RunOptions.from_args(args)
    dataset, features, parts = cached_split(args.data, options)
    train = parts.indices("train")
    found = lr_find(features[train], [dataset.records[i][1] for i in train],
                    len(dataset.classes), options.head)
    atomic_write_text(args.out, lr_find_page(found, f"retrain lr-find: {Path(args.data).name}"))
    say(f"suggested learning rate {found['suggestion']:.3g} (the loss is lowest at "
        f"{found['minimum']:.3g}); the curve: {args.out}")
    say(f"use it: retrain fit {args.data} --lr {found['suggestion']:.3g} (or --lr auto)")
    return 0


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
