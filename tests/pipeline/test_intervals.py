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
