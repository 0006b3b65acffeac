"""compile / fit / evaluate / predict / train_on_batch and callbacks, on small synthetic data."""
from pathlib import Path

import numpy as np
import pytest

from retrain.engine import (SGD, Adam, BatchNormalization, Callback, ConfigError, Dense, Dropout,
                            EarlyStopping, Input, Model, Sequential, ShapeError,
                            SparseCategoricalCrossentropy, set_random_seed)

HEAD = Path(__file__).parents[1] / "fixtures" / "keras" / "head_gradients" / "head_gradients.npz"


def _blobs(n=120, seed=0):
    """Three Gaussian blobs in 4-D, labels 0..2, in a random order."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 3, n)
    centres = np.array([[2, 0, 0, 1], [0, 2, 0, -1], [0, 0, 2, 0]], np.float32)
    return (centres[labels] + rng.normal(0, 0.7, (n, 4))).astype(np.float32), labels


def _model(seed=0, dropout=0.0, optimizer=None):
    set_random_seed(seed)
    layers = [Input((4,)), Dense(16, activation="relu")]
    layers += [Dropout(dropout)] if dropout else []
    model = Sequential(layers + [Dense(3, activation="softmax")])
    model.compile(optimizer or Adam(0.02), "sparse_categorical_crossentropy", ["accuracy"])
    return model


class _Recorder(Callback):
    """Records the hooks fit calls, the params, and the weights at each epoch end."""

    def __init__(self):
        super().__init__()
        self.batches, self.weights, self.epochs = [], [], []

    def on_train_batch_end(self, batch, logs=None):
        self.batches.append(batch)

    def on_epoch_end(self, epoch, logs=None):
        self.epochs.append(epoch)
        self.weights.append(self.model.get_weights())


def test_fit_lowers_the_loss_and_fills_history():
    x, y = _blobs()
    model = _model()
    history = model.fit(x, y, epochs=6, batch_size=16, validation_split=0.25, verbose=0)
    assert set(history.history) == {"loss", "accuracy", "val_loss", "val_accuracy"}
    assert history.epoch == list(range(6))
    assert all(len(v) == 6 for v in history.history.values())
    assert history.history["loss"][-1] < 0.6 * history.history["loss"][0]
    assert history.history["val_accuracy"][-1] >= 0.9
    assert model.history is history


def test_validation_split_takes_the_last_samples_before_shuffling():
    x, y = _blobs(n=10)
    model = _model()
    recorder = _Recorder()
    history = model.fit(x, y, epochs=1, batch_size=1, validation_split=0.25, verbose=0,
                        callbacks=[recorder])
    # floor(10 * 0.75) = 7 training samples -> 7 steps of one sample; validation = x[7:].
    assert recorder.params["steps"] == 7 and recorder.batches == list(range(7))
    loss, accuracy = model.evaluate(x[7:], y[7:], verbose=0)
    assert history.history["val_loss"] == [pytest.approx(loss, abs=1e-6)]
    assert history.history["val_accuracy"] == [accuracy]
    assert model.evaluate(x[:3], y[:3], verbose=0)[0] != pytest.approx(loss)


def test_validation_data_wins_over_validation_split():
    x, y = _blobs()
    model = _model()
    history = model.fit(x, y, epochs=1, validation_data=(x[:5], y[:5]), validation_split=0.5,
                        verbose=0)
    val_loss = model.evaluate(x[:5], y[:5], verbose=0)[0]
    assert history.history["val_loss"] == [pytest.approx(val_loss, abs=1e-6)]


def _sgd_step(model, x, y, **kwargs):
    """The weight change from one train_on_batch with plain SGD(lr=1)."""
    before = model.get_weights()
    model.train_on_batch(x, y, **kwargs)
    after = model.get_weights()
    model.set_weights(before)
    return [a - b for a, b in zip(after, before)]


def test_class_weight_scales_each_sample_gradient():
    x, y = _blobs(n=12)
    model = _model(optimizer=SGD(1.0))
    class_weight = {0: 3.0, 1: 0.5}              # class 2 is missing: weight 1
    step = _sgd_step(model, x, y, class_weight=class_weight)
    # Expected: the gradient of the loss with per-sample weights w[y].
    weights = np.array([class_weight.get(label, 1.0) for label in y])
    model.zero_grads()
    probs = model.forward(x, training=True)
    model.backward(SparseCategoricalCrossentropy().value_and_grad(y, probs, weights)[1])
    for delta, variable in zip(step, model.trainable_weights):
        np.testing.assert_allclose(delta, -variable.grad, atol=1e-6)
    unweighted = _sgd_step(model, x, y)
    assert not np.allclose(step[-1], unweighted[-1], atol=1e-4)
    doubled = _sgd_step(model, x, y, class_weight={0: 2.0, 1: 2.0, 2: 2.0})
    for d, u in zip(doubled, unweighted):
        np.testing.assert_allclose(d, 2 * u, atol=1e-6)


def test_class_weight_does_not_weight_the_validation_loss():
    x, y = _blobs()
    model = _model()
    history = model.fit(x, y, epochs=1, validation_split=0.5, class_weight={0: 10.0}, verbose=0)
    val_loss = model.evaluate(x[60:], y[60:], verbose=0)[0]
    assert history.history["val_loss"] == [pytest.approx(val_loss, abs=1e-6)]


def test_train_on_batch_reproduces_keras_adam_step():
    data = np.load(HEAD)
    inputs = Input((32,))
    model = Model(inputs, Dense(5, activation="softmax", name="dense")(inputs))
    model.get_layer("dense").set_weights([data["kernel_init"], data["bias_init"]])
    model.compile(Adam(0.01), "sparse_categorical_crossentropy", metrics=[])
    loss = model.train_on_batch(data["features"], data["labels"])
    assert loss == pytest.approx(2.8365120887756348, abs=1e-6)   # Keras's train_on_batch loss
    kernel, bias = model.get_layer("dense").get_weights()
    np.testing.assert_allclose(kernel, data["adam_step1_kernel"], atol=1e-6, rtol=0)
    np.testing.assert_allclose(bias, data["adam_step1_bias"], atol=1e-6, rtol=0)


def test_evaluate_and_predict_batch_the_forward():
    x, y = _blobs(n=23)
    model = _model()
    probs = model.forward(x)
    np.testing.assert_allclose(model.predict(x, batch_size=5), probs, atol=1e-7)
    loss, accuracy = model.evaluate(x, y, batch_size=7, verbose=0)
    assert loss == pytest.approx(SparseCategoricalCrossentropy()(y, probs), abs=1e-6)
    assert accuracy == pytest.approx(np.mean(probs.argmax(1) == y))
    assert model.evaluate(x, y, verbose=0, return_dict=True) == {
        "loss": pytest.approx(loss, abs=1e-6), "accuracy": accuracy}


def test_one_hot_labels_with_categorical_crossentropy():
    x, y = _blobs()
    model = _model()
    model.compile(Adam(0.02), "categorical_crossentropy", ["accuracy"])
    history = model.fit(x, np.eye(3)[y], epochs=3, verbose=0)
    assert history.history["loss"][-1] < history.history["loss"][0]
    assert model.evaluate(x, np.eye(3)[y], verbose=0)[1] == pytest.approx(
        np.mean(model.predict(x).argmax(1) == y))


def test_same_seed_gives_identical_history_and_weights():
    x, y = _blobs()
    runs = []
    for seed in (5, 5, 6):
        model = _model(seed=1, dropout=0.3)
        history = model.fit(x, y, epochs=3, batch_size=16, validation_split=0.2, seed=seed,
                            verbose=0)
        runs.append((history.history, model.get_weights()))
    assert runs[0][0] == runs[1][0]
    for a, b in zip(runs[0][1], runs[1][1]):
        np.testing.assert_array_equal(a, b)
    assert runs[0][0]["loss"] != runs[2][0]["loss"]


def test_frozen_layer_keeps_its_weights():
    x, y = _blobs()
    model = _model()
    hidden, output = model.layers[0], model.layers[-1]
    hidden.trainable = False
    frozen, trained = hidden.get_weights(), output.get_weights()
    model.fit(x, y, epochs=2, verbose=0)
    for a, b in zip(hidden.get_weights(), frozen):
        np.testing.assert_array_equal(a, b)
    assert not np.allclose(output.get_weights()[0], trained[0])


def test_fit_trains_batch_norm_statistics_unless_the_layer_is_frozen():
    x, y = _blobs()
    for trainable in (True, False):
        set_random_seed(0)
        norm = BatchNormalization(trainable=trainable)
        model = Sequential([Input((4,)), Dense(8), norm, Dense(3, activation="softmax")])
        model.compile(Adam(0.02), "sparse_categorical_crossentropy")
        before = norm.get_weights()
        model.fit(x, y, epochs=1, verbose=0)
        changed = [not np.array_equal(a, b) for a, b in zip(norm.get_weights(), before)]
        assert changed == [trainable] * 4     # gamma, beta, moving_mean, moving_variance


def test_verbose_zero_prints_nothing_and_verbose_one_shows_a_bar(capsys):
    x, y = _blobs(n=20)
    model = _model()
    model.fit(x, y, epochs=2, validation_split=0.2, verbose=0)
    model.evaluate(x, y, verbose=0)
    model.predict(x)
    assert capsys.readouterr() == ("", "")
    model.fit(x, y, epochs=1, verbose=1)
    err = capsys.readouterr().err
    assert "Epoch 1/1" in err and "loss=" in err and "accuracy=" in err


def test_a_callback_can_stop_training():
    class StopAfterFirstEpoch(Callback):
        def on_epoch_end(self, epoch, logs=None):
            self.model.stop_training = True

    x, y = _blobs()
    history = _model().fit(x, y, epochs=5, verbose=0, callbacks=[StopAfterFirstEpoch()])
    assert history.epoch == [0]


class _FakeModel:
    def __init__(self):
        self.stop_training = False
        self.value = None

    def get_weights(self):
        return [self.value]

    def set_weights(self, weights):
        self.value = weights[0]


def _early_stop(values, **kwargs):
    """Feed monitored values to EarlyStopping; return (epochs run, final 'weights')."""
    callback = EarlyStopping(**kwargs)
    model = _FakeModel()
    callback.set_model(model)
    callback.on_train_begin()
    run = 0
    for epoch, value in enumerate(values):
        model.value = f"weights after epoch {epoch}"
        callback.on_epoch_end(epoch, {kwargs.get("monitor", "val_loss"): value})
        run += 1
        if model.stop_training:
            break
    callback.on_train_end()
    return run, model.value


def test_early_stopping_follows_keras_semantics():
    assert _early_stop([1.0, 0.5, 0.6, 0.7, 0.4], patience=2)[0] == 4
    assert _early_stop([1.0, 0.5, 0.6, 0.7, 0.4], patience=2, restore_best_weights=True) == (
        4, "weights after epoch 1")
    # patience=0 still lets epoch 0 pass; an improvement smaller than min_delta does not count.
    assert _early_stop([1.0, 1.1, 0.1], patience=0)[0] == 2
    assert _early_stop([1.0, 0.95, 0.9, 0.85], patience=1, min_delta=0.1)[0] == 2
    assert _early_stop([0.5, 0.9, 0.8, 0.7], patience=1, start_from_epoch=2)[0] == 4
    assert _early_stop([0.5, 0.6, 0.7], monitor="val_accuracy", patience=1)[0] == 3
    assert _early_stop([0.5, 0.4], monitor="accuracy", patience=0, restore_best_weights=True) == (
        2, "weights after epoch 0")
    # An improvement that misses the baseline does not reset the wait.
    assert _early_stop([1.0, 1.1, 1.2], patience=2)[0] == 3
    assert _early_stop([1.0, 1.1, 1.2], patience=2, baseline=0.5)[0] == 2
    callback = EarlyStopping()
    callback.set_model(_FakeModel())
    callback.on_train_begin()
    with pytest.warns(UserWarning, match="'val_loss', which is not available.*: loss"):
        callback.on_epoch_end(0, {"loss": 1.0})
    with pytest.raises(ConfigError, match="mode='min' or mode='max'"):
        EarlyStopping(monitor="f1")
    with pytest.raises(ConfigError, match="mode="):
        EarlyStopping(mode="up")


def test_early_stopping_in_fit_restores_the_best_epoch():
    x, y = _blobs()
    wrong = (y + 1) % 3                # the better the model, the worse this validation loss
    model = _model()
    recorder = _Recorder()
    stopper = EarlyStopping(patience=1, restore_best_weights=True)
    history = model.fit(x, y, epochs=20, validation_data=(x, wrong), verbose=0,
                        callbacks=[recorder, stopper])
    assert len(history.epoch) < 20
    best = int(np.argmin(history.history["val_loss"]))
    assert stopper.best_epoch == best
    for a, b in zip(model.get_weights(), recorder.weights[best]):
        np.testing.assert_array_equal(a, b)


def test_training_errors_say_what_to_do():
    x, y = _blobs(n=10)
    model = Sequential([Input((4,)), Dense(3, activation="softmax")])
    with pytest.raises(ConfigError, match="must be compiled"):
        model.fit(x, y)
    with pytest.raises(ConfigError, match="needs a loss"):
        model.compile("adam")
    with pytest.raises(ConfigError, match="Unknown metric"):
        model.compile("adam", "sparse_categorical_crossentropy", metrics=["auc"])
    model.compile("sgd", "sparse_categorical_crossentropy")
    with pytest.raises(ShapeError, match="same, nonzero number of samples"):
        model.fit(x, y[:9], verbose=0)
    with pytest.raises(ConfigError, match="batch_size=0"):
        model.fit(x, y, batch_size=0)
    with pytest.raises(ConfigError, match="validation_split=1.0"):
        model.fit(x, y, validation_split=1.0, verbose=0)
    with pytest.raises(ConfigError, match="verbose="):
        model.fit(x, y, verbose=3)
    with pytest.raises(ShapeError, match="0 samples"):
        model.predict(x[:0])
