"""report.py on its own: odd runs (no test images, no val images, many classes, a vanished
mistake file) still render a valid self-contained page."""
import base64
import io
import re
from html.parser import HTMLParser

import numpy as np
import pytest
from PIL import Image

from retrain.evaluate import evaluate_predictions
from retrain.report import render_report, write_report


class _Strict(HTMLParser):
    VOID = {"meta", "img", "br", "polyline", "rect"}

    def __init__(self):
        super().__init__()
        self.stack, self.errors = [], []

    def handle_starttag(self, tag, attrs):
        if tag not in self.VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag):
        if tag not in self.VOID and (not self.stack or self.stack.pop() != tag):
            self.errors.append(tag)


def images_in(page):
    found = []
    for payload in re.findall(r'src="data:image/png;base64,([^"]*)"', page):
        with Image.open(io.BytesIO(base64.b64decode(payload, validate=True))) as image:
            image.load()
            found.append(image.size)
    assert len(found) == page.count("<img")
    return found


def assert_valid(page):
    parser = _Strict()
    parser.feed(page)
    parser.close()
    assert parser.errors == [] and parser.stack == []


def metrics_for(labels, splits, rng):
    metrics = {"classes": labels, "backbone": "stand_in", "skipped": 0,
               "cache": {"hits": 3, "misses": 4}}
    for name, count in splits.items():
        p = rng.dirichlet(np.ones(len(labels)), count)
        y = rng.integers(0, len(labels), count)
        metrics[name] = evaluate_predictions(p, y, labels,
                                             paths=[f"x/{name}{i}.png" for i in range(count)])
    return metrics


def test_no_test_images_shows_val_and_a_vanished_file_is_not_fatal(tmp_path):
    rng = np.random.default_rng(0)
    metrics = metrics_for(["a", "b"], {"train": 6, "val": 4, "test": 0}, rng)
    (tmp_path / "x").mkdir()
    Image.new("RGB", (300, 200), "red").save(tmp_path / "x" / "val0.png")
    metrics["val"]["misclassified"] = [dict(metrics["val"]["misclassified"][0],
                                            path="x/val0.png"),
                                       dict(metrics["val"]["misclassified"][0],
                                            path="x/gone.png")]
    history = {"loss": [1.0, 0.5], "accuracy": [0.5, 0.7], "val_loss": [1.1, 0.9],
               "val_accuracy": [0.4, 0.6], "best_epoch": 2}
    path = write_report(tmp_path / "report.html", metrics, history, tmp_path)
    page = path.read_text(encoding="utf-8")
    assert_valid(page)
    assert "Confusion matrix (val;" in page and "(image unavailable)" in page
    sizes = images_in(page)
    assert len(sizes) == 1 and max(sizes[0]) == 140          # one thumbnail; counts: a table
    assert "Best validation loss at epoch 2 of 2" in page


def test_many_classes_keep_the_confusion_picture_small_and_no_val_is_explained(tmp_path):
    labels = [f"class_{i:02d}" for i in range(60)]
    metrics = metrics_for(labels, {"train": 100, "val": 0, "test": 120},
                          np.random.default_rng(1))
    history = {"loss": [2.0, 1.5, 1.2], "accuracy": [0.1, 0.2, 0.3], "best_epoch": 3}
    page = render_report(metrics, history, tmp_path, title="<many> & more")
    assert_valid(page)
    assert "&lt;many&gt; &amp; more" in page
    assert "no validation images, so no early stopping" in page
    width, height = images_in(page)[0]
    assert width <= 1200 and height <= 1200
    assert page.count("<svg") == 2
    assert page.count('alt="confusion matrix"') == 1 and '<table class="confusion">' not in page


def svg_of(page, title):
    return re.search(rf'<svg [^>]*aria-label="{title}">.*?</svg>', page, re.S).group(0)


def test_learning_curves_have_ticks_a_grid_the_best_epoch_and_the_legend_outside(tmp_path):
    metrics = metrics_for(["a", "b", "c"], {"train": 6, "val": 4, "test": 4},
                          np.random.default_rng(2))
    losses = list(np.linspace(1.2, 0.3, 20))
    history = {"loss": losses, "accuracy": [1 - v / 2 for v in losses],
               "val_loss": [v + 0.2 for v in losses], "val_accuracy": [0.8] * 20,
               "best_epoch": 15}
    svg = svg_of(render_report(metrics, history, tmp_path), "loss")
    rect = re.search(r'<rect x="(\d+)" y="(\d+)" width="(\d+)" height="(\d+)"', svg)
    left, top, width, height = map(float, rect.groups())
    ticks = re.findall(r'<text x="([\d.]+)" y="([\d.]+)" font-size="10" '
                       r'text-anchor="(end|middle)">([^<]+)</text>', svg)
    y_labels = [float(t[3]) for t in ticks if t[2] == "end"]
    x_labels = [int(t[3]) for t in ticks if t[2] == "middle"]
    assert len(y_labels) >= 4 and y_labels == sorted(y_labels)       # 0.4 ... 1.4
    assert y_labels[0] <= 0.3 + 0.2 and y_labels[-1] >= 1.2          # the values are inside
    assert x_labels == [5, 10, 15, 20]
    assert svg.count('class="grid"') == len(y_labels) + len(x_labels)
    best = re.search(r'<line class="best" x1="([\d.]+)"', svg)
    assert float(best.group(1)) == pytest.approx(left + 8 + (width - 16) * 14 / 19, abs=0.1)
    assert "best epoch (15)" in svg
    # every legend entry sits above the plot rectangle, where no curve runs
    legend_ys = [float(y) for y in re.findall(r'<g class="legend"><line [^>]*y1="([\d.]+)"', svg)]
    assert len(legend_ys) == 3 and all(y < top for y in legend_ys)
    for points in re.findall(r'points="([^"]+)"', svg):
        ys = [float(p.split(",")[1]) for p in points.split()]
        assert top <= min(ys) and max(ys) <= top + height


def test_small_mistakes_are_scaled_up_nearest_neighbour(tmp_path):
    metrics = metrics_for(["a", "b"], {"train": 2, "val": 0, "test": 6}, np.random.default_rng(3))
    pixels = np.random.default_rng(4).integers(0, 255, (28, 28, 3), np.uint8)
    (tmp_path / "x").mkdir()
    Image.fromarray(pixels).save(tmp_path / "x" / "small.png")
    metrics["test"]["misclassified"] = [dict(metrics["test"]["misclassified"][0],
                                             path="x/small.png")]
    page = render_report(metrics, {"loss": [1.0]}, tmp_path)
    payload = re.findall(r'src="data:image/png;base64,([^"]*)"', page)[-1]
    with Image.open(io.BytesIO(base64.b64decode(payload))) as image:
        thumb = np.asarray(image.convert("RGB"))
    assert thumb.shape == (140, 140, 3)
    np.testing.assert_array_equal(thumb[::5, ::5], pixels)          # 5x5 blocks of each pixel


def test_confusion_counts_are_a_table_and_skipped_files_are_listed(tmp_path):
    metrics = metrics_for(["cat", "dog"], {"train": 2, "val": 0, "test": 8},
                          np.random.default_rng(5))
    skipped = [(f"cat/bad{i}.png", "not an image") for i in range(23)]
    page = render_report(metrics, {"loss": [1.0]}, tmp_path, skipped=skipped)
    assert_valid(page)
    table = re.search(r'<table class="confusion">.*?</table>', page, re.S).group(0)
    cells = [int(v) for v in re.findall(r"<td[^>]*>(\d+)</td>", table)]
    assert cells == [v for row in metrics["test"]["confusion_matrix"] for v in row]
    assert page.count('<table class="confusion">') == 1                  # drawn once
    assert 'alt="confusion matrix"' not in page and not images_in(page)
    assert "23 files skipped" in page and "cat/bad19.png</code>: not an image" in page
    assert "cat/bad20.png" not in page and "and 3 more: all are in skipped.tsv" in page
    one = render_report(metrics, {"loss": [1.0]}, tmp_path, skipped=skipped[:1])
    assert "1 file skipped" in one


def test_a_fine_tuned_run_says_the_last_epoch_was_kept_and_marks_no_best_epoch(tmp_path):
    metrics = metrics_for(["a", "b"], {"train": 6, "val": 4, "test": 4},
                          np.random.default_rng(3))
    losses = [1.0, 0.8, 0.9, 0.6, 0.7]
    history = {"loss": losses, "accuracy": [0.5] * 5, "val_loss": losses,
               "val_accuracy": [0.5] * 5, "best_epoch": 5, "freeze_epochs": 2,
               "restored_best": False}
    page = render_report(metrics, history, tmp_path)
    assert_valid(page)
    assert ("5 epochs (the head alone for 2, then the fine-tuned blocks with it); the "
            "exported model has the last epoch's weights") in page
    assert "Best validation loss" not in page and 'class="best"' not in page


@pytest.mark.parametrize("best_epoch", [1, 50])
def test_a_best_epoch_at_either_end_is_marked_inside_the_plot(tmp_path, best_epoch):
    metrics = metrics_for(["a", "b"], {"train": 6, "val": 4, "test": 4},
                          np.random.default_rng(6))
    losses = list(np.linspace(1.0, 0.2, 50))[::1 if best_epoch == 50 else -1]
    history = {"loss": losses, "accuracy": [0.5] * 50, "val_loss": losses,
               "val_accuracy": [0.5] * 50, "best_epoch": best_epoch}
    svg = svg_of(render_report(metrics, history, tmp_path), "loss")
    left, _, width, _ = map(float, re.search(
        r'<rect x="(\d+)" y="(\d+)" width="(\d+)" height="(\d+)"', svg).groups())
    x = float(re.search(r'<line class="best" x1="([\d.]+)"', svg).group(1))
    assert left + 4 <= x <= left + width - 4                # clear of the plot's border
