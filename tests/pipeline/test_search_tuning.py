"""`fit --search` with fine-tuning recipes: every input from one cache (the deepest cut's
activations and views, computed once for the whole search), the chosen recipe retrained on
train+val, the budget's estimates and skips, and the one-standard-error choice."""
import json

import numpy as np
import pytest

from retrain import search, search_cuts
from retrain.backbones.cut import split_backbone
from retrain.cli import main
from retrain.engine import Model
from retrain.fit import HeadOptions
from retrain.model_file import load_model_file
from retrain.pipeline import RunOptions, evaluate_model, run
from numerics import float32_paths_atol
from stand_in import lite_stand_in, use_lite_stand_in, use_stand_in
from test_fine_tune import stripes

HOPELESS_HEAD = {"learning_rate": 1e-7, "hidden_units": 0}    # cannot learn in 3 epochs


def tuning(blocks, views=2):
    return {"learning_rate": 0.01, "hidden_units": 0, "fine_tune": blocks, "augment": views}


def count_bottom_images(monkeypatch):
    """A counter of the images the backbone's bottom (below the cut: what the cache
    stores) runs on, on the numpy runtime."""
    forwards, predict = {"images": 0}, Model.predict

    def counting(self, x, *args, **kwargs):
        forwards["images"] += len(x) if "_below_" in self.name else 0
        return predict(self, x, *args, **kwargs)

    monkeypatch.setattr(Model, "predict", counting)
    return forwards


def test_lifted_activations_are_those_of_the_shallower_cut_and_the_pooled_features():
    backbone = lite_stand_in()
    images = np.random.default_rng(0).normal(size=(6, 32, 32, 3)).astype(np.float32)
    bottom, _, _ = split_backbone(backbone, 3)
    deepest = bottom.predict(images).reshape(6, -1)
    ladder = search_cuts.Ladder(backbone, 3, progress=False)
    for blocks in (2, 1):
        direct = split_backbone(backbone, blocks)[0].predict(images).reshape(6, -1)
        lifted = ladder.lift(deepest, blocks)
        assert lifted.shape == direct.shape
        np.testing.assert_allclose(lifted, direct, atol=4 * float32_paths_atol(backbone, direct))
    pooled = backbone.predict(images)
    np.testing.assert_allclose(ladder.lift(deepest, 0), pooled,
                               atol=4 * float32_paths_atol(backbone, pooled))
    views = np.stack([deepest, deepest[::-1]], axis=1).astype(np.float16)   # (n, K, D)
    lifted = ladder.lift(views, 1)
    assert lifted.dtype == np.float16 and lifted.shape[:2] == (6, 2)


def test_search_tries_fine_tuning_on_views_cached_once_and_retrains_the_choice_on_train_and_val(
        tmp_path, monkeypatch, capsys):
    use_lite_stand_in(monkeypatch)
    forwards = count_bottom_images(monkeypatch)
    monkeypatch.setattr(search_cuts, "VIEWS", 2)
    grid = (HOPELESS_HEAD, tuning(1), tuning(2))
    monkeypatch.setattr(search, "GRID", grid)
    final = []
    from retrain import pipeline
    train_head = pipeline.train_head

    def spy(train, val, *args, **kwargs):            # the pipeline's own (final) training
        final.append((len(train[1]), len(val[1]), kwargs.get("top") is not None))
        return train_head(train, val, *args, **kwargs)

    monkeypatch.setattr(pipeline, "train_head", spy)
    data = stripes(tmp_path / "data", per_class=10)
    run_dir = tmp_path / "run"
    assert main(["fit", str(data), "--out", str(run_dir), "--cache", str(tmp_path / "cache"),
                 "--search", "--search-budget", "1000", "--epochs", "3", "--freeze-epochs",
                 "1", "--val-percent", "20", "--test-percent", "20", "--runtime", "numpy",
                 "-q"]) == 0
    metrics = json.loads((run_dir / "metrics.json").read_text())
    counts = {name: metrics[name]["count"] for name in ("train", "val", "test")}
    searched = metrics["training"]["search"]
    assert [row["recipe"] for row in searched["tried"]] == list(grid)
    assert searched["by"].startswith("5-fold cross-validated")
    # the bottom of the backbone ran once per image and once per view of train and val:
    # nothing more for 3 recipes x 5 folds
    assert forwards["images"] == 30 + 2 * (counts["train"] + counts["val"])
    chosen = searched["tried"][searched["chosen"]]
    assert searched["chosen"] > 0 and chosen["score"] > searched["tried"][0]["score"]
    blocks = chosen["recipe"]["fine_tune"]
    record = metrics["training"]
    assert (record["fine_tune"], record["augment"]) == (blocks, 2)
    assert record["cut"] == {1: "top", 2: "block7a"}[blocks]
    assert record["augmentation"] is not None
    # retrained once, on train+val, with the chosen blocks; and says so
    trained_on = counts["train"] + counts["val"]
    assert final == [(trained_on, 0, True)]
    assert searched["trained_on"] == trained_on
    out = capsys.readouterr().out
    assert f"trained on {trained_on} images (train+val)" in out
    assert f"train+val: {trained_on} images" in (run_dir / "report.html").read_text()
    model = load_model_file(run_dir / "model.h5")
    assert model.metadata["training"]["search"]["chosen"] == searched["chosen"]
    assert model.metadata["training"]["fine_tune"] == blocks
    # the exported file (the trained top on the chosen cut's bottom) scores as fit did
    scored = evaluate_model(model, data, "test")
    assert scored["accuracy"] == metrics["test"]["accuracy"]
    assert scored["loss"] == pytest.approx(metrics["test"]["loss"], abs=1e-4)


def test_a_recipe_over_the_budget_is_skipped_with_its_estimate(tmp_path, monkeypatch, capsys):
    use_lite_stand_in(monkeypatch)
    monkeypatch.setattr(search_cuts, "VIEWS", 1)
    monkeypatch.setattr(search, "GRID", (HEAD_GRID_TWO := (
        {"learning_rate": 0.01, "hidden_units": 0}, {"learning_rate": 0.002, "hidden_units": 0}))
        + (tuning(1, 1), tuning(2, 1)))
    monkeypatch.setattr(search, "tuning_estimate", lambda *args, **kwargs: 5000.0)
    data = stripes(tmp_path / "data", per_class=8)
    run_dir = tmp_path / "run"
    assert main(["fit", str(data), "--out", str(run_dir), "--cache", str(tmp_path / "cache"),
                 "--search", "--search-budget", "1000", "--epochs", "2", "-q"]) == 0
    searched = json.loads((run_dir / "metrics.json").read_text())["training"]["search"]
    assert [row["recipe"] for row in searched["tried"]] == list(HEAD_GRID_TWO)
    assert [row["recipe"] for row in searched["skipped"]] == [tuning(1, 1), tuning(2, 1)]
    assert all(row["estimate_s"] == 5000.0 for row in searched["skipped"])
    out = capsys.readouterr().out
    assert "2 recipe(s) tried, 2 skipped" in out and out.count("(5000)") == 2


def test_a_backbone_without_blocks_lists_the_fine_tuning_recipes_as_skipped(tmp_path,
                                                                             monkeypatch):
    use_stand_in(monkeypatch)
    data = stripes(tmp_path / "data", per_class=8)
    result = run(data, tmp_path / "run", RunOptions(
        cache_dir=tmp_path / "cache", progress=False, search=True, search_budget=0.000001,
        head=HeadOptions(epochs=2)))
    searched = result.metrics["training"]["search"]
    assert len(searched["tried"]) == 1
    assert [row["recipe"] for row in searched["skipped"]] == list(search.GRID[1:])
    assert all(row["estimate_s"] is not None for row in searched["skipped"][:5])
    assert all("fewer than" in row["why"] for row in searched["skipped"][5:])


def test_each_recipe_takes_the_default_schedule_of_its_kind(tmp_path, monkeypatch):
    """Without --epochs, a fine-tuning recipe runs fine-tuning's 15 epochs to the end and a
    head recipe the head's 50 with early stopping, as `fit --fine-tune` and plain `fit` do."""
    use_lite_stand_in(monkeypatch)
    monkeypatch.setattr(search_cuts, "VIEWS", 1)
    monkeypatch.setattr(search, "GRID", (HOPELESS_HEAD, tuning(1, 1)))
    result = run(stripes(tmp_path / "data", per_class=8), tmp_path / "run", RunOptions(
        cache_dir=tmp_path / "cache", progress=False, search=True, val_percent=20,
        test_percent=20, head=HeadOptions(freeze_epochs=1)))
    head, tuned = result.metrics["training"]["search"]["tried"]
    assert tuned["epochs"] == 15 and head["epochs"] != 15
    assert result.metrics["training"]["search"]["chosen"] == 1
    assert result.metrics["training"]["epochs"] == 1 + 15


def test_the_choice_is_the_first_recipe_within_one_standard_error_of_the_best():
    def rows(scores, se):
        return [{"score": s, "se": se} for s in scores]
    # accuracies: the best is 0.83 +- 0.02, so 0.815 (index 1) is kept before it
    assert search._one_standard_error(rows([0.70, 0.815, 0.83, 0.80], 0.02), small=True) == 1
    assert search._one_standard_error(rows([0.70, 0.805, 0.83], 0.02), small=True) == 2
    # losses: lower is better
    assert search._one_standard_error(rows([0.50, 0.31, 0.30], 0.02), small=False) == 1
    assert search._one_standard_error(rows([0.30, 0.10], 0.02), small=False) == 1
