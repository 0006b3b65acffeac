"""`fit --search`: a documented grid of head recipes scored on train+val only, the best
retrained on train+val and scored once on test; the table of what was tried is printed
and recorded."""
import json
from types import SimpleNamespace

import numpy as np

from retrain.cli import main
from retrain.fit import HeadOptions
from retrain.model_file import load_model_file
from retrain import search
from retrain.search import search_head
from stand_in import use_stand_in


def test_fit_search_cross_validates_small_data_and_records_its_choice(image_tree, tmp_path,
                                                                      monkeypatch, capsys):
    """A grid whose first recipe cannot learn in 8 epochs (rate 1e-6): the search must
    rank the second above it, and fit must train the second (its 16-unit hidden layer)."""
    use_stand_in(monkeypatch)
    grid = ({"learning_rate": 1e-6, "hidden_units": 0}, {"learning_rate": 0.05, "hidden_units": 16})
    monkeypatch.setattr(search, "GRID", grid)
    data = image_tree({"a": 14, "b": 14, "c": 14})
    run = tmp_path / "run"
    assert main(["fit", str(data), "--out", str(run), "--cache", str(tmp_path / "cache"),
                 "--search", "--search-budget", "1000", "--epochs", "8", "-q"]) == 0
    out = capsys.readouterr().out
    metrics = json.loads((run / "metrics.json").read_text())
    searched = metrics["training"]["search"]
    assert [row["recipe"] for row in searched["tried"]] == list(grid)
    assert searched["by"].startswith("5-fold cross-validated accuracy")
    first, second = (row["score"] for row in searched["tried"])
    assert second > first and searched["chosen"] == 1
    assert all(row["interval"][0] <= row["score"] <= row["interval"][1]
               for row in searched["tried"])
    assert metrics["training"]["learning_rate"] == 0.05
    model = load_model_file(run / "model.h5")
    assert model.get_layer("head_dense").get_config()["units"] == 16
    assert model.metadata["training"]["search"]["chosen"] == 1
    assert "search: 2 recipe(s)" in out and out.count("*") == 1
    report = (run / "report.html").read_text()
    assert "Recipes tried (--search" in report and report.count("<td>chosen</td>") == 1
    assert "<td>1e-06</td><td>0</td>" in report and "<td>0.05</td><td>16</td>" in report


def test_the_budget_stops_the_search_after_the_first_recipe(image_tree, tmp_path, monkeypatch):
    use_stand_in(monkeypatch)
    data = image_tree({"a": 10, "b": 10})
    run = tmp_path / "run"
    assert main(["fit", str(data), "--out", str(run), "--cache", str(tmp_path / "cache"),
                 "--search", "--search-budget", "0.000001", "--epochs", "3", "-q"]) == 0
    search = json.loads((run / "metrics.json").read_text())["training"]["search"]
    assert len(search["tried"]) == 1 and search["chosen"] == 0


def test_larger_data_is_ranked_by_validation_loss():
    rng = np.random.default_rng(0)
    centres = rng.normal(0, 1.0, (3, 16))
    targets = rng.integers(0, 3, 1200)
    features = (centres[targets] + rng.normal(0, 1.0, (1200, 16))).astype(np.float32)
    parts = SimpleNamespace(indices=lambda name: {"train": list(range(1000)),
                                                  "val": list(range(1000, 1100))}[name])
    result = search_head(features, targets, [f"{i}.png" for i in range(1200)], ["a", "b", "c"],
                         parts, HeadOptions(epochs=6), 10, budget_s=1000)
    assert result["by"] == "validation loss"
    losses = [row["score"] for row in result["tried"]]
    best = int(np.argmin(losses))            # the one-standard-error rule, in grid order
    within = [n for n, loss in enumerate(losses) if loss <= losses[best] + result["tried"][best]["se"]]
    assert result["chosen"] == within[0]
