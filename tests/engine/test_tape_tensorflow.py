"""GradientTape against TensorFlow 2.21 (tests/fixtures/course, made by make_tape_fixture.py):
every op's value, first gradients and nested-tape second derivatives; a Keras Dense+ReLU+
softmax model's crossentropy gradients; a layer mixed with ops; the notes' falling body.

Agreement is measured relative to the largest magnitude of the reference array: both sides
compute in float32, so 1e-5 leaves room for ~100 roundings of 2**-24 and nothing more.
"""
import sys
from pathlib import Path

import numpy as np
import pytest

from retrain import (Dense, GradientTape, Input, Sequential, SparseCategoricalCrossentropy,
                     Variable, constant, ops)

FIXTURE = Path(__file__).parents[1] / "fixtures" / "course"
sys.path.insert(0, str(FIXTURE))
from cases import CASES, make_inputs  # noqa: E402

REFERENCE = dict(np.load(FIXTURE / "tape.npz"))
RTOL = 1e-5


def assert_close(ours, reference, what):
    assert ours is not None, f"{what}: no gradient, TensorFlow has one"
    ours, reference = np.asarray(ours), np.asarray(reference)
    assert ours.shape == reference.shape, f"{what}: shape {ours.shape} != {reference.shape}"
    scale = max(float(np.max(np.abs(reference), initial=0.0)), 1e-30)
    error = float(np.max(np.abs(ours - reference), initial=0.0)) / scale
    assert error <= RTOL, f"{what}: relative error {error:.2e} > {RTOL}"


@pytest.mark.parametrize("name", sorted(CASES))
def test_op_value_gradients_and_second_derivatives_match_tensorflow(name):
    names, fn = CASES[name]
    inputs = make_inputs()
    tensors = [constant(inputs[n]) for n in names]
    with GradientTape(persistent=True) as outer:
        outer.watch(tensors)
        with GradientTape() as inner:
            inner.watch(tensors)
            y = fn(ops, *tensors)
            loss = ops.reduce_sum(y * REFERENCE[f"{name}/w"])
        grads = inner.gradient(loss, tensors)
        loss_of_gradient = ops.reduce_sum(grads[0] * REFERENCE[f"{name}/v"])
    second = outer.gradient(loss_of_gradient, tensors)
    assert_close(y, REFERENCE[f"{name}/output"], f"{name} value")
    for n, g, h in zip(names, grads, second):
        assert_close(g, REFERENCE[f"{name}/grad/{n}"], f"{name} d/d{n}")
        if REFERENCE[f"{name}/second_is_none/{n}"]:
            assert h is None, f"{name}: TensorFlow finds no second derivative for {n}"
        elif h is None:     # TensorFlow's relu gradient has a zero gradient, not none
            assert not np.any(REFERENCE[f"{name}/second/{n}"]), f"{name} d2/d{n}: missing"
        else:
            assert_close(h, REFERENCE[f"{name}/second/{n}"], f"{name} d2/d{n}")


def test_dense_relu_softmax_model_gradients_match_keras():
    model = Sequential([Input((4,)), Dense(6, activation="relu"),
                        Dense(3, activation="softmax")])
    model.set_weights([REFERENCE[f"model/weight/{i}"] for i in range(4)])
    with GradientTape() as tape:
        probabilities = model(constant(REFERENCE["model/x"]), training=True)
        loss = SparseCategoricalCrossentropy()(REFERENCE["model/y"], probabilities)
    grads = tape.gradient(loss, model.trainable_weights)
    assert_close(loss, REFERENCE["model/loss"], "loss")
    assert len(grads) == 4
    for i, g in enumerate(grads):
        assert_close(g, REFERENCE[f"model/grad/{i}"], model.trainable_weights[i].name)


def test_a_layer_between_ops_matches_tensorflow_for_input_weights_and_variables():
    dense = Dense(5, activation="relu")
    x = constant(REFERENCE["mixed/x"])
    dense(x)
    dense.set_weights([REFERENCE["mixed/kernel"], REFERENCE["mixed/bias"]])
    w = Variable(REFERENCE["mixed/w"])
    with GradientTape() as tape:
        tape.watch(x)
        p = ops.softmax(ops.matmul(dense(x), w))
        loss = -ops.reduce_mean(ops.reduce_sum(REFERENCE["mixed/target"] * ops.log(p), axis=1))
    grads = tape.gradient(loss, {"x": x, "kernel": dense.kernel, "bias": dense.bias, "w": w})
    assert_close(loss, REFERENCE["mixed/loss"], "loss")
    for name, g in grads.items():
        assert_close(g, REFERENCE[f"mixed/grad/{name}"], name)


@pytest.mark.parametrize("t", [0.0, 2.0])
def test_nested_tapes_give_the_falling_body_its_acceleration(t):
    time = Variable(t)
    with GradientTape() as outer:
        with GradientTape() as inner:
            position = 4.9 * time ** 2
        speed = inner.gradient(position, time)
    acceleration = outer.gradient(speed, time)
    assert_close(speed, REFERENCE[f"falling/{t}/speed"], "speed")
    assert_close(acceleration, REFERENCE[f"falling/{t}/acceleration"], "acceleration")
    assert float(acceleration) == pytest.approx(9.8, rel=1e-6)
