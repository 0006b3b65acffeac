"""The learning-rate finder: its suggested rate trains a head (a rate it would not suggest
does not), `retrain lr-find` writes the curve, `fit --lr auto` uses the suggestion."""
import json
import re

import numpy as np
import pytest

from retrain.cli import main
from retrain.fit import HeadOptions, train_head
from retrain.lr_find import lr_find
from stand_in import use_stand_in


def _blobs(n, seed):
    """3 learnable classes: Gaussian blobs in 32 dimensions, centres 1.5 apart per axis."""
    rng = np.random.default_rng(seed)
    centres = np.random.default_rng(99).normal(0, 1.5, (3, 32))
    targets = rng.integers(0, 3, n)
    return (centres[targets] + rng.normal(0, 1.0, (n, 32))).astype(np.float32), targets


def test_the_suggested_rate_trains_a_head_above_chance():
    x, y = _blobs(300, 0)
    test_x, test_y = _blobs(300, 1)
    found = lr_find(x, y, 3, HeadOptions())
    assert 1e-5 < found["suggestion"] < 1.0
    rates = np.array(found["rates"])
    assert np.all(np.diff(rates) > 0) and rates[0] == pytest.approx(1e-7)
    assert min(found["smoothed"]) < found["smoothed"][0] / 2      # the loss fell
    head = HeadOptions(learning_rate=found["suggestion"], epochs=10, patience=None)
    classifier, _ = train_head((x, y), (x[:0], y[:0]), 3, head, progress=False)
    accuracy = np.mean(np.argmax(classifier.predict(test_x), axis=1) == test_y)
    assert accuracy > 0.8                                         # chance is 1/3


def test_lr_find_writes_its_page_and_fit_lr_auto_uses_the_suggestion(image_tree, tmp_path,
                                                                     monkeypatch, capsys):
    use_stand_in(monkeypatch)
    data = image_tree({"a": 15, "b": 15, "c": 15})
    page = tmp_path / "curve.html"
    assert main(["lr-find", str(data), "--out", str(page), "--cache", str(tmp_path / "cache"),
                 "-q"]) == 0
    out = capsys.readouterr().out
    suggested = float(re.search(r"suggested learning rate (\S+)", out).group(1))
    text = page.read_text()
    assert "<svg" in text and "<polyline" in text and f"{suggested:.3g}" in text
    run = tmp_path / "run"
    assert main(["fit", str(data), "--out", str(run), "--cache", str(tmp_path / "cache"),
                 "--lr", "auto", "-q"]) == 0
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["training"]["learning_rate"] == pytest.approx(suggested, rel=5e-3)   # printed to 3 digits
    assert "<svg" in (run / "lr_find.html").read_text()
    capsys.readouterr()
    assert main(["fit", str(data), "--out", str(tmp_path / "ft"), "--cache",
                 str(tmp_path / "cache"), "--lr", "auto", "--fine-tune", "1", "-q"]) == 2
    assert "--lr auto" in capsys.readouterr().err


def test_lr_find_computes_the_features_fit_will_use(image_tree, tmp_path, monkeypatch, capsys):
    """lr-find takes the options that fix the features (here --crop-fraction), so that a fit
    with the same options finds every feature cached and suggests the same rate."""
    use_stand_in(monkeypatch)
    data = image_tree({"a": 15, "b": 15, "c": 15})
    options = ["--cache", str(tmp_path / "cache"), "--crop-fraction", "0.5", "-q"]
    assert main(["lr-find", str(data), "--out", str(tmp_path / "curve.html")] + options) == 0
    suggested = float(re.search(r"suggested learning rate (\S+)",
                                capsys.readouterr().out).group(1))
    assert main(["fit", str(data), "--out", str(tmp_path / "run"), "--lr", "auto"]
                + options) == 0
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert (metrics["cache"]["hits"], metrics["cache"]["misses"]) == (45, 0)
    assert metrics["training"]["learning_rate"] == pytest.approx(suggested, rel=5e-3)
