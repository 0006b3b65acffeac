"""`retrain fit --search`: try a small, documented grid of recipes on cached inputs and keep
the best, instead of guessing.

The grid (GRID), in order of preference, cheapest first: the head alone at three rates
around the default (0.002, 0.0005, 0.01), without and with a 256-unit hidden layer; then
fine-tuning the top 1, 2 and 3 blocks of the backbone with the head (the default rates and
schedule, fit.py) on search_cuts.VIEWS augmented views of each image. Every input comes
from the cache, computed once for the whole search (search_cuts.py).

Recipes run in that order while `budget_s` seconds last: a recipe whose estimated cost
(the time of a like recipe already tried, or for fine-tuning, search_cuts.tuning_estimate)
does not fit in what is left is skipped and reported with its estimate; a later, cheaper
one may still run. The first recipe always runs. The budget covers the trying; the chosen
recipe's final training on train+val comes after it.

How recipes are scored depends on the data's size. With fewer than SMALL training and
validation images, one validation split is too noisy to rank recipes (on digits, 39 test
images ranked two recipes opposite to 100 held-out ones), so each recipe is
cross-validated over `folds` folds of train+val (crossval.py) and scored by its pooled
accuracy, every image scored once by a model that never saw it. With more, each recipe
trains on train, stops early on val (fine-tuning runs its schedule to the end), and is
scored by its cross-entropy on val. The choice follows the one-standard-error rule
(Hastie, Tibshirani & Friedman, The Elements of Statistical Learning, 7.10): the first
recipe in grid order whose score is within one standard error of the best one's, so that
a costlier recipe has to win clearly, not by noise. The chosen recipe then trains on
train+val for the epochs it needed (no early stopping: nothing is left to stop on) and is
evaluated once on test, which the search never saw."""
import html
import time
from dataclasses import replace

import numpy as np

from .crossval import cross_validate
from .evaluate import wilson_interval
from .files import atomic_write_text
from .fit import AUTO, train_head
from .lr_find import lr_find, lr_find_page
from .progress import progress_bar
from .search_cuts import (VIEWS, Ladder, apply_choice, cut_blocks, fresh_top, tuning_estimate,
                          validated_head, view_request)
from .options import default

__all__ = ["GRID", "SMALL", "DEFAULT_BUDGET_S", "choose_recipe", "chosen_options",
           "search_recipes", "search_head", "table_rows", "search_table_html", "cut_blocks",
           "validated_head", "view_request"]

HEAD_GRID = tuple({"learning_rate": rate, "hidden_units": hidden}
                  for hidden in (0, 256) for rate in (0.002, 0.0005, 0.01))
TUNING_GRID = tuple({"learning_rate": 0.002, "hidden_units": 0, "fine_tune": blocks,
                     "augment": VIEWS} for blocks in (1, 2, 3))
GRID = HEAD_GRID + TUNING_GRID
SMALL = 1000          # below this many train+val images, recipes are cross-validated
DEFAULT_BUDGET_S = default("search_budget")


def search_recipes(features, targets, relatives, classes, parts, head, val_percent,
                   budget_s=DEFAULT_BUDGET_S, folds=5, ladder=None, views=None, pooled=None,
                   progress=False):
    """Score GRID's recipes (fit.HeadOptions fields over `head`) on the train and val
    images of `parts`. `features` are pooled, or with a search_cuts.Ladder the activations
    at its deepest cut (`pooled`: the pooled ones, if already lifted); `views` (n, K, D),
    the cached views of train then val, at the same cut. Returns {"by", "rule", "chosen"
    (index into "tried"), "tried": [{"recipe", "score", "se", "interval", "epochs",
    "seconds", "estimate_s"}], "skipped": [{"recipe", "estimate_s", "why"}], "budget_s"}."""
    train, val = parts.indices("train"), parts.indices("val")
    both = train + val                   # the search sees these rows only, in this order
    targets = np.asarray(targets, np.int64)[both]
    relatives = [relatives[i] for i in both]
    features = features[both]
    pooled = (pooled[both] if pooled is not None
              else ladder.lift(features, 0) if ladder else features)
    small = len(both) < SMALL
    split = (list(range(len(train))), list(range(len(train), len(both))), small, folds,
             val_percent)
    tried, skipped, started, calibration = [], [], time.monotonic(), [1.0]
    for recipe in progress_bar(iterable=GRID, desc="search", unit="recipe", disable=not progress):
        blocks = recipe.get("fine_tune", 0)
        if blocks > (ladder.deepest if ladder else 0):
            skipped.append({"recipe": recipe, "estimate_s": None,
                            "why": f"the backbone has fewer than {blocks} blocks to fine-tune"})
            continue
        options = replace(head, **recipe).resolved()
        began = time.monotonic()
        top = fresh_top(ladder.backbone, blocks) if blocks else None
        raw = (tuning_estimate(top(), ladder.lift(features[:32], blocks), options,
                               *_passes(split))
               if blocks else _head_estimate(recipe, tried, pooled.shape[1], len(classes)))
        estimate = raw * (calibration[-1] if blocks else 1.0)
        if tried and began - started + estimate > budget_s:
            skipped.append({"recipe": recipe, "estimate_s": estimate,
                            "why": f"{estimate:.0f} s estimated, "
                                   f"{max(0.0, budget_s - (began - started)):.0f} s left"})
            continue
        x = ladder.lift(features, blocks) if blocks else pooled
        seen = (ladder.lift(views[:, :recipe["augment"]], blocks)
                if blocks and views is not None else None)
        row = _score(x, seen, top, targets, relatives, classes, options, split)
        seconds = time.monotonic() - began
        if blocks:
            calibration.append(seconds / raw)
        tried.append({"recipe": recipe, **row, "seconds": seconds, "estimate_s": estimate})
    return {"by": f"{folds}-fold cross-validated accuracy on train+val" if small
            else "validation loss", "chosen": _one_standard_error(tried, small),
            "rule": "the first recipe in grid order within one standard error of the best",
            "tried": tried, "skipped": skipped, "budget_s": budget_s,
            "seconds": time.monotonic() - started}


search_head = search_recipes        # its name before fine-tuning recipes joined the grid


def _passes(split):
    """(trained, scored, runs) for tuning_estimate: images each training sees and scores."""
    train, val, small, folds, _ = split
    both = len(train) + len(val)
    return ((both * (folds - 1) / folds, both / folds, folds) if small
            else (len(train), len(val), 1))


def _head_estimate(recipe, tried, width, classes):
    """A head recipe's seconds: those of the last head recipe tried, scaled by the
    multiply-adds per image of the two heads (0 before any)."""
    heads = [row for row in tried if not row["recipe"].get("fine_tune")]
    if not heads:
        return 0.0

    def flops(hidden):
        return width * hidden + hidden * classes if hidden else width * classes
    last = heads[-1]
    return last["seconds"] * flops(recipe["hidden_units"]) / flops(last["recipe"]["hidden_units"])


def _score(x, views, top, targets, relatives, classes, options, split):
    """One recipe's score, standard error, accuracy interval and the epochs to retrain for:
    cross-validated (small data) or on val; `top` makes fresh fine-tuned blocks (None: the
    head alone), `views` the train-then-val views at x's cut."""
    train, val, small, folds, val_percent = split
    tuning = top is not None
    if small:                            # x, targets, relatives: train then val
        cv = cross_validate(x, targets, relatives, classes, options, folds, val_percent,
                            top=top, views=views)
        p, n = cv["pooled"]["accuracy"], len(targets)
        epochs = (options.epochs if tuning else _best_epochs(
            np.median([f["epochs_run"] for f in cv["per_fold"]]), options.patience))
        return {"score": p, "se": float(np.sqrt(p * (1 - p) / n)),
                "interval": cv["pooled"]["accuracy_interval"], "epochs": epochs}
    classifier, history = train_head((x[train], targets[train]), (x[val], targets[val]),
                                     len(classes), options, progress=False,
                                     top=top() if tuning else None,
                                     views=None if views is None else views[:len(train)])
    probabilities = classifier.predict(x[val].reshape((len(val),)
                                                      + tuple(classifier.inputs[0].shape[1:])))
    true = np.clip(probabilities[np.arange(len(val)), targets[val]], 1e-7, 1.0)
    losses = -np.log(true)
    right = int(np.sum(np.argmax(probabilities, axis=1) == targets[val]))
    return {"score": float(losses.mean()),
            "se": float(losses.std(ddof=1) / np.sqrt(len(val))) if len(val) > 1 else 0.0,
            "interval": wilson_interval(right, len(val)), "val_accuracy": right / len(val),
            "epochs": options.epochs if tuning else history["best_epoch"]}


def _one_standard_error(tried, small):
    """The index of the first recipe whose score is within one standard error (the best
    recipe's) of the best score: accuracy (small data) or val loss."""
    keys = [-row["score"] if small else row["score"] for row in tried]
    best = int(np.argmin(keys))
    return next(n for n, key in enumerate(keys) if key <= keys[best] + tried[best]["se"])


def chosen_options(head, result):
    """The options the chosen recipe retrains with on train+val: its fields, the epochs it
    needed, no early stopping."""
    row = result["tried"][result["chosen"]]
    return replace(head, **row["recipe"], epochs=max(1, row["epochs"]), patience=None)


def _best_epochs(history_or_folds, patience):
    """Epochs to retrain for: those run, less the `patience` run past the best one."""
    return max(1, int(history_or_folds) - (patience or 0))


def choose_recipe(dataset, features, views, tta, parts, extractor, options, run_dir):
    """The pipeline's stage before fit (pipeline.RunOptions `options`): --lr auto's rate
    (lr_find.py on the training images' pooled features; its curve in RUN/lr_find.html),
    then --search's choice, and the inputs moved to the chosen recipe's cut (apply_choice).
    Returns (options, the search's record or None, features, views, tta, extractor)."""
    targets = [label for _, label in dataset.records]
    blocks = cut_blocks(options, extractor.backbone) if extractor.top is not None else 0
    ladder = Ladder(extractor.backbone, blocks, options.progress) if blocks else None
    pooled = ladder.lift(features, 0) if ladder else features
    train, val = parts.indices("train"), parts.indices("val")
    if options.head.learning_rate == AUTO:
        found = lr_find(pooled[train], [targets[i] for i in train], len(dataset.classes),
                        options.head)
        atomic_write_text(run_dir / "lr_find.html", lr_find_page(found))
        options = replace(options, head=replace(options.head,
                                                learning_rate=found["suggestion"]))
    if not options.search:
        return options, None, features, views, tta, extractor
    searched = search_recipes(features, targets, [relative for relative, _ in dataset.records],
                              dataset.classes, parts, options.head, options.val_percent,
                              options.search_budget, ladder=ladder,
                              views=views.views if views else None, pooled=pooled,
                              progress=options.progress)
    searched["trained_on"] = len(train) + len(val)
    options = replace(options, head=chosen_options(options.head, searched))
    if ladder:
        features, views, tta, extractor = apply_choice(
            searched["tried"][searched["chosen"]]["recipe"], ladder, extractor.backbone,
            features, views, tta, extractor)
    return options, searched, features, views, tta, extractor


def table_rows(record):
    """The table of what --search tried, then what it skipped, as rows of text cells:
    mark ("*" chosen), rate, hidden units, blocks, views, score, interval, epochs, seconds
    (an estimate in parentheses for a skipped recipe, with the reason)."""
    rows = []
    for n, row in enumerate(record["tried"]) if record else ():
        low, high = row["interval"] or (float("nan"), float("nan"))
        rows.append(["*" if n == record["chosen"] else "", *_recipe_cells(row["recipe"]),
                     f"{row['score']:.4f}", f"{low:.3f}-{high:.3f}", str(row["epochs"]),
                     f"{row['seconds']:.1f}"])
    for row in record.get("skipped", []) if record else ():
        rows.append(["", *_recipe_cells(row["recipe"]), "skipped", row["why"], "",
                     "" if row["estimate_s"] is None else f"({row['estimate_s']:.0f})"])
    return rows


def _recipe_cells(recipe):
    return [f"{recipe['learning_rate']:g}", str(recipe["hidden_units"]),
            str(recipe.get("fine_tune", 0)), str(recipe.get("augment", 0))]


TABLE_HEADER = ("", "lr", "hidden", "blocks", "views", "score", "95% CI (accuracy)",
                "epochs", "seconds")


def search_table_html(record):
    """The report's table of the recipes --search tried and skipped ("" without a search)."""
    if not record:
        return ""
    rows = "".join("<tr>" + "".join(f"<td>{html.escape(cell)}</td>" for cell in
                                     ["chosen" if row[0] else ""] + row[1:]) + "</tr>"
                   for row in table_rows(record))
    header = "".join(f"<th>{html.escape(cell)}</th>" for cell in TABLE_HEADER)
    trained = (f"<p>The chosen recipe was then trained on train+val: "
               f"{record['trained_on']} images.</p>" if "trained_on" in record else "")
    return (f"<h2>Recipes tried (--search, by {html.escape(record['by'])}; "
            f"{html.escape(record.get('rule', 'the best score'))})</h2>"
            f"<table><tr>{header}</tr>{rows}</table>{trained}")
