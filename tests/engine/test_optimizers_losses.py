"""Losses and optimizers against Keras (fixture e. head_gradients) and float64 gradchecks."""
from pathlib import Path

import numpy as np
import pytest

from retrain.engine import (SGD, Adam, AdamW, CategoricalCrossentropy, ConfigError, Dense, Input,
                            Model, ShapeError, SparseCategoricalCrossentropy, Variable, losses,
                            optimizers, sparse_categorical_crossentropy)
from retrain.engine.activations import softmax

FIXTURE = Path(__file__).parents[1] / "fixtures" / "keras" / "head_gradients"


@pytest.fixture(scope="module")
def head():
    return dict(np.load(FIXTURE / "head_gradients.npz"))


def _head_model(data):
    """Input(32) -> Dense(5, softmax), with the fixture's initial weights."""
    inputs = Input((32,), name="features")
    model = Model(inputs, Dense(5, activation="softmax", name="dense")(inputs))
    model.get_layer("dense").set_weights([data["kernel_init"], data["bias_init"]])
    return model


def _loss_and_grads(model, data):
    """Forward, the loss from probabilities, backward through the softmax Dense."""
    model.zero_grads()
    probs = model.forward(data["features"])
    loss, dprobs = SparseCategoricalCrossentropy().value_and_grad(data["labels"], probs)
    model.backward(dprobs)
    kernel, bias = model.get_layer("dense").weights
    return loss, kernel.grad.copy(), bias.grad.copy()


def test_head_forward_loss_and_gradients_match_keras(head):
    model = _head_model(head)
    probs = model.forward(head["features"])
    np.testing.assert_allclose(probs, head["probs"], atol=1e-6, rtol=0)
    np.testing.assert_allclose(softmax(head["logits"]), head["probs"], atol=1e-6, rtol=0)
    per_sample = sparse_categorical_crossentropy(head["labels"], probs)
    np.testing.assert_allclose(per_sample, head["loss_per_sample"], atol=1e-5, rtol=0)
    loss, grad_kernel, grad_bias = _loss_and_grads(model, head)
    assert loss == pytest.approx(float(head["loss"]), abs=1e-5)
    np.testing.assert_allclose(grad_kernel, head["grad_kernel"], atol=1e-5, rtol=0)
    np.testing.assert_allclose(grad_bias, head["grad_bias"], atol=1e-5, rtol=0)


def test_head_logits_loss_equals_probability_loss(head):
    """from_logits on the fixture's logits gives Keras's loss and dL/dlogits = (p - y) / N."""
    loss, dlogits = SparseCategoricalCrossentropy(from_logits=True).value_and_grad(
        head["labels"], head["logits"])
    assert loss == pytest.approx(float(head["loss"]), abs=1e-5)
    onehot = np.eye(5, dtype=np.float32)[head["labels"]]
    np.testing.assert_allclose(dlogits, (head["probs"] - onehot) / 16, atol=1e-7, rtol=0)
    np.testing.assert_allclose(head["features"].T @ dlogits, head["grad_kernel"], atol=1e-6, rtol=0)


@pytest.mark.parametrize("name, optimizer", [("adam", lambda: Adam(learning_rate=0.01)),
                                             ("sgd", lambda: SGD(learning_rate=0.1, momentum=0.9))])
def test_three_optimizer_steps_match_keras(head, name, optimizer):
    """Keras's Adam adds eps to the uncorrected sqrt(v): kernel row 0 (gradients ~1e-7)
    would be off by ~1e-2 with the paper's placement. SGD's step 1 ignores momentum."""
    model = _head_model(head)
    opt = optimizer()
    for step in (1, 2, 3):
        key = f"{name}_step{step}"
        loss, grad_kernel, grad_bias = _loss_and_grads(model, head)
        assert loss == pytest.approx(float(head[f"{key}_loss_before"]), abs=1e-5)
        np.testing.assert_allclose(grad_kernel, head[f"{key}_grad_kernel"], atol=1e-5, rtol=0)
        opt.apply(model.trainable_weights)
        kernel, bias = model.get_layer("dense").get_weights()
        np.testing.assert_allclose(kernel, head[f"{key}_kernel"], atol=1e-6, rtol=0)
        np.testing.assert_allclose(bias, head[f"{key}_bias"], atol=1e-6, rtol=0)
    assert opt.iterations == 3


def test_legacy_h5_initial_weights_equal_npz(head):
    model = _head_model(head)
    model.get_layer("dense").set_weights([np.zeros((32, 5)), np.zeros(5)])
    model.load_weights(FIXTURE / "head_initial_legacy.h5")
    kernel, bias = model.get_layer("dense").get_weights()
    np.testing.assert_array_equal(kernel, head["kernel_init"])
    np.testing.assert_array_equal(bias, head["bias_init"])


# -- float64 gradchecks of the losses ------------------------------------------------------
def _numeric_grad(f, x, h=1e-6):
    grad = np.zeros_like(x)
    for i in np.ndindex(x.shape):
        old = x[i]
        x[i] = old + h
        up = f(x)
        x[i] = old - h
        down = f(x)
        x[i] = old
        grad[i] = (up - down) / (2 * h)
    return grad


def _inputs(from_logits, rng):
    raw = rng.normal(size=(6, 4))
    if from_logits:
        return raw * 3
    # Unnormalised positive rows: exercises Keras's renormalisation p / sum(p).
    return np.exp(raw) / np.exp(raw).sum(-1, keepdims=True) * rng.uniform(0.5, 2, (6, 1))


@pytest.mark.parametrize("sparse", [True, False])
@pytest.mark.parametrize("from_logits", [True, False])
@pytest.mark.parametrize("label_smoothing", [0.0, 0.2])
@pytest.mark.parametrize("weighted", [False, True])
def test_loss_gradients_gradcheck_float64(sparse, from_logits, label_smoothing, weighted):
    rng = np.random.default_rng(7)
    y_pred = _inputs(from_logits, rng)
    labels = rng.integers(0, 4, 6)
    y_true = labels if sparse else np.eye(4)[labels]
    weights = rng.uniform(0, 3, 6) if weighted else None
    cls = SparseCategoricalCrossentropy if sparse else CategoricalCrossentropy
    loss = cls(from_logits=from_logits, label_smoothing=label_smoothing)
    value, grad = loss.value_and_grad(y_true, y_pred, weights)
    assert grad.dtype == np.float64 and grad.shape == y_pred.shape
    numeric = _numeric_grad(lambda p: loss(y_true, p, weights), y_pred.copy())
    np.testing.assert_allclose(grad, numeric, atol=1e-8, rtol=1e-6)
    assert value == pytest.approx(loss(y_true, y_pred, weights))


def test_soft_labels_gradcheck_float64():
    rng = np.random.default_rng(3)
    y_pred = _inputs(False, rng)
    soft = rng.dirichlet(np.ones(4), 6)
    loss = CategoricalCrossentropy()
    numeric = _numeric_grad(lambda p: loss(soft, p), y_pred.copy())
    np.testing.assert_allclose(loss.value_and_grad(soft, y_pred)[1], numeric, atol=1e-8, rtol=1e-6)


def test_probabilities_are_clipped_and_clipped_entries_get_no_gradient():
    probs = np.array([[1.0, 0.0, 0.0]], np.float64)
    value, grad = SparseCategoricalCrossentropy().value_and_grad([1], probs)
    assert value == pytest.approx(-np.log(1e-7))
    np.testing.assert_array_equal(grad, np.zeros((1, 3)))


def test_label_smoothing_follows_keras_formula():
    probs = np.array([[0.7, 0.2, 0.1]])
    smoothed = np.array([[0.9 * 1 + 0.1 / 3, 0.1 / 3, 0.1 / 3]])
    expected = -np.sum(smoothed * np.log(probs))
    categorical = CategoricalCrossentropy(label_smoothing=0.1)
    assert categorical([[1, 0, 0]], probs) == pytest.approx(expected)
    assert SparseCategoricalCrossentropy(label_smoothing=0.1)([0], probs) == pytest.approx(expected)


def test_sample_weights_scale_each_sample_and_divide_by_batch_size():
    logits = np.array([[2.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    per_sample = sparse_categorical_crossentropy([0, 0, 1], logits, from_logits=True)
    loss = SparseCategoricalCrossentropy(from_logits=True)
    assert loss([0, 0, 1], logits, [2.0, 0.0, 1.0]) == pytest.approx(
        (2 * per_sample[0] + per_sample[2]) / 3)


def test_softmax_of_large_logits_stays_finite():
    logits = np.array([[125.0, 0.0, -125.0], [125.0, 124.0, 3.0]], np.float32)
    probs = softmax(logits)
    assert np.all(np.isfinite(probs))
    np.testing.assert_array_equal(probs[0], [1.0, 0.0, 0.0])
    value, grad = SparseCategoricalCrossentropy(from_logits=True).value_and_grad([2, 1], logits)
    assert np.isfinite(value) and np.all(np.isfinite(grad))
    assert value == pytest.approx((250.0 + np.log1p(np.exp(1.0))) / 2, rel=1e-6)


def test_loss_input_errors():
    loss = SparseCategoricalCrossentropy()
    with pytest.raises(ConfigError, match=r"integers in \[0, 3\)"):
        loss([0, 3], np.full((2, 3), 1 / 3))
    with pytest.raises(ShapeError, match="Sparse labels must have shape"):
        loss([[0, 1, 0], [1, 0, 0]], np.full((2, 3), 1 / 3))
    with pytest.raises(ShapeError, match="One-hot labels"):
        CategoricalCrossentropy()([0, 1], np.full((2, 3), 1 / 3))
    with pytest.raises(ShapeError, match="sample_weight"):
        loss([0, 1], np.full((2, 3), 1 / 3), sample_weight=[1.0])
    with pytest.raises(ConfigError, match="label_smoothing"):
        CategoricalCrossentropy(label_smoothing=1.5)
    with pytest.raises(ConfigError, match="Unknown loss"):
        losses.get("mse")


# -- optimizer rules on hand-made numbers ---------------------------------------------------
def _run(optimizer, grads, start=1.0):
    variable = Variable(np.array([start], np.float32), name="w")
    values = []
    for g in grads:
        optimizer.apply_gradients([(np.array([g], np.float32), variable)])
        values.append(float(variable.value[0]))
    return values


def test_sgd_rules_plain_momentum_and_nesterov():
    assert _run(SGD(0.1), [1.0, 1.0]) == pytest.approx([0.9, 0.8])
    # velocity: -0.1, then 0.9 * -0.1 - 0.1 = -0.19
    assert _run(SGD(0.1, momentum=0.9), [1.0, 1.0]) == pytest.approx([0.9, 0.71])
    # nesterov: w += m * v - lr * g  ->  1 - 0.09 - 0.1 = 0.81, then 0.81 - 0.171 - 0.1
    assert _run(SGD(0.1, momentum=0.9, nesterov=True), [1.0, 1.0]) == pytest.approx([0.81, 0.539])


def test_adam_first_step_is_lr_times_sign_and_adamw_decays_first():
    # Step 1: m = 0.1 g, v = 0.001 g^2, alpha = lr * sqrt(0.001) / 0.1,
    # so the step is lr * g / (|g| + eps / sqrt(0.001)).
    assert _run(Adam(0.01), [2.0]) == pytest.approx([1.0 - 0.01 * 2 / (2 + 1e-7 / np.sqrt(1e-3))])
    plain = _run(Adam(0.01), [2.0], start=3.0)[0]
    decayed = _run(AdamW(0.01, weight_decay=0.5), [2.0], start=3.0)[0]
    assert decayed == pytest.approx(plain - 3.0 * 0.5 * 0.01)


def test_amsgrad_divides_by_the_largest_velocity_seen():
    grads, beta_2 = [10.0, 0.1], 0.5
    v1 = (1 - beta_2) * grads[0] ** 2
    v2 = beta_2 * v1 + (1 - beta_2) * grads[1] ** 2      # about v1 / 2: amsgrad keeps v1
    m2 = 0.9 * (0.1 * grads[0]) + 0.1 * grads[1]
    alpha2 = 0.01 * np.sqrt(1 - beta_2 ** 2) / (1 - 0.9 ** 2)
    for amsgrad, velocity in ((True, v1), (False, v2)):
        first, second = _run(Adam(0.01, beta_2=beta_2, amsgrad=amsgrad), grads)
        assert first - second == pytest.approx(alpha2 * m2 / (np.sqrt(velocity) + 1e-7), rel=1e-4)


def test_apply_uses_accumulated_grads_and_keeps_state_per_variable():
    a, b = Variable(np.ones(2), name="a"), Variable(np.ones(3), name="b")
    a.grad[:] = 1.0
    b.grad[:] = -1.0
    opt = SGD(0.5, momentum=0.5)
    opt.apply([a, b])
    opt.apply([a, b])
    np.testing.assert_allclose(a.value, 1 - 0.5 - 0.75)
    np.testing.assert_allclose(b.value, 1 + 0.5 + 0.75)
    assert a.value.dtype == np.float32


def test_optimizer_lookup_config_and_errors():
    assert isinstance(optimizers.get("Adam"), Adam)
    assert isinstance(optimizers.get("sgd"), SGD)
    assert isinstance(optimizers.get("adamw"), AdamW)
    opt = SGD(0.05, momentum=0.8, nesterov=True)
    assert optimizers.get(opt) is opt
    rebuilt = SGD.from_config(opt.get_config())
    assert rebuilt.get_config() == opt.get_config() == {
        "name": "SGD", "learning_rate": 0.05, "weight_decay": None, "momentum": 0.8,
        "nesterov": True}
    assert AdamW().get_config()["weight_decay"] == 0.004
    with pytest.raises(ConfigError, match="Unknown optimizer"):
        optimizers.get("rmsprop")
    with pytest.raises(ConfigError, match="learning_rate=-1"):
        Adam(learning_rate=-1)
    with pytest.raises(ConfigError, match="momentum=1.5"):
        SGD(momentum=1.5)
    with pytest.raises(ConfigError, match="weight_decay=None"):
        AdamW(weight_decay=None)
    with pytest.raises(ShapeError, match="has shape"):
        SGD().apply_gradients([(np.ones(3), Variable(np.ones(2), name="w"))])
