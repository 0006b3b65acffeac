"""`retrain fit --cv K`: every image scored once, by a head that never trained on it."""
import json

import numpy as np
import pytest

from retrain.cli import main
from retrain.crossval import assign_folds, cross_validate
from retrain.errors import ConfigError, DataError
from retrain.fit import HeadOptions
from retrain.pipeline import RunOptions, run
from stand_in import use_stand_in


def test_folds_are_stratified_stable_and_cover_every_image_once():
    relatives = [f"{c}/img{i:03d}.png" for c in "ab" for i in range(23)]
    labels = [0] * 23 + [1] * 23
    fold, row = assign_folds(relatives, labels, 5)
    for label in (0, 1):
        sizes = np.bincount(fold[np.array(labels) == label], minlength=5)
        assert sizes.max() - sizes.min() <= 1                     # dealt in turn
    more_fold, _ = assign_folds(relatives + ["a/new.png"], labels + [0], 5)
    moved = np.sum(more_fold[:46] != fold)
    assert moved <= 23                       # images after the new one in hash order only


def test_cross_validation_scores_no_image_its_head_trained_on():
    """Random labels on random features: a head that memorises its training images scores
    near chance on the others, so near-perfect accuracy would mean a fold leaked."""
    rng = np.random.default_rng(0)
    features = rng.normal(size=(90, 256)).astype(np.float32)
    targets = rng.integers(0, 3, 90)
    relatives = [f"x/{i}.png" for i in range(90)]
    head = HeadOptions(epochs=60, patience=None, learning_rate=0.01)
    cv = cross_validate(features, targets, relatives, ["a", "b", "c"], head, 3, 10)
    assert all(abs(f["count"] - 30) <= 3 for f in cv["per_fold"])   # 3 classes dealt in turn
    assert sum(f["count"] for f in cv["per_fold"]) == cv["pooled"]["count"] == 90
    assert all(f["count"] + f["train"] + f["val"] == 90 for f in cv["per_fold"])
    accuracies = [f["accuracy"] for f in cv["per_fold"]]
    assert cv["mean_accuracy"] == pytest.approx(np.mean(accuracies), abs=1e-12)
    assert cv["std_accuracy"] == pytest.approx(np.std(accuracies, ddof=1), abs=1e-12)
    counts = [f["count"] for f in cv["per_fold"]]
    assert cv["pooled"]["accuracy"] == pytest.approx(np.dot(accuracies, counts) / 90, abs=1e-12)
    assert cv["mean_accuracy"] < 0.6                       # chance is 1/3


def test_fit_cv_prints_the_folds_mean_and_spread(image_tree, tmp_path, monkeypatch, capsys):
    use_stand_in(monkeypatch)
    data = image_tree({"a": 12, "b": 12, "c": 12})
    assert main(["fit", str(data), "--out", str(tmp_path / "run"), "--cache",
                 str(tmp_path / "cache"), "--cv", "4", "--epochs", "3", "-q"]) == 0
    out = capsys.readouterr().out
    cv = json.loads((tmp_path / "run" / "metrics.json").read_text())["cross_validation"]
    assert cv["folds"] == 4 and len(cv["per_fold"]) == 4
    assert "4-fold cross-validation of the head alone, on cached features" in out
    assert (f"mean accuracy {cv['mean_accuracy']:.4f}, standard deviation "
            f"{cv['std_accuracy']:.4f} over 4 folds") in out


def test_cv_is_refused_with_fine_tuning_and_where_folds_would_be_empty(image_tree, tmp_path,
                                                                       monkeypatch):
    with pytest.raises(ConfigError, match="cannot be combined with --fine-tune"):
        RunOptions(cv=5, head=HeadOptions(fine_tune=1)).validate()
    with pytest.raises(ConfigError, match=r"cv must be 0 \(none\) or a whole number from 2 to 100"):
        RunOptions(cv=1).validate()
    use_stand_in(monkeypatch)
    with pytest.raises(DataError, match="--cv 9 leaves folds empty"):
        run(image_tree({"a": 6, "b": 6}), tmp_path / "run",
            RunOptions(cache_dir=tmp_path / "cache", progress=False, cv=9,
                       head=HeadOptions(epochs=1)))
