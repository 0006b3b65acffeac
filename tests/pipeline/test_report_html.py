"""report.py on its own: odd runs (no test images, no val images, many classes, a vanished
mistake file) still render a valid self-contained page."""
import base64
import io
import re
from html.parser import HTMLParser

import numpy as np
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
    assert len(sizes) == 2 and max(sizes[1]) == 140          # the confusion, one thumbnail
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
