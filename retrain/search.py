"""`retrain fit --search`: try a small, documented grid of head recipes on the cached
features and keep the best, instead of guessing.

The grid (GRID) is the head alone at three rates around the default (0.0005, 0.002,
0.01) with and without a 256-unit hidden layer: six recipes, each trained in about a
second on cached features, tried in that order until `budget_s` seconds are spent.

How recipes are scored depends on the data's size. With fewer than SMALL training and
validation images, one validation split is too noisy to rank recipes (on digits, 39 test
images ranked two recipes opposite to 100 held-out ones), so each recipe is
cross-validated over `folds` folds of train+val (crossval.py) and scored by its pooled
accuracy, every image scored once by a head that never saw it. With more, each recipe
trains on train, stops early on val, and is scored by its lowest validation loss.
The chosen recipe then trains on train+val for the epochs it needed (no early stopping:
nothing is left to stop on) and is evaluated once on test, which the search never saw.

Fine-tuning recipes are not searched yet: each costs a full fine-tuning run."""
import html
import time
from dataclasses import replace

import numpy as np

from .crossval import cross_validate
from .evaluate import wilson_interval
from .files import atomic_write_text
from .fit import AUTO, train_head
from .lr_find import lr_find, lr_find_page

__all__ = ["GRID", "SMALL", "DEFAULT_BUDGET_S", "choose_recipe", "chosen_options",
           "search_head", "search_table_html"]

GRID = tuple({"learning_rate": rate, "hidden_units": hidden}
             for hidden in (0, 256) for rate in (0.002, 0.0005, 0.01))
SMALL = 1000          # below this many train+val images, recipes are cross-validated
DEFAULT_BUDGET_S = 300.0


def search_head(features, targets, relatives, classes, parts, head, val_percent,
                budget_s=DEFAULT_BUDGET_S, folds=5):
    """Score GRID's recipes (fit.HeadOptions fields over `head`) on the train and val
    images of `parts`; returns {"by", "chosen" (index into "tried"), "tried": [{"recipe",
    "score", "interval", "seconds", "epochs"}], "budget_s"}. The first recipe always
    runs, whatever the budget."""
    targets = np.asarray(targets, np.int64)
    train, val = parts.indices("train"), parts.indices("val")
    small = len(train) + len(val) < SMALL
    tried, started = [], time.monotonic()
    for recipe in GRID:
        if tried and time.monotonic() - started > budget_s:
            break
        options = replace(head, **recipe)
        began = time.monotonic()
        if small:
            both = train + val
            cv = cross_validate(features[both], targets[both], [relatives[i] for i in both],
                                classes, options, folds, val_percent)
            pooled = cv["pooled"]
            row = {"score": pooled["accuracy"], "interval": pooled["accuracy_interval"],
                   "epochs": _best_epochs(np.median([f["epochs_run"] for f in cv["per_fold"]]),
                                          options.resolved().patience)}
        else:
            _, history = train_head((features[train], targets[train]),
                                    (features[val], targets[val]), len(classes), options,
                                    progress=False)
            best = history["best_epoch"] - 1
            right = round(history["val_accuracy"][best] * len(val))
            row = {"score": history["val_loss"][best], "interval": wilson_interval(
                right, len(val)), "val_accuracy": history["val_accuracy"][best],
                   "epochs": history["best_epoch"]}
        tried.append({"recipe": recipe, **row, "seconds": time.monotonic() - began})
    scores = [row["score"] for row in tried]
    chosen = int(np.argmax(scores) if small else np.argmin(scores))
    return {"by": f"{folds}-fold cross-validated accuracy on train+val" if small
            else "validation loss", "chosen": chosen, "tried": tried, "budget_s": budget_s}


def chosen_options(head, result):
    """The options the chosen recipe retrains with on train+val: its fields, the epochs it
    needed, no early stopping."""
    row = result["tried"][result["chosen"]]
    return replace(head, **row["recipe"], epochs=max(1, row["epochs"]), patience=None)


def _best_epochs(history_or_folds, patience):
    """Epochs to retrain for: those run, less the `patience` run past the best one."""
    return max(1, int(history_or_folds) - (patience or 0))


def choose_recipe(dataset, features, parts, options, run_dir):
    """The pipeline's stage before fit (pipeline.RunOptions `options`): --lr auto's rate
    (lr_find.py on the training images' cached features; its curve in RUN/lr_find.html),
    then --search's choice. Returns (options, the search's record or None)."""
    targets = [label for _, label in dataset.records]
    if options.head.learning_rate == AUTO:
        train = parts.indices("train")
        found = lr_find(features[train], [targets[i] for i in train], len(dataset.classes),
                        options.head)
        atomic_write_text(run_dir / "lr_find.html", lr_find_page(found))
        options = replace(options, head=replace(options.head,
                                                learning_rate=found["suggestion"]))
    if not options.search:
        return options, None
    searched = search_head(features, targets, [relative for relative, _ in dataset.records],
                           dataset.classes, parts, options.head, options.val_percent,
                           options.search_budget)
    return replace(options, head=chosen_options(options.head, searched)), searched


def search_table_html(record):
    """The report's table of the recipes --search tried ("" without a search)."""
    if not record:
        return ""
    rows = "".join(
        f"<tr><td>{'chosen' if n == record['chosen'] else ''}</td>"
        f"<td>{row['recipe']['learning_rate']:g}</td><td>{row['recipe']['hidden_units']}</td>"
        f"<td>{row['score']:.4f}</td><td>{row['interval'][0]:.3f}-{row['interval'][1]:.3f}</td>"
        f"<td>{row['epochs']}</td><td>{row['seconds']:.1f}</td></tr>"
        for n, row in enumerate(record["tried"]))
    return (f"<h2>Recipes tried (--search, by {html.escape(record['by'])})</h2><table>"
            "<tr><th></th><th>rate</th><th>hidden</th><th>score</th><th>95% CI (accuracy)"
            f"</th><th>epochs</th><th>seconds</th></tr>{rows}</table>")
