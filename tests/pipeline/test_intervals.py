"""The 95% interval printed and recorded next to every accuracy: Wilson's score interval,
checked against statsmodels (tests/fixtures/wilson, see its README)."""
import json
from pathlib import Path

import numpy as np
import pytest

from retrain.evaluate import evaluate_predictions, wilson_interval

WILSON = json.loads((Path(__file__).resolve().parents[1] / "fixtures" / "wilson" /
                     "wilson.json").read_text())


@pytest.mark.parametrize("k, n, low, high", WILSON["cases"], ids=lambda v: str(v))
def test_wilson_interval_matches_statsmodels(k, n, low, high):
    # float64 arithmetic of a handful of operations: agreement to a few ulps of 1.
    assert wilson_interval(k, n) == pytest.approx([low, high], abs=1e-12)


def test_newcombes_worked_examples():
    for (k, n), expected in {(81, 263): [0.2553, 0.3662], (15, 148): [0.0624, 0.1605],
                             (0, 20): [0.0, 0.1611], (1, 29): [0.0061, 0.1718]}.items():
        assert np.round(wilson_interval(k, n), 4).tolist() == expected


def test_every_accuracy_of_a_split_has_its_interval():
    probabilities = np.eye(3)[[0, 1, 2, 0, 1, 2, 0, 0, 0]] * 0.8 + 0.2 / 3
    targets = np.array([0, 1, 2, 0, 1, 2, 1, 2, 0])
    metrics = evaluate_predictions(probabilities, targets, ["a", "b", "c"], top_k=2)
    assert metrics["accuracy"] == 7 / 9
    assert metrics["accuracy_interval"] == wilson_interval(7, 9)
    assert metrics["top_k_accuracy_interval"] == wilson_interval(metrics["top_k_accuracy"] * 9, 9)
    empty = evaluate_predictions(np.empty((0, 3)), np.empty(0, int), ["a", "b", "c"])
    assert empty["accuracy_interval"] is None and empty["top_k_accuracy_interval"] is None


def test_a_run_warns_of_small_splits_and_small_classes(image_tree, tmp_path, monkeypatch):
    from retrain.pipeline import RunOptions, run
    from retrain.fit import HeadOptions
    from stand_in import use_stand_in

    use_stand_in(monkeypatch)
    small = run(image_tree({"a": 20, "b": 20, "c": 4}), tmp_path / "small",
                RunOptions(cache_dir=tmp_path / "cache", progress=False,
                           head=HeadOptions(epochs=1)))
    flagged = [w.split(",")[0] for w in small.warnings if "fewer than" in w]
    assert flagged == [f"the val split holds {small.metrics['val']['count']} image(s)",
                       f"the test split holds {small.metrics['test']['count']} image(s)",
                       "class 'c' has 4 image(s)"], small.warnings
    large = run(image_tree({"a": 100, "b": 100}, root=tmp_path / "large"), tmp_path / "big",
                RunOptions(cache_dir=tmp_path / "cache", progress=False, val_percent=20,
                           test_percent=20, head=HeadOptions(epochs=1)))
    assert min(large.metrics[s]["count"] for s in ("val", "test")) >= 30
    assert not [w for w in large.warnings if "fewer than" in w], large.warnings


def test_evaluate_warns_when_it_scores_few_images(image_tree, tmp_path, monkeypatch, capsys):
    from retrain.cli import main
    from retrain.pipeline import RunOptions, run
    from retrain.fit import HeadOptions
    from stand_in import use_stand_in

    use_stand_in(monkeypatch)
    result = run(image_tree({"a": 12, "b": 12}), tmp_path / "run",
                 RunOptions(cache_dir=tmp_path / "cache", progress=False,
                            head=HeadOptions(epochs=1)))
    new = image_tree({"a": 3, "b": 30}, root=tmp_path / "new", size=(9, 9))
    assert main(["evaluate", str(result.model_path), str(new)]) == 0
    err = capsys.readouterr().err
    assert "class 'a' has 3 image(s), fewer than 5" in err
    assert "split holds" not in err                          # 33 images scored
