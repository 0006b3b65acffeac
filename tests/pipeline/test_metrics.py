"""evaluate.py: metrics against a hand-worked example and against slow obvious loops."""
import json

import numpy as np
import pytest

from retrain.evaluate import evaluate_predictions, top_predictions

LABELS = ["cat", "dog", "fox"]
#                 cat   dog   fox      true    predicted
PROBABILITIES = [[0.7, 0.2, 0.1],    # cat     cat
                 [0.1, 0.6, 0.3],    # cat     dog  (cat only 3rd)
                 [0.2, 0.5, 0.3],    # dog     dog
                 [0.4, 0.35, 0.25],  # dog     cat  (dog 2nd)
                 [0.05, 0.15, 0.8],  # fox     fox
                 [0.3, 0.3, 0.4]]    # dog     fox  (cat, dog tie: the first, cat, is 2nd)
TARGETS = [0, 0, 1, 1, 2, 1]


def test_macro_f1_leaves_out_classes_absent_from_the_images_scored():
    """A fourth label nobody shows or predicts does not drag the mean down with an F1 of 0."""
    padded = [p + [0.0] for p in PROBABILITIES]
    m = evaluate_predictions(padded, TARGETS, LABELS + ["owl"], top_k=2)
    assert m["macro_f1"] == pytest.approx((0.5 + 0.4 + 2 / 3) / 3)
    assert m["per_class"]["owl"]["support"] == 0


def test_hand_worked_example():
    m = evaluate_predictions(PROBABILITIES, TARGETS, LABELS, paths=list("abcdef"), top_k=2)
    assert m["count"] == 6 and m["accuracy"] == pytest.approx(3 / 6)
    # top-2: a yes, b no (cat 3rd), c yes, d yes, e yes, f: fox, then cat (stable) -> no.
    assert (m["top_k"], m["top_k_accuracy"]) == (2, pytest.approx(4 / 6))
    assert m["confusion_matrix"] == [[1, 1, 0], [1, 1, 1], [0, 0, 1]]
    assert m["per_class"]["cat"] == pytest.approx(
        {"precision": 0.5, "recall": 0.5, "f1": 0.5, "support": 2})
    assert m["per_class"]["dog"] == pytest.approx(
        {"precision": 0.5, "recall": 1 / 3, "f1": 0.4, "support": 3})
    assert m["per_class"]["fox"] == pytest.approx(
        {"precision": 0.5, "recall": 1.0, "f1": 2 / 3, "support": 1})
    assert m["macro_f1"] == pytest.approx((0.5 + 0.4 + 2 / 3) / 3)
    true_p = [0.7, 0.1, 0.5, 0.35, 0.8, 0.3]
    assert m["loss"] == pytest.approx(-np.mean(np.log(true_p)))
    # Most confident mistakes first: b (dog 0.6), then d and f (0.4 each, in file order).
    assert [(e["path"], e["label"], e["predicted"]) for e in m["misclassified"]] == [
        ("b", "cat", "dog"), ("d", "dog", "cat"), ("f", "dog", "fox")]
    assert m["misclassified"][0]["probability"] == pytest.approx(0.6)
    assert m["misclassified"][0]["label_probability"] == pytest.approx(0.1)
    assert [t["label"] for t in m["misclassified"][0]["top"]] == ["dog", "fox"]
    json.dumps(m)      # metrics.json must be able to hold it as is


def test_against_slow_loops_on_random_predictions():
    rng = np.random.default_rng(0)
    n, k = 200, 5
    p = rng.dirichlet(np.ones(k), n)
    y = rng.integers(0, k, n)
    m = evaluate_predictions(p, y, [f"c{i}" for i in range(k)], top_k=3)
    predicted = [max(range(k), key=lambda j: p[i, j]) for i in range(n)]
    for c in range(k):
        tp = sum(1 for i in range(n) if predicted[i] == c and y[i] == c)
        n_pred = sum(1 for i in range(n) if predicted[i] == c)
        n_true = sum(1 for i in range(n) if y[i] == c)
        precision, recall = tp / n_pred, tp / n_true
        assert m["per_class"][f"c{c}"] == pytest.approx({
            "precision": precision, "recall": recall, "support": n_true,
            "f1": 2 * precision * recall / (precision + recall)})
        for d in range(k):
            assert m["confusion_matrix"][c][d] == sum(
                1 for i in range(n) if y[i] == c and predicted[i] == d)
    in_top3 = [y[i] in sorted(range(k), key=lambda j: -p[i, j])[:3] for i in range(n)]
    assert m["top_k_accuracy"] == pytest.approx(np.mean(in_top3))
    assert len(m["misclassified"]) == n - sum(predicted[i] == y[i] for i in range(n))


def test_a_class_never_predicted_scores_zero_not_nan():
    m = evaluate_predictions([[0.9, 0.1], [0.8, 0.2]], [0, 1], ["a", "b"])
    assert m["per_class"]["b"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1}
    assert m["top_k"] is None and m["top_k_accuracy"] is None   # top-2 of 2 is always 1


def test_top_k_is_reported_only_below_the_number_of_classes():
    for k, reported in ((2, 2), (3, None), (4, None)):
        m = evaluate_predictions(PROBABILITIES, TARGETS, LABELS, top_k=k)
        assert m["top_k"] == reported and (m["top_k_accuracy"] is None) == (reported is None)
    empty = evaluate_predictions([], [], LABELS, top_k=3)
    assert empty["top_k"] is None


def test_an_empty_split_has_counts_but_no_scores():
    m = evaluate_predictions(np.empty((0, 2)), [], ["a", "b"])
    assert m["count"] == 0 and m["accuracy"] is None and m["misclassified"] == []
    assert m["confusion_matrix"] == [[0, 0], [0, 0]]


def test_top_predictions_are_sorted_and_capped():
    tops = top_predictions([[0.1, 0.7, 0.2]], ["a", "b", "c"], 5)
    assert tops == [[{"label": "b", "probability": pytest.approx(0.7)},
                     {"label": "c", "probability": pytest.approx(0.2)},
                     {"label": "a", "probability": pytest.approx(0.1)}]]


def test_loss_is_keras_sparse_crossentropy_with_its_1e7_clip():
    """The loss in metrics.json is the one training reports as val_loss: Keras clips
    probabilities to [1e-7, 1 - 1e-7] (keras.backend.epsilon()), so a sure mistake costs
    -log(1e-7) = 16.118, not the 27.6 of a 1e-12 clip."""
    m = evaluate_predictions([[1.0, 0.0, 0.0], [0.2, 0.7, 0.1]], [1, 1], ["a", "b", "c"])
    assert m["loss"] == pytest.approx((-np.log(1e-7) - np.log(0.7)) / 2, rel=1e-6)
