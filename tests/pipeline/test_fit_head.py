"""fit.py: the head learns, stops early with the best weights, balances classes, repeats."""
import numpy as np
import pytest

from retrain.engine import Adam
from retrain.errors import ConfigError, DataError
from retrain.fit import HeadOptions, balanced_class_weights, build_head, train_head


def blobs(rng, counts, spread=0.5, dim=6):
    """Gaussian clusters around 3 * (one-hot of the class), `counts[c]` points each."""
    centres = 3.0 * np.eye(len(counts), dim)
    x = np.concatenate([rng.normal(centres[c], spread, (n, dim)) for c, n in enumerate(counts)])
    y = np.concatenate([np.full(n, c) for c, n in enumerate(counts)])
    return x.astype(np.float32), y


def cross_entropy(head, x, y):
    p = head.predict(x)
    return float(-np.mean(np.log(p[np.arange(len(y)), y])))


def test_balanced_class_weights_are_n_over_k_count():
    weights = balanced_class_weights(np.array([0, 0, 0, 1, 2, 2]), 3)
    assert weights == pytest.approx({0: 6 / 9, 1: 2.0, 2: 1.0})
    assert balanced_class_weights(np.array([0, 1, 0, 1]), 2) == {0: 1.0, 1: 1.0}


def test_head_learns_separable_classes():
    x, y = blobs(np.random.default_rng(1), [50, 50, 50])
    held_out = np.arange(150) % 5 == 0
    train, val = (x[~held_out], y[~held_out]), (x[held_out], y[held_out])
    head, history = train_head(train, val, 3, HeadOptions(epochs=100, learning_rate=0.05),
                               progress=False)
    accuracy = np.mean(np.argmax(head.predict(val[0]), axis=1) == val[1])
    assert accuracy >= 0.95 and history["val_accuracy"][history["best_epoch"] - 1] >= 0.95


def test_early_stopping_restores_the_best_epoch():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 20)).astype(np.float32)         # labels are noise: the head
    y = rng.integers(0, 2, 60)                                 # can only overfit
    val = (rng.normal(size=(30, 20)).astype(np.float32), rng.integers(0, 2, 30))
    head, history = train_head((x, y), val, 2, HeadOptions(epochs=200, learning_rate=0.05,
                                                           patience=3, label_smoothing=0.0),
                               progress=False)
    epochs_run = len(history["val_loss"])
    best = int(np.argmin(history["val_loss"]))
    assert epochs_run < 200 and epochs_run == best + 1 + 3
    assert history["best_epoch"] == best + 1
    assert cross_entropy(head, *val) == pytest.approx(history["val_loss"][best], abs=1e-5)


def test_same_seed_same_head_and_history():
    data = blobs(np.random.default_rng(2), [12, 8])
    val = blobs(np.random.default_rng(3), [4, 4])
    options = HeadOptions(epochs=5, hidden_units=4, dropout=0.5, seed=7)
    first, history_1 = train_head(data, val, 2, options, progress=False)
    second, history_2 = train_head(data, val, 2, options, progress=False)
    other, _ = train_head(data, val, 2, HeadOptions(epochs=5, hidden_units=4, dropout=0.5,
                                                    seed=8), progress=False)
    assert history_1 == history_2
    for a, b in zip(first.get_weights(), second.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(first.get_weights()[0], other.get_weights()[0])


def test_class_weights_lift_the_minority_recall():
    """90/10 overlapping classes: the balanced head finds more of the rare class than the
    same head trained without weights."""
    def data(seed, counts):
        return blobs(np.random.default_rng(seed), counts, spread=2.5, dim=2)

    train, val = data(4, [270, 30]), data(4, [100, 100])
    options = HeadOptions(epochs=30, learning_rate=0.01, patience=30)
    balanced, history = train_head(train, (val[0][:0], val[1][:0]), 2, options, progress=False)
    assert history["class_weight"] == pytest.approx([300 / 540, 300 / 60])
    plain = build_head(2, 2)
    plain.compile(optimizer=Adam(0.01), loss="sparse_categorical_crossentropy")
    plain.fit(*train, epochs=30, verbose=0, seed=0)

    def minority_recall(head):
        return np.mean(np.argmax(head.predict(val[0][val[1] == 1]), axis=1) == 1)

    assert minority_recall(balanced) > minority_recall(plain) + 0.2


def test_without_val_images_all_epochs_run():
    data = blobs(np.random.default_rng(5), [5, 5])
    empty = (data[0][:0], data[1][:0])
    _, history = train_head(data, empty, 2, HeadOptions(epochs=4), progress=False)
    assert len(history["loss"]) == 4 and history["best_epoch"] == 4
    assert "val_loss" not in history


def test_head_layers_have_stable_names():
    assert [l.name for l in build_head(5, 3).layers] == ["predictions"]
    layers = build_head(5, 3, hidden_units=4, dropout=0.1).layers
    assert [(l.name, type(l).__name__) for l in layers] == [
        ("head_dense", "Dense"), ("head_dropout", "Dropout"), ("predictions", "Dense")]


def test_a_class_without_training_images_is_refused():
    x = np.zeros((4, 3), np.float32)
    with pytest.raises(DataError, match=r"Class index\(es\) \[2\] have no training images"):
        train_head((x, np.array([0, 1, 0, 1])), (x[:0], np.array([], int)), 3,
                   HeadOptions(epochs=1), progress=False)


@pytest.mark.parametrize("change, message", [
    ({"epochs": 0}, r"epochs must be auto or a positive whole number. Received: epochs=0"),
    ({"batch_size": 2.5}, r"batch_size must be a positive whole number"),
    ({"learning_rate": -1.0}, r"learning_rate must be auto or a positive number"),
    ({"dropout": 1.0}, r"dropout must be a number from 0 up to \(not including\) 1"),
    ({"patience": -1}, r"patience must be auto, a whole number \(0 or more\) or None"),
    ({"hidden_units": -1}, r"hidden_units must be a whole number from 0 to 16,384"),
    ({"freeze_epochs": -1}, r"freeze_epochs must be a whole number \(0 or more\)"),
    ({"epochs": "many"}, r"epochs must be auto or a positive whole number"),
])
def test_bad_options_are_refused(change, message):
    with pytest.raises(ConfigError, match=message):
        HeadOptions(**change).validate()


def test_auto_epochs_and_patience_depend_on_fine_tuning():
    head_alone, tuned = HeadOptions().validate(), HeadOptions(fine_tune=2).validate()
    assert (head_alone.epochs, head_alone.patience) == (50, 5)
    assert (tuned.epochs, tuned.patience) == (15, None)
    given = HeadOptions(fine_tune=2, epochs=4, patience=2).validate()
    assert (given.epochs, given.patience) == (4, 2)


def test_the_training_record_is_read_from_the_optimizer_that_trained(monkeypatch):
    """fit's record names the optimizer and describes the schedule it actually trained with
    (metrics.json and the model file carry it): another optimizer class, or a warmup that
    the epochs clip away, changes the record."""
    from retrain import fit

    x, y = blobs(np.random.default_rng(3), [20, 20])
    data, empty = (x, y), (x[:0], y[:0])
    _, history = train_head(data, empty, 2, HeadOptions(epochs=3, weight_decay=0.02),
                            progress=False)
    record = history["training"]
    assert (record["optimizer"], record["weight_decay"], record["schedule"]) == (
        "AdamW", 0.02, "cosine decay after 1 warmup epoch(s)")
    assert record["trainable_params"] == 6 * 2 + 2 and record["epochs_run"] == 3

    class ScheduleFreeAdamW(fit.AdamW):
        pass

    monkeypatch.setattr(fit, "AdamW", ScheduleFreeAdamW)
    _, history = train_head(data, empty, 2, HeadOptions(epochs=1), progress=False)
    assert (history["training"]["optimizer"], history["training"]["schedule"]) == (
        "ScheduleFreeAdamW", "cosine decay after 0 warmup epoch(s)")   # one epoch: no warmup
