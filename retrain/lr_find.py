"""`retrain lr-find DATA` and `fit --lr auto`: fastai's learning-rate finder (Smith 2015,
"Cyclical learning rates", section 3.3; fastai's `Learner.lr_find`) on cached features.

A fresh head trains for `steps` mini-batches while the rate grows exponentially from
`start` to `end`; the loss, smoothed by an exponential moving average (beta 0.98, debiased,
as fastai), falls while the rate is useful and shoots up once it is too high (the sweep
stops at 4x the lowest smoothed loss, as fastai). The suggested rate is fastai's default
since 2.5, "valley": the longest stretch over which the smoothed loss keeps falling, and
the rate two thirds of the way down it. fastai's older rule, a tenth of the rate at the
lowest loss, assumes the loss blows up past it; a linear head under AdamW on separable
features often never does (the minimum is then the sweep's end), which is why it is only
recorded ("minimum"). On cached features each step costs one head forward and backward,
so the sweep takes about a second."""
import html
import math

import numpy as np

from .engine import AdamW, LearningRateSchedule, SparseCategoricalCrossentropy, set_random_seed
from .errors import DataError
from .fit import balanced_class_weights, build_head

__all__ = ["lr_find", "lr_find_page"]


class _Exponential(LearningRateSchedule):
    """start * (end / start) ** (step / (steps - 1)): the sweep's rates."""

    def __init__(self, start, end, steps):
        self.start, self.end, self.steps = start, end, steps

    def __call__(self, step):
        return self.start * (self.end / self.start) ** (step / max(1, self.steps - 1))

    def get_config(self):
        return {"start": self.start, "end": self.end, "steps": self.steps}


def lr_find(features, targets, num_classes, head, start=1e-7, end=10.0, steps=100,
            beta=0.98, stop_factor=4.0):
    """The sweep on pooled `features` (N, D) with class indices `targets`, a head built as
    `head` (fit.HeadOptions: hidden units, dropout, batch size, weight decay, seed).
    Returns {"rates", "losses" (raw), "smoothed", "suggestion", "minimum" (the rate at the
    lowest smoothed loss), "steps"}."""
    targets = np.asarray(targets, np.int64)
    if len(targets) < 2:
        raise DataError(f"lr-find needs training images; it has {len(targets)}.",
                        hint="Add images, or lower --val-percent/--test-percent.")
    set_random_seed(head.seed)
    model = build_head(features.shape[1], num_classes, head.hidden_units, head.dropout)
    model.compile(optimizer=AdamW(_Exponential(start, end, steps),
                                  weight_decay=head.weight_decay),
                  loss=SparseCategoricalCrossentropy(), metrics=[])
    weights = balanced_class_weights(targets, num_classes)
    rng = np.random.default_rng(head.seed)
    order, position = rng.permutation(len(targets)), 0
    rates, losses, smoothed, average = [], [], [], 0.0
    for step in range(steps):
        if position + head.batch_size > len(order):
            order, position = rng.permutation(len(targets)), 0
        batch = order[position:position + head.batch_size]
        position += head.batch_size
        rate = model.optimizer.current_learning_rate
        loss = float(model.train_on_batch(features[batch], targets[batch],
                                          class_weight=weights))
        if not math.isfinite(loss):
            break
        average = beta * average + (1 - beta) * loss
        rates.append(rate)
        losses.append(loss)
        smoothed.append(average / (1 - beta ** (step + 1)))
        if smoothed[-1] > stop_factor * min(smoothed):
            break
    best = int(np.argmin(smoothed))
    return {"rates": rates, "losses": losses, "smoothed": smoothed, "steps": len(rates),
            "minimum": rates[best], "suggestion": rates[_valley(smoothed)]}


def _valley(losses):
    """fastai's `valley` (callback/schedule.py): the index two thirds of the way down the
    longest decreasing subsequence of `losses`."""
    longest = [1] * len(losses)
    start = end = 0
    for i in range(1, len(losses)):
        for j in range(i):
            if losses[i] < losses[j] and longest[i] < longest[j] + 1:
                longest[i] = longest[j] + 1
            if longest[end] < longest[i]:
                end, start = i, i - longest[i]
    third = (end - start) / 3
    return start + int(third) + int(third / 2)


def lr_find_page(result, title="retrain lr-find"):
    """A self-contained HTML page: the smoothed loss against the rate (log scale), the
    suggestion marked."""
    width, height, pad = 640, 360, 50
    rates, loss = np.log10(result["rates"]), np.asarray(result["smoothed"])
    top = min(loss.max(), 4 * loss.min() + 1e-9)
    low_x, high_x, low_y = rates.min(), rates.max() + 1e-12, loss.min()

    def x_of(r):
        return pad + (r - low_x) / (high_x - low_x) * (width - 2 * pad)

    def y_of(v):
        return height - pad - (min(v, top) - low_y) / (top - low_y + 1e-12) * (height - 2 * pad)

    points = " ".join(f"{x_of(r):.1f},{y_of(v):.1f}" for r, v in zip(rates, loss))
    mark = x_of(math.log10(result["suggestion"]))
    ticks = "".join(f'<text x="{x_of(e):.1f}" y="{height - pad + 18}" font-size="11" '
                    f'text-anchor="middle">1e{e}</text>'
                    for e in range(math.ceil(low_x), math.floor(high_x) + 1))
    svg = (f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}">'
           f'<polyline fill="none" stroke="#1f77b4" stroke-width="2" points="{points}"/>'
           f'<line x1="{mark:.1f}" x2="{mark:.1f}" y1="{pad}" y2="{height - pad}" '
           f'stroke="#d62728" stroke-dasharray="4"/>{ticks}'
           f'<text x="{width / 2}" y="{height - 8}" font-size="12" text-anchor="middle">'
           'learning rate (log scale)</text>'
           f'<text x="12" y="{pad - 12}" font-size="12">smoothed training loss</text></svg>')
    return (f"<!doctype html><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<h1>{html.escape(title)}</h1>{svg}<p>Suggested learning rate "
            f"<b>{result['suggestion']:.3g}</b> (fastai's valley: two thirds down the longest "
            f"fall of the smoothed loss; lowest at {result['minimum']:.3g}); "
            f"{result['steps']} steps from "
            f"{result['rates'][0]:.1g} to {result['rates'][-1]:.3g}.</p>")
